"""The recommendation route's hot path as plain ASGI: a valid ``GET /v1/users/{id}/recommendations``
answered without FastAPI's routing, dependency solving and parameter validation.

Why: profiled on a cached answer under load, FastAPI's machinery around the endpoint (route
matching over every route, ``solve_dependencies``, pydantic validation of the query, the
exception-handling wrappers) took about half of a worker's CPU, the recommendation itself a
sixth (docs/serving.md, "Fast path"). The endpoint's own work is shared: both this path and the
FastAPI route call :func:`serving.routes.recommendations.answer`.

How it stays equivalent: this path accepts only requests it is *sure* the route would accept,
with a stricter parser than FastAPI's (digits only, known parameter names, no repeats, ASCII user
ids, ``true``/``false``/``1``/``0`` booleans). Anything else - an unknown or repeated parameter,
a value out of range, an unusual spelling - goes on to the FastAPI app, whose validation writes
the canonical 422. Errors raised past validation (429 rate limit, 422 unknown genre or k above
``serving.max_k``, 503 nothing to serve) are rendered exactly as FastAPI renders an
``HTTPException``. ``serving.fast_path = false`` turns it off; a property test sends the same
random requests through both and compares the answers.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl

import orjson
from fastapi import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from serving.deps import check_read_rate
from serving.routes import recommendations as rec

# the route's path with an ASCII-printable id without / ? # (the route's pattern is ^[^\s/?#]+$)
_ID = rf"[\x21\x22\x24-\x2e\x30-\x3e\x40-\x7e]{{1,{rec.MAX_ID}}}"
_PATH = re.compile(rf"/v1/users/({_ID})/recommendations")
_DIGITS = re.compile(r"[1-9][0-9]{0,3}")
_VARIANT = re.compile(rf"[A-Za-z0-9_.-]{{1,{rec.VARIANT_MAX}}}")
_BOOLS = {"true": True, "1": True, "false": False, "0": False}
_JSON = [(b"content-type", b"application/json")]


def parse(path: str, query_string: bytes) -> dict[str, Any] | None:
    """The keyword arguments of :func:`~serving.routes.recommendations.answer` when the request
    is certainly valid for the route, else None (the FastAPI route decides)."""
    m = _PATH.fullmatch(path)
    if m is None:
        return None
    args: dict[str, Any] = {"user_id": m.group(1)}
    if not query_string:
        return args
    for name, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True):
        if name in args or name == "user_id":
            return None  # a repeat: FastAPI takes the last one; not worth reproducing
        if name == "k" or name == "year_from" or name == "year_to":
            if _DIGITS.fullmatch(value) is None:
                return None
            n = int(value)
            lo, hi = (1, rec.K_MAX) if name == "k" else (rec.YEAR_MIN, rec.YEAR_MAX)
            if not lo <= n <= hi:
                return None
            args[name] = n
        elif name == "exclude_seen":
            b = _BOOLS.get(value)
            if b is None:
                return None
            args[name] = b
        elif name == "genre":
            if not 1 <= len(value) <= rec.GENRE_MAX:
                return None
            args[name] = value
        elif name == "variant":
            if _VARIANT.fullmatch(value) is None:
                return None
            args[name] = value
        else:
            return None  # FastAPI ignores unknown parameters; so does it, through the route
    return args


class RecommendationFastPath:
    """ASGI middleware in front of the app's router (inside the timing and error middlewares)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._route: Any = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and not scope.get("root_path"):
            args = parse(scope["path"], scope["query_string"])
            if args is not None:
                app = scope["app"]
                svc = getattr(app.state, "services", None)
                if svc is not None and svc.settings.serving.fast_path:
                    scope["route"] = self._route or self._find_route(app)  # for the latency metric
                    await self._serve(app.state, svc, scope, args, send)
                    return
        await self.app(scope, receive, send)

    def _find_route(self, app: Any) -> Any:
        self._route = next((r for r in app.routes if getattr(r, "path", None) == rec.PATH), None)
        return self._route

    @staticmethod
    async def _serve(state: Any, svc: Any, scope: Scope, args: dict[str, Any], send: Send) -> None:
        headers = _JSON
        try:
            client = scope.get("client")
            check_read_rate(state, client[0] if client else "unknown")
            body = await rec.answer(svc, **args)
            status = 200
        except HTTPException as exc:  # as FastAPI's default handler writes it
            status, body = exc.status_code, orjson.dumps({"detail": exc.detail})
            headers = _JSON + [(k.lower().encode(), v.encode()) for k, v in (exc.headers or {}).items()]
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-length", str(len(body)).encode()), *headers],
            }
        )
        await send({"type": "http.response.body", "body": body})

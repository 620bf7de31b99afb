"""``/healthz`` (process alive), ``/readyz`` (Postgres, Redis, Kafka reachable), ``/metrics``."""

from __future__ import annotations

import asyncio
import time

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.deps import ServicesDep
from serving.routes.schemas_api import Health

router = APIRouter(tags=["health"])

LATENCY = Histogram(
    "lambdarec_http_request_seconds",
    "HTTP latency by route",
    ["route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)


@router.get("/healthz", response_model=Health, summary="Liveness")
async def healthz() -> Health:
    return Health(status="ok")


async def _kafka_ok(bootstrap: str, timeout: float) -> None:
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    _, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), timeout)
    writer.close()


@router.get(
    "/readyz",
    response_model=Health,
    summary="Readiness",
    responses={503: {"model": Health, "description": "A dependency is unreachable."}},
)
async def readyz(svc: ServicesDep, response: Response) -> Health:
    """Each dependency is probed with ``serving.ready_timeout_ms``."""
    t = svc.settings.serving.ready_timeout_ms / 1000

    async def pg() -> None:
        async with svc.pool.connection(timeout=t) as conn:
            await asyncio.wait_for(conn.execute("SELECT 1"), t)

    async def redis() -> None:
        if not await asyncio.wait_for(svc.cache.client.ping(), t):
            raise RuntimeError("no PONG")

    checks: dict[str, str] = {}
    names = ("postgres", "redis", "kafka")
    results = await asyncio.gather(
        pg(), redis(), _kafka_ok(svc.settings.kafka.bootstrap_servers, t), return_exceptions=True
    )
    for name, res in zip(names, results, strict=True):
        checks[name] = "ok" if not isinstance(res, BaseException) else f"error: {type(res).__name__}"
    checks["model"] = svc.models.current.version if svc.models.current else "none (popular/batch only)"
    ok = all(checks[n] == "ok" for n in names)
    if not ok:
        response.status_code = 503
    return Health(status="ok" if ok else "unavailable", checks=checks)


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"example": "lambdarec_http_request_seconds_count 1"}}}},
)
async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


class TimingMiddleware:
    """Latency per route template (not per raw path: user ids would explode cardinality).

    Pure ASGI rather than ``@app.middleware("http")``: BaseHTTPMiddleware adds a task and a
    stream per request, which is a measurable share of a cached answer.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = 500

        async def _send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, _send)
        finally:
            route = scope.get("route")
            LATENCY.labels(getattr(route, "path", "unmatched"), str(status)).observe(time.perf_counter() - t0)

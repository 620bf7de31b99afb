"""The recommendation fast path (serving/fast_path.py) answers exactly as the FastAPI route does.

The same random requests - valid, invalid, and odd but valid - go to two apps over the same
Postgres and Redis, one with ``serving.fast_path`` on and one with it off; status, the error
detail or the list, and the headers that matter must agree. A spy checks that the fast path did
serve the plain valid requests (an equivalence test of a path never taken would prove nothing).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lambdarec.settings import Settings
from serving import fast_path
from tests.integration.serving_support import World, api_client

pytestmark = pytest.mark.integration

#: fields that differ between two serves of the same list
_VOLATILE = ("rec_id", "computation_time_ms", "cache_hit")


def _with(settings: Settings, **serving: Any) -> Settings:
    return settings.model_copy(update={"serving": settings.serving.model_copy(update=serving)})


@pytest.fixture
async def clients(postgres: Settings, world: World) -> AsyncIterator[tuple[httpx.AsyncClient, ...]]:
    fast_s = _with(postgres, fast_path=True, max_k=50)
    slow_s = _with(postgres, fast_path=False, max_k=50)
    async with api_client(fast_s) as fast, api_client(slow_s) as slow:
        yield fast, slow


def _comparable(r: httpx.Response) -> tuple[Any, ...]:
    body = r.json()
    if isinstance(body, dict):
        for f in _VOLATILE:
            body.pop(f, None)
    return r.status_code, body, r.headers.get("content-type"), r.headers.get("retry-after")


_values = st.one_of(
    st.integers(-5, 2300).map(str),
    st.sampled_from(["", "true", "false", "1", "0", "yes", "True", "off", "+5", "05", " 7", "1e1", "x"]),
    st.sampled_from(["drama", "no-such-genre", "Ünïcode", "a" * 101, "ctrl", "t.e-s_t", "x y"]),
    st.text(min_size=0, max_size=8),
)
_names = st.sampled_from(["k", "genre", "year_from", "year_to", "exclude_seen", "variant", "junk", "user_id"])


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    pick=st.integers(0, 2),
    odd_id=st.one_of(
        st.text(min_size=0, max_size=6),
        st.sampled_from(["a" * 128, "a" * 129, "u?x", "u#x", "u x", "ü", "%41", "-", "u.1~"]),
    ),
    params=st.lists(st.tuples(_names, _values), max_size=4),
    genre_of_world=st.booleans(),
)
async def test_fast_path_answers_as_the_route_does(
    clients: tuple[httpx.AsyncClient, httpx.AsyncClient],
    world: World,
    monkeypatch: pytest.MonkeyPatch,
    pick: int,
    odd_id: str,
    params: list[tuple[str, str]],
    genre_of_world: bool,
) -> None:
    fast, slow = clients
    users = getattr(world, "_fp_users", None)
    if users is None:
        a = f"{world.p}i3"
        users = world._fp_users = [world.user(preference_vector=world.emb[a]), world.user()]  # type: ignore[attr-defined]
    user = users[pick] if pick < 2 else odd_id
    if genre_of_world:
        params = [*params, ("genre", world.genre)]
    url = f"/v1/users/{quote(user, safe='')}/recommendations"
    if params:
        url += "?" + urlencode(params)
    served = 0
    real = fast_path.RecommendationFastPath._serve

    async def spy(*a: Any, **kw: Any) -> None:
        nonlocal served
        served += 1
        await real(*a, **kw)

    monkeypatch.setattr(fast_path.RecommendationFastPath, "_serve", staticmethod(spy))
    got_fast = await fast.get(url)
    got_slow = await slow.get(url)
    assert _comparable(got_fast) == _comparable(got_slow), url
    if fast_path.parse(f"/v1/users/{user}/recommendations", urlencode(params).encode()) is not None:
        assert served == 1, f"the fast path should have served {url}"


async def test_plain_requests_take_the_fast_path_and_errors_match(
    clients: tuple[httpx.AsyncClient, httpx.AsyncClient],
    world: World,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fast, slow = clients
    user = world.user(preference_vector=world.emb[f"{world.p}i3"])
    served: list[str] = []
    real = fast_path.RecommendationFastPath._serve

    async def spy(state: Any, svc: Any, scope: Any, args: Any, send: Any) -> None:
        served.append(scope["path"])
        await real(state, svc, scope, args, send)

    monkeypatch.setattr(fast_path.RecommendationFastPath, "_serve", staticmethod(spy))
    base = f"/v1/users/{user}/recommendations"
    for query, status in [
        ("?k=5", 200),
        (f"?k=3&genre={world.genre}&exclude_seen=false&year_from=1990&year_to=2000", 200),
        ("?k=60", 422),  # above max_k=50: raised by the shared handler, rendered by the fast path
        ("?genre=no-such-genre", 422),
        ("?year_from=2001&year_to=1999", 422),
        ("?k=0", 422),  # out of the route's bounds: FastAPI's own validation error
        ("?k=abc", 422),
    ]:
        a, b = await fast.get(base + query), await slow.get(base + query)
        assert a.status_code == status, (query, a.text)
        assert _comparable(a) == _comparable(b), query
    assert len(served) == 5  # the last two went on to FastAPI
    # the latency metric still names the route
    metrics = (await fast.get("/metrics")).text
    assert 'route="/v1/users/{user_id}/recommendations",status="200"' in metrics


async def test_fast_path_rate_limit_is_the_routes(postgres: Settings, world: World) -> None:
    user = world.user()
    async with api_client(_with(postgres, anonymous_rate_limit_per_minute=3)) as c:  # own IP bucket
        codes = [(await c.get(f"/v1/users/{user}/recommendations")).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        r = await c.get(f"/v1/users/{user}/recommendations")
        assert r.json()["detail"] == "rate limit of 3 requests/minute exceeded"
        assert 1 <= int(r.headers["retry-after"]) <= 60

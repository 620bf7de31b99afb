"""The recommendation API against the real Postgres (pgvector), Redis and Kafka.

Each test seeds its own items/genre/users under a random prefix and deletes them afterwards
(the database is shared with the other areas' tests).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import numpy as np
import pytest
from psycopg.types.json import Jsonb

from lambdarec.settings import Settings
from schemas.cache_keys import version_key
from serving.app import create_app
from serving.cache import RecCache
from serving.deps import build_services
from serving.recommend import Services
from tests.integration.serving_support import World, api_client

pytestmark = pytest.mark.integration


@pytest.fixture
async def client(postgres: Settings, world: World) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(postgres) as c:
        yield c


async def test_personalised_list_cached_then_fresh_within_a_second(
    client: httpx.AsyncClient, world: World
) -> None:
    a, b = f"{world.p}i3", f"{world.p}i7"
    user = world.user(preference_vector=world.emb[a])
    url = f"/v1/users/{user}/recommendations?k=5&genre={world.genre}"
    first = (await client.get(url)).json()
    assert first["items"][0]["item_id"] == a
    assert first["items"][0]["source"] == "realtime" and first["cache_hit"] is False
    second = (await client.get(url)).json()
    assert second["cache_hit"] is True and second["rec_id"] != first["rec_id"]
    assert second["items"] == first["items"]

    # the speed layer's effect: a new event on `a`, a new taste vector, then INCR of the version
    t0 = time.monotonic()
    world.conn.execute(
        "INSERT INTO rt_user_interactions (event_id, user_id, item_id, event_type, occurred_at) "
        "VALUES (%s, %s, %s, 'play', now())",
        (uuid.uuid4(), user, a),
    )
    world.conn.execute(
        "UPDATE user_profiles SET preference_vector = %s WHERE user_id = %s", (world.emb[b], user)
    )
    svc: Services = client.app.state.services  # type: ignore[attr-defined]
    await svc.cache.client.incr(version_key(user))
    third = (await client.get(url)).json()
    assert time.monotonic() - t0 < 1.0
    ids = [i["item_id"] for i in third["items"]]
    assert third["cache_hit"] is False and ids[0] == b and a not in ids
    assert third["items"][0]["explanation"] == "because you watched Title 3"


async def test_validation_errors_are_specific(client: httpx.AsyncClient, world: World) -> None:
    base = f"/v1/users/{world.p}x/recommendations"
    for query, needle in [
        ("k=0", "greater than or equal"),
        ("k=101", "less than or equal"),
        ("genre=no-such-genre", "unknown genre"),
        ("year_from=2000&year_to=1990", "after year_to"),
    ]:
        r = await client.get(f"{base}?{query}")
        assert r.status_code == 422, (query, r.text)
        assert needle in r.text, (query, r.text)
    r = await client.get(f"/v1/users/{'u' * 200}/recommendations")
    assert r.status_code == 422 and "128" in r.text


async def test_writes_need_a_key_and_are_rate_limited(
    client: httpx.AsyncClient, world: World, postgres: Settings
) -> None:
    user = world.user()
    url = f"/v1/users/{user}/preferences"
    body = {"favorite_genres": [world.genre], "diversity_preference": 0.8, "data_usage_consent": True}
    assert (await client.put(url, json=body)).status_code == 401
    assert (await client.put(url, json=body, headers={"X-API-Key": "lrk_deadbeef_nope"})).status_code == 401
    assert (await client.post("/v1/events", json={})).status_code == 401
    key = world.key("k", ["write"], rate_limit=2)
    ok = await client.put(url, json=body, headers={"X-API-Key": key})
    assert ok.status_code == 200, ok.text
    got = (await client.get(url)).json()
    assert got["favorite_genres"] == [world.genre] and got["diversity_preference"] == pytest.approx(0.8)
    assert (await client.put(url, json={**body, "extra": 1}, headers={"X-API-Key": key})).status_code == 422
    limited = await client.put(url, json=body, headers={"X-API-Key": key})
    assert limited.status_code == 429 and "Retry-After" in limited.headers


async def test_without_consent_the_list_is_not_personalised(client: httpx.AsyncClient, world: World) -> None:
    user = world.user(data_usage_consent=False, preference_vector=world.emb[f"{world.p}i3"])
    r = (await client.get(f"/v1/users/{user}/recommendations?k=3&genre={world.genre}")).json()
    assert r["algorithm_source"] == "popular"
    assert [i["item_id"] for i in r["items"]] == [f"{world.p}i9", f"{world.p}i8", f"{world.p}i7"]
    assert r["items"][0]["explanation"] == f"popular in Genre {world.p}"


async def test_cold_start_uses_favourite_genres(client: httpx.AsyncClient, world: World) -> None:
    """Favourite-genre items come first even when the global trending list is on another scale:
    an item outside the genre with a huge ``popularity_metrics`` count today (what a loaded demo
    catalog looks like) must not push them out; it only fills in after them."""
    hot = f"{world.p}hot"
    world.conn.execute("INSERT INTO items (item_id, title, popularity_score) VALUES (%s, 'Hot', 0)", (hot,))
    world.conn.execute(
        "INSERT INTO popularity_metrics (item_id, date, view_count, play_count, popularity_score) "
        "VALUES (%s, current_date, 100000, 50000, 1e9)",
        (hot,),
    )
    svc: Services = client.app.state.services  # type: ignore[attr-defined]
    svc.popular._lists.clear()  # another test of this process may have cached the trending list
    user = world.user(favorite_genres=Jsonb([world.genre]))
    r = (await client.get(f"/v1/users/{user}/recommendations?k=3&exclude_seen=false")).json()
    assert r["algorithm_source"] == "cold_start"
    assert [i["item_id"] for i in r["items"]] == [f"{world.p}i9", f"{world.p}i8", f"{world.p}i7"]
    assert all("favourite genres" in i["explanation"] for i in r["items"])
    # a list longer than the genre: the genre's 10 items first, then trending fills in
    r = (await client.get(f"/v1/users/{user}/recommendations?k=12&exclude_seen=false")).json()
    ids = [i["item_id"] for i in r["items"]]
    assert set(ids[:10]) == {f"{world.p}i{n}" for n in range(10)} and hot in ids[10:]


async def test_similar_items_and_popular(client: httpx.AsyncClient, world: World) -> None:
    r = await client.get(f"/v1/items/{world.p}i1/similar?k=5")
    assert r.status_code == 200 and f"{world.p}i1" not in [i["item_id"] for i in r.json()["items"]]
    assert (await client.get(f"/v1/items/{world.p}nope/similar")).status_code == 404
    pop = (await client.get(f"/v1/popular?genre={world.genre}&k=2")).json()
    assert [i["item_id"] for i in pop["items"]] == [f"{world.p}i9", f"{world.p}i8"]
    assert (await client.get("/healthz")).json()["status"] == "ok"
    ready = await client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert "lambdarec_http_request_seconds" in (await client.get("/metrics")).text


async def test_similar_items_by_als_factors_are_cosine_neighbours(postgres: Settings, world: World) -> None:
    from serving.models import ItemFactors

    ids = [f"{world.p}i{n}" for n in range(4)]
    # i1 points the same way as i0 but is 10x longer: the cosine neighbour; i2 is longer still
    # but off-axis, so a raw dot product would pick it
    factors = np.array([[1.0, 0.0], [10.0, 0.5], [30.0, 40.0], [-1.0, 0.0]], dtype=np.float32)
    svc = build_services(postgres)  # injected: no registry load or watcher replaces this model
    svc.serve_log = None
    svc.models.current = ItemFactors.build("t-als", np.array(ids, dtype=object), factors)
    async with api_client(postgres, svc) as c:
        r = (await c.get(f"/v1/items/{ids[0]}/similar?k=3&method=als")).json()
    assert r["model_version"] == "t-als" and [i["item_id"] for i in r["items"]] == [ids[1], ids[2], ids[3]]
    assert r["items"][0]["score"] == pytest.approx(10 / np.hypot(10, 0.5), abs=1e-5)
    assert r["items"][0]["title"] == "Title 1"


async def test_served_lists_are_logged(client: httpx.AsyncClient, world: World) -> None:
    user = world.user(preference_vector=world.emb[f"{world.p}i2"])
    rec = (await client.get(f"/v1/users/{user}/recommendations?k=2")).json()
    svc: Services = client.app.state.services  # type: ignore[attr-defined]
    assert svc.serve_log is not None
    await svc.serve_log.flush()
    row = world.conn.execute(
        "SELECT user_id, cache_hit, jsonb_array_length(items) FROM recommendation_logs WHERE rec_id = %s",
        (rec["rec_id"],),
    ).fetchone()
    assert row == (user, False, 2)


async def test_redis_down_serves_uncached(postgres: Settings, world: World) -> None:
    svc = build_services(postgres)
    svc.cache = RecCache(
        postgres.model_copy(
            update={"redis": postgres.redis.model_copy(update={"url": "redis://127.0.0.1:1"})}
        )
    )
    svc.serve_log = None
    app = create_app(postgres, services=svc)
    await svc.pool.open()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            app.state.services = svc
            user = world.user(preference_vector=world.emb[f"{world.p}i4"])
            r = await c.get(f"/v1/users/{user}/recommendations?k=3")
            assert r.status_code == 200, r.text
            assert r.json()["cache_hit"] is False and r.json()["items"][0]["item_id"] == f"{world.p}i4"
    finally:
        await svc.pool.close()


async def test_postgres_down_degrades_then_503(postgres: Settings, world: World) -> None:
    dead = postgres.model_copy(
        update={"postgres": postgres.postgres.model_copy(update={"url": "postgresql://x:y@127.0.0.1:1/z"})}
    )
    svc = build_services(dead)
    svc.serve_log = None
    app = create_app(dead, services=svc)
    await svc.pool.open(wait=False)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            app.state.services = svc
            t0 = time.monotonic()
            r = await c.get("/v1/users/nobody/recommendations?exclude_seen=false")
            assert r.status_code == 503 and time.monotonic() - t0 < 2
            from serving.ranking import Candidate

            svc.last_popular["-"] = [Candidate("m1", 3.0, "popular"), Candidate("m2", 1.0, "popular")]
            r = await c.get("/v1/users/nobody/recommendations?k=2&exclude_seen=false")
            assert r.status_code == 200 and r.json()["degraded"] is True
            assert [i["item_id"] for i in r.json()["items"]] == ["m1", "m2"]
    finally:
        await svc.pool.close()
        await svc.cache.close()


def test_now_is_utc() -> None:  # keeps datetime import honest for the seeding helpers
    assert datetime.now(UTC).tzinfo is UTC
    assert asyncio.iscoroutinefunction(test_redis_down_serves_uncached)


async def test_a_promotion_makes_cached_lists_unreachable(postgres: Settings, world: World) -> None:
    """Lists cached under one production model are not served once the API holds another."""
    from serving.models import ItemFactors

    ids = np.array([f"{world.p}i{n}" for n in range(4)], dtype=object)
    rng = np.random.default_rng(5)
    svc = build_services(postgres)  # injected: no registry load or watcher replaces the models
    svc.serve_log = None
    svc.models.current = ItemFactors.build("t-v1", ids, rng.normal(size=(4, 3)).astype(np.float32))
    user = world.user(preference_vector=world.emb[f"{world.p}i2"])
    url = f"/v1/users/{user}/recommendations?k=3"
    async with api_client(postgres, svc) as c:
        first = (await c.get(url)).json()
        assert (await c.get(url)).json()["cache_hit"] is True
        svc.models.current = ItemFactors.build("t-v2", ids, rng.normal(size=(4, 3)).astype(np.float32))
        after = (await c.get(url)).json()
        again = (await c.get(url)).json()
    assert first["cache_hit"] is False
    assert after["cache_hit"] is False and again["cache_hit"] is True


async def test_fold_in_vectors_of_another_model_are_not_scored(postgres: Settings, world: World) -> None:
    """A user vector solved against model v1 means nothing against v2's item factors: until the
    speed layer re-folds the user, the ALS realtime source is skipped (the batch view and the taste
    vector serve them)."""
    from serving.models import ItemFactors

    ids = np.array([f"{world.p}i{n}" for n in range(4)], dtype=object)
    factors = np.eye(4, 3, dtype=np.float32)
    svc = build_services(postgres)
    svc.serve_log = None
    svc.models.current = ItemFactors.build("t-v2", ids, factors)
    x = np.array([0.0, 0.0, 1.0], dtype=np.float32)  # points at item 2
    same = world.user(als_factors=x, als_model_version="t-v2")
    older = world.user(als_factors=x, als_model_version="t-v1")
    async with api_client(postgres, svc) as c:
        a = (await c.get(f"/v1/users/{same}/recommendations?k=3")).json()
        b = (await c.get(f"/v1/users/{older}/recommendations?k=3")).json()
    assert a["items"][0]["item_id"] == ids[2] and a["items"][0]["source"] == "realtime"
    assert a["model_version"] == "t-v2"
    assert all(i["source"] != "realtime" for i in b["items"]), b

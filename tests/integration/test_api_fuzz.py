"""The API under bad input: schemathesis over its own OpenAPI document, plus hand-picked nasties
(oversized bodies, unicode-heavy payloads, ids that look like SQL or paths).

The property is "no 5xx, ever": a client mistake is a specific 4xx, everything else a 2xx. The
server is the real app on a real uvicorn over loopback, backed by a scratch database (migrated,
a few seeded items), the shared Redis, and a private Kafka topic; requests are made with and
without a valid API key.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import numpy as np
import psycopg
import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis.errors import Unsatisfiable
from pgvector.psycopg import register_vector
from schemathesis import GenerationMode

from infra.postgres import scratch_database
from lambdarec.settings import Settings
from schemas import events as ev
from schemas.migrate import migrate
from serving.app import create_app
from serving.publisher import AsyncEventPublisher
from serving.security import create_key_sync
from tests.integration.events_support import consume_all, event_dict, serve, temp_topics

pytestmark = pytest.mark.integration


@dataclass
class Api:
    url: str
    key: str
    topic: str
    settings: Settings


def _seed(s: Settings) -> str:
    """A genre, ten items with embeddings, one user; returns a write key."""
    rng = np.random.default_rng(1)
    with psycopg.connect(s.postgres.url, autocommit=True) as c:
        register_vector(c)
        gid = c.execute(
            "INSERT INTO genres (name, slug) VALUES ('Drama', 'drama') RETURNING genre_id"
        ).fetchone()
        for i in range(10):
            v = rng.standard_normal(s.embedding.dim).astype(np.float32)
            c.execute(
                "INSERT INTO items (item_id, title, release_year, popularity_score, embedding) "
                "VALUES (%s, %s, 2000, %s, %s)",
                (f"i{i}", f"Title {i}", float(i), v / np.linalg.norm(v)),
            )
            c.execute("INSERT INTO item_genres (item_id, genre_id) VALUES (%s, %s)", (f"i{i}", gid[0]))  # type: ignore[index]
        c.execute("INSERT INTO user_profiles (user_id, data_usage_consent) VALUES ('u42', true)")
        return create_key_sync(c, "fuzz", ["write", "admin"], 10**9)


@pytest.fixture(scope="module")
def api(postgres: Settings, kafka: Settings, redis_service: Settings) -> Iterator[Api]:
    with scratch_database(postgres, prefix="lambdarec_fuzz") as db, temp_topics(kafka, 2) as (topic,):
        migrate(db)
        s = db.model_copy(
            update={
                "serving": db.serving.model_copy(
                    update={"require_api_keys": True, "anonymous_rate_limit_per_minute": 10**9}
                )
            }
        )
        key = _seed(s)
        publisher = AsyncEventPublisher(s, topic=topic)
        app = create_app(s, publisher=publisher)
        try:
            with serve(app) as url:
                yield Api(url, key, topic, s)
        finally:
            publisher.close()
            ev.configure(None)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_no_5xx_on_any_endpoint_with_or_without_key(api: Api, mode: str) -> None:
    """Every operation of the OpenAPI document, schemathesis-generated valid ("positive") or
    schema-violating ("negative") requests, each sent with and without a valid key.

    (schemathesis' pytest plugin, ``from_fixture``, breaks on pytest 9, so the operations'
    hypothesis strategies are driven directly.)"""
    schema = schemathesis.openapi.from_url(f"{api.url}/openapi.json")
    gen = GenerationMode.POSITIVE if mode == "positive" else GenerationMode.NEGATIVE
    failures: list[str] = []
    operations = [r.ok() for r in schema.get_all_operations()]
    assert len(operations) >= 8, [f"{o.method} {o.path}" for o in operations]

    for op in operations:

        @hsettings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(case=op.as_strategy(generation_mode=gen))
        def run(case: Any) -> None:
            for headers in ({"X-API-Key": api.key}, {}):
                response = case.call(base_url=api.url, headers=headers, timeout=20)
                assert response.status_code < 500, (
                    f"{case.method} {case.formatted_path} -> {response.status_code}: "
                    f"{response.text[:300]}\n  reproduce: {case.as_curl_command(headers=headers)}"
                )

        try:
            run()
        except Unsatisfiable:  # nothing to make invalid (e.g. GET /healthz has no parameters)
            assert mode == "negative", f"{op.method} {op.path}"
        except AssertionError as exc:
            failures.append(str(exc).splitlines()[0] + "\n" + "\n".join(str(exc).splitlines()[1:3]))
    assert not failures, "\n".join(failures)


# ----------------------------------------------------------------------------- hand-picked input
SQLISH = ["'; DROP TABLE items; --", "1' OR '1'='1", 'u"; SELECT pg_sleep(5); --', "%27%3B--", "$(id)"]
PATHISH = ["..", "../../etc/passwd", "..%2F..%2Fetc%2Fpasswd", "%2e%2e", "a\\..\\b", "~root", "%00"]


@pytest.mark.parametrize("user_id", SQLISH + PATHISH)
def test_sql_and_path_like_user_ids_are_just_ids(api: Api, user_id: str) -> None:
    h = {"X-API-Key": api.key}
    path = quote(user_id, safe="")
    with httpx.Client(base_url=api.url, timeout=20) as c:
        recs = c.get(f"/v1/users/{path}/recommendations")
        put = c.put(f"/v1/users/{path}/preferences", json={"favorite_genres": ["drama"]}, headers=h)
        got = c.get(f"/v1/users/{path}/preferences")
        sim = c.get(f"/v1/items/{path}/similar")
    for r in (recs, put, got, sim):
        assert r.status_code < 500, (r.request.url, r.status_code, r.text[:300])
    # the id pattern refuses '/', '?', '#' and whitespace; anything else is stored as typed
    if recs.status_code == 200:
        assert recs.json()["user_id"] == user_id
        assert put.status_code == 200 and got.json()["user_id"] == user_id, (put.text, got.text)
    else:
        assert recs.status_code in (404, 422), recs.text
    with psycopg.connect(api.settings.postgres.url) as conn:  # still there, still ten items
        assert conn.execute("SELECT count(*) FROM items").fetchone() == (10,)


def test_oversized_bodies_are_413_and_nothing_is_sent(api: Api) -> None:
    h = {"X-API-Key": api.key, "Content-Type": "application/json"}
    lim = api.settings.events
    before = len(consume_all(api.settings, api.topic))
    with httpx.Client(base_url=api.url, timeout=60) as c:
        huge = c.post("/v1/events", content=b"[" + b" " * (lim.max_request_bytes + 10) + b"]", headers=h)
        many = c.post("/v1/events", json=[event_dict(i) for i in range(lim.max_batch_size + 1)], headers=h)
        one_big = c.post("/v1/events", json=event_dict(1, context={"x": "y" * 3000}), headers=h)
        prefs = c.put(
            "/v1/users/u42/preferences",
            json={"favorite_genres": ["drama"] * 10_000},
            headers={"X-API-Key": api.key},
        )
    assert huge.status_code == 413 and "max_request_bytes" in huge.json()["detail"]
    assert many.status_code == 413 and str(lim.max_batch_size) in many.json()["detail"]
    assert one_big.status_code == 422 and one_big.json()["rejected"][0]["errors"][0]["field"] in (
        None,
        "context",
    )
    assert prefs.status_code == 422
    assert len(consume_all(api.settings, api.topic)) == before


def test_unicode_heavy_events_round_trip_through_kafka(api: Api) -> None:
    uid = "👩‍👩‍👧‍👦" * 10 + "ユーザー"  # multi-codepoint graphemes, 4-byte UTF-8, within 128 chars
    events = [
        event_dict(
            1, user_id=uid, item_id="映画-" + "é" * 100, context={"説明": "ñ" * 50, "emoji": "🎬" * 40}
        ),
        event_dict(2, user_id="\u202eRTL", item_id="z\u0301alg\u0327o"),  # bidi override, combining marks
        event_dict(3, user_id="x" * 129),  # one too long: this one alone is refused
        event_dict(4, user_id="a\\u0000b"),  # literal backslash-u, not a NUL: fine
    ]
    raw = json.dumps(events, ensure_ascii=False).encode()
    with httpx.Client(base_url=api.url, timeout=30) as c:
        r = c.post(
            "/v1/events", content=raw, headers={"X-API-Key": api.key, "Content-Type": "application/json"}
        )
        nul = c.post("/v1/events", json=event_dict(5, user_id="a\u0000b"), headers={"X-API-Key": api.key})
    assert r.status_code == 207, r.text
    body = r.json()
    assert [x["index"] for x in body["rejected"]] == [2] and body["rejected"][0]["errors"][0][
        "field"
    ] == "user_id"
    assert nul.status_code == 422 and nul.json()["rejected"][0]["errors"][0]["field"] == "user_id"
    landed = {
        str(e.event_id): e for e in (ev.decode(m.value()) for m in consume_all(api.settings, api.topic))
    }
    for i in (0, 1, 3):
        e = landed[events[i]["event_id"]]
        assert (e.user_id, e.item_id) == (events[i]["user_id"], events[i]["item_id"])
    assert landed[events[0]["event_id"]].context == events[0]["context"]


def test_malformed_bodies_are_specific_4xx(api: Api) -> None:
    h = {"X-API-Key": api.key, "Content-Type": "application/json"}
    bodies = [
        b"",
        b"{",
        b"[]",
        b"null",
        b"\xff\xfe\x00",
        b'{"a": 1e999999}',
        b"[" * 10_000,
        "🙂".encode() * 100,
    ]
    with httpx.Client(base_url=api.url, timeout=30) as c:
        for b in bodies:
            r = c.post("/v1/events", content=b, headers=h)
            assert r.status_code in (400, 413, 422), (b[:20], r.status_code, r.text[:300])
            assert r.json().get("detail") or r.json().get("rejected"), r.text
        bad_key = c.post("/v1/events", json=event_dict(1), headers={"X-API-Key": "lrk_" + "x" * 5000})
        assert bad_key.status_code in (401, 431), bad_key.text
        unknown = c.get(f"/v1/items/{uuid.uuid4()}/similar")
        assert unknown.status_code in (404, 503), unknown.text

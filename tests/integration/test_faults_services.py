"""Fault injection on the services: a broker restart, Postgres down for 20 s, Redis down, an API
worker SIGKILLed. Each test is bounded, runs on loopback and asserts what survived.

The service that is stopped is always a *private* instance (tests/faults_support.py: own free
ports, own var dir under /tmp), never the shared one on the default ports. What a test does
not stop it takes from the shared services (with its own topics, ids and keys, cleaned up).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
import psycopg
import pytest
from pgvector.psycopg import register_vector

from lambdarec.settings import PROJECT_ROOT, EventSettings, Settings
from schemas import events as ev
from schemas.topics import INTERACTIONS, topic_name
from serving.app import create_app
from serving.publisher import AsyncEventPublisher
from serving.security import create_key_sync
from streams.producer import EventProducer
from tests.faults_support import private_services, wait_for
from tests.integration.events_support import consume_all, event_dict, serve, temp_topics
from tests.ports import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(autouse=True)
def _reset_limits() -> Iterator[None]:
    yield
    ev.configure(None)  # create_app() sets process-wide event limits


# ---------------------------------------------------------------------------------------------
# seeded rows (private or shared Postgres): items with embeddings, a genre, two users
# ---------------------------------------------------------------------------------------------
class Seed:
    """Items ``{p}i0..i19`` (popularity = index), genre ``{p}g``, user ``{p}taste`` with a taste
    vector, user ``{p}batch`` with a batch list (only when ``batch_view``: it replaces the active
    batch run, so never on the shared database), and an API key with the write scope."""

    def __init__(self, settings: Settings, *, batch_view: bool) -> None:
        self.settings = settings
        self.p = f"flt{uuid.uuid4().hex[:8]}-"
        self.genre = f"{self.p}g"
        self.taste, self.batch = f"{self.p}taste", f"{self.p}batch"
        self.items = [f"{self.p}i{i}" for i in range(20)]
        dim = settings.embedding.dim
        rng = np.random.default_rng(3)
        with psycopg.connect(settings.postgres.url, autocommit=True) as c:
            register_vector(c)
            gid = c.execute(
                "INSERT INTO genres (name, slug) VALUES (%s, %s) RETURNING genre_id", (self.genre, self.genre)
            ).fetchone()[0]  # type: ignore[index]
            vecs = rng.standard_normal((20, dim)).astype(np.float32)
            vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
            for i, (iid, v) in enumerate(zip(self.items, vecs, strict=True)):
                c.execute(
                    "INSERT INTO items (item_id, title, release_year, popularity_score, embedding) "
                    "VALUES (%s, %s, 2000, %s, %s)",
                    (iid, f"Title {i}", float(i), v),
                )
                c.execute("INSERT INTO item_genres (item_id, genre_id) VALUES (%s, %s)", (iid, gid))
            for u, pref in ((self.taste, vecs[3]), (self.batch, None)):
                c.execute(
                    "INSERT INTO user_profiles (user_id, data_usage_consent, diversity_preference, "
                    "novelty_preference, preference_vector) VALUES (%s, true, 0, 0, %s)",
                    (u, pref),
                )
            if batch_view:
                run = c.execute(
                    "SELECT begin_batch_recommendations('als', %s, now() + interval '1 day')",
                    (f"{self.p}v1",),
                ).fetchone()[0]  # type: ignore[index]
                recs = json.dumps(
                    [{"item_id": self.items[7], "score": 0.9}, {"item_id": self.items[8], "score": 0.8}]
                )
                c.execute(
                    "INSERT INTO batch_recommendations (run_id, user_id, recommendations) "
                    "VALUES (%s, %s, %s)",
                    (run, self.batch, recs),
                )
                c.execute("SELECT publish_batch_recommendations(%s)", (run,))
            self.key = create_key_sync(c, f"{self.p}key", ["write"])

    def cleanup(self) -> None:
        with psycopg.connect(self.settings.postgres.url, autocommit=True) as c:
            for t in ("rt_user_interactions", "recommendation_logs", "user_profiles"):
                c.execute(f"DELETE FROM {t} WHERE user_id LIKE %s", (self.p + "%",))
            c.execute("DELETE FROM items WHERE item_id LIKE %s", (self.p + "%",))
            c.execute("DELETE FROM genres WHERE slug = %s", (self.genre,))
            c.execute("DELETE FROM api_keys WHERE name LIKE %s", (self.p + "%",))


def _unlimited(s: Settings) -> Settings:
    """No per-IP read limit: every client on this machine shares 127.0.0.1's bucket in the shared
    Redis, so a benchmark running next to the test would otherwise get it 429s."""
    return s.model_copy(
        update={"serving": s.serving.model_copy(update={"anonymous_rate_limit_per_minute": 10**9})}
    )


def _recs(client: httpx.Client, url: str, user: str, **params: Any) -> httpx.Response:
    return client.get(f"{url}/v1/users/{user}/recommendations", params={"k": 5, **params})


def _from_batch(answer: dict[str, Any]) -> set[str]:
    return {i["item_id"] for i in answer["items"] if i["source"] == "batch"}


# ---------------------------------------------------------------------------------------------
# 1. Kafka broker restart: the SDK keeps and retries, HTTP clients resend what was unconfirmed
# ---------------------------------------------------------------------------------------------
def test_kafka_restart_sdk_and_http_ingest_lose_nothing(kafka: Settings) -> None:
    with private_services(kafka, ["kafka"]) as ps:
        s = ps.settings
        s = s.model_copy(
            update={
                "serving": s.serving.model_copy(update={"require_api_keys": False}),
                "events": EventSettings(ingest_delivery_timeout_ms=4000, delivery_timeout_ms=60_000),
            }
        )
        topic = topic_name(s, INTERACTIONS)
        stop = threading.Event()
        sdk_ids: list[str] = []
        http_ok: list[str] = []
        http_unconfirmed: list[int] = []
        errors: list[str] = []

        def sdk() -> None:
            try:
                with EventProducer(s, config={"linger.ms": 5}) as p:
                    i = 0
                    while not stop.is_set():
                        e = ev.decode(ev_json(event_dict(i)))
                        p.send(e)
                        sdk_ids.append(str(e.event_id))
                        i += 1
                        time.sleep(0.005)
            except Exception as exc:  # DeliveryError on close = events lost
                errors.append(f"sdk: {exc!r}")

        def http(url: str) -> None:
            with httpx.Client(timeout=30) as client:
                i = 0
                while not stop.is_set():
                    batch = [event_dict(10_000 + i * 10 + j) for j in range(10)]
                    i += 1
                    for attempt in range(30):  # what a well-behaved client does with a 503
                        r = client.post(f"{url}/v1/events", json=batch)
                        if r.status_code == 202:
                            http_ok.extend(r.json()["accepted"])
                            break
                        if r.status_code != 503:
                            errors.append(f"http {r.status_code}: {r.text[:300]}")
                            return
                        body = r.json()
                        http_ok.extend(body["accepted"])
                        http_unconfirmed.append(len(body["unconfirmed"]))
                        again = {u["event_id"] for u in body["unconfirmed"]}
                        batch = [e for e in batch if e["event_id"] in again]
                        time.sleep(min(0.5 * (attempt + 1), 2.0))
                    else:
                        errors.append(f"http: batch {i} never acknowledged")
                    time.sleep(0.05)

        app = create_app(s)
        with serve(app) as url:
            threads = [threading.Thread(target=sdk), threading.Thread(target=http, args=(url,))]
            for t in threads:
                t.start()
            time.sleep(3)
            ps.stop("kafka")
            was_down = not ps.healthy("kafka")
            time.sleep(3)
            restart_s = ps.start("kafka")
            time.sleep(4)  # traffic after the broker is back
            stop.set()
            for t in threads:
                t.join(timeout=90)
            assert not any(t.is_alive() for t in threads), "a producer hung after the restart"

        assert was_down
        assert not errors, errors
        assert http_unconfirmed, "the restart never made ingest answer 503: the fault did not happen"
        landed = {str(ev.decode(m.value()).event_id) for m in consume_all(s, topic, timeout=60)}
        missing_sdk = set(sdk_ids) - landed
        missing_http = set(http_ok) - landed
        assert not missing_sdk, f"{len(missing_sdk)} of {len(sdk_ids)} SDK events lost"
        assert not missing_http, f"{len(missing_http)} of {len(http_ok)} acknowledged HTTP events lost"
        assert len(sdk_ids) > 500 and len(http_ok) > 100, (len(sdk_ids), len(http_ok))
        print(f"kafka restart {restart_s:.1f}s; sdk {len(sdk_ids)}, http {len(http_ok)} events, all landed")


def ev_json(d: dict[str, Any]) -> bytes:
    import orjson

    return orjson.dumps(d)


# ---------------------------------------------------------------------------------------------
# 2. Postgres down for 20 s: cached and fallback lists, ingest into Kafka continues
# ---------------------------------------------------------------------------------------------
def test_postgres_down_20s_api_degrades_and_ingest_continues(
    kafka: Settings, redis_service: Settings
) -> None:
    with private_services(redis_service, ["postgres"]) as ps, temp_topics(kafka, 2) as (topic,):
        s = _unlimited(ps.settings)
        seed = Seed(s, batch_view=True)
        publisher = AsyncEventPublisher(s, topic=topic)
        app = create_app(s, publisher=publisher)
        headers = {"X-API-Key": seed.key}
        try:
            with serve(app) as url, httpx.Client(timeout=10) as client:
                wait_for(lambda: client.get(f"{url}/readyz").status_code == 200, 20, "API ready")
                assert _recs(client, url, seed.taste).json()["degraded"] is False
                warm_taste = _recs(client, url, seed.taste).json()
                warm_batch = _recs(client, url, seed.batch).json()
                assert (
                    warm_taste.get("cache_hit") is True and warm_taste["items"][0]["item_id"] == seed.items[3]
                ), warm_taste
                assert (
                    seed.items[7] in _from_batch(warm_batch) and warm_batch["model_version"] == f"{seed.p}v1"
                )
                warm_pop = client.get(f"{url}/v1/popular", params={"genre": seed.genre})
                assert warm_pop.status_code == 200 and warm_pop.json()["items"], warm_pop.text
                assert client.post(f"{url}/v1/events", json=event_dict(0), headers=headers).status_code == 202

                ps.stop("postgres")
                assert not ps.healthy("postgres")
                t_end = time.monotonic() + 20
                seen: dict[str, list[int]] = {"taste": [], "batch": [], "new": [], "popular": [], "ready": []}
                accepted: list[str] = []
                slowest, n = 0.0, 0
                while time.monotonic() < t_end:
                    t0 = time.monotonic()
                    taste = _recs(client, url, seed.taste)
                    batch = _recs(client, url, seed.batch)
                    new = _recs(client, url, f"{seed.p}new{n}")
                    pop = client.get(f"{url}/v1/popular", params={"genre": seed.genre})
                    ready = client.get(f"{url}/readyz")
                    r = client.post(f"{url}/v1/events", json=[event_dict(n + 1)], headers=headers)
                    slowest = max(slowest, (time.monotonic() - t0) / 6)
                    for k, resp in zip(seen, (taste, batch, new, pop, ready), strict=True):
                        seen[k].append(resp.status_code)
                    assert r.status_code == 202, r.text
                    accepted += r.json()["accepted"]
                    # cached lists come back unchanged; new users get the last popular list
                    assert taste.json()["items"] == warm_taste["items"]
                    assert batch.json()["items"] == warm_batch["items"]
                    assert new.json()["degraded"] is True and new.json()["items"], new.text
                    # the popular list the API holds in process (fresh for 30 s, titles from its
                    # item catalog) needs no Postgres: the same items, degraded or not
                    assert [i["item_id"] for i in pop.json()["items"]] == [
                        i["item_id"] for i in warm_pop.json()["items"]
                    ], pop.text
                    n += 1
                    time.sleep(0.2)
                for k in ("taste", "batch", "new", "popular"):
                    assert set(seen[k]) == {200}, (k, seen[k])
                assert set(seen["ready"]) == {503}  # readiness says it, liveness would not
                assert slowest < 2.0, f"a request took {slowest:.2f}s while Postgres was down"
                assert n >= 5

                ps.start("postgres")
                took = wait_for(
                    lambda: (
                        _recs(client, url, f"{seed.p}after{time.monotonic()}").json()["degraded"] is False
                    ),
                    30,
                    "fresh, non-degraded lists after Postgres is back",
                )
                assert client.get(f"{url}/readyz").status_code == 200
                fresh = _recs(client, url, seed.batch, k=4).json()  # another k: not from the cache
                assert fresh["degraded"] is False and seed.items[7] in _from_batch(fresh)
        finally:
            publisher.close()
        landed = {str(ev.decode(m.value()).event_id) for m in consume_all(kafka, topic)}
        assert set(accepted) <= landed and len(accepted) == n
        print(f"postgres down 20 s: {n} rounds, slowest {slowest * 1000:.0f} ms, recovered in {took:.1f}s")


# ---------------------------------------------------------------------------------------------
# 3. Redis down: lists are served uncached (not degraded), keys and rate limits still work
# ---------------------------------------------------------------------------------------------
def test_redis_down_api_serves_uncached(postgres: Settings, kafka: Settings) -> None:
    with private_services(postgres, ["redis"]) as ps, temp_topics(kafka, 1) as (topic,):
        s = _unlimited(ps.settings)
        seed = Seed(s, batch_view=False)
        publisher = AsyncEventPublisher(s, topic=topic)
        app = create_app(s, publisher=publisher)
        try:
            with serve(app) as url, httpx.Client(timeout=10) as client:
                wait_for(lambda: client.get(f"{url}/readyz").status_code == 200, 20, "API ready")
                assert _recs(client, url, seed.taste).json()["degraded"] is False
                assert _recs(client, url, seed.taste).json()["cache_hit"] is True

                ps.stop("redis")
                statuses, hits, degraded, slowest = [], [], [], 0.0
                t_end = time.monotonic() + 6
                while time.monotonic() < t_end:
                    t0 = time.monotonic()
                    r = _recs(client, url, seed.taste)
                    slowest = max(slowest, time.monotonic() - t0)
                    statuses.append(r.status_code)
                    if r.status_code == 200:
                        hits.append(r.json()["cache_hit"])
                        degraded.append(r.json()["degraded"])
                        assert r.json()["items"][0]["item_id"] == seed.items[3]
                    time.sleep(0.1)
                post = client.post(f"{url}/v1/events", json=event_dict(1), headers={"X-API-Key": seed.key})
                assert set(statuses) == {200}, statuses
                assert not any(hits) and not any(degraded)
                assert slowest < 1.5, f"{slowest:.2f}s per request without Redis"
                assert post.status_code == 202, post.text

                ps.start("redis")
                wait_for(
                    lambda: _recs(client, url, seed.taste).json()["cache_hit"] is True, 20, "cache used again"
                )
        finally:
            publisher.close()
            seed.cleanup()


# ---------------------------------------------------------------------------------------------
# 4. One of two uvicorn workers SIGKILLed: requests keep succeeding, the worker is replaced
# ---------------------------------------------------------------------------------------------
def _workers(proc: subprocess.Popen[bytes]) -> list[psutil.Process]:
    """uvicorn's worker processes (children of the supervisor that are not its helpers)."""
    out = []
    for c in psutil.Process(proc.pid).children():
        try:
            if "multiprocessing.resource_tracker" not in " ".join(c.cmdline()):
                out.append(c)
        except psutil.Error:
            pass
    return out


def test_api_worker_sigkill_requests_keep_succeeding(
    postgres: Settings, redis_service: Settings, tmp_path: Path
) -> None:
    seed = Seed(postgres, batch_view=False)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAMBDAREC_")}
    env.update(postgres.as_env())  # every setting, as this process has them
    env["LAMBDAREC_SERVING__ANONYMOUS_RATE_LIMIT_PER_MINUTE"] = str(10**9)
    log = tmp_path / "api.log"
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("lambdarec")), "serve", "--port", str(port), "--workers", "2"],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        cwd=PROJECT_ROOT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    # no keep-alive: every request is a new connection, as many clients behind a balancer are
    limits = httpx.Limits(max_keepalive_connections=0)
    try:
        with httpx.Client(timeout=5, limits=limits) as client:

            def ok() -> bool:
                try:
                    return len(_workers(proc)) == 2 and _recs(client, url, seed.taste).status_code == 200
                except httpx.TransportError:
                    return False

            wait_for(ok, 60, f"API with 2 workers on :{port} (log {log})")
            before = {p.pid for p in _workers(proc)}
            statuses: list[int] = []
            transport_errors: list[str] = []
            killed: int | None = None
            t0 = time.monotonic()
            while time.monotonic() - t0 < 10:
                if killed is None and time.monotonic() - t0 > 2:
                    killed = sorted(before)[0]
                    os.kill(killed, signal.SIGKILL)
                try:
                    statuses.append(_recs(client, url, seed.taste).status_code)
                except httpx.TransportError as exc:
                    transport_errors.append(repr(exc))
                time.sleep(0.02)
            assert proc.poll() is None, log.read_text()[-3000:]
            wait_for(lambda: len(_workers(proc)) == 2, 30, f"a replacement worker (log {log})")
            after = {p.pid for p in _workers(proc)}
            tail = [_recs(client, url, seed.taste).status_code for _ in range(30)]
        assert killed not in after and len(after - before) == 1
        assert set(statuses) == {200}, statuses
        # only requests in flight on the killed worker may break (none here: no keep-alive, and
        # the kernel stops handing new connections to a dead process)
        assert len(transport_errors) <= 1, transport_errors
        assert len(statuses) > 100 and set(tail) == {200}
    finally:
        with_kill = proc.poll() is None
        if with_kill:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        seed.cleanup()

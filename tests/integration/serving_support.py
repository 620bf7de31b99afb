"""Harness for the serving API's integration tests and ``benchmarks/bench_serving.py --freshness``.

* :class:`World` / :func:`seeded_world`: a small catalog (ten items, one genre), users and API
  keys under a random prefix in the database of the given settings (the shared one or a scratch
  one), deleted afterwards.
* :func:`api_client`: the API in process, its lifespan run as under uvicorn, behind an httpx
  client.
* :func:`changed_list_latencies`: the event -> changed-list loop of the freshness test and bench.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import numpy as np
import psycopg
from pgvector.psycopg import register_vector

from lambdarec.settings import Settings
from schemas import events as ev
from schemas.events import EventType, InteractionEvent
from schemas.migrate import connect
from serving.app import create_app
from serving.recommend import Services
from serving.security import create_key_sync
from streams.producer import EventProducer
from tests.integration.stream_support import StreamEnv


class World:
    """Seeded rows: items ``{p}i0..i9`` (popularity = index, release year 1990 + index, random
    unit embeddings), all in genre ``{p}g``; users and API keys made on demand."""

    def __init__(self, conn: psycopg.Connection, dim: int, prefix: str = "srvt") -> None:
        tag = uuid.uuid4().hex[:8]
        self.p = f"{prefix}{tag}-"
        self.conn = conn
        # embeddings of its own (seeded by the prefix, so a run can be replayed): another run's
        # world in the shared database must not hold an identical vector, a tie for the nearest
        rng = np.random.default_rng(int(tag, 16))
        self.emb: dict[str, np.ndarray] = {}
        self.genre = f"{self.p}g".lower()
        gid = conn.execute(
            "INSERT INTO genres (name, slug) VALUES (%s, %s) RETURNING genre_id",
            (f"Genre {self.p}", self.genre),
        ).fetchone()[0]  # type: ignore[index]
        for i in range(10):
            v = rng.standard_normal(dim).astype(np.float32)
            v /= np.linalg.norm(v)
            iid = f"{self.p}i{i}"
            self.emb[iid] = v
            conn.execute(
                "INSERT INTO items (item_id, title, release_year, popularity_score, embedding) "
                "VALUES (%s, %s, %s, %s, %s)",
                (iid, f"Title {i}", 1990 + i, float(i), v),
            )
            conn.execute("INSERT INTO item_genres (item_id, genre_id) VALUES (%s, %s)", (iid, gid))
        self.users: list[str] = []

    def user(self, **cols: object) -> str:
        """A consenting user with neutral preferences; ``cols`` set or override profile columns."""
        uid = f"{self.p}u{len(self.users)}"
        self.users.append(uid)
        cols = {"data_usage_consent": True, "diversity_preference": 0.0, "novelty_preference": 0.0, **cols}
        names = ", ".join(cols)
        self.conn.execute(
            f"INSERT INTO user_profiles (user_id, {names}) VALUES (%s, {', '.join(['%s'] * len(cols))})",
            (uid, *cols.values()),
        )
        return uid

    def key(self, name: str, scopes: list[str], rate_limit: int = 100_000) -> str:
        """A new API key named ``{p}{name}`` (deleted with the world); returns the key."""
        return create_key_sync(self.conn, f"{self.p}{name}", scopes, rate_limit)

    def cleanup(self) -> None:
        c = self.conn
        for u in self.users:
            c.execute("DELETE FROM rt_user_interactions WHERE user_id = %s", (u,))
            c.execute("DELETE FROM recommendation_logs WHERE user_id = %s", (u,))
            c.execute("DELETE FROM user_profiles WHERE user_id = %s", (u,))
        c.execute("DELETE FROM popularity_metrics WHERE item_id LIKE %s", (self.p + "%",))
        c.execute("DELETE FROM items WHERE item_id LIKE %s", (self.p + "%",))
        c.execute("DELETE FROM genres WHERE slug = %s", (self.genre,))
        c.execute("DELETE FROM api_keys WHERE name LIKE %s", (self.p + "%",))


@contextlib.contextmanager
def seeded_world(settings: Settings, prefix: str = "srvt") -> Iterator[World]:
    """A :class:`World` in ``settings``' database over its own autocommit connection; its rows
    are deleted afterwards (the shared database is shared with the other areas' tests)."""
    conn = connect(settings)
    conn.autocommit = True
    register_vector(conn)
    w = World(conn, settings.embedding.dim, prefix)
    try:
        yield w
    finally:
        w.cleanup()
        conn.close()
        ev.configure(None)  # an app the test built itself configured the event limits process-wide


@contextlib.asynccontextmanager
async def api_client(
    settings: Settings, services: Services | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """The API in process behind an httpx client, once its pool is ready; ``c.app`` is the app.

    ``services``: injected resources (a hand-made model, no registry load or watcher). The
    lifespan leaves those to their owner, so their pool is opened here and pool and cache are
    closed after."""
    app = create_app(settings, services=services)
    try:
        async with contextlib.AsyncExitStack() as stack:
            if services is not None:
                stack.push_async_callback(services.cache.close)
                await services.pool.open()
                stack.push_async_callback(services.pool.close)
            await stack.enter_async_context(app.router.lifespan_context(app))
            # the read endpoints' per-IP rate limit counts in the shared Redis: a loopback address
            # of its own, so a wrk run (or another test) from 127.0.0.1 cannot use up its bucket
            peer = ".".join(str(b) for b in (127, *uuid.uuid4().bytes[:3]))
            transport = httpx.ASGITransport(app=app, client=(peer, 50_000))
            c = await stack.enter_async_context(httpx.AsyncClient(transport=transport, base_url="http://t"))
            await app.state.services.pool.wait(timeout=10)
            c.app = app  # type: ignore[attr-defined]
            yield c
    finally:
        ev.configure(None)  # create_app made the app's event limits the process-wide ones


@dataclass
class ChangedList:
    """One user's turn in :func:`changed_list_latencies`."""

    user: str
    watched: str
    before: dict[str, Any]  # the cached popular list, as served before the event
    after: dict[str, Any]  # the first personalised answer (or the last poll, after 30 s)
    seconds: float  # event produced -> ``after`` served


async def changed_list_latencies(se: StreamEnv, n: int) -> list[ChangedList]:
    """Event produced -> the next response reflects it, for ``n`` new users in turn.

    ``se`` has a published model and a running worker. The API runs in process with the cache
    on; a warm-up event first (the producer is connected, the worker owns its partitions and
    has applied a batch). Then per user: its popular list is served and cached, one ``play`` is
    produced and the list polled every 10 ms until it is personalised (30 s at most). The clock
    starts before the produce, so the figure includes the client side of it.
    """
    users = [f"fresh-{uuid.uuid4().hex[:8]}" for _ in range(n)]
    with se.pg() as conn:
        for u in users:
            conn.execute("INSERT INTO user_profiles (user_id, data_usage_consent) VALUES (%s, true)", (u,))
    out: list[ChangedList] = []
    async with api_client(se.settings) as c:
        svc = c.app.state.services  # type: ignore[attr-defined]
        deadline = time.monotonic() + 60
        while svc.models.current is None and time.monotonic() < deadline:  # the watcher loads it
            await asyncio.sleep(0.2)
        producer = se.producer()  # one long-lived producer, as an application has
        try:
            warm = _play(f"warm-{uuid.uuid4().hex[:8]}", se.item_ids[0])
            await asyncio.to_thread(_send, producer, warm)
            sql = "SELECT count(*) FROM rt_user_interactions WHERE user_id = %s"
            await asyncio.to_thread(
                se.wait_for, lambda: se.scalar(sql, warm.user_id) == 1, 60, "warm-up event applied"
            )
            for i, u in enumerate(users):
                url = f"/v1/users/{u}/recommendations?k=5"
                before = (await c.get(url)).json()
                assert (await c.get(url)).json()["cache_hit"] is True, "the popular list was not cached"
                watched = se.item_ids[(i * 7) % len(se.item_ids)]
                t0 = time.monotonic()
                await asyncio.to_thread(_send, producer, _play(u, watched))
                after = before
                while time.monotonic() - t0 < 30:
                    after = (await c.get(url)).json()
                    if after["algorithm_source"] != "popular":
                        break
                    await asyncio.sleep(0.01)
                out.append(ChangedList(u, watched, before, after, time.monotonic() - t0))
        finally:
            producer.close()
    return out


def _play(user: str, item: str) -> InteractionEvent:
    return InteractionEvent(
        event_id=uuid.uuid4(), user_id=user, item_id=item, type=EventType.PLAY, occurred_at=datetime.now(UTC)
    )


def _send(producer: EventProducer, event: InteractionEvent) -> None:
    producer.send(event)
    producer.flush(10)

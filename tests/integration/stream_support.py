"""Harness for the speed-layer integration tests and ``benchmarks/bench_stream.py``.

Every run gets its own world, so runs are independent of each other and of anything else on the
shared services: a scratch Postgres database (migrated, with a small embedding dimension and a
seeded catalog), a unique topic prefix (all project topics created fresh), a unique faust app id
(consumer group + changelog topics) and its own table directory. Workers are real
``lambdarec stream worker`` subprocesses configured through ``LAMBDAREC_*`` variables, so a test
can SIGKILL one.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from pgvector.psycopg import register_vector

from infra.postgres import scratch_database
from lambdarec.settings import PROJECT_ROOT, Settings
from schemas.events import EventType, InteractionEvent
from schemas.migrate import migrate
from schemas.model_snapshot import ModelSnapshot, save_snapshot
from schemas.model_updates import ModelUpdate
from schemas.model_updates import encode as encode_update
from schemas.topics import INTERACTIONS, MODEL_UPDATES, topic_configs, topic_name
from streams.producer import EventProducer
from tests.ports import free_port

LAMBDAREC = str(PROJECT_ROOT / ".venv" / "bin" / "lambdarec")


@dataclass
class Worker:
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
            return r.read().decode()

    def alive(self) -> bool:
        return self.proc.poll() is None


@dataclass
class StreamEnv:
    settings: Settings
    tmp: Path
    env: dict[str, str]
    item_ids: list[str]
    workers: list[Worker] = field(default_factory=list)

    # ------------------------------------------------------------------ workers
    def start_worker(self, *, port: int | None = None, wait: bool = True) -> Worker:
        """A ``lambdarec stream worker`` subprocess; the same ``port`` reuses its local tables."""
        port = port or free_port()
        log = self.tmp / f"worker-{port}-{len(self.workers)}.log"
        proc = subprocess.Popen(
            [LAMBDAREC, "stream", "worker", "--web-port", str(port), "--loglevel", "warning"],
            env=self.env,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            cwd=PROJECT_ROOT,
        )
        w = Worker(port, proc, log)
        self.workers.append(w)
        if wait:
            self.wait_for(lambda: _ready(w), 90, f"worker on :{port} up (log {log})")
        return w

    def kill(self, w: Worker, sig: int = signal.SIGKILL) -> None:
        if w.alive():
            w.proc.send_signal(sig)
            try:
                w.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                w.proc.kill()
                w.proc.wait(timeout=10)

    # ------------------------------------------------------------------ data
    def producer(self) -> EventProducer:
        return EventProducer(self.settings, config={"linger.ms": 20})

    def produce(self, events: Iterable[InteractionEvent]) -> int:
        n = 0
        with self.producer() as p:
            for e in events:
                p.send(e)
                n += 1
        return n

    def pg(self) -> psycopg.Connection[Any]:
        conn = psycopg.connect(self.settings.postgres.url, autocommit=True)
        register_vector(conn)
        return conn

    def scalar(self, sql: str, *args: Any) -> Any:
        with self.pg() as conn:
            row = conn.execute(sql, args).fetchone()
            return row[0] if row else None

    def rt_count(self) -> int:
        return int(self.scalar("SELECT count(*) FROM rt_user_interactions"))

    def wait_for(self, cond: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if cond():
                return
            for w in self.workers:
                if not w.alive() and w.proc.returncode not in (-signal.SIGKILL, -signal.SIGTERM, 0):
                    raise RuntimeError(
                        f"worker :{w.port} died ({w.proc.returncode}): {w.log.read_text()[-3000:]}"
                    )
            time.sleep(0.2)
        logs = "\n".join(f"--- {w.log}\n{w.log.read_text()[-2000:]}" for w in self.workers)
        raise TimeoutError(f"not within {timeout}s: {what}\n{logs}")

    def profiles(self) -> dict[str, dict[str, Any]]:
        with self.pg() as conn:
            rows = conn.execute(
                "SELECT user_id, total_interactions, last_interaction_at, preference_vector, als_factors,"
                " als_model_version FROM user_profiles"
            ).fetchall()
        out = {}
        for u, n, last, pref, als, ver in rows:
            out[u] = {
                "n": n,
                "last": last,
                "pref": as_array(pref),
                "als": as_array(als),
                "als_version": ver,
            }
        return out


def as_array(v: Any) -> np.ndarray | None:
    if v is None:
        return None
    return np.asarray(v.to_numpy() if hasattr(v, "to_numpy") else v, dtype=np.float32)


def _ready(w: Worker) -> bool:
    if not w.alive():
        raise RuntimeError(f"worker exited {w.proc.returncode}: {w.log.read_text()[-3000:]}")
    try:
        return "lambdarec_stream_events" in w.metrics()
    except OSError:
        return False


def make_events(
    n: int,
    *,
    users: int,
    items: list[str],
    seed: int = 0,
    start: datetime | None = None,
    rec_every: int = 0,
) -> list[InteractionEvent]:
    """``n`` valid events over ``users`` users (Zipf-ish), spread over the last hour."""
    rng = np.random.default_rng(seed)
    start = start or datetime.now(UTC) - timedelta(hours=1)
    types = ["view", "view", "view", "click", "play", "like", "dislike", "rate", "save"]
    u = np.minimum(rng.zipf(1.3, n) - 1, users - 1)
    it = rng.integers(0, len(items), n)
    ty = rng.integers(0, len(types), n)
    secs = np.sort(rng.uniform(0, 3500, n))
    out = []
    for k in range(n):
        typ = types[ty[k]]
        rec = rec_every and k % rec_every == 0
        out.append(
            InteractionEvent(
                event_id=uuid.UUID(bytes=rng.bytes(16), version=4),
                user_id=f"user-{u[k]}",
                item_id=items[it[k]],
                type=EventType(typ),
                occurred_at=start + timedelta(seconds=float(secs[k])),
                rating=float(rng.integers(2, 11)) / 2 if typ == "rate" else None,
                rec_id=f"rec-{k}" if rec else None,
                position=int(k % 10) if rec else None,
            )
        )
    return out


def _create_topics(settings: Settings, partitions: int) -> list[str]:
    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap_servers})
    specs = [
        NewTopic(
            name,
            num_partitions=1 if "model-updates" in name else partitions,
            replication_factor=1,
            config=cfg,
        )
        for name, _, cfg in topic_configs(settings)
    ]
    for f in admin.create_topics(specs).values():
        f.result(timeout=30)
    names = [s.topic for s in specs]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        md = admin.list_topics(timeout=5).topics
        if all(n in md and md[n].partitions for n in names):
            break
        time.sleep(0.1)
    return names


def _delete_topics(settings: Settings, prefixes: tuple[str, ...]) -> None:
    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap_servers})
    names = [t for t in admin.list_topics(timeout=10).topics if t.startswith(prefixes)]
    if names:
        for f in admin.delete_topics(names).values():
            with contextlib.suppress(Exception):
                f.result(timeout=30)


def seed_items(settings: Settings, n: int, dim: int, seed: int = 0) -> list[str]:
    """``n`` catalog items with random unit embeddings; returns their ids."""
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(n, dim)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    ids = [f"item-{i}" for i in range(n)]
    with psycopg.connect(settings.postgres.url) as conn:
        register_vector(conn)
        with (
            conn.cursor() as cur,
            cur.copy("COPY items (item_id, title, embedding) FROM STDIN (FORMAT BINARY)") as cp,
        ):
            cp.set_types(["varchar", "varchar", "vector"])
            for i, e in zip(ids, emb, strict=True):
                cp.write_row((i, f"Item {i}", e))
    return ids


@contextlib.contextmanager
def stream_env(
    base: Settings,
    tmp: Path,
    *,
    partitions: int = 4,
    dim: int = 32,
    n_items: int = 300,
    store: str = "rocksdb",
    extra_env: dict[str, str] | None = None,
) -> Iterator[StreamEnv]:
    """A private world for one test or benchmark run (see module docstring); cleaned up after."""
    tag = uuid.uuid4().hex[:10]
    prefix = f"test.stream-{tag}."
    app_id = f"test-speed-{tag}"
    db_base = base.model_copy(update={"embedding": base.embedding.model_copy(update={"dim": dim})})
    with scratch_database(db_base, prefix="lambdarec_stream") as s:
        s = s.model_copy(
            update={
                "kafka": s.kafka.model_copy(update={"topic_prefix": prefix, "partitions": partitions}),
                "stream": s.stream.model_copy(
                    update={"app_id": app_id, "tables_dir": tmp / "tables", "store": store}
                ),
            }
        )
        migrate(s)
        items = seed_items(s, n_items, dim)
        _create_topics(s, partitions)
        # every setting of this private world (Settings.as_env), never the caller's LAMBDAREC_*
        env = {k: v for k, v in os.environ.items() if not k.startswith("LAMBDAREC_")}
        env.update({**s.as_env(), **(extra_env or {})})
        se = StreamEnv(s, tmp, env, items)
        try:
            yield se
        finally:
            for w in se.workers:
                se.kill(w, signal.SIGTERM)
            _delete_topics(s, (prefix, app_id))


def interactions_topic(settings: Settings) -> str:
    return topic_name(settings, INTERACTIONS)


def publish_model(se: StreamEnv, version: str, *, rank: int = 8, seed: int = 0) -> str:
    """Save an ALS snapshot over the env's items and announce it on model-updates; returns its URI."""
    rng = np.random.default_rng(seed)
    snap = ModelSnapshot(
        version,
        se.settings.stream.model_algorithm,
        np.array(["someone"]),
        np.array(se.item_ids),
        rng.normal(size=(1, rank)).astype(np.float32),
        (rng.normal(size=(len(se.item_ids), rank)) * 0.3).astype(np.float32),
        params={"alpha": 1.0, "reg_param": 0.1},
    )
    uri = str(se.tmp / "models" / version)
    save_snapshot(snap, uri)
    update = ModelUpdate(
        algorithm=snap.algorithm, model_version=version, snapshot_uri=uri, promoted_at=datetime.now(UTC)
    )
    p = Producer({"bootstrap.servers": se.settings.kafka.bootstrap_servers})
    p.produce(topic_name(se.settings, MODEL_UPDATES), encode_update(update), snap.algorithm.encode())
    assert p.flush(30) == 0
    return uri


def produce_raw(se: StreamEnv, values: list[bytes], key: bytes = b"user-bad") -> None:
    """Records that bypass the SDK's validation (to exercise the DLQ)."""
    p = Producer({"bootstrap.servers": se.settings.kafka.bootstrap_servers})
    for v in values:
        p.produce(interactions_topic(se.settings), v, key)
    assert p.flush(30) == 0


def committed_all(se: StreamEnv) -> bool:
    """True when the workers' consumer group has committed every record of interactions."""
    from confluent_kafka import Consumer, TopicPartition

    topic = interactions_topic(se.settings)
    c = Consumer(
        {
            "bootstrap.servers": se.settings.kafka.bootstrap_servers,
            "group.id": se.settings.stream.app_id,
            "enable.auto.commit": False,
        }
    )
    try:
        parts = list(c.list_topics(topic, timeout=10).topics[topic].partitions)
        committed = c.committed([TopicPartition(topic, q) for q in parts], timeout=10)
        for tp in committed:
            hi = c.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=10)[1]
            if hi > 0 and tp.offset < hi:
                return False
        return True
    finally:
        c.close()


def metric(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels`` in a /metrics page."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        head, _, value = line.rpartition(" ")
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total


def members_with_interactions(se: StreamEnv) -> int:
    """How many members of the workers' consumer group currently own an interactions partition
    (0 while the group is rebalancing): the test waits on this, not on timing."""
    from confluent_kafka import ConsumerGroupState
    from confluent_kafka.admin import AdminClient

    topic = interactions_topic(se.settings)
    admin = AdminClient({"bootstrap.servers": se.settings.kafka.bootstrap_servers})
    fut = admin.describe_consumer_groups([se.settings.stream.app_id], request_timeout=10)
    desc = fut[se.settings.stream.app_id].result(timeout=15)
    if desc.state != ConsumerGroupState.STABLE:
        return 0
    return sum(
        any(tp.topic == topic for tp in (m.assignment.topic_partitions if m.assignment else []))
        for m in desc.members
    )

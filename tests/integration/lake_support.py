"""Helpers for the test_lake_* integration tests: private topics and lake roots, a fault proxy.

:class:`S3FaultProxy` is a small HTTP forwarder on loopback in front of the shared MinIO. Tests point
``LAMBDAREC_S3__ENDPOINT_URL`` at it and then

* stop and restart it to simulate an object-store outage (connections refused), without touching
  the shared MinIO that other engineers use;
* arm ``on_commit`` to run a callback (e.g. SIGKILL the archiver) when a Delta log commit object
  is about to be written: every data file of that commit has been uploaded by then, so this is
  exactly "files written, commit not done", deterministic and with no test hook in product code.

The Host header is forwarded unchanged, so SigV4 signatures (which cover it) stay valid.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import random
import re
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlparse

from confluent_kafka import Producer
from confluent_kafka.admin import NewTopic

from infra.s3 import s3_client
from lambdarec.settings import Settings
from schemas.dead_letters import DeadLetter, Reason, encode_dead_letter
from tests.integration.events_support import created_topics, end_offsets
from tests.ports import free_port

#: a Delta commit: ``_delta_log/00000000000000000012.json`` (or delta-rs' temp commit file)
COMMIT_KEY = re.compile(r"/_delta_log/(\d{20}\.json|_commit_[^/]+)$")
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "upgrade"}


class S3FaultProxy:
    """Forward HTTP to ``upstream``; can go down/up and fire a callback on Delta commits."""

    def __init__(self, upstream: str, port: int | None = None) -> None:
        u = urlparse(upstream)
        self.upstream_host = u.hostname or "127.0.0.1"
        self.upstream_port = u.port or 80
        self.port = port or free_port()
        self.on_commit: Callable[[str, str], bool] | None = None  # (method, path) -> drop request?
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # quiet
                pass

            def setup(self) -> None:
                super().setup()
                with proxy._lock:
                    proxy._open.add(self.connection)

            def finish(self) -> None:
                with contextlib.suppress(OSError):
                    super().finish()
                with proxy._lock:
                    proxy._open.discard(self.connection)

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                path = urlparse(self.path).path
                proxy.requests.append((self.command, self.path, dict(self.headers.items())))
                hook = proxy.on_commit
                is_commit = self.command in ("PUT", "POST") and COMMIT_KEY.search(path)
                if is_commit and hook is not None and hook(self.command, self.path):
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                conn = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port, timeout=60)
                try:
                    conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                    for k, v in self.headers.items():
                        if k.lower() not in _HOP_BY_HOP:
                            conn.putheader(k, v)
                    conn.endheaders(body)
                    resp = conn.getresponse()
                    data = resp.read()
                    self.send_response_only(resp.status, resp.reason)
                    for k, v in resp.getheaders():
                        if k.lower() not in _HOP_BY_HOP and k.lower() != "content-length":
                            self.send_header(k, v)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)
                finally:
                    conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="s3-fault-proxy", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """An outage: close the listener (new connections are refused) and cut every open
        keep-alive connection (pooled clients would otherwise keep using them)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with self._lock:
            for conn in list(self._open):
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
            self._open.clear()

    def __enter__(self) -> S3FaultProxy:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---- Kafka and lake scaffolding ----------------------------------------------------------------


def lake_settings(base: Settings, root: str, prefix: str, **lake: object) -> Settings:
    """Settings with a private topic prefix and lake root (and any LakeSettings overrides)."""
    return base.model_copy(
        update={
            "kafka": base.kafka.model_copy(update={"topic_prefix": prefix}),
            "lake": base.lake.model_copy(update={"root": root, **lake}),
        }
    )


def env_for(settings: Settings) -> dict[str, str]:
    """Environment variables that reproduce ``settings`` for a ``lambdarec`` subprocess."""
    lk = settings.lake
    env = {
        "LAMBDAREC_KAFKA__TOPIC_PREFIX": settings.kafka.topic_prefix,
        "LAMBDAREC_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "LAMBDAREC_S3__ENDPOINT_URL": settings.s3.endpoint_url,
        "LAMBDAREC_POSTGRES__URL": settings.postgres.url,
        "LAMBDAREC_LAKE__ROOT": lk.root,
        "LAMBDAREC_LAKE__CONSUMER_GROUP": lk.consumer_group,
        "LAMBDAREC_LAKE__BATCH_MAX_ROWS": str(lk.batch_max_rows),
        "LAMBDAREC_LAKE__BATCH_MAX_SECONDS": str(lk.batch_max_seconds),
        "LAMBDAREC_LAKE__ADVANCE_WATERMARK": str(lk.advance_watermark).lower(),
        "LAMBDAREC_LAKE__MAINTENANCE_INTERVAL_MINUTES": str(lk.maintenance_interval_minutes),
        "LAMBDAREC_LAKE__RETRY_MAX_SECONDS": str(lk.retry_max_seconds),
    }
    return env


@contextmanager
def lake_topics(settings: Settings, partitions: int = 3) -> Iterator[list[str]]:
    """Create the project's topics under ``settings.kafka.topic_prefix``; delete them afterwards."""
    from schemas.topics import topic_configs

    new = [
        NewTopic(name, num_partitions=partitions, replication_factor=1, config=cfg)
        for name, _p, cfg in topic_configs(settings)
    ]
    with created_topics(settings, new) as names:
        yield names


def produce(settings: Settings, topic: str, records: list[tuple[bytes | None, bytes | None]]) -> None:
    """Produce (key, value) records and wait for every acknowledgement."""
    from schemas.topics import producer_config

    p = Producer(producer_config(settings))
    errors: list[str] = []

    def ack(err: object, _msg: object) -> None:
        if err is not None:
            errors.append(str(err))

    for key, value in records:
        while True:
            try:
                p.produce(topic, value, key, on_delivery=ack)
                break
            except BufferError:
                p.poll(0.05)
    assert p.flush(60) == 0
    assert not errors, errors[:3]


def s3_prefix(settings: Settings) -> tuple[str, str]:
    """(bucket, unique prefix) in the archive bucket for one test's lake root."""
    return settings.s3.archive_bucket, f"test-lake/{uuid.uuid4().hex[:12]}"


def delete_prefix(settings: Settings, bucket: str, prefix: str) -> None:
    client = s3_client(settings)
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=bucket, Delete={"Objects": keys})


def list_keys(settings: Settings, bucket: str, prefix: str) -> list[str]:
    client = s3_client(settings)
    out: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        out += [o["Key"] for o in page.get("Contents", [])]
    return out


# ---- a reproducible mix of records ---------------------------------------------------------------


@dataclass
class Workload:
    """Records for the three topics and what the lake must contain after archiving them."""

    interactions: list[tuple[bytes | None, bytes | None]] = field(default_factory=list)
    served: list[tuple[bytes | None, bytes | None]] = field(default_factory=list)
    dlq: list[tuple[bytes | None, bytes | None]] = field(default_factory=list)
    event_ids: set[str] = field(default_factory=set)  # distinct valid events
    impressions: int = 0
    corrupt: int = 0  # undecodable interactions + served records
    letters: int = 0  # DLQ records (each becomes one dead letter)
    feedback: int = 0
    users: set[str] = field(default_factory=set)


def workload(n: int = 300, seed: int = 7, users: int = 12, now: datetime | None = None) -> Workload:
    """``n`` interaction records with duplicates (re-sent events), corrupt records, new fields and
    feedback; served lists for the feedback; a few DLQ letters."""
    rng = random.Random(seed)
    now = now or datetime.now(UTC)
    w = Workload()
    sent: list[tuple[bytes, bytes]] = []
    for i in range(n):
        user = f"user-{rng.randrange(users)}"
        w.users.add(user)
        if sent and i % 10 == 9:  # a producer retry: same event, new offset
            w.interactions.append(rng.choice(sent))
            continue
        if i % 25 == 24:
            w.interactions.append((user.encode(), b'{"event_id": "broken", ' + str(i).encode()))
            w.corrupt += 1
            continue
        ev: dict[str, Any] = {
            "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "user_id": user,
            "item_id": f"item-{rng.randrange(40)}",
            "type": rng.choice(["view", "view", "click", "play", "like"]),
            "occurred_at": (now - timedelta(minutes=rng.randrange(600))).isoformat(),
        }
        if i % 7 == 0:
            rec_id = f"rec-{seed}-{i}"
            items = [{"item_id": f"item-{rng.randrange(40)}", "score": 1.0 - k / 10} for k in range(5)]
            lst = {
                "rec_id": rec_id,
                "user_id": user,
                "algorithm_source": rng.choice(["realtime", "batch", "popular"]),
                "served_at": (now - timedelta(minutes=700)).isoformat(),
                "items": items,
            }
            w.served.append((user.encode(), json.dumps(lst).encode()))
            w.impressions += len(items)
            pos = rng.randrange(5)
            ev.update(rec_id=rec_id, position=pos, item_id=items[pos]["item_id"], type="click")
            w.feedback += 1
        if i % 11 == 0:
            ev["experiment_arm"] = f"arm-{i % 3}"  # a field v1 does not know: a new column
        raw = (user.encode(), json.dumps(ev).encode())
        sent.append(raw)
        w.interactions.append(raw)
        w.event_ids.add(ev["event_id"])
    w.served.append((b"user-x", b"not json at all"))
    w.corrupt += 1
    for j in range(3):
        letter = DeadLetter(
            reason=Reason.INVALID_FIELD,
            error="item_id: too long",
            field="item_id",
            payload=b'{"user_id": "user-dlq"}',
            key=b"user-dlq",
            topic="upstream-topic",
            partition=0,
            offset=j,
            source_timestamp_ms=int(now.timestamp() * 1000),
            dead_lettered_at=now,
        )
        w.dlq.append((b"user-dlq", encode_dead_letter(letter)))
    w.dlq.append((None, b"\xff not a dead letter"))
    w.letters = len(w.dlq)
    return w


def combine(*parts: Workload) -> Workload:
    """What the lake must hold after archiving several workloads (their DLQ letters with the same
    origin collapse into one row each)."""
    w = Workload()
    for part in parts:
        w.interactions += part.interactions
        w.served += part.served
        w.dlq += part.dlq
        w.event_ids |= part.event_ids
        w.impressions += part.impressions
        w.corrupt += part.corrupt
        w.feedback += part.feedback
        w.users |= part.users
    w.letters = 3 + len(parts)  # 3 shared origin letters + one unreadable DLQ record per part
    return w


def produce_workload(settings: Settings, w: Workload) -> None:
    from schemas.topics import INTERACTIONS, INTERACTIONS_DLQ, SERVED, topic_name

    produce(settings, topic_name(settings, INTERACTIONS), w.interactions)
    produce(settings, topic_name(settings, SERVED), w.served)
    produce(settings, topic_name(settings, INTERACTIONS_DLQ), w.dlq)


def assert_exactly_once(settings: Settings, w: Workload) -> None:
    """Every record of the workload is in the lake exactly once (per table's notion of a row)."""
    import duckdb

    from batch.lake.feedback import duckdb_connect
    from batch.lake.storage import Lake
    from schemas.topics import INTERACTIONS, topic_name

    con: duckdb.DuckDBPyConnection = duckdb_connect(Lake(settings))

    def one(sql: str) -> Any:
        row = con.execute(sql).fetchone()
        assert row is not None
        return row[0] if len(row) == 1 else row

    ends = end_offsets(settings, topic_name(settings, INTERACTIONS))
    assert sum(ends.values()) == len(w.interactions)
    # bronze: each (partition, offset) of the topic exactly once, nothing else
    got = con.execute("SELECT kafka_partition, kafka_offset FROM bronze_interactions").fetchall()
    assert len(got) == len(set(got)), "duplicate offsets in bronze"
    assert set(got) == {(p, o) for p, end in ends.items() for o in range(end)}
    # silver: each valid event once
    assert one("SELECT count(*) FROM silver_interactions") == len(w.event_ids)
    assert {r[0] for r in con.execute("SELECT event_id FROM silver_interactions").fetchall()} == w.event_ids
    assert one("SELECT count(*) FROM feedback") == w.feedback
    # served: one row per impression
    assert one("SELECT count(*), count(DISTINCT (rec_id, position)) FROM served_recommendations") == (
        w.impressions,
        w.impressions,
    )
    # dead letters: corrupt records + DLQ records, each once
    assert one("SELECT count(*), count(DISTINCT letter_id) FROM dead_letters") == (
        w.corrupt + w.letters,
        w.corrupt + w.letters,
    )

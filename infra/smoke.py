"""A smoke run through every real service: one real round trip each, timed.

This is what ``lambdarec demo`` does before the full pipeline exists, and what an operator runs to
see that a deployment (local or external) is wired correctly.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from lambdarec.settings import Settings


@dataclass
class SmokeResult:
    service: str
    ok: bool
    detail: str
    seconds: float


def _kafka(settings: Settings) -> str:
    from confluent_kafka import Consumer, Producer

    from schemas.topics import INTERACTIONS_DLQ, topic_name

    topic = topic_name(settings, INTERACTIONS_DLQ)
    marker = f"smoke-{uuid.uuid4()}".encode()
    p = Producer({"bootstrap.servers": settings.kafka.bootstrap_servers, "acks": "all"})
    errors: list[str] = []
    p.produce(topic, marker, key=b"smoke", on_delivery=lambda e, m: errors.append(str(e)) if e else None)
    if p.flush(15) or errors:
        raise RuntimeError(f"produce to {topic} failed: {errors or 'not delivered in 15s'}")
    c = Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap_servers,
            "group.id": f"lambdarec-smoke-{uuid.uuid4()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    try:
        c.subscribe([topic])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            msg = c.poll(1.0)
            if msg is not None and not msg.error() and msg.value() == marker:
                return f"produced+consumed 1 record on {topic}"
    finally:
        c.close()
    raise RuntimeError(f"the record produced to {topic} was not consumed within 30s")


def _postgres(settings: Settings) -> str:
    import psycopg

    with psycopg.connect(settings.postgres.url, connect_timeout=5) as conn:
        ver = conn.execute("SELECT extversion FROM pg_extension WHERE extname='vector'").fetchone()
        if ver is None:
            raise RuntimeError("pgvector extension missing: run `lambdarec db migrate`")
        (dist,) = conn.execute("SELECT '[1,0,0]'::vector <=> '[0,1,0]'::vector").fetchone()  # type: ignore[misc]
        if abs(dist - 1.0) > 1e-6:
            raise RuntimeError(f"pgvector cosine distance wrong: {dist}")
        (n,) = conn.execute("SELECT count(*) FROM schema_migrations").fetchone()  # type: ignore[misc]
    return f"pgvector {ver[0]}, cosine distance ok, {n} migrations applied"


def _redis(settings: Settings) -> str:
    import redis

    r = redis.Redis.from_url(settings.redis.url, socket_timeout=5)
    key = f"lambdarec:smoke:{uuid.uuid4()}"
    r.set(key, b"ok", ex=60)
    if r.get(key) != b"ok":
        raise RuntimeError("redis GET did not return what SET wrote")
    r.delete(key)
    return f"set/get ok, policy {r.config_get('maxmemory-policy').get('maxmemory-policy')}"


def _s3(settings: Settings) -> str:
    from infra.s3 import s3_client

    s3 = s3_client(settings)
    key = f"smoke/{uuid.uuid4()}.txt"
    s3.put_object(Bucket=settings.s3.archive_bucket, Key=key, Body=b"ok")
    body = s3.get_object(Bucket=settings.s3.archive_bucket, Key=key)["Body"].read()
    s3.delete_object(Bucket=settings.s3.archive_bucket, Key=key)
    if body != b"ok":
        raise RuntimeError("S3 GET did not return what PUT wrote")
    return f"put/get/delete ok in s3://{settings.s3.archive_bucket}"


def _spark(settings: Settings) -> str:
    from infra.spark import get_spark

    spark = get_spark(settings)
    path = f"s3a://{settings.s3.archive_bucket}/smoke/delta-{uuid.uuid4()}"
    spark.range(100).write.format("delta").save(path)
    n = spark.read.format("delta").load(path).count()
    if n != 100:
        raise RuntimeError(f"Delta table on S3 read back {n} rows, wrote 100")
    return f"Spark {spark.version}: Delta write+read on {path}"


CHECKS: dict[str, Callable[[Settings], str]] = {
    "kafka": _kafka,
    "postgres": _postgres,
    "redis": _redis,
    "s3": _s3,
    "spark": _spark,
}


def run_smoke(settings: Settings) -> list[SmokeResult]:
    """Run every check; a failure is recorded, not raised, so the report shows all of them."""
    out = []
    for name, check in CHECKS.items():
        t0 = time.monotonic()
        try:
            out.append(SmokeResult(name, True, check(settings), time.monotonic() - t0))
        except Exception as exc:
            out.append(SmokeResult(name, False, f"{type(exc).__name__}: {exc}", time.monotonic() - t0))
    return out

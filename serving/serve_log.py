"""Every served list -> the ``served-recommendations`` topic and ``recommendation_logs``.

Why never on the request path: :meth:`ServeLog.record` only appends to a local buffer and hands
the record to librdkafka's queue (``produce`` does not wait for the broker; ``linger.ms`` batches).
Delivery reports come for failed records only (``delivery.report.only.error``) and batches wait
``serving.log_linger_ms`` (500 ms): with a report per record and 50 ms batches the producer cost
~15-20 us more CPU per served list (measured at 1,000 records/s against the local broker), for a
log nobody reads within the second.
A background task writes ``recommendation_logs`` rows in batches (one multi-row INSERT per
``serving.log_flush_interval_sec``). When Kafka or Postgres is down, records are dropped and
counted (``lambdarec_served_log_dropped_total``), never retried on the request path: a lost log
row costs less than a slow answer. ``rec_id`` is the primary key, so a replay is idempotent.

The lake archiver consumes the topic; the API (not the speed layer) writes recommendation_logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import deque
from datetime import UTC, datetime
from typing import Any

import orjson
from prometheus_client import Counter

from lambdarec.settings import Settings
from schemas.topics import SERVED, producer_config, topic_name
from serving.background import BackgroundTask

log = logging.getLogger(__name__)

DROPPED = Counter("lambdarec_served_log_dropped_total", "served-list log records dropped", ["sink"])
LOGGED = Counter(
    "lambdarec_served_log_total",
    "served-list log records written (kafka: handed to the producer; failures count as dropped too)",
    ["sink"],
)


_COLS = (
    "rec_id, user_id, items, algorithm_source, model_version, variant, context, computation_time_ms, "
    "cache_hit, served_at, experiment_id"
)
_INSERT_JSON = (
    f"INSERT INTO recommendation_logs ({_COLS}) SELECT {_COLS} "
    "FROM jsonb_populate_recordset(NULL::recommendation_logs, %s::jsonb) ON CONFLICT (rec_id) DO NOTHING"
)


def log_record(answer: dict[str, Any]) -> dict[str, Any]:
    """The logged form of a served answer: the columns of ``recommendation_logs`` (the shape
    ``batch/lake/served.py`` reads from the topic); items reduced to id, score, source, in order."""
    return {
        "rec_id": answer["rec_id"],
        "user_id": answer["user_id"],
        "items": [
            {"item_id": i["item_id"], "score": i["score"], "source": i["source"]} for i in answer["items"]
        ],
        "algorithm_source": answer.get("algorithm_source", "popular"),
        "model_version": answer.get("model_version"),
        "variant": answer.get("variant"),
        "experiment_id": answer.get("experiment_id"),
        "computation_time_ms": answer.get("computation_time_ms"),
        "cache_hit": bool(answer.get("cache_hit")),
        "context": {"degraded": bool(answer.get("degraded"))},
        "served_at": datetime.now(UTC).isoformat(),
    }


class ServeLog:
    """Buffered, non-blocking sink of served lists (Kafka topic + Postgres rows)."""

    def __init__(
        self,
        settings: Settings,
        pool: Any | None = None,
        *,
        topic: str | None = None,
        kafka: bool = True,
        delivery_timeout_ms: int = 30_000,
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.topic = topic or topic_name(settings, SERVED)
        #: serialised records (the Kafka value), joined into one JSON array per INSERT
        self._rows: deque[bytes] = deque(maxlen=100_000)
        self._producer: Any = None
        self._kafka = kafka
        self._delivery_timeout_ms = delivery_timeout_ms
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._task = BackgroundTask("serve-log-flush")
        self._queued = LOGGED.labels("kafka")  # resolved once: labels() takes a lock and a dict lookup

    def start(self) -> None:
        if self._kafka and self._producer is None:
            from confluent_kafka import Producer

            self._producer = Producer(
                producer_config(
                    self.settings,
                    **{
                        "client.id": "lambdarec-serve-log",
                        "linger.ms": self.settings.serving.log_linger_ms,
                        "message.timeout.ms": self._delivery_timeout_ms,
                        "delivery.report.only.error": True,
                    },
                )
            )
            self._thread = threading.Thread(target=self._poll, name="serve-log-poll", daemon=True)
            self._thread.start()
        if self.pool is not None:
            self._task.start(self._flush_loop)

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.2)

    def _on_delivery(self, err: Any, _msg: Any) -> None:
        if err is not None:  # the only reports asked for (delivery.report.only.error)
            DROPPED.labels("kafka").inc()

    def record(self, answer: dict[str, Any]) -> None:
        """Queue one served list (O(1), never blocks, never raises)."""
        value = orjson.dumps(log_record(answer))  # once: the topic's value and the row's JSON
        self._rows.append(value)
        if self._producer is not None:
            try:
                self._producer.produce(
                    self.topic, value, answer["user_id"].encode(), on_delivery=self._on_delivery
                )
            except (BufferError, Exception):
                DROPPED.labels("kafka").inc()
            else:
                self._queued.inc()

    async def _flush_loop(self) -> None:
        interval = self.settings.serving.log_flush_interval_sec
        while True:
            await asyncio.sleep(interval)
            with contextlib.suppress(Exception):
                await self.flush()

    async def flush(self) -> int:
        """Write buffered rows to recommendation_logs (batches of ``serving.log_batch_size``)."""
        if self.pool is None:
            return 0
        written = 0
        size = self.settings.serving.log_batch_size
        while self._rows:
            batch = [self._rows.popleft() for _ in range(min(size, len(self._rows)))]
            # one JSON parameter, unpacked by Postgres: a multi-row VALUES with 11 placeholders
            # per row made psycopg parse a 5,000-placeholder query on the event loop (~15 ms
            # per flush, a latency spike for every request in flight); the records are joined
            # as they were serialised for Kafka, not encoded a second time
            doc = (b"[" + b",".join(batch) + b"]").decode()
            try:
                async with self.pool.connection(timeout=2) as conn:
                    await conn.execute(_INSERT_JSON, (doc,), prepare=True)
            except Exception as exc:
                DROPPED.labels("postgres").inc(len(batch))
                log.warning("dropping %d recommendation_logs rows: %s", len(batch), exc)
                continue
            LOGGED.labels("postgres").inc(len(batch))
            written += len(batch)
        return written

    async def close(self) -> None:
        await self._task.stop()
        with contextlib.suppress(Exception):
            await self.flush()
        if self._producer is not None:
            self._stop.set()
            if self._thread is not None:
                self._thread.join(timeout=2)
            self._producer.flush(5)
            self._producer = None

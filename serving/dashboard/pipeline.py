"""Pipeline health for the dashboard, each figure from where it is authoritative:

* events/s: ``rt_user_interactions.received_at`` (what the speed layer committed to Postgres);
* consumer lag: Kafka itself, the speed layer's group (``stream.app_id``) committed offsets vs
  the high watermarks of ``interactions``, so it is right even when no worker runs;
* dead letters: the DLQ topic's offsets (retained total, and the last hour via offsets-for-times);
* cache hit rate: ``recommendation_logs.cache_hit`` (all API processes, not just this one);
* this process's Prometheus counters (served-log writes and drops, HTTP requests) and, when the
  stream worker's web port answers, its ``lambdarec_stream_*`` metrics.

Every probe is time-boxed and reports ``error`` instead of failing the page: the dashboard is
most needed exactly when something is down.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

import httpx
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from psycopg import AsyncConnection

from lambdarec.settings import Settings
from schemas.topics import INTERACTIONS, INTERACTIONS_DLQ, topic_name

KAFKA_TIMEOUT = 3.0

_EVENTS = """
SELECT date_bin('1 minute', received_at, '2000-01-01') AS t, count(*) AS events
  FROM rt_user_interactions
 WHERE occurred_at >= now() - interval '1 day' AND received_at >= now() - %(window)s
 GROUP BY 1 ORDER BY 1
"""


async def events_per_minute(conn: AsyncConnection[Any], minutes: int = 60) -> list[dict[str, Any]]:
    """Events committed per minute (events whose ``occurred_at`` is more than a day late are not
    counted: the filter lets Postgres skip all but the newest partitions)."""
    cur = await conn.execute(_EVENTS, {"window": timedelta(minutes=minutes)})
    return [{"t": t, "events": int(n)} for t, n in await cur.fetchall()]


def kafka_offsets(settings: Settings) -> dict[str, Any]:
    """Consumer lag of the speed layer and dead-letter counts (blocking; run in a thread)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap_servers,
            "group.id": settings.stream.app_id,  # read its committed offsets, never join or commit
            "enable.auto.commit": False,
            "socket.timeout.ms": int(KAFKA_TIMEOUT * 1000),
        }
    )
    try:
        out: dict[str, Any] = {}
        topic = topic_name(settings, INTERACTIONS)
        meta = consumer.list_topics(topic, timeout=KAFKA_TIMEOUT)
        parts = sorted(meta.topics[topic].partitions) if topic in meta.topics else []
        committed = consumer.committed([TopicPartition(topic, p) for p in parts], timeout=KAFKA_TIMEOUT)
        lag = {}
        for tp in committed:
            low, high = consumer.get_watermark_offsets(tp, timeout=KAFKA_TIMEOUT)
            start = tp.offset if tp.offset >= 0 else low  # never committed: all retained records
            lag[tp.partition] = max(0, high - start)
        out["lag_by_partition"] = lag
        out["lag_total"] = sum(lag.values())
        dlq = topic_name(settings, INTERACTIONS_DLQ)
        meta = consumer.list_topics(dlq, timeout=KAFKA_TIMEOUT)
        dparts = sorted(meta.topics[dlq].partitions) if dlq in meta.topics else []
        hour_ago = int((time.time() - 3600) * 1000)
        since = consumer.offsets_for_times(
            [TopicPartition(dlq, p, hour_ago) for p in dparts], timeout=KAFKA_TIMEOUT
        )
        retained = last_hour = 0
        for tp in since:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(dlq, tp.partition), timeout=KAFKA_TIMEOUT
            )
            retained += high - low
            last_hour += high - tp.offset if tp.offset >= 0 else 0
        out["dead_letters_retained"] = retained
        out["dead_letters_last_hour"] = last_hour
        return out
    finally:
        consumer.close()


def process_metrics() -> dict[str, float]:
    """This API process's counters from the default Prometheus registry."""
    wanted = {
        "lambdarec_served_log_total": "served_log_written",
        "lambdarec_served_log_dropped_total": "served_log_dropped",
        "lambdarec_http_request_seconds_count": "http_requests",
    }
    out = dict.fromkeys(wanted.values(), 0.0)
    for fam in REGISTRY.collect():
        for s in fam.samples:
            if s.name in wanted:
                out[wanted[s.name]] += s.value
    return out


async def stream_worker_metrics(settings: Settings) -> dict[str, float] | None:
    """The stream worker's own counters (``/metrics`` on its web port), or None when not reachable."""
    url = f"http://{settings.stream.web_host}:{settings.stream.web_port}/metrics"
    try:
        async with httpx.AsyncClient(timeout=0.5) as client:
            resp = await client.get(url)
            resp.raise_for_status()
    except (httpx.HTTPError, OSError):
        return None
    out = {"events_applied": 0.0, "dead_letters": 0.0, "consumer_lag": 0.0}
    for fam in text_string_to_metric_families(resp.text):
        for s in fam.samples:
            if s.name == "lambdarec_stream_events_total" and s.labels.get("outcome") == "applied":
                out["events_applied"] += s.value
            elif s.name == "lambdarec_stream_dead_letters_total":
                out["dead_letters"] += s.value
            elif s.name == "lambdarec_stream_consumer_lag":
                out["consumer_lag"] += s.value
    return out


async def kafka_health(settings: Settings) -> dict[str, Any]:
    """:func:`kafka_offsets` in a thread, time-boxed; ``{"error": ...}`` when Kafka does not answer."""
    try:
        return await asyncio.wait_for(asyncio.to_thread(kafka_offsets, settings), KAFKA_TIMEOUT * 3)
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"[:200]}

"""The serve log's Kafka side against the real broker: records reach the topic, and with the
broker unreachable every record is counted dropped (delivery reports come for failures only)."""

from __future__ import annotations

import asyncio
import time

import orjson

from lambdarec.settings import Settings
from serving.serve_log import DROPPED, LOGGED, ServeLog
from tests.integration.events_support import consume_all, temp_topics


def _answer(n: int) -> dict[str, object]:
    return {
        "rec_id": f"00000000-0000-4000-8000-{n:012d}",
        "user_id": f"u{n}",
        "items": [{"item_id": "i1", "score": 0.5, "source": "batch", "title": "T", "explanation": "e"}],
        "algorithm_source": "batch",
        "cache_hit": False,
    }


def _count(counter: object) -> float:
    return counter._value.get()  # type: ignore[attr-defined]


async def test_served_lists_reach_the_topic_and_none_counts_as_dropped(kafka: Settings) -> None:
    dropped0, queued0 = _count(DROPPED.labels("kafka")), _count(LOGGED.labels("kafka"))
    with temp_topics(kafka, 2) as (topic,):
        log = ServeLog(kafka, topic=topic)
        log.start()
        for n in range(50):
            log.record(_answer(n))
        await log.close()  # flushes the producer; a failure report would have been served by now
        got = consume_all(kafka, topic)
    assert sorted(orjson.loads(m.value())["rec_id"] for m in got) == sorted(
        _answer(n)["rec_id"] for n in range(50)
    )
    assert _count(LOGGED.labels("kafka")) - queued0 == 50
    assert _count(DROPPED.labels("kafka")) == dropped0


async def test_an_unreachable_broker_counts_every_record_dropped(settings: Settings) -> None:
    dead = settings.model_copy(
        update={"kafka": settings.kafka.model_copy(update={"bootstrap_servers": "127.0.0.1:1"})}
    )
    dropped0 = _count(DROPPED.labels("kafka"))
    log = ServeLog(dead, topic="lambdarec.test-unreachable", delivery_timeout_ms=800)
    log.start()
    for n in range(5):
        log.record(_answer(n))
    deadline = time.monotonic() + 15
    while _count(DROPPED.labels("kafka")) - dropped0 < 5 and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    await log.close()
    assert _count(DROPPED.labels("kafka")) - dropped0 == 5

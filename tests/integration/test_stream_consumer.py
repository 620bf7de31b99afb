"""The batch-delivery consumer (streams/consumer.py) in a real faust app against the real broker.

A BatchApp with a changelog-backed table runs in this process; its source topic's records must
arrive as lists (several per list), every record exactly once and in offset order per partition,
never through faust's per-record path (nothing left unacked), with the source co-partitioned
with the table by faust's assignor, and the offsets the handler commits must be the group's.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer as KafkaConsumer
from confluent_kafka import Producer, TopicPartition

from lambdarec.settings import Settings
from streams.consumer import BatchApp, BatchConsumer
from tests.integration.events_support import admin, temp_topics

pytestmark = [pytest.mark.integration]

PARTITIONS = 3
N = 3000


def _produce(settings: Settings, topic: str, n: int) -> None:
    p = Producer({"bootstrap.servers": settings.kafka.bootstrap_servers, "linger.ms": 5})
    for i in range(n):
        p.produce(topic, value=b"%d" % i, key=b"k%d" % i, partition=i % PARTITIONS)
    assert p.flush(30) == 0


def _committed(settings: Settings, group: str, topic: str) -> dict[int, int]:
    c = KafkaConsumer({"bootstrap.servers": settings.kafka.bootstrap_servers, "group.id": group})
    try:
        tps = c.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=10)
        return {tp.partition: tp.offset for tp in tps}
    finally:
        c.close()


def test_source_records_arrive_in_batches_exactly_once_and_are_committed(
    kafka: Settings, tmp_path: Path
) -> None:
    app_id = f"test-batch-{uuid.uuid4().hex[:8]}"
    with temp_topics(kafka, PARTITIONS) as (topic,):
        try:
            seen, batches, assigned, unacked = asyncio.run(_run(kafka, app_id, topic, tmp_path))
        finally:  # the table's changelog topic, created by faust
            for f in admin(kafka).delete_topics([f"{app_id}-state-changelog"]).values():
                with contextlib.suppress(Exception):
                    f.result(timeout=30)
        per_partition: dict[int, list[int]] = defaultdict(list)
        for partition, offset in seen:
            per_partition[partition].append(offset)
        assert sorted(per_partition) == list(range(PARTITIONS))
        for offsets in per_partition.values():  # exactly once, in order
            assert offsets == list(range(len(offsets)))
        assert len(seen) == N
        assert len(batches) < N / 5, f"{len(batches)} batches for {N} records: not batched"
        assert unacked == 0  # faust tracked none of them
        # co-partitioned: the worker got the table's changelog partitions with the source's
        assert {p for t, p in assigned if t == topic} == set(range(PARTITIONS))
        assert {p for t, p in assigned if t.endswith("-state-changelog")} == set(range(PARTITIONS))
        assert _committed(kafka, app_id, topic) == {p: N // PARTITIONS for p in range(PARTITIONS)}


async def _run(
    settings: Settings, app_id: str, topic_name: str, tmp: Path
) -> tuple[list[tuple[int, int]], list[int], set[tuple[str, int]], int]:
    app = BatchApp(
        app_id,
        broker=f"kafka://{settings.kafka.bootstrap_servers}",
        store="memory://",
        datadir=str(tmp / "data"),
        web_enabled=False,
        topic_partitions=PARTITIONS,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=10,
        broker_heartbeat_interval=3,
    )
    topic = app.topic(
        topic_name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
    )
    app.Table("state", default=None, partitions=PARTITIONS)
    feed = app.batch_topic(topic)
    seen: list[tuple[int, int]] = []
    batches: list[int] = []
    done = asyncio.Event()

    async def handler() -> None:
        consumer = app.consumer
        assert isinstance(consumer, BatchConsumer)
        while len(seen) < N:
            batch = await feed.get(10_000)
            try:
                batches.append(len(batch))
                seen.extend((m.partition, m.offset) for m in batch)
                offsets: dict[Any, int] = {}
                for m in batch:
                    offsets[m.tp] = m.offset + 1
                await consumer.commit_offsets(offsets)
            finally:
                feed.done()
        done.set()

    _produce(settings, topic_name, N)
    await app.start()
    try:
        task = asyncio.ensure_future(handler())
        await asyncio.wait_for(done.wait(), 120)
        await task
        assigned = {(tp.topic, tp.partition) for tp in app.consumer.assignment()}
        return seen, batches, assigned, len(app.consumer.unacked)
    finally:
        await app.stop()


def test_changelog_batches_are_acknowledged_with_their_last_offsets(kafka: Settings) -> None:
    """``produce_batches`` (the speed layer's state changelog writes): every record lands, in
    order, on its partition, and the offsets it returns are each partition's last record's,
    also when a partition's records need several record batches."""
    from aiokafka import AIOKafkaProducer

    from streams.app import produce_batches

    many = [(b"k%d" % i, b"v" * 1000 + b"%d" % i) for i in range(60)]  # ~4 batches of 16 KiB
    records = {0: many, 1: [(b"a", b"1"), (b"b", b"2")]}

    async def produce(topic: str) -> tuple[dict[Any, int], dict[Any, int]]:
        p = AIOKafkaProducer(
            bootstrap_servers=kafka.kafka.bootstrap_servers, acks="all", max_batch_size=16 * 1024
        )
        await p.start()
        try:
            return await produce_batches(p, topic, records), await produce_batches(
                p, topic, {1: [(b"c", b"3")]}
            )
        finally:
            await p.stop()

    with temp_topics(kafka, 2) as (topic,):
        first, second = asyncio.run(produce(topic))
        assert {tuple(tp): off for tp, off in first.items()} == {(topic, 0): 59, (topic, 1): 1}
        assert {tuple(tp): off for tp, off in second.items()} == {(topic, 1): 2}
        c = KafkaConsumer(
            {"bootstrap.servers": kafka.kafka.bootstrap_servers, "group.id": f"t-{uuid.uuid4().hex[:8]}"}
        )
        got: dict[int | None, list[tuple[bytes | None, bytes | None]]] = defaultdict(list)
        try:
            c.assign([TopicPartition(topic, 0, 0), TopicPartition(topic, 1, 0)])
            for _ in range(30):
                for m in c.consume(100, timeout=1.0):
                    assert m.error() is None
                    got[m.partition()].append((m.key(), m.value()))
                if sum(map(len, got.values())) >= 63:
                    break
        finally:
            c.close()
        assert got[0] == many
        assert got[1] == [(b"a", b"1"), (b"b", b"2"), (b"c", b"3")]

"""The speed layer's batch control without a broker: retries, poison records, offset holes, commits.

The worker's collaborators that talk to services (Postgres, Redis, Kafka) are replaced by small
recording fakes; the real services are exercised by tests/integration/test_stream_*.py.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

from schemas.dead_letters import Reason, decode_dead_letter
from streams import app as stream_app
from streams.app import SpeedLayer, is_transient


@dataclass(frozen=True)
class FakeTP:
    topic: str
    partition: int


@dataclass
class FakeMessage:
    tp: FakeTP
    offset: int
    value: bytes
    key: bytes | None = None
    timestamp: float | None = 1_700_000_000.0

    @property
    def topic(self) -> str:
        return self.tp.topic

    @property
    def partition(self) -> int:
        return self.tp.partition


class FakeProducer:
    """confluent_kafka.Producer's surface that publish_dead_letter and the layer use."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes | None]] = []

    def produce(self, topic: str, value: bytes, key: bytes | None = None, on_delivery: Any = None) -> None:
        self.sent.append((topic, value, key))
        if on_delivery is not None:
            on_delivery(None, None)

    def flush(self, timeout: float = 0) -> int:
        return 0

    def __len__(self) -> int:
        return 0


class FakeConsumer:
    def __init__(self) -> None:
        self.commits: list[dict[Any, int]] = []
        self.seeks: list[tuple[Any, int]] = []

    async def commit_offsets(self, offsets: dict[Any, int]) -> bool:
        self.commits.append(dict(offsets))
        return True

    async def seek(self, tp: Any, offset: int) -> None:
        self.seeks.append((tp, offset))

    def assignment(self) -> set[Any]:
        return set()


class FakeApp:
    def __init__(self) -> None:
        self.consumer = FakeConsumer()


class ScriptedLayer(SpeedLayer):
    """A SpeedLayer whose batch step fails as scripted (per record payload)."""

    fail: dict[bytes, BaseException]
    applied: list[list[bytes]]

    def _decode(self, events: Any) -> Any:
        return list(events), [], {}

    async def _process_once(self, items: Any, letters: Any, last_event: Any) -> None:
        payloads = [msg.value for msg in items]
        for p in payloads:
            if p in self.fail:
                raise self.fail[p]
        self.applied.append(payloads)


def _layer(fail: dict[bytes, BaseException] | None = None, max_failures: int = 3) -> ScriptedLayer:
    layer = ScriptedLayer(
        settings=None,  # type: ignore[arg-type]
        app=FakeApp(),  # type: ignore[arg-type]
        table=None,
        config=None,  # type: ignore[arg-type]
        pg=None,  # type: ignore[arg-type]
        cache=None,  # type: ignore[arg-type]
        embeddings=None,  # type: ignore[arg-type]
        models=None,  # type: ignore[arg-type]
        dlq=FakeProducer(),  # type: ignore[arg-type]
        dlq_topic="dlq",
        source_topic="interactions",
        max_failures=max_failures,
    )
    layer.fail = fail or {}
    layer.applied = []
    layer.update_lag = lambda: None  # type: ignore[method-assign]
    return layer


def _events(partition: int, offsets: range) -> list[Any]:
    tp = FakeTP("interactions", partition)
    return [FakeMessage(tp, o, f"p{partition}-{o}".encode()) for o in offsets]


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    async def instant(_: float) -> None:
        return None

    monkeypatch.setattr(stream_app.asyncio, "sleep", instant)


def test_a_clean_batch_is_applied_once_and_its_offsets_committed() -> None:
    layer = _layer()
    batch = _events(0, range(0, 5)) + _events(1, range(10, 13))
    done = asyncio.run(layer.process(batch))
    assert list(done) == batch
    assert layer.applied == [[ev.value for ev in batch]]
    assert layer.app.consumer.commits == [{FakeTP("interactions", 0): 5, FakeTP("interactions", 1): 13}]


def test_a_poison_record_is_dead_lettered_and_the_rest_applied() -> None:
    poison = b"p0-2"
    layer = _layer({poison: ValueError("bad vector")}, max_failures=3)
    batch = _events(0, range(0, 5))
    asyncio.run(layer.process(batch))
    applied = [p for chunk in layer.applied for p in chunk]
    assert sorted(applied) == sorted(ev.value for ev in batch if ev.value != poison)
    assert len(layer.dlq.sent) == 1
    topic, value, _ = layer.dlq.sent[0]
    letter = decode_dead_letter(value)
    assert topic == "dlq" and letter.reason is Reason.PROCESSING_FAILED
    assert (letter.payload, letter.partition, letter.offset) == (poison, 0, 2)
    assert layer.app.consumer.commits[-1] == {FakeTP("interactions", 0): 5}


def test_a_dependency_outage_is_retried_not_dead_lettered() -> None:
    attempts = {"n": 0}
    layer = _layer(max_failures=2)

    async def flaky(items: Any, letters: Any, last_event: Any) -> None:
        attempts["n"] += 1
        if attempts["n"] <= 6:  # far more than max_failures: transient failures do not count
            raise psycopg.OperationalError("connection refused")
        layer.applied.append([ev.value for ev in items])

    layer._process_once = flaky  # type: ignore[method-assign]
    asyncio.run(layer.process(_events(0, range(3))))
    assert attempts["n"] == 7 and layer.dlq.sent == []
    assert layer.applied == [[b"p0-0", b"p0-1", b"p0-2"]]


def test_records_after_a_hole_are_dropped_and_the_partition_sought_back() -> None:
    layer = _layer()
    asyncio.run(layer.process(_events(0, range(0, 4))))
    # partition 0 jumps from 4 to 9 (records 4..8 skipped); partition 1 is fine
    done = asyncio.run(layer.process(_events(0, range(9, 12)) + _events(1, range(0, 2))))
    assert [ev.value for ev in done] == [b"p1-0", b"p1-1"]
    assert layer.app.consumer.seeks == [(FakeTP("interactions", 0), 4)]
    assert layer.app.consumer.commits[-1] == {FakeTP("interactions", 1): 2}
    # the re-fetched records, and a redelivery of older ones, are accepted
    done = asyncio.run(layer.process(_events(0, range(2, 12))))
    assert len(done) == 10 and layer.app.consumer.commits[-1] == {FakeTP("interactions", 0): 12}


def test_after_a_rebalance_the_first_offset_is_not_a_hole() -> None:
    layer = _layer()
    asyncio.run(layer.process(_events(0, range(0, 4))))
    layer.forget([FakeTP("interactions", 0)])  # revoked, later assigned back at a newer offset
    done = asyncio.run(layer.process(_events(0, range(50, 52))))
    assert len(done) == 2 and layer.app.consumer.seeks == []


def test_transient_errors_are_told_apart() -> None:
    assert is_transient(psycopg.OperationalError("down"))
    assert is_transient(ConnectionRefusedError())
    assert not is_transient(ValueError("bad"))
    assert not is_transient(psycopg.errors.NumericValueOutOfRange("x"))


def test_stale_records_after_a_hole_do_not_seek_again_and_refetched_ones_pass() -> None:
    layer = _layer()
    asyncio.run(layer.process(_events(0, range(0, 4))))
    asyncio.run(layer.process(_events(0, range(9, 12))))  # hole 4..8: one seek
    # more stale records of the hole, then the re-fetched ones, in one batch
    done = asyncio.run(layer.process(_events(0, range(12, 15)) + _events(0, range(4, 15))))
    assert layer.app.consumer.seeks == [(FakeTP("interactions", 0), 4)]
    assert [ev.offset for ev in done] == list(range(4, 15))
    assert layer.app.consumer.commits[-1] == {FakeTP("interactions", 0): 15}


def test_a_batch_in_flight_across_a_rebalance_leaves_no_stale_position() -> None:
    layer = _layer()
    asyncio.run(layer.process(_events(0, range(0, 4))))

    async def rebalance_mid_batch(items: Any, letters: Any, last_event: Any) -> None:
        layer.forget([FakeTP("interactions", 0)])  # revoked while the batch was being applied

    layer._process_once = rebalance_mid_batch  # type: ignore[method-assign]
    asyncio.run(layer.process(_events(0, range(4, 8))))
    # assigned back later at the group's committed offset (another worker went further)
    done = asyncio.run(layer.process(_events(0, range(40, 42))))
    assert len(done) == 2 and layer.app.consumer.seeks == []

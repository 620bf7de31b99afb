"""The batch-delivery consumer (streams/consumer.py) without a broker: the feed's batching and
back-pressure, what a rebalance drops and waits for, the wiring into faust's app; and the
latency histogram's bulk observe (streams/metrics.py).

The drain loop against a real broker is exercised by tests/integration/test_stream_*.py (every
worker there runs it) and tests/integration/test_stream_consumer.py.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from faust.types import TP, Message

from streams.consumer import BatchApp, BatchConsumer, BatchFeed, BatchTransport
from streams.metrics import observe_many


def _msgs(partition: int, offsets: range, generation: int = 0) -> list[Message]:
    """Records fetched in consumer ``generation`` (0: a fresh app's, no rebalance yet)."""
    tp = TP("t", partition)
    return [
        Message("t", partition, o, 0.0, 0, None, None, b"v%d" % o, None, tp=tp, generation_id=generation)
        for o in offsets
    ]


def _offsets(batch: list[Message]) -> list[tuple[int, int]]:
    return [(m.partition, m.offset) for m in batch]


def test_queued_rounds_are_merged_up_to_max_records_and_large_rounds_split() -> None:
    async def scenario() -> list[list[tuple[int, int]]]:
        feed = BatchFeed(maxsize=10)
        feed.put_nowait(_msgs(0, range(0, 3)))
        feed.put_nowait(_msgs(1, range(0, 4)))
        feed.put_nowait(_msgs(0, range(3, 12)))
        out = []
        for _ in range(3):
            out.append(_offsets(await feed.get(6)))
            feed.done()
        return out

    first, second, third = asyncio.run(scenario())
    # 3 + 4 > 6: the second round is split, its rest leads the next batch, order kept
    assert first == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    assert second == [(1, 3), (0, 3), (0, 4), (0, 5), (0, 6), (0, 7)]
    assert third == [(0, 8), (0, 9), (0, 10), (0, 11)]


def test_get_waits_for_a_round_and_marks_the_handler_busy_until_done() -> None:
    async def scenario() -> None:
        feed = BatchFeed()
        assert not feed.busy
        getter = asyncio.create_task(feed.get(100))
        await asyncio.sleep(0.01)
        assert not getter.done()
        feed.put_nowait(_msgs(0, range(5)))
        batch = await asyncio.wait_for(getter, 1)
        assert len(batch) == 5 and feed.busy
        waiter = asyncio.create_task(feed.wait_idle())
        await asyncio.sleep(0.01)
        assert not waiter.done()
        feed.done()
        await asyncio.wait_for(waiter, 1)
        assert not feed.busy

    asyncio.run(scenario())


def test_a_full_feed_blocks_the_fetcher_and_clear_drops_only_queued_records() -> None:
    async def scenario() -> None:
        feed = BatchFeed(maxsize=1)
        feed.put_nowait(_msgs(0, range(0, 2)))
        taken = await feed.get(1)  # one record in flight, one carried over
        assert _offsets(taken) == [(0, 0)] and feed.pending() == 1
        feed.put_nowait(_msgs(0, range(2, 4)))
        assert feed.full() and feed.pending() == 3
        blocked = asyncio.create_task(feed.put(_msgs(0, range(4, 6))))
        await asyncio.sleep(0.01)
        assert not blocked.done()  # the fetcher waits (and aiokafka stops prefetching)
        feed.clear()
        await asyncio.wait_for(blocked, 1)  # room again
        assert feed.busy  # the batch in flight is not the feed's to drop
        feed.done()
        assert _offsets(await feed.get(10)) == [(0, 4), (0, 5)]

    asyncio.run(scenario())


def test_pending_counts_records_through_every_put_take_and_drop() -> None:
    """``pending`` is counted by the feed itself (not read from the queue's internals): every way
    in (put_nowait, a put that waited for room) and out (a split take, a stale round dropped,
    clear) keeps it equal to the records still to come out of :meth:`BatchFeed.get`."""
    generation = {"now": 0}

    async def scenario() -> None:
        feed = BatchFeed(maxsize=2, generation=lambda: generation["now"])
        assert feed.pending() == 0
        feed.put_nowait(_msgs(0, range(0, 5)))
        feed.put_nowait(_msgs(1, range(0, 3)))
        assert feed.pending() == 8
        blocked = asyncio.create_task(feed.put(_msgs(2, range(0, 4))))
        await asyncio.sleep(0.01)
        assert not blocked.done() and feed.pending() == 8  # not queued until there is room
        assert len(await feed.get(3)) == 3  # splits the first round: 2 carried, 3 queued
        feed.done()
        await asyncio.wait_for(blocked, 1)
        assert feed.pending() == 2 + 3 + 4
        assert len(await feed.get(6)) == 6  # the carry, round 1, one of round 2
        feed.done()
        assert feed.pending() == 3
        generation["now"] = 1  # a rebalance: the carried records were fetched before it
        feed.put_nowait(_msgs(0, range(5, 8)))  # generation 0: slipped in, dropped when taken
        feed.put_nowait(_msgs(0, range(9, 11), 1))
        assert feed.pending() == 3 + 3 + 2
        taken = await feed.get(10)
        assert _offsets(taken) == [(2, 1), (2, 2), (2, 3), (0, 9), (0, 10)] and feed.pending() == 0
        feed.done()
        feed.put_nowait(_msgs(1, range(3, 9), 1))
        assert feed.pending() == 6
        feed.clear()
        assert feed.pending() == 0
        feed.put_nowait(_msgs(1, range(3, 5), 1))  # counting goes on after a clear
        assert feed.pending() == 2 and len(await feed.get(10)) == 2 and feed.pending() == 0

    asyncio.run(scenario())


@pytest.fixture
def app() -> BatchApp:
    app = BatchApp("test-batch-consumer", broker="kafka://127.0.0.1:1", web_enabled=False)
    app.batch_feeds.clear()
    return app


def test_the_app_uses_the_batch_consumer_and_subscribes_the_topic(app: BatchApp) -> None:
    topic = app.topic("src-a", value_serializer="raw")
    feed = app.batch_topic(topic)
    assert isinstance(app.transport, BatchTransport)
    assert isinstance(app.consumer, BatchConsumer)
    assert app.consumer.feeds == {"src-a": feed}
    assert topic in app.topics  # subscribed like an agent's topic, so co-partitioned by faust
    assert app.batch_topic(topic) is feed


def test_stopping_the_flow_drops_queued_batches(app: BatchApp) -> None:
    feed = app.batch_topic(app.topic("src-b", value_serializer="raw"))
    feed.put_nowait(_msgs(0, range(3)))
    consumer = app.consumer
    assert isinstance(consumer, BatchConsumer)
    consumer.stop_flow()
    assert feed.pending() == 0 and not consumer.flow_active
    consumer.resume_flow()


def test_wait_empty_waits_for_the_batch_in_flight(app: BatchApp) -> None:
    feed = app.batch_topic(app.topic("src-c", value_serializer="raw"))

    async def scenario() -> None:
        feed.put_nowait(_msgs(0, range(3)))
        await feed.get(10)  # the handler took a batch
        waiting = asyncio.create_task(app.consumer.wait_empty())
        await asyncio.sleep(0.05)
        assert not waiting.done()
        feed.done()
        await asyncio.wait_for(waiting, 5)

    async def no_commit(*args: object, **kwargs: object) -> bool:
        return False

    app.consumer.commit = no_commit  # type: ignore[method-assign]  # faust's end-of-wait commit
    asyncio.run(scenario())


def test_observe_many_counts_like_observe() -> None:
    from prometheus_client import CollectorRegistry, Histogram

    reg = CollectorRegistry()
    one = Histogram("one", "x", buckets=(0.1, 0.5, 1.0), registry=reg)
    many = Histogram("many", "x", buckets=(0.1, 0.5, 1.0), registry=reg)
    values = np.array([0.0, 0.1, 0.1000001, 0.3, 0.5, 0.9, 1.0, 7.0, 0.05])
    for v in values:
        one.observe(float(v))
    observe_many(many, values)
    observe_many(many, values[:0])

    def samples(name: str) -> list[tuple[str, dict[str, str], float]]:
        return [
            (s.name.removeprefix(name), s.labels, s.value)
            for metric in reg.collect()
            if metric.name == name
            for s in metric.samples
            if not s.name.endswith("_created")
        ]

    got, want = samples("many"), samples("one")
    assert [(n, labels) for n, labels, _ in got] == [(n, labels) for n, labels, _ in want]
    assert [v for *_, v in got] == pytest.approx([v for *_, v in want])
    assert dict((n + labels.get("le", ""), v) for n, labels, v in got)["_bucket0.1"] == 3


def test_records_fetched_before_a_rebalance_are_dropped_when_taken() -> None:
    generation = {"now": 1}

    async def scenario() -> list[tuple[int, int]]:
        feed = BatchFeed(generation=lambda: generation["now"])
        feed.put_nowait(_msgs(0, range(0, 3), 1))  # slipped in after the clear() of a rebalance
        generation["now"] = 2
        feed.put_nowait(_msgs(0, range(0, 2), 2))  # fetched again after the assignment
        return _offsets(await feed.get(10))

    assert asyncio.run(scenario()) == [(0, 0), (0, 1)]


def test_batch_messages_carry_what_readers_of_a_record_use() -> None:
    from aiokafka.structs import ConsumerRecord

    from streams.consumer import BatchMessage

    tp = TP("src", 3)
    rec = ConsumerRecord("src", 3, 42, 1_700_000_000_123, 0, b"k", b"v", None, 1, 1, [("h", b"x")])
    msg = BatchMessage(tp, rec, 7)
    assert isinstance(msg, Message)
    assert (msg.topic, msg.partition, msg.offset, msg.tp, msg.generation_id) == ("src", 3, 42, tp, 7)
    assert (msg.key, msg.value, msg.headers, msg.timestamp_type) == (b"k", b"v", [("h", b"x")], 0)
    assert msg.timestamp == 1_700_000_000.123
    no_ts = ConsumerRecord("src", 3, 43, None, 0, None, b"v", None, 0, 1, [])  # type: ignore[arg-type]
    assert BatchMessage(tp, no_ts, 7).timestamp is None

"""Batch delivery for the speed layer: a faust consumer that hands whole fetches to one handler.

Why: faust delivers every record on its own. Its drain loop awaits ``wait_first(callback(msg),
suspend_flow.wait())`` per record (two asyncio tasks each), then the conductor (flow control,
decode, channel queue), the stream iterator, ``noack_take``'s buffer and one ``ack`` per record:
about 35 % of a worker's CPU at 8k events/s, before any of our processing. The speed layer wants
batches anyway (one Postgres transaction per batch), so for its source topic this consumer
skips all of that: each ``getmany`` round's records of the topic become **one list** of
:class:`BatchMessage` (a lean :class:`faust.types.Message`) put on a small bounded
:class:`BatchFeed`; the speed layer takes them from there (``SpeedLayer.run``). Every other
topic (table changelogs during recovery, the leader topic) still takes faust's per-record path
unchanged.

What stays faust's: the app, the aiokafka driver and its consumer thread, the subscription
(the source topic is registered with the conductor, so the assignor still co-partitions it with
the table's changelog), rebalances, table recovery, flow control, the read-offset bookkeeping
(``seek`` and the "drop what is older than the read offset" filter). What changes:

* records of the batch topics are **not tracked** as unacked by faust (no ``track_message``,
  no acks): faust's own commit never commits them (the speed layer commits its batches with
  :meth:`BatchConsumer.commit_offsets`), and faust's ``wait_empty`` has nothing of theirs to
  wait for. In its place :meth:`BatchConsumer.wait_empty` waits until the handler has finished
  the batch in flight, so a rebalance still lets it finish (and commit) before the partitions
  go to another worker, as faust's ack wait did;
* when faust stops the flow (start of a rebalance) the feed's queued batches are dropped: after
  the assignment faust seeks every partition back to its committed offset, so they come again,
  like the records faust drops from its stream buffers (``flow_control.clear()``).

Wired in with :class:`BatchApp` (``App._new_transport`` returns :class:`BatchTransport`, the
aiokafka transport whose ``Consumer`` is :class:`BatchConsumer`) and
:meth:`BatchApp.batch_topic`. Tested in ``tests/unit/test_stream_consumer.py`` against the
real broker.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from time import monotonic
from typing import Any, ClassVar, cast

import faust
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as aiokafka_driver
from faust.types import TP, Message, TopicT

#: getmany rounds the feed holds before the fetcher waits (back-pressure: the rest stays in
#: aiokafka's prefetch buffer and in Kafka)
FEED_ROUNDS = 4


class BatchMessage(Message):
    """One record of a batch topic: a :class:`faust.types.Message` with only the fields a
    reader of the record uses (topic, partition, offset, timestamp in seconds, timestamp type,
    headers, key, value, ``tp``, ``generation_id``), not faust's tracking ones (``acked``,
    ``refcount``, ``tracked``, timings, sizes, checksum: nobody acks it).

    Why: faust's constructor sets twenty fields; for every record of the source topic that was
    ~0.7 µs of CPU against ~0.35 µs here. The fields left out stay unset (reading one raises
    AttributeError): these messages never enter faust's stream or ack machinery.
    """

    __slots__ = ()

    def __init__(self, tp: TP, record: Any, generation_id: int) -> None:
        self.topic = record.topic
        self.partition = record.partition
        self.offset = record.offset
        ts = record.timestamp
        self.timestamp = ts / 1000.0 if ts is not None else cast(float, None)
        self.timestamp_type = record.timestamp_type
        self.headers = record.headers
        self.key = record.key
        self.value = record.value
        self.tp = tp
        self.generation_id = generation_id


class BatchFeed:
    """The bounded hand-off from the fetcher to the batch handler: lists of messages in fetch
    order (per partition: offset order), taken ``max_records`` at most at a time.

    It also knows whether the handler is busy with a batch it took (:meth:`get` .. :meth:`done`),
    which is what a rebalance waits for.
    """

    def __init__(self, maxsize: int = FEED_ROUNDS, *, generation: Callable[[], int] | None = None) -> None:
        """``generation``: the consumer's current generation; queued records fetched in an
        older one (before a rebalance) are dropped when taken (they are fetched again)."""
        self._rounds: asyncio.Queue[list[Message]] = asyncio.Queue(maxsize)
        # records in ``_rounds``, kept by every put and take: the queue only counts rounds
        self._queued = 0
        self._carry: deque[Message] = deque()  # the rest of a round larger than max_records
        self._generation = generation
        self._idle = asyncio.Event()
        self._idle.set()

    def full(self) -> bool:
        return self._rounds.full()

    def put_nowait(self, batch: list[Message]) -> None:
        self._rounds.put_nowait(batch)
        self._queued += len(batch)

    async def put(self, batch: list[Message]) -> None:
        await self._rounds.put(batch)  # no await between its put_nowait and the count below
        self._queued += len(batch)

    def pending(self) -> int:
        """Records queued (not taken yet)."""
        return len(self._carry) + self._queued

    def _take(self, batch: list[Message]) -> None:
        self._queued -= len(batch)
        # a round is fetched in one generation; one from before a rebalance can still slip in
        # (a put that won the race with the flow stop and clear()): drop it
        if batch and (self._generation is None or batch[0].generation_id == self._generation()):
            self._carry.extend(batch)

    async def get(self, max_records: int) -> list[Message]:
        """Wait for records; return what is queued, ``max_records`` at most. Marks the handler
        busy until :meth:`done`."""
        while not self._carry:
            self._take(await self._rounds.get())
        self._idle.clear()
        out: list[Message] = []
        while True:
            room = max_records - len(out)
            if len(self._carry) > room:
                out.extend(self._carry.popleft() for _ in range(room))
                break
            out.extend(self._carry)
            self._carry.clear()
            while not self._carry and not self._rounds.empty():
                self._take(self._rounds.get_nowait())
            if not self._carry:
                break
        return out

    def done(self) -> None:
        """The handler finished the batch it took (processed and committed, or given up)."""
        self._idle.set()

    @property
    def busy(self) -> bool:
        return not self._idle.is_set()

    async def wait_idle(self) -> None:
        await self._idle.wait()

    def clear(self) -> None:
        """Drop the queued records (not the batch in flight): they will be fetched again."""
        self._carry.clear()
        while not self._rounds.empty():
            self._rounds.get_nowait()
        self._queued = 0


class BatchConsumer(aiokafka_driver.Consumer):
    """faust's aiokafka consumer, delivering the records of :attr:`batch_topics` in batches."""

    @property
    def feeds(self) -> dict[str, BatchFeed]:
        """Topic name -> its feed (registered with :meth:`BatchApp.batch_topic`)."""
        return cast(dict[str, BatchFeed], getattr(self.app, "batch_feeds", {}))

    # ------------------------------------------------------------------------ flow / rebalance
    def stop_flow(self) -> None:
        """faust stops the flow when a rebalance starts: drop what the feeds queued (faust
        seeks back to the committed offsets after the assignment, so it comes again)."""
        super().stop_flow()
        for feed in self.feeds.values():
            feed.clear()

    async def wait_empty(self) -> None:
        """Also wait for the batch in flight (faust waits for unacked records only): it
        finishes, commits and then the partitions move. Not when stopping (like faust)."""
        waited = 0
        for feed in self.feeds.values():
            while feed.busy and not self.should_stop:
                waited += 1
                if not waited % 10:
                    self.log.warning("wait_empty: waiting for the batch in flight")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(feed.wait_idle(), 1.0)
        await super().wait_empty()

    async def commit_offsets(self, offsets: Mapping[TP, int]) -> bool:
        """Commit ``offsets`` (the next offset to read, per partition) now: what the handler of
        a batch topic calls once a batch is done. Partitions revoked meanwhile are skipped
        (their new owner re-processes them). faust's own commit step: flush the producer,
        commit, tell the tables (persisted offsets), remember the committed offsets (which the
        read-offset filter and ``seek`` rely on). Returns whether something was committed."""
        return await self._commit_offsets(offsets)

    # ------------------------------------------------------------------------ the drain loop
    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover (runs in workers)
        """faust's ``Consumer._drain_messages`` with batch delivery for :attr:`feeds`' topics;
        other topics are delivered record by record exactly as faust does."""
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        read_offset = self._read_offset
        set_flag = self.diag.set_flag
        unset_flag = self.diag.unset_flag
        monitor = self.app.monitor
        inbound: dict[TP, float] = getattr(monitor, "stream_inbound_time", {})
        feeds = self.feeds
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                set_flag(CONSUMER_FETCHING)
                records, active = await self._wait_next_records(timeout=1.0)
                await self.sleep(0)
                if records is None or self.should_stop:
                    continue
                if not self.flow_active:
                    # what faust's getmany does: a fetch that returned while the flow was
                    # stopped must not move the positions
                    try:
                        await self.perform_seek()
                    except Exception as exc:
                        self.log.warning("exception performing seek when flow not active %r", exc)
                    continue
                generation = self.app.consumer_generation_id
                batches: dict[str, list[Message]] = {}
                for tp, recs in records.items():
                    if active is not None and tp not in active and tp not in self._buffered_partitions:
                        continue
                    monitor.track_tp_end_offset(tp, self.highwater(tp))
                    if tp.topic in feeds:
                        r_offset = read_offset[tp]
                        msgs = [
                            BatchMessage(tp, rec, generation)
                            for rec in recs
                            if r_offset is None or rec.offset >= r_offset
                        ]
                        if msgs:
                            batches.setdefault(tp.topic, []).extend(msgs)
                            read_offset[tp] = msgs[-1].offset
                            # what faust's stream sensor records per event: its livelock
                            # detector warns about partitions whose stream takes nothing
                            inbound[tp] = monotonic()
                    else:
                        await self._deliver_one_by_one(tp, recs, generation)
                for topic, batch in batches.items():
                    if not self.flow_active or self.app.consumer_generation_id != generation:
                        break  # a rebalance started meanwhile: dropped, fetched again after it
                    feed = feeds[topic]
                    if not feed.full():
                        feed.put_nowait(batch)
                    else:  # back-pressure; a rebalance (suspend_flow) drops the batch
                        await self.wait_first(feed.put(batch), self.suspend_flow.wait())
                unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise

    async def _deliver_one_by_one(self, tp: TP, records: Iterable[Any], generation: int) -> None:
        """faust's per-record path (gap tracking, periodic commit, conductor callback)."""
        read_offset = self._read_offset
        for record in records:
            if not self.flow_active or self.app.consumer_generation_id != generation:
                return
            message = self._to_message(tp, record)
            offset = message.offset
            r_offset = read_offset[tp]
            if r_offset is None or offset >= r_offset:
                gap = offset - (r_offset or 0)
                if gap > 1 and r_offset and self.app.topics.acks_enabled_for(message.topic):
                    await self._add_gap(tp, r_offset + 1, offset)
                if self._commit_every is not None and self._n_acked >= self._commit_every:
                    self._n_acked = 0
                    await self.commit()
                await self.wait_first(self.callback(message), self.suspend_flow.wait())
                read_offset[tp] = offset


class BatchTransport(aiokafka_driver.Transport):
    """faust's aiokafka transport with :class:`BatchConsumer`."""

    Consumer: ClassVar[type[Any]] = BatchConsumer


class BatchApp(faust.App):
    """A faust App whose consumer delivers :meth:`batch_topic` topics in batches."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.batch_feeds: dict[str, BatchFeed] = {}
        super().__init__(*args, **kwargs)

    def batch_topic(self, topic: TopicT, *, maxsize: int = FEED_ROUNDS) -> BatchFeed:
        """Subscribe to ``topic`` (registered with the conductor like an agent's topic, so the
        assignor co-partitions it with tables of as many partitions) and return the feed its
        records arrive on, in batches. Call before the worker starts."""
        feeds: dict[str, BatchFeed] = {}
        for name in topic.topics:
            feeds[name] = self.batch_feeds.setdefault(
                name, BatchFeed(maxsize, generation=lambda: self.consumer_generation_id)
            )
        self.topics.add(topic)
        if len(set(map(id, feeds.values()))) != 1:
            raise ValueError(f"{topic}: its topics already have different feeds")
        return next(iter(feeds.values()))

    def _new_transport(self) -> Any:
        urls = self.conf.broker_consumer
        if urls[0].scheme not in ("kafka", "aiokafka"):
            raise ValueError(f"batch delivery needs the aiokafka transport, not {urls[0]}")
        return BatchTransport(urls, self)

"""The speed layer's faust app, built once: ``build_app(settings)``; run by ``lambdarec stream worker``.

How records arrive: the app is a :class:`streams.consumer.BatchApp`. Its consumer hands each
fetch's ``interactions`` records to the task ``profile_updater`` as one list (``BatchFeed``),
instead of faust's per-record agent/stream path (two asyncio tasks, conductor, stream buffer
and an ack per record: about a third of the worker's CPU). The topic is still subscribed
through faust's conductor, so the assignor co-partitions it with the table.

What it does with each batch (whatever arrived meanwhile, at most ``stream.batch_size``):

1. decode every record through ``streams.dead_letters`` (bad ones go to the DLQ, with origin);
2. load the users' state from the table ``user_profile_state`` (changelog-backed, RocksDB or
   memory) and apply the batch (``streams/processors/profiles.py``): dedupe, taste vector, ALS
   fold-in against the production model;
3. write events, feedback, counters and vectors to Postgres in **one transaction**
   (``streams/sinks/postgres.py``; idempotent statements);
4. bump the users' cache versions in Redis (``schemas/cache_keys.py``);
5. store the new states (changelog records acknowledged by Kafka) and only then **commit** the
   batch's offsets ourselves (``SpeedLayer.commit`` -> ``BatchConsumer.commit_offsets``).

A crash anywhere before 5 redelivers the batch: the states still say "not applied", Postgres
ignores rows it already has and counts only rows it inserts, and the vectors are recomputed from
the state. At-least-once delivery plus idempotent writes = every event reflected exactly once.

Why we commit offsets ourselves instead of through faust's acks: faust derives the commit from
the set of acked offsets and its gap bookkeeping, which is known to stall for good after a
rebalance or recovery (faust-streaming#596, #527) and, the other way, to commit past a record
still in flight (#606). We process each partition in order, one batch at a time, so "the
offset after the last record of the batch" is exactly what is safe to commit. faust does not
track our records (no acks); instead a rebalance waits for the batch in flight
(``BatchConsumer.wait_empty``), so it commits before its partitions move. A partition whose
records arrive with a hole (a record skipped by a seek race) is sought back to the first
missing offset, never committed past it. A rebalance drops the batches queued on the feed (faust
seeks back to the committed offsets) and bumps a generation counter, so a batch in flight across
it leaves no stale expectations behind.

A failed batch is retried with backoff. Transient failures (a dependency down) are retried
forever: nothing is skipped. A batch failing ``max_batch_failures`` times for another reason is
applied record by record, and a record that fails alone that often is dead-lettered
(``processing_failed``, with its bytes and origin) so one poison record cannot stop a partition.

Also: a timer runs ``rt_interactions_maintain()`` (``partition_maintenance``, on the leader), a
watcher follows ``model-updates`` (``streams/models.py``), a timer publishes consumer lag, and
the web server serves ``/metrics``.

Several workers share the partitions (same ``stream.app_id`` = consumer group); each needs its
own web port, and its own table directory (derived from the port).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import faust
import numpy as np
import psycopg
import redis.exceptions
from confluent_kafka import KafkaException, Producer
from faust.types import TP, Message
from prometheus_client import generate_latest

from lambdarec.settings import Settings
from schemas.dead_letters import Reason, decode_events
from schemas.topics import INTERACTIONS, producer_config, topic_name
from streams import metrics as m
from streams.consumer import BatchApp, BatchConsumer, BatchFeed
from streams.dead_letters import DeadLetter, dlq_topic, publish_dead_letter
from streams.embeddings import EmbeddingCache
from streams.models import ModelHolder, watch_model_updates
from streams.processors.profiles import BatchResult, Incoming, ProfileConfig, apply_batch
from streams.processors.weights import confidence_weights, taste_weights
from streams.sinks.postgres import PostgresSink, unique
from streams.sinks.redis import CacheInvalidator
from streams.state import UserState, decode_state, encode_state, event_context

log = logging.getLogger(__name__)

AGENT = "profile_updater"
TABLE = "user_profile_state"
MAX_BACKOFF_SEC = 5.0
MODEL_WAIT_SEC = 60.0
#: failures a dependency outage causes: retried forever, never dead-lettered
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    psycopg.OperationalError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    KafkaException,
)


def is_transient(exc: BaseException) -> bool:
    """True for a failure that retrying later fixes (a dependency down), not the record's fault."""
    return isinstance(exc, TRANSIENT_ERRORS)


def profile_config(settings: Settings) -> ProfileConfig:
    """The processors' knobs from settings."""
    st = settings.stream
    return ProfileConfig(
        taste_weights=taste_weights(settings),
        confidence_weights=confidence_weights(settings),
        half_life_sec=st.half_life_days * 86400.0,
        dedupe_window=st.dedupe_window,
        max_pairs=st.max_pairs_per_user,
    )


def tune_gc() -> None:
    """Freeze what start-up allocated and collect the young generation less often.

    Why: a batch allocates tens of thousands of short-lived objects (records, events, states),
    so with the default threshold (700 allocations) the collector ran every few dozen records,
    and each older-generation pass walked the app's long-lived objects (faust, aiokafka,
    models) again. Frozen, those are skipped; gen0 at 20,000 as in the API
    (``serving/__init__.py``). Measured: ``benchmarks/bench_stream.py``'s notes.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 50, 100)


def worker_dir(settings: Settings) -> Path:
    """This worker's local table directory: ``<tables_dir>/<app_id>/port-<web_port>``."""
    base = settings.stream.tables_dir or settings.var_dir / "stream"
    return Path(base) / settings.stream.app_id / f"port-{settings.stream.web_port}"


async def produce_batches(
    producer: Any, topic: str, records: dict[int, list[tuple[bytes, bytes]]]
) -> dict[Any, int]:
    """Produce ``records`` (partition -> [(key, value)]) to ``topic`` and wait until Kafka
    acknowledged all of them; returns each partition's last offset.

    Why: ``producer.send`` per record costs a coroutine, metadata and transaction checks, a
    log call and a future per record (~10 % of a worker's CPU for the state changelog). aiokafka's
    batch API (``create_batch`` / ``send_batch``) appends to a record batch and returns one future
    per batch, whose offset is the batch's base offset. ``producer``: faust's aiokafka
    ``Producer`` (its started ``AIOKafkaProducer``) or an ``AIOKafkaProducer``. Records get the
    current time as their timestamp, as with ``send``.
    """
    kafka = producer._ensure_producer() if hasattr(producer, "_ensure_producer") else producer
    sent: list[tuple[asyncio.Future[Any], int]] = []
    for partition, pairs in records.items():
        batch = kafka.create_batch()
        for key, value in pairs:
            if batch.append(key=key, value=value, timestamp=None) is None:  # full: send it
                sent.append((await kafka.send_batch(batch, topic, partition=partition), batch.record_count()))
                batch = kafka.create_batch()
                if batch.append(key=key, value=value, timestamp=None) is None:
                    raise ValueError(f"{topic}: a {len(value)}-byte record does not fit in a batch")
        sent.append((await kafka.send_batch(batch, topic, partition=partition), batch.record_count()))
    last: dict[Any, int] = {}  # aiokafka TopicPartition -> offset
    for (_, count), md in zip(sent, await asyncio.gather(*(f for f, _ in sent)), strict=True):
        tp = md.topic_partition
        last[tp] = max(last.get(tp, -1), md.offset + count - 1)
    return last


@dataclass
class SpeedLayer:
    """The runtime objects of one worker (connections, caches, model) and the batch step."""

    settings: Settings
    app: faust.App
    table: Any
    config: ProfileConfig
    pg: PostgresSink
    cache: CacheInvalidator
    embeddings: EmbeddingCache
    models: ModelHolder
    dlq: Producer
    dlq_topic: str
    source_topic: str
    max_failures: int = 5
    positions: dict[int, int] = field(default_factory=dict)  # partition -> next offset to process
    #: per assigned partition of the source: the next offset we must see (None: not known yet)
    next_offset: dict[TP, int] = field(default_factory=dict)
    _dlq_errors: list[str] = field(default_factory=list)
    _watcher_started: bool = False
    #: bumped by every revoke/assign: a batch that was in flight across a rebalance must not
    #: leave its (now stale) positions behind
    _generation: int = 0
    #: partition -> the offset we sought back to and wait for
    _seek_target: dict[TP, int] = field(default_factory=dict)

    # ------------------------------------------------------------------------------- one batch
    async def run(self, feed: BatchFeed) -> None:
        """Process the source topic's batches as the consumer delivers them, one at a time.

        No waiting to fill a batch: whatever arrived while the previous batch was processed is
        the next batch (up to ``stream.batch_size``), so batches grow with the load and an
        event waits for at most one batch ahead of it."""
        max_records = self.settings.stream.batch_size
        while True:
            batch = await feed.get(max_records)
            try:
                await self.process(batch)
            finally:
                feed.done()

    async def process(self, events: Sequence[Message]) -> Sequence[Message]:
        """Process one batch of source records until it succeeded, then commit its offsets;
        returns the records processed (records after a hole are dropped: they come again)."""
        t0 = time.monotonic()
        generation = self._generation
        events = await self._without_holes(events)
        if not events:
            return events
        if not await self._retry(events, self.max_failures):
            await self._one_by_one(events)
        committed = await self.commit(events, remember=generation == self._generation)
        for tp, offset in committed.items():
            self.positions[tp.partition] = max(self.positions.get(tp.partition, 0), offset)
        self.update_lag()
        m.BATCH_SIZE.labels(AGENT).observe(len(events))
        m.STAGE_SECONDS.labels(AGENT, "total").observe(time.monotonic() - t0)
        return events

    async def _retry(self, events: Sequence[Message], max_failures: int) -> bool:
        """Apply ``events``; True once done, False after ``max_failures`` non-transient failures."""
        items, letters, last_event = self._decode(events)
        delay, failures = 0.2, 0
        while True:
            try:
                await self._process_once(items, letters, last_event)
                return True
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                m.FAILURES.labels(AGENT, type(exc).__name__).inc()
                if not is_transient(exc):
                    failures += 1
                    if failures >= max_failures:
                        log.error("%s: %d record(s) failed %d times: %r", AGENT, len(events), failures, exc)
                        return False
                log.warning("%s: %d record(s) failed (%r); retrying in %.1fs", AGENT, len(events), exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF_SEC)

    async def _one_by_one(self, events: Sequence[Message]) -> None:
        """Find the poison: apply each record alone; dead-letter those that keep failing."""
        for msg in events:
            if await self._retry([msg], self.max_failures):
                continue
            letter = DeadLetter(
                reason=Reason.PROCESSING_FAILED,
                error=f"the speed layer failed to apply this record {self.max_failures} times",
                payload=msg.value or b"",
                key=msg.key,
                topic=msg.topic,
                partition=msg.partition,
                offset=msg.offset,
                source_timestamp_ms=int(msg.timestamp * 1000) if msg.timestamp else None,
                dead_lettered_at=datetime.now(UTC),
            )
            while True:  # a dead letter must be acknowledged before its offset is committed
                self._dlq_errors.clear()
                publish_dead_letter(self.dlq, letter, self.dlq_topic, on_delivery=self._on_dlq_delivery)
                await asyncio.to_thread(self.dlq.flush, 30.0)
                if not self._dlq_errors and not len(self.dlq):
                    break
                log.error("dead letter not acknowledged (%s); retrying", self._dlq_errors[:1])
                await asyncio.sleep(1.0)
            m.DEAD_LETTERS.labels(AGENT, letter.reason.value).inc()
            m.EVENTS.labels(AGENT, "dead_letter").inc()

    # ------------------------------------------------------------------------------- offsets
    async def _without_holes(self, events: Sequence[Message]) -> Sequence[Message]:
        """Drop (and re-fetch) the records of a partition that arrive after a hole.

        Records come in offset order per partition. An offset at or below the expected one is
        kept (a redelivery is harmless: idempotent). One *above* it means records were skipped
        (faust's seek/clear races): it is dropped and the partition sought back to the expected
        offset, once (later stale records of the same hole are dropped without a new seek); the
        missing records come again, in order, possibly in this very batch. The interactions topic
        is written by idempotent, non-transactional producers (SDK, HTTP ingest, DLQ replay), so
        its offsets have no gaps of their own.
        """
        expected = {tp: off for tp, off in self.next_offset.items() if off is not None}
        keep: list[Message] = []
        seek: dict[TP, int] = {}
        for msg in events:
            tp, off = msg.tp, msg.offset
            want = expected.get(tp)
            if want is None or off <= want:
                keep.append(msg)
                if want is None or off == want:
                    expected[tp] = off + 1
                    self._seek_target.pop(tp, None)
                continue
            if self._seek_target.get(tp) != want and tp not in seek:
                seek[tp] = want
                log.warning("%s: %s jumped from %d to %d; seeking back", AGENT, tp, want, off)
                m.FAILURES.labels(AGENT, "offset_hole").inc()
        for tp, off in seek.items():
            self._seek_target[tp] = off
            await self.app.consumer.seek(tp, off)
        return keep if len(keep) != len(events) else events

    async def commit(self, events: Sequence[Message], *, remember: bool = True) -> dict[TP, int]:
        """Commit, per partition, the offset after the batch's last record (see the module doc);
        ``remember``: also expect the next records there (not after a rebalance mid-batch).
        Returns those offsets."""
        offsets: dict[TP, int] = {}
        for msg in events:
            offsets[msg.tp] = max(offsets.get(msg.tp, 0), msg.offset + 1)
        if remember:
            self.next_offset.update(offsets)
        # BatchConsumer.commit_offsets: faust's commit step; it drops partitions revoked
        # meanwhile (their new owner re-applies them: idempotent)
        await cast(BatchConsumer, self.app.consumer).commit_offsets(offsets)
        return offsets

    def forget(self, tps: Any) -> None:
        """Partitions revoked or (re)assigned: where they resume is the group's committed offset."""
        self._generation += 1
        for tp in tps:
            self.next_offset.pop(tp, None)
            self._seek_target.pop(tp, None)

    def start_model_watcher(self, registry_fallback: Any) -> None:
        """Follow model-updates from the first partition assignment on (idempotent), so the model
        loads while the tables recover: faust starts app tasks, ``profile_updater`` included,
        only after recovery, which after a crash can take a while."""
        if self._watcher_started:
            return
        self._watcher_started = True

        async def follow() -> None:
            while True:
                try:
                    await watch_model_updates(self.settings, self.models, registry_fallback=registry_fallback)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("model-updates watcher failed; restarting in 5s")
                    await asyncio.sleep(5.0)

        self.app.add_future(follow())

    def _decode(
        self, events: Sequence[Message]
    ) -> tuple[list[Incoming], list[DeadLetter], dict[str, Message]]:
        """(events to apply, dead letters, each user's last record), decoded as one batch
        (``schemas.dead_letters.decode_events``)."""
        items: list[Incoming] = []
        letters: list[DeadLetter] = []
        last_event: dict[str, Message] = {}
        stamps = [int(msg.timestamp * 1000) if msg.timestamp else None for msg in events]
        origins = [
            (m.value, m.key, m.topic, m.partition, m.offset, ts) for m, ts in zip(events, stamps, strict=True)
        ]
        decoded = decode_events(origins)
        for msg, ts_ms, event in zip(events, stamps, decoded, strict=True):
            if isinstance(event, DeadLetter):
                letters.append(event)
                continue
            items.append(Incoming(event, msg.partition, msg.offset, ts_ms))
            last_event[event.user_id] = msg
        return items, letters, last_event

    async def _process_once(
        self, items: list[Incoming], letters: list[DeadLetter], last_event: dict[str, Message]
    ) -> None:
        stage = time.monotonic()

        def lap(name: str) -> None:
            nonlocal stage
            now = time.monotonic()
            m.STAGE_SECONDS.labels(AGENT, name).observe(now - stage)
            stage = now

        # dead letters first: queued now, confirmed before the ack (flush below)
        self._dlq_errors.clear()
        for letter in letters:
            publish_dead_letter(self.dlq, letter, self.dlq_topic, on_delivery=self._on_dlq_delivery)
        # state of every user in the batch, read in the context of their partition
        table_data = self.table.data
        states: dict[str, UserState] = {}
        for user, msg in last_event.items():
            with event_context(msg):
                states[user] = decode_state(table_data.get(user.encode()))
        vectors = await self.embeddings.ensure(unique(it.event.item_id for it in items))
        lap("state")
        result = apply_batch(items, states, embeddings=vectors, model=self.models.current, config=self.config)
        lap("compute")
        await self.pg.write_batch(result)
        committed = time.time()
        lap("postgres")
        await self.cache.invalidate(list(result.users))
        lap("redis")
        if letters:
            await asyncio.to_thread(self.dlq.flush, 30.0)
            if self._dlq_errors or len(self.dlq):
                raise RuntimeError(f"dead letters not acknowledged: {self._dlq_errors[:3]}")
        await self._store_states(result, states, last_event)
        lap("changelog")
        self._observe(result, letters, committed, len(items))

    def _on_dlq_delivery(self, err: Any, msg: Any) -> None:
        if err is not None:
            self._dlq_errors.append(str(err))

    async def _store_states(
        self, result: BatchResult, states: dict[str, UserState], last_event: dict[str, Message]
    ) -> None:
        """Write changed states to the store and the changelog; wait until Kafka has them.

        Sent as whole record batches through aiokafka's batch API (:func:`produce_batches`)
        rather than ``table[key] = value`` or one ``producer.send`` per user: faust's and
        aiokafka's per-record path (a coroutine, checks, a future and a callback per record) cost
        more than building the batches. The records, their partition (the event's) and the
        persisted-offset bookkeeping are the same.

        Users of partitions this worker lost meanwhile (a rebalance) are skipped: their new
        owner re-applies the batch from its own recovered state (Postgres is idempotent).
        """
        assigned = self.app.consumer.assignment()
        table_data = self.table.data
        records: dict[int, list[tuple[bytes, bytes]]] = {}
        for user in result.users:
            msg = last_event[user]
            if msg.tp not in assigned:
                continue
            key, value = user.encode(), encode_state(states[user])
            with event_context(msg):
                table_data[key] = value  # the local store (RocksDB partition of the event)
            records.setdefault(msg.partition, []).append((key, value))
        if not records:
            return
        # Kafka has every record once this returns; then record how far the local store is
        # (what faust's own changelog callback does), so a restart replays only what is newer.
        topic = self.table.changelog_topic.get_topic_name()
        persisted = await produce_batches(self.app.producer, topic, records)
        for tp, offset in persisted.items():
            table_data.set_persisted_offset(tp, offset)
        m.STATE_WRITES.labels(TABLE).inc(sum(map(len, records.values())))

    def _observe(
        self, result: BatchResult, letters: list[DeadLetter], committed: float, n_items: int
    ) -> None:
        applied = result.applied
        m.EVENTS.labels(AGENT, "applied").inc(applied)
        m.EVENTS.labels(AGENT, "duplicate").inc(result.duplicates)
        m.EVENTS.labels(AGENT, "dead_letter").inc(len(letters))
        for letter in letters:
            m.DEAD_LETTERS.labels(AGENT, letter.reason.value).inc()
        if applied:
            ts = np.fromiter(
                (it.timestamp_ms or 0 for u in result.users.values() for it in u.events), float, applied
            )
            m.observe_many(m.LATENCY.labels(AGENT), np.maximum(committed - ts[ts > 0] / 1000.0, 0.0))

    # ------------------------------------------------------------------------------- periodic
    def update_lag(self) -> None:
        """Consumer lag per assigned partition: high watermark (as of the last fetch response,
        no broker round trip) - next offset to process (known once a batch of it was processed)."""
        consumer = self.app.consumer
        for tp in consumer.assignment():
            if tp.topic != self.source_topic:
                continue
            try:
                hw = consumer.highwater(tp)
            except Exception:  # not fetched yet
                continue
            pos = self.positions.get(tp.partition)
            if hw is not None and pos is not None:
                m.LAG.labels(tp.topic, str(tp.partition)).set(max(hw - pos, 0))

    async def maintain(self) -> None:
        for action, name, *_ in await self.pg.maintain():
            m.MAINTENANCE.labels(action).inc()
            log.info("rt_interactions_maintain: %s %s", action, name)


def build_app(settings: Settings) -> faust.App:
    """The faust app of the speed layer (agents, table, timers, web page), configured from
    ``settings``. Nothing connects until the worker starts."""
    st = settings.stream
    wdir = worker_dir(settings)
    app = BatchApp(
        st.app_id,
        broker=[f"kafka://{hp.strip()}" for hp in settings.kafka.bootstrap_servers.split(",")],
        store="rocksdb://" if st.store == "rocksdb" else "memory://",
        datadir=str(wdir),
        tabledir=str(wdir / "tables"),
        topic_partitions=settings.kafka.partitions,
        topic_replication_factor=settings.kafka.replication_factor,
        table_standby_replicas=st.standby_replicas,
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=st.commit_interval_sec,
        stream_buffer_maxsize=st.stream_buffer_maxsize,
        stream_recovery_delay=st.recovery_delay_sec,
        producer_acks=-1,
        # state records are KiBs (a 768-d taste sum is 3 KiB): batch them into few produce requests
        producer_max_batch_size=512 * 1024,
        producer_max_request_size=4 * 1024 * 1024,
        web_host=st.web_host,
        web_port=st.web_port,
        web_enabled=True,
        processing_guarantee="at_least_once",
        broker_session_timeout=st.session_timeout_sec,
        broker_heartbeat_interval=st.heartbeat_interval_sec,
    )
    source_name = topic_name(settings, INTERACTIONS)
    source = app.topic(
        source_name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
    )
    table = app.Table(
        TABLE,
        default=None,
        key_type=bytes,  # bytes in, bytes out: the "raw" codec (our own msgpack record)
        value_type=bytes,
        partitions=settings.kafka.partitions,
        help="per-user speed-layer state: dedupe window, taste sums, fold-in normal equations",
    )
    pg = PostgresSink(settings)
    layer = SpeedLayer(
        settings=settings,
        app=app,
        table=table,
        config=profile_config(settings),
        pg=pg,
        cache=CacheInvalidator(settings.redis.url),
        embeddings=EmbeddingCache(
            pg.load_embeddings,
            max_items=st.embedding_cache_items,
            missing_ttl_sec=st.missing_embedding_ttl_sec,
        ),
        models=ModelHolder(settings),
        dlq=Producer(producer_config(settings, **{"client.id": f"{st.app_id}-dlq"})),
        dlq_topic=dlq_topic(settings),
        source_topic=source_name,
        max_failures=st.max_batch_failures,
    )
    app.speed_layer = layer  # type: ignore[attr-defined]  # for tests and the CLI

    def _model_changed(model: Any) -> None:
        m.MODEL_INFO.clear()
        m.MODEL_INFO.labels(st.model_algorithm, model.version).set(1)

    layer.models.on_change = _model_changed

    # the source is subscribed (and co-partitioned with the table) like an agent's topic, but
    # its records come as whole fetches on this feed (streams/consumer.py), not one by one
    feed = app.batch_topic(source)

    @app.task
    async def profile_updater() -> None:
        """Batches of interaction records -> Postgres, Redis, state; committed after all three.

        An app task: faust starts it once the tables are recovered (records flow only then)."""
        layer.start_model_watcher(pg.production_model)
        try:  # fold in against the production model from the first batch on (bounded wait)
            await asyncio.wait_for(layer.models.ready.wait(), MODEL_WAIT_SEC)
        except TimeoutError:
            log.warning("no answer from model-updates in %ss; starting without a model", MODEL_WAIT_SEC)
        tune_gc()
        while True:  # an app task that raises stops the worker: restart the loop instead
            try:
                await layer.run(feed)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s crashed; restarting in 1s", AGENT)
                await asyncio.sleep(1.0)

    @app.timer(st.maintenance_interval_sec, on_leader=True, name="partition_maintenance")
    async def partition_maintenance() -> None:
        """Create upcoming rt partitions, drop archived expired ones (watermark-guarded)."""
        try:
            await layer.maintain()
        except Exception:
            log.exception("rt_interactions_maintain failed; next try in %ss", st.maintenance_interval_sec)

    @app.timer(5.0, name="consumer_lag")
    async def consumer_lag() -> None:
        try:
            layer.update_lag()
        except Exception:  # a metric must never stop the worker
            log.warning("consumer lag update failed", exc_info=True)

    # faust's stubs type a receiver with a keyword-only ``signal``; ours takes it in **kwargs
    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def _revoked(sender: Any, revoked: Any, **kwargs: Any) -> None:
        layer.forget(revoked)

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def _assigned(sender: Any, assigned: Any, **kwargs: Any) -> None:
        layer.forget(assigned)
        layer.start_model_watcher(pg.production_model)

    @app.page("/metrics")
    async def metrics_page(web: Any, request: Any) -> Any:
        return web.bytes(generate_latest(m.REGISTRY), content_type="text/plain; version=0.0.4")

    return app


def run_worker(settings: Settings, *, loglevel: str = "info") -> None:
    """Run one worker in this process until SIGTERM/SIGINT (``lambdarec stream worker``)."""
    if settings.stream.use_uvloop:
        import mode.loop

        mode.loop.use("uvloop")
    app = build_app(settings)
    worker_dir(settings).mkdir(parents=True, exist_ok=True)
    from faust.worker import Worker

    worker = Worker(app, loglevel=loglevel, quiet=True)
    # no terminal spinner: to spin on every log record it sets the root logger to DEBUG, so
    # every debug call of faust and aiokafka (one per produced record) built a LogRecord that
    # the handler then dropped (~2 % of the worker's CPU)
    worker.spinner = None
    worker.execute_from_commandline()

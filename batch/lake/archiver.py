"""The archiver: Kafka -> Delta, exactly once (``lambdarec lake archive``).

Reads ``interactions``, ``served-recommendations`` and ``interactions-dlq`` and writes, per
micro-batch (``settings.lake.batch_max_rows`` records or ``batch_max_seconds``):

==========================  ===============================  ======================================
table                       fed by                           rows
==========================  ===============================  ======================================
``bronze_interactions``     interactions                     every record, as received
``silver_interactions``     interactions                     valid events, deduplicated by event_id
``served_recommendations``  served-recommendations           one per served item, dedup by rec_id
``dead_letters``            all three                        undecodable records, one per original
==========================  ===============================  ======================================

**Exactly once.** Each table commit carries the batch's Kafka offsets as Delta application
transactions (``batch/lake/txn.py``). On start the archiver reads, per topic-partition, the
smallest committed offset over the tables that topic feeds and seeks there + 1; each table then
skips what it already has. The consumer group's offsets are committed *after* the Delta commits
and only serve monitoring (consumer lag in Kafka tools) and a sanity warning; they are never
trusted for the position. So a crash anywhere (before a write, after writing files but before
the log commit, between two tables, after the commits but before the group-offset commit)
neither loses nor duplicates a row; ``tests/integration/test_lake_archiver.py`` SIGKILLs the
archiver at each of those points and checks every record is in the tables exactly once.

**Failures.** A storage error (S3 down, wrong endpoint, throttling) or a commit conflict pauses
the batch and retries it with exponential backoff up to ``retry_max_seconds`` between attempts,
forever: the consumer keeps its position, nothing is lost, and the retry re-checks what a failed
attempt may already have committed. An undecodable record becomes a dead-letter row.

**Archive watermark.** After each batch, ``advance_archive_watermark('rt_user_interactions', T)``
tells Postgres up to when the hot table is safely in the lake, so the rt purge only drops archived
rows. T = (for each interactions partition: the time it was last seen fully archived, or the
Kafka timestamp of its last archived record while lagging), minimum over partitions, minus
``watermark_lateness_seconds`` (events may reach Kafka that much after they occurred).

**Table care.** Every ``maintenance_interval_minutes`` the archiver compacts recent partitions
and vacuums (``batch/lake/maintenance.py``), between batches so it never races its own writes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import signal
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient
from deltalake import DeltaTable
from deltalake.exceptions import (
    CommitFailedError,
    DeltaError,
    DeltaProtocolError,
    SchemaMismatchError,
    TableNotFoundError,
)

from batch.lake import dead_letters as dl
from batch.lake import events, served
from batch.lake.storage import Lake
from batch.lake.txn import (
    CommitResult,
    DedupIndex,
    KafkaRecord,
    Writer,
    commit_exactly_once,
    committed_offsets,
)
from lambdarec.settings import Settings
from schemas.dead_letters import DeadLetter
from schemas.lake import (
    BRONZE_INTERACTIONS,
    DEAD_LETTERS,
    SERVED_RECOMMENDATIONS,
    SILVER_INTERACTIONS,
    TableSpec,
)
from schemas.topics import INTERACTIONS, INTERACTIONS_DLQ, SERVED, topic_name

log = logging.getLogger(__name__)

#: test-only fault injection: ``<point>[@<batch>]``, e.g. ``after_commit:silver_interactions@2``.
#: Points: ``before_write:<table>``, ``after_commit:<table>``, ``before_offset_commit``.
CRASH_ENV = "LAMBDAREC_LAKE_CRASH_POINT"
RT_TABLE = "rt_user_interactions"
_IO_HINTS = (
    "object store",
    "objectstore",
    "generic s3",
    "s3 error",
    "connection",
    "timed out",
    "timeout",
    "io error",
    "i/o",
    "dns",
    "refused",
    "reset by peer",
    "503",
    "500",
    "slowdown",
)


def is_transient(exc: BaseException) -> bool:
    """Worth retrying: I/O (object store down or slow), commit conflicts, a table mid-creation.
    Not: schema or protocol mismatches, which need a human."""
    if isinstance(exc, SchemaMismatchError | DeltaProtocolError):
        return False
    if isinstance(exc, OSError | CommitFailedError | TableNotFoundError):
        return True
    if isinstance(exc, DeltaError):
        text = str(exc).lower()
        return any(h in text for h in _IO_HINTS)
    return False


class ArchiverError(RuntimeError):
    """A condition the archiver must not paper over (e.g. a topic whose offsets went backwards)."""


class Interrupted(Exception):
    """Stop was requested while a storage operation was waiting to be retried."""


@dataclass
class ArchiveReport:
    """What a run did (``lambdarec lake archive --once`` prints it)."""

    batches: int = 0
    records: int = 0
    rows: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    skipped: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    retries: int = 0
    seconds: float = 0.0
    caught_up: bool = False
    watermark: datetime | None = None
    positions: dict[str, int] = field(default_factory=dict)  # "topic/partition" -> next offset
    #: transient failures that were retried (and then succeeded, unless ``errors`` says otherwise)
    retried: list[str] = field(default_factory=list)
    #: problems that remain: records lost to Kafka retention, a stop while the store was failing
    errors: list[str] = field(default_factory=list)

    @property
    def rows_per_second(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0


def _crash_point() -> tuple[str, int] | None:
    raw = os.environ.get(CRASH_ENV, "").strip()
    if not raw:
        return None
    point, _, n = raw.partition("@")
    return point, int(n or 1)


class Archiver:
    """One archiver process: a Kafka consumer on fixed partitions and the four Delta tables."""

    def __init__(self, settings: Settings, *, stop: threading.Event | None = None) -> None:
        self.settings = settings
        self.lake = Lake(settings)
        self.stop = stop or threading.Event()
        self.interactions = topic_name(settings, INTERACTIONS)
        self.served_topic = topic_name(settings, SERVED)
        self.dlq_topic = topic_name(settings, INTERACTIONS_DLQ)
        lk = settings.lake
        self.feeds: dict[str, tuple[TableSpec, tuple[str, ...]]] = {
            BRONZE_INTERACTIONS.name: (BRONZE_INTERACTIONS, (self.interactions,)),
            SILVER_INTERACTIONS.name: (SILVER_INTERACTIONS, (self.interactions,)),
            SERVED_RECOMMENDATIONS.name: (SERVED_RECOMMENDATIONS, (self.served_topic,)),
            DEAD_LETTERS.name: (DEAD_LETTERS, (self.interactions, self.served_topic, self.dlq_topic)),
        }
        self.indexes = {
            SILVER_INTERACTIONS.name: DedupIndex(SILVER_INTERACTIONS, "event_id", lk.dedup_cache_max_ids),
            SERVED_RECOMMENDATIONS.name: DedupIndex(SERVED_RECOMMENDATIONS, "rec_id", lk.dedup_cache_max_ids),
            DEAD_LETTERS.name: DedupIndex(DEAD_LETTERS, "letter_id", lk.dedup_cache_max_ids),
        }
        self.writers: dict[str, Writer] = {
            BRONZE_INTERACTIONS.name: events.write_bronze,
            SILVER_INTERACTIONS.name: events.silver_writer(
                self.indexes[SILVER_INTERACTIONS.name], lk.max_extra_columns
            ),
            SERVED_RECOMMENDATIONS.name: served.served_writer(self.indexes[SERVED_RECOMMENDATIONS.name]),
            DEAD_LETTERS.name: dl.dead_letter_writer(self.indexes[DEAD_LETTERS.name]),
        }
        self._tables: dict[str, DeltaTable] = {}
        self._crash = _crash_point()
        self._batch_no = 0
        self._consumer: Consumer | None = None
        self._admin: AdminClient | None = None
        self._partitions: list[tuple[str, int]] = []
        self._next: dict[tuple[str, int], int] = {}
        self._last_ts: dict[tuple[str, int], int] = {}  # last archived Kafka timestamp (ms)
        self._pg: Any = None
        self._last_maintenance = time.monotonic()
        self.report = ArchiveReport()

    # ---- Delta side ---------------------------------------------------------------------------

    def table(self, spec: TableSpec) -> DeltaTable:
        dt = self._tables.get(spec.name)
        if dt is None:
            dt = self.lake.ensure(spec)
            self._tables[spec.name] = dt
        return dt

    def lake_positions(self, partitions: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        """Next offset to read per topic-partition: the minimum over the tables it feeds of
        (last committed offset + 1). The lake is the source of truth, not the consumer group."""
        pos: dict[tuple[str, int], int] = {}
        for spec, topics in self.feeds.values():
            mine = [tp for tp in partitions if tp[0] in topics]
            if not mine:
                continue
            done = committed_offsets(self.table(spec), mine)
            for tp in mine:
                pos[tp] = min(pos.get(tp, done[tp] + 1), done[tp] + 1)
        return pos

    def crash_point(self, point: str) -> None:
        """Test-only: SIGKILL ourselves at ``point`` of batch N (see CRASH_ENV); free when unset."""
        if self._crash is not None and self._crash == (point, self._batch_no):
            log.warning("crash point %s@%d reached: SIGKILL", point, self._batch_no)
            logging.shutdown()
            os.kill(os.getpid(), signal.SIGKILL)

    def write_batch(self, records: list[KafkaRecord]) -> dict[str, CommitResult]:
        """Decode ``records`` once and commit every table, exactly once (retried by the caller)."""
        archived_at = datetime.now(UTC)
        by_topic: dict[str, list[KafkaRecord]] = defaultdict(list)
        for r in records:
            by_topic[r.topic].append(r)
        inter = events.decode_interactions(by_topic.get(self.interactions, []))
        lists: list[tuple[KafkaRecord, served.ServedList]] = []
        bad_lists: list[tuple[KafkaRecord, DeadLetter]] = []
        for r in by_topic.get(self.served_topic, []):
            res = served.decode_served(r)
            if isinstance(res, served.ServedList):
                lists.append((r, res))
            else:
                bad_lists.append((r, res))
        letters = (
            inter.dead_letters
            + bad_lists
            + [(r, dl.decode_dlq_record(r)) for r in by_topic.get(self.dlq_topic, [])]
        )
        rows: dict[str, pa.Table] = {
            BRONZE_INTERACTIONS.name: events.bronze_rows(inter, archived_at),
            SILVER_INTERACTIONS.name: events.silver_rows(inter, archived_at),
            SERVED_RECOMMENDATIONS.name: served.served_rows(lists, archived_at),
            DEAD_LETTERS.name: dl.dead_letter_rows(letters, archived_at),
        }
        last: dict[tuple[str, int], int] = {}
        for r in records:
            tp = (r.topic, r.partition)
            last[tp] = max(last.get(tp, -1), r.offset)
        return self._commit_all(rows, last)

    def _commit_all(
        self, rows: dict[str, pa.Table], last: dict[tuple[str, int], int]
    ) -> dict[str, CommitResult]:
        out: dict[str, CommitResult] = {}
        delay = self.settings.lake.retry_initial_seconds
        for name, (spec, topics) in self.feeds.items():
            ranges = {tp: off for tp, off in last.items() if tp[0] in topics}
            if not ranges:
                continue
            while True:
                try:
                    self.crash_point(f"before_write:{name}")
                    out[name] = commit_exactly_once(
                        self.table(spec), spec, rows[name], ranges, self.writers[name]
                    )
                    self.crash_point(f"after_commit:{name}")
                    break
                except Exception as exc:
                    if not is_transient(exc):
                        raise
                    self.report.retries += 1
                    msg = f"{name}: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
                    log.warning("commit failed (%s); retrying in %.1fs", msg, delay)
                    self.report.retried = [*self.report.retried[-99:], msg]
                    self._tables.pop(name, None)  # reopen: re-read the log on the next attempt
                    if self.stop.wait(delay):
                        raise Interrupted(msg) from exc
                    delay = min(self.settings.lake.retry_max_seconds, delay * 2) * random.uniform(0.8, 1.2)
        return out

    # ---- Kafka side ---------------------------------------------------------------------------

    def _consumer_config(self) -> dict[str, Any]:
        return {
            "bootstrap.servers": self.settings.kafka.bootstrap_servers,
            "group.id": self.settings.lake.consumer_group,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": False,
            "queued.max.messages.kbytes": 65536,
            "logger": logging.getLogger("lambdarec.kafka"),
        }

    def _discover(self, consumer: Consumer) -> list[tuple[str, int]]:
        md = consumer.list_topics(timeout=15).topics
        parts: list[tuple[str, int]] = []
        for topic in (self.interactions, self.served_topic, self.dlq_topic):
            t = md.get(topic)
            if t is None or t.error is not None:
                if topic == self.interactions:
                    raise ArchiverError(
                        f"topic {topic} does not exist: run `lambdarec infra up kafka` "
                        "(it creates the topics)"
                    )
                log.warning("topic %s does not exist; not archiving it", topic)
                continue
            parts += [(topic, p) for p in sorted(t.partitions)]
        return parts

    def open(self) -> None:
        """Create the consumer, find the partitions and seek each to the lake's position."""
        consumer = Consumer(self._consumer_config())
        self._consumer = consumer
        admin_conf: dict[str, Any] = {
            "bootstrap.servers": self.settings.kafka.bootstrap_servers,
            "logger": logging.getLogger("lambdarec.kafka"),
        }
        self._admin = AdminClient(admin_conf)
        self._partitions = self._discover(consumer)
        positions = self._retrying(lambda: self.lake_positions(self._partitions), "reading lake positions")
        tps = [TopicPartition(t, p) for t, p in self._partitions]
        committed = {(tp.topic, tp.partition): tp.offset for tp in consumer.committed(tps, timeout=15)}
        assign = []
        for tp in self._partitions:
            lo, hi = consumer.get_watermark_offsets(TopicPartition(*tp), timeout=15)
            pos = positions[tp]
            if pos > hi:
                raise ArchiverError(
                    f"{tp[0]}[{tp[1]}]: the lake has offsets up to {pos - 1} but the topic ends at {hi}; "
                    "was the topic deleted and recreated? Archive it into a new lake root (or delete "
                    "the tables) rather than skipping its new records"
                )
            if pos < lo:
                msg = (
                    f"{tp[0]}[{tp[1]}]: offsets {pos}..{lo - 1} expired from Kafka before they were "
                    "archived (retention too short or archiver down too long)"
                )
                log.error(msg)
                self.report.errors.append(msg)
                pos = lo
            group = committed.get(tp, -1)
            if group is not None and group > pos:
                log.warning(
                    "%s[%d]: consumer group is at %d but the lake only has up to %d: "
                    "re-archiving from the lake's position (restored or recreated table?)",
                    tp[0],
                    tp[1],
                    group,
                    pos - 1,
                )
            self._next[tp] = pos
            assign.append(TopicPartition(tp[0], tp[1], pos))
        consumer.assign(assign)
        log.info("archiving %d partitions from the lake's positions into %s", len(assign), self.lake.root)

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
        self._admin = None
        if self._pg is not None:
            with contextlib.suppress(Exception):  # closing a broken connection
                self._pg.close()
            self._pg = None

    def _retrying(self, fn: Callable[[], Any], what: str) -> Any:
        delay = self.settings.lake.retry_initial_seconds
        while True:
            try:
                return fn()
            except Exception as exc:
                if not is_transient(exc):
                    raise
                self.report.retries += 1
                log.warning(
                    "%s failed (%s: %s); retrying in %.1fs",
                    what,
                    type(exc).__name__,
                    str(exc).splitlines()[0][:300],
                    delay,
                )
                self._tables.clear()
                if self.stop.wait(delay):
                    raise Interrupted(what) from exc
                delay = min(self.settings.lake.retry_max_seconds, delay * 2)

    def _end_offsets(self) -> tuple[float, dict[tuple[str, int], int]]:
        """End offsets of every partition, in one ListOffsets round trip on the admin client's own
        connection (the consumer's connection may be parked in a long-poll fetch)."""
        from confluent_kafka.admin import OffsetSpec

        assert self._admin is not None
        t_obs = time.time()
        futures = self._admin.list_offsets(
            {TopicPartition(t, p): OffsetSpec.latest() for t, p in self._partitions}, request_timeout=15
        )
        return t_obs, {(tp.topic, tp.partition): f.result().offset for tp, f in futures.items()}

    def _collect(
        self, deadline: float, max_rows: int, targets: dict[tuple[str, int], int] | None = None
    ) -> list[KafkaRecord]:
        """Up to ``max_rows`` records until ``deadline``; with ``targets`` (once mode) also stop as
        soon as every partition has been read up to its target end offset."""
        assert self._consumer is not None
        out: list[KafkaRecord] = []
        seen = dict(self._next)
        while len(out) < max_rows and not self.stop.is_set():
            if targets is not None and all(seen.get(tp, 0) >= hi for tp, hi in targets.items()):
                break
            left = deadline - time.monotonic()
            if left <= 0:
                break
            msgs = self._consumer.consume(min(10_000, max_rows - len(out)), timeout=min(left, 0.5))
            for m in msgs:
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        continue
                    raise KafkaException(err)
                ts_type, ts = m.timestamp()
                p, off = m.partition(), m.offset()
                assert p is not None and off is not None
                topic = m.topic() or ""
                out.append(KafkaRecord(topic, p, off, ts if ts_type else None, m.key(), m.value()))
                seen[(topic, p)] = off + 1
        return out

    def _commit_group_offsets(self, last: dict[tuple[str, int], int]) -> None:
        assert self._consumer is not None
        try:
            self._consumer.commit(
                offsets=[TopicPartition(t, p, off + 1) for (t, p), off in last.items()], asynchronous=False
            )
        except KafkaException as exc:  # only an optimization: the lake holds the real positions
            log.warning("could not commit consumer-group offsets (%s); the lake's positions stand", exc)

    # ---- watermark ----------------------------------------------------------------------------

    def watermark(self, t_obs: float, ends: dict[tuple[str, int], int]) -> datetime | None:
        """The archive watermark for rt_user_interactions (see module doc), or None if unknown."""
        return compute_watermark(
            {tp: self._next[tp] for tp in self._next if tp[0] == self.interactions},
            {tp: e for tp, e in ends.items() if tp[0] == self.interactions},
            self._last_ts,
            t_obs,
            self.settings.lake.watermark_lateness_seconds,
        )

    def _advance_watermark(self, through: datetime) -> None:
        if not self.settings.lake.advance_watermark:
            self.report.watermark = through
            return
        try:
            import psycopg

            if self._pg is None or self._pg.closed:
                self._pg = psycopg.connect(
                    self.settings.postgres.url,
                    autocommit=True,
                    connect_timeout=5,
                    application_name="lambdarec-lake-archiver",
                )
            row = self._pg.execute("SELECT advance_archive_watermark(%s, %s)", (RT_TABLE, through)).fetchone()
            self.report.watermark = row[0] if row else through
        except Exception as exc:
            log.warning("could not advance the archive watermark (%s); will retry after the next batch", exc)
            if self._pg is not None:
                with contextlib.suppress(Exception):  # closing a broken connection
                    self._pg.close()
                self._pg = None

    # ---- the loop -----------------------------------------------------------------------------

    def run(self, *, once: bool = False, max_batches: int = 0) -> ArchiveReport:
        """Archive until stopped (``once``: until caught up with the end offsets seen at start)."""
        t0 = time.monotonic()
        lk = self.settings.lake
        self.open()
        try:
            targets = self._end_offsets()[1] if once else {}
            while not self.stop.is_set():
                deadline = time.monotonic() + lk.batch_max_seconds
                records = self._collect(deadline, lk.batch_max_rows, targets if once else None)
                if records:
                    self._batch_no += 1
                    last = self._archive(records)
                    self.crash_point("before_offset_commit")
                    self._commit_group_offsets(last)
                self._watermark_round()
                if once and all(self._next.get(tp, 0) >= hi for tp, hi in targets.items()):
                    self.report.caught_up = True
                    break
                if max_batches and self.report.batches >= max_batches:
                    break
                self._maybe_maintain()
        except Interrupted as exc:
            msg = f"stopped while retrying ({exc}); the uncommitted batch is re-read on the next start"
            log.warning(msg)
            self.report.errors.append(msg)
        finally:
            self.report.seconds = time.monotonic() - t0
            self.report.positions = {f"{t}/{p}": off for (t, p), off in sorted(self._next.items())}
            self.close()
        return self.report

    def _watermark_round(self) -> None:
        """Advance the archive watermark if Kafka answers (a broker hiccup just skips a round)."""
        try:
            t_obs, ends = self._end_offsets()
        except KafkaException as exc:
            log.warning("could not read end offsets (%s); watermark not advanced this round", exc)
            return
        mark = self.watermark(t_obs, ends)
        if mark is not None:
            self._advance_watermark(mark)

    def _archive(self, records: list[KafkaRecord]) -> dict[tuple[str, int], int]:
        t = time.monotonic()
        results = self.write_batch(records)
        last: dict[tuple[str, int], int] = {}
        for r in records:
            tp = (r.topic, r.partition)
            if r.offset > last.get(tp, -1):
                last[tp] = r.offset
                if r.timestamp_ms is not None:
                    self._last_ts[tp] = r.timestamp_ms
        for tp, off in last.items():
            self._next[tp] = off + 1
        self.report.batches += 1
        self.report.records += len(records)
        for name, res in results.items():
            self.report.rows[name] += res.rows
            self.report.skipped[name] += res.skipped_rows
        log.info(
            "batch %d: %d records in %.2fs -> %s",
            self._batch_no,
            len(records),
            time.monotonic() - t,
            ", ".join(
                f"{n} +{r.rows}" + (f" (skipped {r.skipped_rows})" if r.skipped_rows else "")
                for n, r in results.items()
            ),
        )
        return last

    def _maybe_maintain(self) -> None:
        minutes = self.settings.lake.maintenance_interval_minutes
        if minutes <= 0 or time.monotonic() - self._last_maintenance < minutes * 60:
            return
        self._last_maintenance = time.monotonic()
        from batch.lake.maintenance import maintain

        try:
            maintain(self.settings, recent_only=True)
        except Exception as exc:
            log.warning("scheduled maintenance failed (%s); will try again next interval", exc)
        self._tables.clear()


def compute_watermark(
    next_offsets: dict[tuple[str, int], int],
    end_offsets: dict[tuple[str, int], int],
    last_archived_ts_ms: dict[tuple[str, int], int],
    t_obs: float,
    lateness_seconds: float,
) -> datetime | None:
    """Everything that occurred before the returned time is archived (or was later than the
    tolerated lateness). Per partition: caught up -> the observation time; lagging -> the Kafka
    timestamp of the last archived record (unknown -> no watermark at all)."""
    if not end_offsets:
        return None
    bounds = []
    for tp, end in end_offsets.items():
        if next_offsets.get(tp, 0) >= end:
            bounds.append(t_obs)
        elif tp in last_archived_ts_ms:
            bounds.append(last_archived_ts_ms[tp] / 1000)
        else:
            return None
    mark = datetime.fromtimestamp(min(bounds), UTC) - timedelta(seconds=lateness_seconds)
    return min(mark, datetime.now(UTC))


def archive_until_caught_up(settings: Settings) -> ArchiveReport:
    """The batch pipeline's "close the archive window" step: archive everything in Kafka now."""
    return Archiver(settings).run(once=True)

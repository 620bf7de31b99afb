"""Exactly-once commits from Kafka into Delta: offsets travel inside the Delta commit.

Each Delta commit the archiver makes carries, for every Kafka partition the micro-batch read, a
Delta *application transaction* ``(app_id, version)`` with ``app_id = kafka/<topic>/<partition>``
and ``version`` = the last offset of that partition in the batch. Data files and offsets then
become visible atomically: either the commit exists (rows and offsets) or it does not (neither;
files written before a crash are orphans that VACUUM removes).

Before writing, :func:`commit_exactly_once` re-reads each partition's committed version from the
table's log and drops every row at or below it, so replaying a batch after a crash (between
commit and the Kafka offset commit, or after an ambiguous commit whose answer was lost) writes
nothing twice. The commit is made on the very snapshot that was checked: if another writer (a
zombie archiver) commits the same app ids meanwhile, delta-rs' conflict checker rejects ours with
"Concurrent transaction failed" (a ``CommitFailedError``), the caller retries, and the re-check
then finds the offsets done.

Every table keeps its own versions, so a crash between the commits of two tables is also safe:
on restart each table skips what it already has.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date
from typing import NamedTuple

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from deltalake import CommitProperties, DeltaTable, Transaction

from schemas.lake import TableSpec

log = logging.getLogger(__name__)

#: in-memory only: which topic a row came from (dropped before writing)
SOURCE_TOPIC = "_source_topic"
#: marks the archiver's own commits in the Delta history (commitInfo)
WRITER_MARK = {"lambdarec.writer": "archiver"}


#: performs one Delta write on the given table snapshot and returns the number of rows written
Writer = Callable[[DeltaTable, pa.Table, CommitProperties], int]


def app_id(topic: str, partition: int) -> str:
    """The Delta application-transaction id of one Kafka topic-partition."""
    return f"kafka/{topic}/{partition}"


class KafkaRecord(NamedTuple):
    """A consumed record, reduced to what the lake stores (and constructible in unit tests).
    A NamedTuple because the archiver builds one per record: it is the cheapest to create."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None
    key: bytes | None
    value: bytes | None


def committed_offsets(dt: DeltaTable, partitions: Iterable[tuple[str, int]]) -> dict[tuple[str, int], int]:
    """Last offset committed to ``dt`` per topic-partition (-1: none yet)."""
    out = {}
    for topic, p in partitions:
        v = dt.transaction_version(app_id(topic, p))
        out[(topic, p)] = -1 if v is None else int(v)
    return out


def drop_committed(rows: pa.Table, done: dict[tuple[str, int], int]) -> pa.Table:
    """Rows whose (topic, partition, offset) is above what the table already holds."""
    if rows.num_rows == 0 or all(v < 0 for v in done.values()):
        return rows
    topic = rows.column(SOURCE_TOPIC)
    part = rows.column("kafka_partition")
    off = rows.column("kafka_offset")
    stale = pa.array([False] * rows.num_rows)
    for (t, p), v in done.items():
        if v < 0:
            continue
        hit = pc.and_(pc.and_(pc.equal(topic, t), pc.equal(part, p)), pc.less_equal(off, v))
        stale = pc.or_(stale, hit)
    return rows.filter(pc.invert(stale))


def without_source(rows: pa.Table) -> pa.Table:
    """``rows`` without the in-memory ``_source_topic`` column."""
    return rows.drop_columns([SOURCE_TOPIC]) if SOURCE_TOPIC in rows.column_names else rows


@dataclass
class CommitResult:
    """What one table commit did (``version`` None: nothing to commit, all offsets were done)."""

    table: str
    rows: int = 0
    skipped_rows: int = 0
    version: int | None = None
    seconds: float = 0.0


def commit_exactly_once(
    dt: DeltaTable,
    spec: TableSpec,
    rows: pa.Table,
    ranges: dict[tuple[str, int], int],
    write: Writer,
) -> CommitResult:
    """Commit ``rows`` (with a ``_source_topic`` column) plus the offsets in ``ranges``
    (topic-partition -> last offset read) to ``dt``, skipping what the table already has.

    ``write(dt, rows, commit_properties)`` performs the Delta write (append, insert-if-absent,
    ...) on ``dt``'s snapshot and returns the number of rows it wrote; it gets the rows with
    ``_source_topic`` (for deduplication) and drops it (:func:`without_source`) before writing.
    An empty ``rows`` still commits the offsets, so every table's position keeps up even when it
    gets no rows.
    """
    t0 = time.monotonic()
    dt.update_incremental()
    done = committed_offsets(dt, ranges)
    todo = {tp: last for tp, last in ranges.items() if last > done[tp]}
    result = CommitResult(spec.name)
    if not todo:
        result.skipped_rows = rows.num_rows
        return result
    fresh = drop_committed(rows, done)
    result.skipped_rows = rows.num_rows - fresh.num_rows
    now_ms = int(time.time() * 1000)
    props = CommitProperties(
        custom_metadata=dict(WRITER_MARK),
        app_transactions=[Transaction(app_id(t, p), last, now_ms) for (t, p), last in sorted(todo.items())],
    )
    result.rows = write(dt, fresh, props)
    result.version = dt.version()
    result.seconds = time.monotonic() - t0
    return result


@dataclass
class DedupIndex:
    """Keys already in a table, per partition date, loaded lazily: "insert if absent" without a
    full MERGE scan per micro-batch.

    A date's keys are read once (one column of one partition) and then kept up to date with what
    the archiver itself inserts. Any commit by someone else (a GDPR delete, compaction, a backfill)
    invalidates the cache, which is reloaded on demand. Memory: roughly 100 bytes per key; dates
    are evicted least-recently-used beyond ``max_keys``.
    """

    spec: TableSpec
    key: str
    max_keys: int = 5_000_000
    version: int | None = None
    _dates: OrderedDict[date, set[str]] = field(default_factory=OrderedDict)

    @property
    def size(self) -> int:
        return sum(len(s) for s in self._dates.values())

    def sync(self, dt: DeltaTable) -> None:
        """Forget everything if the table changed since our last commit."""
        if self.version is not None and dt.version() != self.version:
            self._dates.clear()
        self.version = dt.version()

    def keys_for(self, dt: DeltaTable, day: date) -> set[str]:
        if day in self._dates:
            self._dates.move_to_end(day)
            return self._dates[day]
        date_col = self.spec.date_column
        if dt.version() == 0 and not dt.file_uris():
            keys: set[str] = set()
        else:
            got = dt.to_pyarrow_dataset().to_table(columns=[self.key], filter=ds.field(date_col) == day)
            keys = set(got.column(self.key).to_pylist())
        self._dates[day] = keys
        while len(self._dates) > 1 and self.size > self.max_keys:
            self._dates.popitem(last=False)
        return keys

    def filter_new(self, dt: DeltaTable, rows: pa.Table) -> pa.Table:
        """Rows whose key is neither in the table nor earlier in ``rows``.

        "Earlier" is Kafka order (partition, offset): the first copy of a retried event wins, and
        all rows of one record stay together (a served list has one row per item).
        """
        if rows.num_rows == 0:
            return rows
        self.sync(dt)
        df = pl.from_arrow(rows)
        assert isinstance(df, pl.DataFrame)
        df = df.with_row_index("_i")
        order = [c for c in (SOURCE_TOPIC, "kafka_partition", "kafka_offset") if c in df.columns]
        first = (
            df.sort(order)
            .group_by(self.key, maintain_order=True)
            .agg([pl.col(c).first().alias(f"_first{c}") for c in order])
        )
        df = df.join(first, on=self.key).filter(
            pl.all_horizontal([pl.col(c) == pl.col(f"_first{c}") for c in order])
        )
        date_col = self.spec.date_column
        keep = []
        for day in df.get_column(date_col).unique().to_list():
            existing = self.keys_for(dt, day)
            part = df.filter(pl.col(date_col) == day)
            if existing:
                part = part.filter(~pl.col(self.key).is_in(list(existing & set(part.get_column(self.key)))))
            keep.append(part)
        out = pl.concat(keep).sort("_i").drop(["_i", *(f"_first{c}" for c in order)])
        return out.to_arrow().cast(rows.schema)

    def add(self, rows: pa.Table, version: int | None) -> None:
        """Record keys we just committed (and the table version our commit produced)."""
        date_col = self.spec.date_column
        if rows.num_rows:
            days = rows.column(date_col)
            for day in pc.unique(days).to_pylist():
                s = self._dates.get(day)
                if s is not None:
                    keys = rows.column(self.key).filter(pc.equal(days, pa.scalar(day, days.type)))
                    s.update(keys.to_pylist())
        if version is not None:
            self.version = version

"""Table care: compaction (OPTIMIZE), VACUUM, explicit schema evolution, and a status report.

Why compaction matters here: the archiver commits every ``batch_max_seconds``, so each day
partition collects hundreds of small files; readers pay per file (S3 GETs, Parquet footers).
OPTIMIZE bin-packs them into ``optimize_target_file_mb`` files (or z-orders silver by
``zorder_silver_by``), which is a data-neutral commit that never conflicts with the archiver's
appends. Scheduled runs (inside the archiver, ``maintenance_interval_minutes``) only touch the
last ``optimize_recent_days`` days: older partitions are already compact.

VACUUM then deletes files no version younger than ``vacuum_retention_hours`` needs: files replaced
by OPTIMIZE, rewritten by DELETE (GDPR, retention), and orphans of writes that crashed before their
commit (``full=True`` lists the directory to find those). Until VACUUM runs, deleted rows are
still readable by time travel: see docs/analysts.md, "When erased data disappears".
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pyarrow as pa
from deltalake import DeltaTable
from deltalake.schema import Field as DeltaField

from batch.lake.storage import Lake
from batch.lake.txn import app_id
from lambdarec.settings import Settings
from schemas.lake import SILVER_INTERACTIONS, TABLES, TableSpec

log = logging.getLogger(__name__)


@dataclass
class OptimizeResult:
    table: str
    files_added: int = 0
    files_removed: int = 0
    partitions: int = 0
    seconds: float = 0.0
    zorder: list[str] = field(default_factory=list)


def optimize(
    settings: Settings,
    tables: tuple[TableSpec, ...] = TABLES,
    *,
    since: date | None = None,
    recent_only: bool = False,
) -> list[OptimizeResult]:
    """Compact small files (z-order silver if configured). ``recent_only`` limits the work to the
    last ``optimize_recent_days`` days; ``since`` to partitions from that date on."""
    lake = Lake(settings)
    lk = settings.lake
    if recent_only and since is None:
        since = (datetime.now(UTC) - timedelta(days=lk.optimize_recent_days - 1)).date()
    out = []
    for spec in tables:
        dt = lake.open(spec)
        if dt is None:
            continue
        t0 = time.monotonic()
        filters: Any = [(spec.date_column, ">=", since.isoformat())] if since else None
        target = lk.optimize_target_file_mb * 1024 * 1024
        zorder = list(lk.zorder_silver_by) if spec.name == SILVER_INTERACTIONS.name else []
        if zorder:
            m = dt.optimize.z_order(zorder, partition_filters=filters, target_size=target)
        else:
            m = dt.optimize.compact(partition_filters=filters, target_size=target)
        res = OptimizeResult(
            spec.name,
            files_added=int(m.get("numFilesAdded", 0)),
            files_removed=int(m.get("numFilesRemoved", 0)),
            partitions=int(m.get("partitionsOptimized", 0)),
            seconds=time.monotonic() - t0,
            zorder=zorder,
        )
        log.info("optimize %s: %d files -> %d", spec.name, res.files_removed, res.files_added)
        out.append(res)
    return out


def vacuum(
    settings: Settings,
    tables: tuple[TableSpec, ...] = TABLES,
    *,
    retention_hours: int | None = None,
    enforce_retention: bool = True,
    dry_run: bool = False,
    full: bool = True,
) -> dict[str, list[str]]:
    """Delete unreferenced files older than the retention (default ``vacuum_retention_hours``).

    ``enforce_retention=False`` allows a retention below the table's
    ``delta.deletedFileRetentionDuration`` (tests; an urgent erasure). It breaks time travel and
    any reader still on an older snapshot, which is why it is never the default.
    """
    lake = Lake(settings)
    hours = settings.lake.vacuum_retention_hours if retention_hours is None else retention_hours
    out: dict[str, list[str]] = {}
    for spec in tables:
        dt = lake.open(spec)
        if dt is None:
            continue
        out[spec.name] = dt.vacuum(
            retention_hours=hours, dry_run=dry_run, enforce_retention_duration=enforce_retention, full=full
        )
        log.info("vacuum %s: %d files%s", spec.name, len(out[spec.name]), " (dry run)" if dry_run else "")
    return out


def maintain(settings: Settings, *, recent_only: bool = True) -> None:
    """The scheduled job: compact recent partitions of every table, then vacuum."""
    optimize(settings, TABLES, recent_only=recent_only)
    vacuum(settings, TABLES)


def add_columns(settings: Settings, spec: TableSpec, fields: list[pa.Field]) -> list[str]:
    """Explicit, additive schema evolution: add nullable columns missing from the table.

    The archiver evolves silver by itself when events carry new fields (``schema_mode="merge"``);
    this is for planned changes (a new column in ``schemas/lake.py``) so readers see it before
    any row has it. Returns the names actually added.
    """
    dt = Lake(settings).ensure(spec)
    have = set(pa.schema(dt.schema().to_arrow()).names)
    new = [f for f in fields if f.name not in have]
    if new:
        dt.alter.add_columns([DeltaField.from_arrow(pa.field(f.name, f.type, nullable=True)) for f in new])
    return [f.name for f in new]


# ---- status ------------------------------------------------------------------------------------


@dataclass
class TableStatus:
    name: str
    uri: str
    exists: bool
    version: int | None = None
    files: int = 0
    bytes: int = 0
    rows: int = 0
    partitions: int = 0
    last_commit_at: datetime | None = None
    last_operation: str | None = None
    offsets: dict[str, int] = field(default_factory=dict)  # app_id -> last committed offset


def table_status(
    dt: DeltaTable | None, spec: TableSpec, uri: str, partitions: list[tuple[str, int]]
) -> TableStatus:
    if dt is None:
        return TableStatus(spec.name, uri, exists=False)
    adds = pa.table(dt.get_add_actions(flatten=True))
    st = TableStatus(spec.name, uri, exists=True, version=dt.version())
    st.files = adds.num_rows
    if adds.num_rows:
        st.bytes = int(pa.compute.sum(adds.column("size_bytes")).as_py() or 0)
        st.rows = int(pa.compute.sum(adds.column("num_records")).as_py() or 0)
        pcol = f"partition.{spec.date_column}"
        if pcol in adds.column_names:
            st.partitions = len(pa.compute.unique(adds.column(pcol)))
    hist = dt.history(1)
    if hist:
        st.last_commit_at = datetime.fromtimestamp(hist[0]["timestamp"] / 1000, UTC)
        st.last_operation = hist[0].get("operation")
    for topic, p in partitions:
        v = dt.transaction_version(app_id(topic, p))
        if v is not None:
            st.offsets[app_id(topic, p)] = int(v)
    return st


def status(settings: Settings, *, with_kafka: bool = True) -> tuple[list[TableStatus], dict[str, Any]]:
    """Every table's size and version, the archived offsets vs. Kafka's end offsets (lag), and the
    Postgres archive watermark. Kafka/Postgres being down only blanks their parts."""
    lake = Lake(settings)
    extra: dict[str, Any] = {"lag": {}, "watermark": None, "problems": []}
    partitions: list[tuple[str, int]] = []
    ends: dict[tuple[str, int], int] = {}
    if with_kafka:
        try:
            partitions, ends = _kafka_ends(settings)
        except Exception as exc:
            extra["problems"].append(f"kafka: {exc}")
    tables = [table_status(lake.open(s), s, lake.uri(s), partitions) for s in TABLES]
    for st in tables:
        for (topic, p), end in ends.items():
            if _feeds(settings, st.name, topic):
                done = st.offsets.get(app_id(topic, p), -1)
                extra["lag"].setdefault(st.name, {})[f"{topic}/{p}"] = max(0, end - (done + 1))
    try:
        import psycopg

        with psycopg.connect(settings.postgres.url, connect_timeout=3) as conn:
            row = conn.execute(
                "SELECT archived_through FROM archive_watermarks WHERE table_name = 'rt_user_interactions'"
            ).fetchone()
            extra["watermark"] = row[0] if row else None
    except Exception as exc:
        extra["problems"].append(f"postgres: {str(exc).strip()[:200]}")
    return tables, extra


def _feeds(settings: Settings, table: str, topic: str) -> bool:
    from schemas.topics import INTERACTIONS, INTERACTIONS_DLQ, SERVED, topic_name

    inter, served, dlq = (topic_name(settings, t) for t in (INTERACTIONS, SERVED, INTERACTIONS_DLQ))
    feeds = {
        "bronze_interactions": {inter},
        "silver_interactions": {inter},
        "served_recommendations": {served},
        "dead_letters": {inter, served, dlq},
    }
    return topic in feeds.get(table, set())


def _kafka_ends(settings: Settings) -> tuple[list[tuple[str, int]], dict[tuple[str, int], int]]:
    from confluent_kafka import Consumer, TopicPartition

    from schemas.topics import INTERACTIONS, INTERACTIONS_DLQ, SERVED, topic_name

    c = Consumer({"bootstrap.servers": settings.kafka.bootstrap_servers, "group.id": "lambdarec-lake-status"})
    try:
        md = c.list_topics(timeout=5).topics
        parts, ends = [], {}
        for logical in (INTERACTIONS, SERVED, INTERACTIONS_DLQ):
            t = topic_name(settings, logical)
            if t not in md:
                continue
            for p in sorted(md[t].partitions):
                parts.append((t, p))
                ends[(t, p)] = c.get_watermark_offsets(TopicPartition(t, p), timeout=5)[1]
        return parts, ends
    finally:
        c.close()

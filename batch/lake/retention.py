"""Retention: Postgres keeps the hot window (``rt_retention_hours``, 48 h), the lake keeps history.

The two sides are coupled by the archive watermark: ``rt_interactions_maintain`` (migrations 003, 012)
drops a daily partition of ``rt_user_interactions`` only when it is both older than the window
*and* below ``archive_watermarks.archived_through``, which only the archiver advances after its
Delta commits. So a row the lake does not have yet survives the purge, however old it is; with no
watermark at all (nothing archived) nothing is ever dropped.

The lake keeps everything by default (``retention_days = 0``); a positive value (at least 30, the
settings refuse less) deletes whole older days from the archive tables, which VACUUM then removes
from storage after ``vacuum_retention_hours``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from batch.lake.storage import Lake
from lambdarec.settings import Settings
from schemas.lake import ARCHIVE_TABLES, TableSpec

log = logging.getLogger(__name__)


@dataclass
class PurgeReport:
    """What one ``rt_interactions_maintain`` call did."""

    watermark: datetime | None
    dropped_partitions: list[str] = field(default_factory=list)
    purged_default_rows: int = 0
    created_partitions: int = 0


def purge_rt(settings: Settings, now: datetime | None = None) -> PurgeReport:
    """Run the hot-window maintenance with ``rt_retention_hours`` (drops only archived days)."""
    import psycopg

    now = now or datetime.now(UTC)
    hours = settings.lake.rt_retention_hours
    with psycopg.connect(settings.postgres.url, autocommit=True, connect_timeout=5) as conn:
        rows = conn.execute(
            "SELECT action, partition_name, moved_rows FROM rt_interactions_maintain("
            "p_now => %s, p_retention => make_interval(hours => %s))",
            (now, hours),
        ).fetchall()
        mark = conn.execute(
            "SELECT archived_through FROM archive_watermarks WHERE table_name = 'rt_user_interactions'"
        ).fetchone()
    report = PurgeReport(mark[0] if mark else None)
    for action, name, moved in rows:
        if action == "dropped":
            report.dropped_partitions.append(name)
        elif action == "purged_default":
            report.purged_default_rows += int(moved or 0)
        elif action == "created":
            report.created_partitions += 1
    return report


def expire_lake(
    settings: Settings, tables: tuple[TableSpec, ...] = ARCHIVE_TABLES, now: datetime | None = None
) -> dict[str, int]:
    """Delete whole days older than ``retention_days`` from the archive tables (0: keep all).
    Returns rows deleted per table."""
    days = settings.lake.retention_days
    if days <= 0:
        return {}
    cutoff = ((now or datetime.now(UTC)) - timedelta(days=days)).date()
    lake = Lake(settings)
    out: dict[str, int] = {}
    for spec in tables:
        dt = lake.open(spec)
        if dt is None:
            continue
        res = dt.delete(f"\"{spec.date_column}\" < '{cutoff.isoformat()}'")
        out[spec.name] = int(res.get("num_deleted_rows", 0))
        log.info("retention: %s lost %d rows before %s", spec.name, out[spec.name], cutoff)
    return out

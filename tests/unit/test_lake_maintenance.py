"""Table care on a local lake: compaction, z-order, VACUUM, explicit schema evolution, status."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from batch.lake.events import bronze_rows, decode_interactions, silver_rows, silver_writer, write_bronze
from batch.lake.maintenance import add_columns, optimize, status, vacuum
from batch.lake.storage import Lake
from batch.lake.txn import DedupIndex, KafkaRecord, commit_exactly_once
from lambdarec.settings import Settings
from schemas.lake import ARCHIVE_TABLES, BRONZE_INTERACTIONS, SILVER_INTERACTIONS

NOW = datetime.now(UTC)


def _fill(settings: Settings, batches: int = 6, per: int = 20) -> None:
    lake = Lake(settings)
    silver, bronze = lake.ensure(SILVER_INTERACTIONS), lake.ensure(BRONZE_INTERACTIONS)
    write = silver_writer(DedupIndex(SILVER_INTERACTIONS, "event_id"), 8)
    off = 0
    for _ in range(batches):
        recs = []
        for _ in range(per):
            ev = {
                "event_id": str(uuid.uuid4()),
                "user_id": f"u{off % 4}",
                "item_id": f"i{off % 9}",
                "type": "view",
                "occurred_at": (NOW - timedelta(days=off % 2)).isoformat(),
            }
            recs.append(KafkaRecord("t", 0, off, None, b"k", json.dumps(ev).encode()))
            off += 1
        batch = decode_interactions(recs)
        commit_exactly_once(silver, SILVER_INTERACTIONS, silver_rows(batch, NOW), {("t", 0): off - 1}, write)
        commit_exactly_once(
            bronze, BRONZE_INTERACTIONS, bronze_rows(batch, NOW), {("t", 0): off - 1}, write_bronze
        )


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(lake={"root": str(tmp_path / "lake")})


def _rows(settings: Settings, spec) -> list[dict]:  # type: ignore[no-untyped-def]
    dt = Lake(settings).open(spec)
    assert dt is not None
    return sorted(dt.to_pyarrow_table().to_pylist(), key=lambda r: r["kafka_offset"])


def test_optimize_compacts_then_vacuum_removes_replaced_files(settings: Settings) -> None:
    _fill(settings)
    before = _rows(settings, SILVER_INTERACTIONS)
    files_before = len(Lake(settings).open(SILVER_INTERACTIONS).file_uris())  # type: ignore[union-attr]
    assert files_before >= 6
    res = {r.table: r for r in optimize(settings, ARCHIVE_TABLES, recent_only=True)}
    silver = res["silver_interactions"]
    assert silver.files_removed == files_before and silver.files_added == 2  # one per day partition
    assert _rows(settings, SILVER_INTERACTIONS) == before
    # the replaced files are still there (time travel) until VACUUM
    assert vacuum(settings, ARCHIVE_TABLES, dry_run=True)["silver_interactions"] == []  # 7-day retention
    gone = vacuum(settings, ARCHIVE_TABLES, retention_hours=0, enforce_retention=False)
    assert len(gone["silver_interactions"]) == files_before
    assert _rows(settings, SILVER_INTERACTIONS) == before
    # offsets survive compaction (they live in the log, not in the files)
    dt = Lake(settings).open(SILVER_INTERACTIONS)
    assert dt is not None and dt.transaction_version("kafka/t/0") == len(before) - 1


def test_vacuum_below_table_retention_needs_force(settings: Settings) -> None:
    _fill(settings, batches=2)
    with pytest.raises(Exception, match=r"(?i)retention"):
        vacuum(settings, (SILVER_INTERACTIONS,), retention_hours=0)


def test_zorder_silver_when_configured(tmp_path: Path) -> None:
    s = Settings(lake={"root": str(tmp_path / "lake"), "zorder_silver_by": ["item_id"]})
    _fill(s)
    before = _rows(s, SILVER_INTERACTIONS)
    res = {r.table: r for r in optimize(s, (SILVER_INTERACTIONS,))}
    assert res["silver_interactions"].zorder == ["item_id"]
    assert _rows(s, SILVER_INTERACTIONS) == before
    assert Lake(s).open(SILVER_INTERACTIONS).history(1)[0]["operation"] == "OPTIMIZE"  # type: ignore[union-attr]


def test_add_columns_is_additive_and_idempotent(settings: Settings) -> None:
    _fill(settings, batches=1)
    new = [pa.field("device_class", pa.string()), pa.field("event_id", pa.string())]
    assert add_columns(settings, SILVER_INTERACTIONS, new) == ["device_class"]
    assert add_columns(settings, SILVER_INTERACTIONS, new) == []
    rows = _rows(settings, SILVER_INTERACTIONS)
    assert all(r["device_class"] is None for r in rows) and len(rows) == 20


def test_status_counts_rows_files_and_offsets(settings: Settings) -> None:
    _fill(settings, batches=3)
    tables, extra = status(settings, with_kafka=False)
    by = {t.name: t for t in tables}
    assert by["silver_interactions"].rows == 60 and by["silver_interactions"].partitions == 2
    assert by["bronze_interactions"].exists and by["bronze_interactions"].last_operation == "WRITE"
    assert not by["gold_ctr_daily"].exists
    assert extra["lag"] == {}

"""schemas/lake.py and batch/lake/storage.py: table specs, docs, storage options (no services)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from batch.lake.storage import Lake, delta_options, storage_options, table_configuration
from lambdarec.settings import Settings
from schemas.lake import ARCHIVE_TABLES, BY_NAME, TABLES, render_markdown

PERSONAL = {"user_id", "session_id", "key", "payload", "context"}


@pytest.mark.parametrize("spec", TABLES, ids=lambda s: s.name)
def test_specs_are_consistent(spec) -> None:  # type: ignore[no-untyped-def]
    names = spec.column_names
    assert len(names) == len(set(names))
    assert spec.date_column in names and not spec.column(spec.date_column).nullable
    assert spec.schema.field(spec.date_column).type == pa.date32()
    assert set(spec.key) <= set(names)
    assert set(spec.stats_columns) <= set(names)
    assert not set(spec.stats_columns) & PERSONAL, "personal data must not reach the Delta log stats"
    if spec.user_column:
        assert spec.user_column in names
    for c in spec.columns:
        assert c.doc, f"{spec.name}.{c.name} needs a doc"
        if pa.types.is_timestamp(c.type):
            assert c.type == pa.timestamp("us", tz="UTC")


def test_archive_tables_carry_their_kafka_position() -> None:
    for spec in ARCHIVE_TABLES:
        assert {"kafka_partition", "kafka_offset", "archived_at"} <= set(spec.column_names), spec.name


def test_rendered_reference_lists_every_table_and_column() -> None:
    md = render_markdown()
    for spec in TABLES:
        assert f"### `{spec.name}`" in md
        for c in spec.columns:
            assert f"| `{c.name}` |" in md
    assert "`feedback`" in md


def test_local_root_is_absolute_and_has_no_options(tmp_path: Path) -> None:
    s = Settings(lake={"root": f"file://{tmp_path}/lake/"})
    lake = Lake(s)
    assert lake.root == str(tmp_path / "lake")
    assert lake.uri(BY_NAME["silver_interactions"]) == f"{tmp_path}/lake/silver_interactions"
    assert lake.spark_path("dead_letters") == f"{tmp_path}/lake/dead_letters"
    assert storage_options(s) is None and delta_options(s) is None and not lake.is_s3


def test_s3_root_options_come_from_settings() -> None:
    s = Settings(
        lake={"root": "s3a://bucket/pre/fix", "storage_max_retries": 2, "storage_timeout_seconds": 7},
        s3={"endpoint_url": "http://minio.local:9000", "access_key": "ak", "secret_key": "sk-secret"},
    )
    lake = Lake(s)
    assert lake.root == "s3://bucket/pre/fix" and lake.is_s3
    assert lake.spark_path("served_recommendations") == "s3a://bucket/pre/fix/served_recommendations"
    opts = lake.storage_options
    assert opts is not None
    assert opts["AWS_ENDPOINT_URL"] == "http://minio.local:9000"
    assert opts["AWS_ACCESS_KEY_ID"] == "ak" and opts["AWS_SECRET_ACCESS_KEY"] == "sk-secret"
    assert opts["AWS_ALLOW_HTTP"] == "true" and opts["AWS_VIRTUAL_HOSTED_STYLE_REQUEST"] == "false"
    assert "max_retries" not in opts  # portable: polars and other readers reject delta-rs-only keys
    assert lake.delta_options is not None
    assert lake.delta_options["max_retries"] == "2" and lake.delta_options["timeout"] == "7s"


def test_table_configuration_restricts_stats_and_sets_retention() -> None:
    s = Settings(lake={"vacuum_retention_hours": 24, "log_retention_days": 10})
    conf = table_configuration(s, BY_NAME["silver_interactions"])
    assert "user_id" not in str(conf["delta.dataSkippingStatsColumns"]).split(",")
    assert conf["delta.deletedFileRetentionDuration"] == "interval 24 hours"
    assert conf["delta.logRetentionDuration"] == "interval 10 days"


def test_lake_retention_must_keep_a_month() -> None:
    assert Settings(lake={"retention_days": 0}).lake.retention_days == 0
    assert Settings(lake={"retention_days": 30}).lake.retention_days == 30
    with pytest.raises(ValueError, match="at least 30 days"):
        Settings(lake={"retention_days": 29})


def test_created_tables_match_their_specs(tmp_path: Path) -> None:
    lake = Lake(Settings(lake={"root": str(tmp_path)}))
    for spec in TABLES:
        dt = lake.ensure(spec)
        assert lake.ensure(spec).version() == dt.version() == 0  # idempotent
        got = pa.schema(dt.schema().to_arrow())
        assert got.names == spec.column_names
        assert dt.metadata().partition_columns == [spec.date_column]

"""Retention: the Postgres hot window only loses rows the lake has; the lake expires whole days.

Runs in a scratch database, so the archive watermark the archiver advances here is not the shared
one other tests and engineers use.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import write_deltalake

from batch.lake.archiver import Archiver
from batch.lake.retention import expire_lake, purge_rt
from batch.lake.storage import Lake
from infra.postgres import scratch_database
from lambdarec.settings import Settings
from schemas.lake import BRONZE_INTERACTIONS
from schemas.migrate import migrate
from schemas.topics import INTERACTIONS, topic_name
from tests.integration.lake_support import lake_settings, lake_topics, produce

pytestmark = pytest.mark.integration


@pytest.fixture
def db_lake(kafka: Settings, postgres: Settings, tmp_path: Path) -> Iterator[Settings]:
    with scratch_database(postgres) as db:
        migrate(db)
        s = lake_settings(db, str(tmp_path / "lake"), f"test.lake-{uuid.uuid4().hex[:10]}.")
        with lake_topics(s, partitions=2):
            yield s


def _event(user: str, at: datetime) -> dict[str, str]:
    return {
        "event_id": str(uuid.uuid4()),
        "user_id": user,
        "item_id": "item-1",
        "type": "view",
        "occurred_at": at.isoformat(),
    }


def _rt_ids(s: Settings) -> set[str]:
    with psycopg.connect(s.postgres.url) as conn:
        return {str(r[0]) for r in conn.execute("SELECT event_id FROM rt_user_interactions").fetchall()}


def _watermark(s: Settings) -> datetime | None:
    with psycopg.connect(s.postgres.url) as conn:
        row = conn.execute(
            "SELECT archived_through FROM archive_watermarks WHERE table_name = 'rt_user_interactions'"
        ).fetchone()
    return row[0] if row else None


def test_rt_purge_only_drops_what_the_lake_has(db_lake: Settings) -> None:
    now = datetime.now(UTC)
    old = _event("u-old", now - timedelta(hours=72))  # past the 48 h window
    recent = _event("u-new", now - timedelta(hours=2))
    # the speed layer has both rows in the hot table ...
    with psycopg.connect(db_lake.postgres.url, autocommit=True) as conn:
        for e in (old, recent):
            conn.execute(
                "INSERT INTO rt_user_interactions (event_id, user_id, item_id, event_type, occurred_at) "
                "VALUES (%s, %s, %s, %s, %s)",
                (e["event_id"], e["user_id"], e["item_id"], e["type"], e["occurred_at"]),
            )
    # ... and both are on the topic, but nothing is archived yet: the purge keeps everything
    produce(
        db_lake,
        topic_name(db_lake, INTERACTIONS),
        [(e["user_id"].encode(), json.dumps(e).encode()) for e in (old, recent)],
    )
    assert _watermark(db_lake) is None
    rep = purge_rt(db_lake)
    assert rep.watermark is None and rep.purged_default_rows == 0
    assert _rt_ids(db_lake) == {old["event_id"], recent["event_id"]}

    # archived, but events may be up to 100 h late: the lake cannot vouch for the old hour yet
    cautious = db_lake.model_copy(
        update={"lake": db_lake.lake.model_copy(update={"watermark_lateness_seconds": 100 * 3600})}
    )
    assert Archiver(cautious).run(once=True).caught_up
    mark = _watermark(db_lake)
    assert mark is not None and abs((mark - (now - timedelta(hours=100))).total_seconds()) < 120
    purge_rt(db_lake)
    assert _rt_ids(db_lake) == {old["event_id"], recent["event_id"]}, (
        "a row the lake cannot vouch for was purged"
    )

    # with 1 h of tolerated lateness the watermark passes the old row: it goes, the recent one stays
    assert Archiver(db_lake).run(once=True).caught_up
    mark = _watermark(db_lake)
    assert mark is not None and mark > now - timedelta(hours=2)
    rep = purge_rt(db_lake)
    assert rep.purged_default_rows == 1
    assert _rt_ids(db_lake) == {recent["event_id"]}
    # and the purged row is in the lake
    silver = Lake(db_lake).open("silver_interactions")
    assert silver is not None
    assert old["event_id"] in silver.to_pyarrow_table(columns=["event_id"]).column("event_id").to_pylist()


def test_watermark_never_moves_back_and_archiver_survives_postgres_errors(db_lake: Settings) -> None:
    produce(
        db_lake,
        topic_name(db_lake, INTERACTIONS),
        [(b"u1", json.dumps(_event("u1", datetime.now(UTC))).encode())],
    )
    assert Archiver(db_lake).run(once=True).caught_up
    first = _watermark(db_lake)
    assert first is not None
    # a later run with more lateness computes an earlier time: the watermark keeps the later one
    cautious = db_lake.model_copy(
        update={"lake": db_lake.lake.model_copy(update={"watermark_lateness_seconds": 10 * 3600})}
    )
    Archiver(cautious).run(once=True)
    assert _watermark(db_lake) == first
    # Postgres unreachable: archiving still completes (the watermark is retried next batch)
    broken = db_lake.model_copy(
        update={"postgres": db_lake.postgres.model_copy(update={"url": "postgresql://x:y@127.0.0.1:1/none"})}
    )
    produce(
        db_lake,
        topic_name(db_lake, INTERACTIONS),
        [(b"u2", json.dumps(_event("u2", datetime.now(UTC))).encode())],
    )
    rep = Archiver(broken).run(once=True)
    assert rep.caught_up and rep.records == 1


def test_lake_retention_expires_whole_old_days_only(tmp_path: Path) -> None:
    s = Settings(lake={"root": str(tmp_path / "lake"), "retention_days": 30})
    lake = Lake(s)
    dt = lake.ensure(BRONZE_INTERACTIONS)
    today = datetime.now(UTC).date()
    days = [today - timedelta(days=d) for d in (0, 29, 31, 400)]
    rows = []
    for i, day in enumerate(days):
        rows.append(
            {
                "topic": "t",
                "kafka_partition": 0,
                "kafka_offset": i,
                "kafka_timestamp": None,
                "key": b"k",
                "payload": b"{}",
                "payload_size": 2,
                "valid": False,
                "error_reason": "invalid_field",
                "event_id": None,
                "user_id": "u",
                "archived_at": datetime.now(UTC),
                "event_date": day,
            }
        )
    write_deltalake(dt, pa.Table.from_pylist(rows, schema=BRONZE_INTERACTIONS.schema), mode="append")
    assert expire_lake(s) == {"bronze_interactions": 2}
    left = lake.open(BRONZE_INTERACTIONS)
    assert left is not None
    kept: list[date] = sorted(left.to_pyarrow_table().column("event_date").to_pylist())
    assert kept == sorted(days[:2])
    # whole-day deletes drop files, they do not rewrite any (no string_view files appear)
    for uri in left.file_uris():
        assert pq.read_schema(uri.removeprefix("file://")).field("user_id").type == pa.string()
    with pytest.raises(ValueError, match="at least 30 days"):
        Settings(lake={"retention_days": 7})

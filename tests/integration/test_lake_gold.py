"""Gold tables from an archived workload: popularity (lake + Postgres), CTR, model metrics."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from batch.lake.archiver import Archiver
from batch.lake.feedback import duckdb_connect
from batch.lake.gold import run_gold
from batch.lake.storage import Lake
from infra.postgres import scratch_database
from lambdarec.settings import Settings
from schemas.migrate import migrate
from tests.integration.lake_support import lake_settings, lake_topics, produce_workload, workload

pytestmark = pytest.mark.integration


@pytest.fixture
def db_lake(kafka: Settings, postgres: Settings, tmp_path: Path) -> Iterator[Settings]:
    with scratch_database(postgres) as db:
        migrate(db)
        s = lake_settings(
            db, str(tmp_path / "lake"), f"test.lake-{uuid.uuid4().hex[:10]}.", advance_watermark=False
        )
        with lake_topics(s):
            yield s


def _one(con, sql: str):  # type: ignore[no-untyped-def]
    row = con.execute(sql).fetchone()
    assert row is not None
    return row if len(row) > 1 else row[0]


def test_gold_tables_and_postgres_popularity(db_lake: Settings) -> None:
    s = db_lake
    w = workload(n=500, seed=13)
    produce_workload(s, w)
    assert Archiver(s).run(once=True).caught_up
    with psycopg.connect(s.postgres.url, autocommit=True) as conn:
        model_id = conn.execute(
            "INSERT INTO models (algorithm, version, status) VALUES ('als', 'v1', 'training') "
            "RETURNING model_id"
        ).fetchone()[0]  # type: ignore[index]
        conn.execute(
            "INSERT INTO model_performance_logs (model_id, phase, k, rmse, precision_at_k, metrics) "
            "VALUES (%s, 'offline', 10, 0.91, 0.12, '{\"hit_rate\": 0.4}')",
            (model_id,),
        )

    rep = run_gold(s)
    assert rep.problems == []
    again = run_gold(s)  # idempotent: the same days are replaced, not appended
    assert again.rows == rep.rows

    con = duckdb_connect(Lake(s))
    # CTR: every impression once, every workload feedback event is one click on one impression
    assert _one(con, "SELECT sum(impressions), sum(clicks) FROM gold_ctr_daily") == (
        w.impressions,
        w.feedback,
    )
    assert _one(con, "SELECT count(*) FROM gold_ctr_daily WHERE ctr < 0 OR ctr > 1") == 0
    # popularity agrees with silver and served
    views = _one(con, "SELECT count(*) FROM silver_interactions WHERE type = 'view'")
    assert _one(con, "SELECT sum(view_count) FROM gold_popularity_daily") == views
    assert _one(
        con, "SELECT sum(recommendation_count), sum(recommendation_click_count) FROM gold_popularity_daily"
    ) == (w.impressions, w.feedback)
    n_gold = _one(con, "SELECT count(*) FROM gold_popularity_daily")
    assert rep.rows["gold_popularity_daily"] == n_gold

    # Postgres popularity_metrics: same rows, ctr generated there equals ours
    gold = {
        (r[0], r[1]): r[2]
        for r in con.execute("SELECT item_id, date, ctr FROM gold_popularity_daily").fetchall()
    }
    with psycopg.connect(s.postgres.url) as conn:
        pg = {
            (r[0], r[1]): r[2]
            for r in conn.execute("SELECT item_id, date, ctr FROM popularity_metrics").fetchall()
        }
    assert pg.keys() == gold.keys()
    for k, v in gold.items():
        assert (pg[k] is None and v is None) or abs(pg[k] - v) < 1e-9

    # model metrics history
    mm = con.execute("SELECT algorithm, version, rmse, metrics FROM gold_model_metrics").fetchall()
    assert mm == [("als", "v1", 0.91, '{"hit_rate": 0.4}')]

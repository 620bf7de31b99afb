"""``lambdarec lake ...`` end to end on a private lake: status shows zero lag after archiving,
and optimize, vacuum, gold, expire and docs run from the command line."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lambdarec.cli import app
from lambdarec.settings import Settings, get_settings
from tests.integration.lake_support import env_for, lake_settings, lake_topics, produce_workload, workload

pytestmark = pytest.mark.integration


@pytest.fixture
def lake_env(kafka: Settings, tmp_path: Path) -> Iterator[tuple[Settings, dict[str, str]]]:
    s = lake_settings(
        kafka, str(tmp_path / "lake"), f"test.lake-{uuid.uuid4().hex[:10]}.", advance_watermark=False
    )
    with lake_topics(s):
        yield s, env_for(s)


def _run(env: dict[str, str], *args: str) -> str:
    get_settings.cache_clear()
    try:
        res = CliRunner().invoke(app, list(args), env={**env, "COLUMNS": "200"})
    finally:
        get_settings.cache_clear()
    assert res.exit_code == 0, res.output
    return res.output


def test_lake_commands(lake_env: tuple[Settings, dict[str, str]]) -> None:
    s, env = lake_env
    produce_workload(s, workload(n=120, seed=17))
    out = _run(env, "lake", "archive", "--once")
    assert "archived" in out and "records" in out
    out = _run(env, "lake", "status")
    for table in ("bronze_interactions", "silver_interactions", "served_recommendations", "dead_letters"):
        assert table in out
    assert "not created" in out  # gold tables before the first `lake gold`
    from batch.lake.maintenance import status

    tables, extra = status(s)
    assert {t.name for t in tables if t.exists} >= {"bronze_interactions", "dead_letters"}
    assert set(extra["lag"]) == {
        "bronze_interactions",
        "silver_interactions",
        "served_recommendations",
        "dead_letters",
    }
    assert all(v == 0 for lag in extra["lag"].values() for v in lag.values()), extra["lag"]
    out = _run(env, "lake", "gold", "--no-postgres")
    assert "gold_ctr_daily" in out
    out = _run(env, "lake", "optimize")
    assert "silver_interactions" in out
    out = _run(env, "lake", "vacuum", "--dry-run")
    assert "(dry run)" in out
    out = _run(env, "lake", "expire")
    assert "keeps everything" in out
    _run(env, "lake", "docs", "--check")

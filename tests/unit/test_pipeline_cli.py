"""`lambdarec batch run` exit codes and `lambdarec scheduler --dry-run` (pipeline faked)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from batch import pipeline
from lambdarec.cli import app


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lambdarec.settings import get_settings

    monkeypatch.setenv("LAMBDAREC_VAR_DIR", str(tmp_path))
    get_settings.cache_clear()
    monkeypatch.setattr("infra.spark.stop_spark", lambda: None)
    yield
    get_settings.cache_clear()


def _fake(gate: dict[str, Any]):  # type: ignore[no-untyped-def]
    def run(ctx: pipeline.TaskContext) -> dict[str, Any]:
        return gate if ctx.run.task("gate")["status"] == "running" else {}

    return run


@pytest.mark.parametrize(("passed", "code", "word"), [(True, 0, "succeeded"), (False, 3, "rejected")])
def test_batch_run_exit_codes(monkeypatch: pytest.MonkeyPatch, passed: bool, code: int, word: str) -> None:
    for t in pipeline.TASKS:
        monkeypatch.setitem(pipeline.TASK_FUNCS, t, _fake({"passed": passed}))
    r = CliRunner().invoke(app, ["batch", "run", "--cutoff", "2026-11-25T02:00Z"])
    assert r.exit_code == code, r.output
    assert word in r.output and "20261125T020000Z" in r.output


def test_bad_data_exit_code(monkeypatch: pytest.MonkeyPatch) -> None:
    def bad(ctx: pipeline.TaskContext) -> dict[str, Any]:
        raise pipeline.DataValidationError("data validation FAILED on 3 events")

    for t in pipeline.TASKS:
        monkeypatch.setitem(pipeline.TASK_FUNCS, t, _fake({"passed": True}))
    monkeypatch.setitem(pipeline.TASK_FUNCS, "train", bad)
    r = CliRunner().invoke(app, ["batch", "run"])
    assert r.exit_code == 4 and "FAILED" in r.output


def test_scheduler_dry_run() -> None:
    r = CliRunner().invoke(app, ["scheduler", "--dry-run"])
    assert r.exit_code == 0 and "0 2 * * *" in r.output and "02:00:00+00:00" in r.output

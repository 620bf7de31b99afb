"""Run log, resume, --from-task and the gate's stop (batch/pipeline.py) with fake tasks."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from batch import pipeline, spark_events
from lambdarec.settings import Settings

CUTOFF = datetime(2026, 11, 25, 2, 0, tzinfo=UTC)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    s = Settings(var_dir=tmp_path)
    s.batch.runs_dir = tmp_path / "runs"
    return s


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    seen: list[str] = []

    def fake(name: str, out: dict[str, Any]):  # type: ignore[no-untyped-def]
        def task(ctx: pipeline.TaskContext) -> dict[str, Any]:
            seen.append(name)
            ctx.note(f"{name} ran")
            return out

        return task

    for name in pipeline.TASKS:
        monkeypatch.setitem(pipeline.TASK_FUNCS, name, fake(name, {"passed": True} if name == "gate" else {}))
    return seen


def test_run_id_is_the_cutoff() -> None:
    assert pipeline.run_id_for(CUTOFF) == "20261125T020000Z"


def test_full_run_records_every_task(settings: Settings, calls: list[str]) -> None:
    run = pipeline.run_pipeline(settings, cutoff=CUTOFF)
    assert calls == list(pipeline.TASKS) and run.status == "succeeded"
    again = pipeline.RunLog.load(run.dir)
    assert all(again.task(t)["status"] == "done" for t in pipeline.TASKS)
    assert again.task("train")["seconds"] >= 0 and pipeline.exit_code(again) == 0


def test_rerun_of_a_finished_run_skips_everything(settings: Settings, calls: list[str]) -> None:
    pipeline.run_pipeline(settings, cutoff=CUTOFF)
    calls.clear()
    events: list[tuple[str, str, str]] = []
    pipeline.run_pipeline(settings, cutoff=CUTOFF, on_event=lambda t, k, m: events.append((t, k, m)))
    assert calls == [] and [k for _, k, _ in events] == ["skip"] * 5


def test_failure_then_automatic_resume(
    settings: Settings, calls: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(ctx: pipeline.TaskContext) -> dict[str, Any]:
        raise pipeline.PipelineError("Spark died")

    monkeypatch.setitem(pipeline.TASK_FUNCS, "train", boom)
    with pytest.raises(pipeline.PipelineError):
        pipeline.run_pipeline(settings, cutoff=CUTOFF)
    run = pipeline.RunLog.load(pipeline.runs_dir(settings) / "20261125T020000Z")
    assert run.status == "failed" and run.task("train")["error"] == "PipelineError: Spark died"
    assert run.task("gate")["status"] == "pending"
    monkeypatch.setitem(pipeline.TASK_FUNCS, "train", lambda ctx: {"resumed": True})
    calls.clear()
    run = pipeline.run_pipeline(settings)  # no cutoff: picks up the failed run
    assert run.run_id == "20261125T020000Z" and calls == ["gate", "publish"]
    assert run.status == "succeeded" and run.output("train") == {"resumed": True}


def test_from_task_reruns_later_tasks(settings: Settings, calls: list[str]) -> None:
    pipeline.run_pipeline(settings, cutoff=CUTOFF)
    calls.clear()
    pipeline.run_pipeline(settings, from_task=4)
    assert calls == ["gate", "publish"]


def test_from_task_needs_earlier_tasks_done(settings: Settings, calls: list[str]) -> None:
    run = pipeline.open_run(settings, cutoff=CUTOFF)
    with pytest.raises(pipeline.PipelineError, match="task 1"):
        pipeline.run_tasks(settings, run, from_task=3)


def test_gate_rejection_skips_publish(
    settings: Settings, calls: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(pipeline.TASK_FUNCS, "gate", lambda ctx: {"passed": False, "reasons": ["worse"]})
    run = pipeline.run_pipeline(settings, cutoff=CUTOFF)
    assert run.status == "rejected" and "publish" not in calls
    assert run.task("publish")["status"] == "skipped" and pipeline.exit_code(run) == pipeline.EXIT_REJECTED


def test_no_new_data_skips_the_rest(
    settings: Settings, calls: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def nothing(ctx: pipeline.TaskContext) -> dict[str, Any]:
        raise pipeline.NoNewData("no events newer than yesterday")

    monkeypatch.setitem(pipeline.TASK_FUNCS, "train", nothing)
    run = pipeline.run_pipeline(settings, cutoff=CUTOFF)
    assert run.status == "skipped" and pipeline.exit_code(run) == 0
    assert run.task("publish")["status"] == "skipped"


def test_single_task_mode_for_airflow(settings: Settings, calls: list[str]) -> None:
    run = pipeline.open_run(settings, cutoff=CUTOFF)
    pipeline.run_tasks(settings, run, only="close_archive")
    pipeline.run_tasks(settings, run, only="close_archive")  # done: not run twice
    assert calls == ["close_archive"]
    assert pipeline.RunLog.load(run.dir).status == "running"


def test_run_log_is_json_safe(tmp_path: Path) -> None:
    import json
    import math

    import numpy as np

    rl = pipeline.RunLog.create(tmp_path / "r", "r", CUTOFF)
    rl.set_task("train", output={"x": math.nan, "n": np.int64(3), "t": CUTOFF})
    data = json.loads((tmp_path / "r" / "runlog.json").read_text())
    assert data["tasks"]["train"]["output"] == {"x": None, "n": 3, "t": CUTOFF.isoformat()}


def test_jdbc_url() -> None:
    url, props = spark_events.jdbc_of("postgresql://lr:p%40ss@127.0.0.1:5433/db")
    assert url == "jdbc:postgresql://127.0.0.1:5433/db" and props["password"] == "p@ss"

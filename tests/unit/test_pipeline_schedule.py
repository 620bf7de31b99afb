"""The cron (batch/schedule.py) and the Airflow DAG file (parsed, Airflow not needed)."""

from __future__ import annotations

import ast
import importlib.util
from datetime import UTC, datetime

from batch import schedule
from lambdarec.settings import PROJECT_ROOT, Settings

DAG_FILE = PROJECT_ROOT / "infra" / "airflow" / "lambdarec_batch_dag.py"


def test_default_cron_is_daily_at_two_utc() -> None:
    runs = schedule.next_runs(Settings(), 3, now=datetime(2026, 11, 25, 3, 0, tzinfo=UTC))
    assert [r.astimezone(UTC) for r in runs] == [
        datetime(2026, 11, d, 2, 0, tzinfo=UTC) for d in (26, 27, 28)
    ]


def test_scheduler_job_never_overlaps() -> None:
    sched = schedule.build_scheduler(Settings(), job=lambda: None, blocking=False)
    job = sched.get_job(schedule.JOB_ID)
    assert job.max_instances == 1 and job.coalesce and job.misfire_grace_time == 3600
    assert "hour='2'" in str(job.trigger) and "minute='0'" in str(job.trigger)


def test_custom_cron_from_settings() -> None:
    s = Settings()
    s.batch.schedule_cron = "30 4 * * 1"
    assert schedule.next_runs(s, 1, now=datetime(2026, 11, 25, tzinfo=UTC))[0].astimezone(UTC) == datetime(
        2026, 11, 30, 4, 30, tzinfo=UTC
    )


def test_dag_file_declares_the_five_tasks_in_order() -> None:
    tree = ast.parse(DAG_FILE.read_text())
    consts = {
        t.id: ast.literal_eval(n.value)
        for n in tree.body
        if isinstance(n, ast.Assign)
        for t in n.targets
        if isinstance(t, ast.Name) and isinstance(n.value, ast.Constant | ast.Tuple)
    }
    from batch.pipeline import TASKS

    assert consts["TASK_IDS"] == TASKS and consts["DAG_ID"] == "batch_recommendation_processing"
    assert "0 2 * * *" in DAG_FILE.read_text()


def test_dag_file_imports_without_airflow() -> None:
    spec = importlib.util.spec_from_file_location("lambdarec_batch_dag", DAG_FILE)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert callable(mod.run_task)
    if mod.DAG is not None:  # Airflow installed: the DAG object exists with our task ids
        assert set(mod.dag.task_ids) == set(mod.TASK_IDS)

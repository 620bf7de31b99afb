"""Airflow DAG ``batch_recommendation_processing``: the same five tasks as ``lambdarec batch run``.

Why a thin DAG: the tasks, their idempotency and the run log live in ``batch/pipeline.py``; Airflow
only schedules and retries them. Each operator calls ``pipeline.run_tasks(..., only=<task>)`` on
the run named by the DAG run's logical date (the cut-off), so an Airflow retry of one task resumes
exactly like ``lambdarec batch run --run-id``. Dependencies follow the seed's diagram: active users
and the archive window in parallel, then train -> gate -> publish. Install the project (and
``apache-airflow``) on the workers, point ``LAMBDAREC_*`` at the services, and drop this file in
the DAGs folder; ``lambdarec scheduler`` (APScheduler) is the no-Airflow alternative.
"""

from __future__ import annotations

from datetime import datetime, timedelta

DAG_ID = "batch_recommendation_processing"
TASK_IDS = ("active_users", "close_archive", "train", "gate", "publish")


def run_task(task: str, logical_date: datetime) -> str:
    """Run one pipeline task for the run whose cut-off is ``logical_date``; returns the run status."""
    from batch import pipeline
    from lambdarec.settings import get_settings

    settings = get_settings()
    run = pipeline.open_run(settings, cutoff=logical_date)
    return pipeline.run_tasks(settings, run, only=task).status


try:  # the DAG object exists only where Airflow is installed; the callables above always import
    from airflow import DAG

    try:  # Airflow 3
        from airflow.providers.standard.operators.python import PythonOperator
    except ImportError:  # Airflow 2
        from airflow.operators.python import PythonOperator
except ImportError:  # pragma: no cover - exercised where Airflow is installed
    DAG = None

if DAG is not None:
    with DAG(
        dag_id=DAG_ID,
        description="lambdarec daily batch: active users, archive, ALS training, gate, publish",
        schedule="0 2 * * *",
        start_date=datetime(2026, 1, 1),
        catchup=False,
        max_active_runs=1,
        default_args={"retries": 2, "retry_delay": timedelta(minutes=10)},
        tags=["lambdarec", "batch"],
    ) as dag:
        ops = {
            t: PythonOperator(task_id=t, python_callable=run_task, op_kwargs={"task": t}) for t in TASK_IDS
        }
        [ops["active_users"], ops["close_archive"]] >> ops["train"] >> ops["gate"] >> ops["publish"]

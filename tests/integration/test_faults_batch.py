"""Fault injection on the batch job: SIGKILL ``lambdarec batch run`` in the middle of publishing.

The moment is made deterministic, not guessed: the test holds the advisory lock that
``publish_batch_recommendations()`` takes (migration 006), so the job stops *inside* its
promote-and-publish transaction, after the new model was promoted and the complete new top-N
run was COPYed, before the commit. Then the whole job (Python driver and its Spark JVM) is
SIGKILLed. What must survive: the production model and the served batch view are exactly the
previous ones (every user, same lists), nothing of the killed run is visible; and the next
``batch run`` resumes, promotes and publishes the new model in full.

Private world (``batch_support.private_world``): scratch database, tmp lake and runs dir, own S3
prefix and topic prefix; nothing shared is stopped.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from batch import pipeline, registry
from lambdarec.settings import PROJECT_ROOT, Settings
from tests.integration.batch_support import USERS, append_silver, private_world, silver_table

pytestmark = [pytest.mark.integration, pytest.mark.slow]

T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(days=20)
#: the advisory lock publish_batch_recommendations() takes (schemas/migrations/006)
PUBLISH_LOCK = (7245010, 4)
LAMBDAREC = str(Path(sys.executable).with_name("lambdarec"))


@pytest.fixture
def world(postgres: Settings, kafka: Settings, spark_jars: Settings, tmp_path: Path) -> Iterator[Settings]:
    with private_world(postgres, tmp_path, "tbfault") as s:
        yield s


def _env(s: Settings) -> dict[str, str]:
    """The same world for a ``lambdarec batch run`` subprocess: every setting, not only the
    changed ones (S3, Redis, the batch thresholds, ...)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAMBDAREC_")}
    return env | s.as_env()


def _served(s: Settings) -> dict[str, Any]:
    """What readers see: the production model, the active run, and a digest of every list."""
    with psycopg.connect(s.postgres.url, autocommit=True) as conn:
        prod = registry.production_model(conn, "als")
        row = conn.execute(
            "SELECT count(*), md5(string_agg(user_id || recommendations::text, '|' ORDER BY user_id)), "
            "min(run_id), max(run_id), min(model_version) FROM current_batch_recommendations"
        ).fetchone()
    assert row is not None
    return {
        "production": prod.version if prod else None,
        "users": row[0],
        "digest": row[1],
        "run_ids": (row[2], row[3]),
        "list_model": row[4],
    }


def _blocked_on_publish_lock(conn: psycopg.Connection, dbname: str) -> int | None:
    """pid of a backend of ``dbname`` waiting for the publish advisory lock."""
    row = conn.execute(
        "SELECT a.pid FROM pg_stat_activity a JOIN pg_locks l ON l.pid = a.pid "
        "WHERE a.datname = %s AND l.locktype = 'advisory' AND NOT l.granted "
        "AND l.classid = %s AND l.objid = %s",
        (dbname, *PUBLISH_LOCK),
    ).fetchone()
    return None if row is None else int(row[0])


def test_sigkill_mid_publish_keeps_production_and_rerun_succeeds(world: Settings) -> None:
    append_silver(world, silver_table(T0, 10, 4000, seed=1))
    first = pipeline.run_pipeline(world, cutoff=T0 + timedelta(days=10, hours=1))
    assert first.status == "succeeded", first.data
    before = _served(world)
    assert before["production"] == first.run_id and before["users"] == USERS

    append_silver(world, silver_table(T0 + timedelta(days=10), 2, 2000, seed=2))
    cutoff = T0 + timedelta(days=12, hours=1)
    dbname = world.postgres.url.rsplit("/", 1)[1]
    log = Path(str(world.batch.runs_dir)).parent / "killed-run.log"
    with psycopg.connect(world.postgres.url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s, %s)", PUBLISH_LOCK)
        job = subprocess.Popen(
            [LAMBDAREC, "batch", "run", "--cutoff", cutoff.isoformat(), "--log-level", "INFO"],
            env=_env(world),
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            cwd=PROJECT_ROOT,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 420
            backend = None
            while backend is None:
                assert job.poll() is None, (
                    f"the job ended ({job.returncode}) before publishing:\n" + (log.read_text()[-4000:])
                )
                assert time.monotonic() < deadline, (
                    "the job never reached publish\n" + log.read_text()[-4000:]
                )
                backend = _blocked_on_publish_lock(holder, dbname)
                time.sleep(0.2)
            # inside promote-and-publish: the new model is promoted and its whole run loaded,
            # uncommitted; kill the driver and its Spark JVM at once
            os.killpg(job.pid, signal.SIGKILL)
            assert job.wait(30) == -signal.SIGKILL
            during = _served(world)
            loading = holder.execute(
                "SELECT run_id, status FROM batch_recommendation_runs WHERE model_version <> %s",
                (before["list_model"],),
            ).fetchall()
        finally:
            if job.poll() is None:
                os.killpg(job.pid, signal.SIGKILL)
                job.wait(30)
            holder.execute("SELECT pg_advisory_unlock(%s, %s)", PUBLISH_LOCK)
        # the orphaned backend takes the lock, finishes the statement, finds its client gone and
        # rolls back; wait for it so nothing is still in flight when we look
        gone_by = time.monotonic() + 30
        while holder.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (backend,)).fetchone():
            assert time.monotonic() < gone_by, f"backend {backend} of the killed job still there"
            time.sleep(0.2)

    after_kill = _served(world)
    assert during == before and after_kill == before, (before, during, after_kill)
    assert [s for _, s in loading] == ["loading"], loading  # the killed run's rows: never visible

    second = pipeline.run_pipeline(world, cutoff=cutoff)  # the same run: resumed, not restarted
    assert second.status == "succeeded", second.data
    assert second.run_id != first.run_id
    after = _served(world)
    assert after["production"] == second.run_id and after["users"] == USERS
    assert after["digest"] != before["digest"] and after["list_model"] != before["list_model"]
    with psycopg.connect(world.postgres.url, autocommit=True) as conn:
        statuses = dict(conn.execute("SELECT run_id, status FROM batch_recommendation_runs").fetchall())
    assert sorted(statuses.values()) == ["active", "discarded", "retired"], statuses

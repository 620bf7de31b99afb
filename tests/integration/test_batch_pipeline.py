"""The daily batch pipeline on real services: scratch Postgres, MinIO, Spark + Delta, Kafka.

One private world per module (scratch database, tmp lake root and runs dir, unique S3 prefix and
topic prefix); the tests run in order and build on each other's registry state:
full run -> a worse candidate is rejected -> a failed task is resumed -> bad data is stopped.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import psycopg
import pytest

from batch import pipeline, registry
from lambdarec.settings import Settings
from schemas.model_snapshot import load_snapshot
from tests.integration.batch_support import (
    USERS,
    append_silver,
    batch_settings,
    private_world,
    read_updates,
    silver_table,
)

pytestmark = pytest.mark.integration

T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(days=20)


@pytest.fixture(scope="module")
def world(
    postgres: Settings, kafka: Settings, spark_jars: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Settings]:
    with private_world(postgres, tmp_path_factory.mktemp("batch"), "tbatch") as s:
        yield s


def _state(s: Settings) -> tuple[object, object]:
    with psycopg.connect(s.postgres.url, autocommit=True) as conn:
        prod = registry.production_model(conn, "als")
        run = conn.execute("SELECT run_id FROM batch_recommendation_runs WHERE status = 'active'").fetchone()
    return (prod.version if prod else None), (run[0] if run else None)


def test_full_run_promotes_publishes_and_announces(world: Settings) -> None:
    append_silver(world, silver_table(T0, 10, 4000, seed=1))
    cutoff = T0 + timedelta(days=10, hours=1)
    events: list[tuple[str, str, str]] = []
    run = pipeline.run_pipeline(world, cutoff=cutoff, on_event=lambda t, k, m: events.append((t, k, m)))
    assert run.status == "succeeded", run.data
    assert [t for t, k, _ in events if k == "done"] == list(pipeline.TASKS)
    version, active = _state(world)
    assert version == run.run_id and active == run.output("publish")["batch_run_id"]
    with psycopg.connect(world.postgres.url, autocommit=True) as conn:
        n, short = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE jsonb_array_length(recommendations) < 10) "
            "FROM current_batch_recommendations"
        ).fetchone()  # type: ignore[misc]
        logs = conn.execute("SELECT count(*), max(ndcg_at_k) FROM model_performance_logs").fetchone()
        status = conn.execute("SELECT status FROM models WHERE version = %s", (version,)).fetchone()
    assert n == USERS and short == 0  # every user, a full top-10 list
    assert logs is not None and logs[0] == 1 and logs[1] > 0.05
    assert status == ("production",)
    snap = load_snapshot(run.output("train")["snapshot_uri"], s3=world.s3)
    assert snap.model_version == version and len(snap.user_ids) == USERS
    updates = read_updates(world, world.kafka.topic("model-updates"))
    assert [u.model_version for u in updates] == [version]
    assert run.task("train")["validation"]["success"] is True
    assert run.output("train")["front_end"] == "pandas"  # auto on a local master
    trained = run.output("train")
    assert set(trained["candidates"]) == {"als", "ease"}  # both families on the same holdout
    best = max(trained["candidates"], key=lambda m: trained["candidates"][m]["ndcg@10"])
    assert trained["list_model"] == best == run.output("publish")["list_model"]
    assert trained["metrics"]["ndcg@10"] == trained["candidates"][best]["ndcg@10"]
    assert snap.params["list_model"] == best and snap.item_factors.shape[1] == world.batch.als.rank


def test_rerunning_publish_only_reannounces(world: Settings) -> None:
    before = _state(world)
    run = pipeline.list_runs(world)[-1]
    run = pipeline.run_tasks(world, run, from_task=5)
    assert run.status == "succeeded" and _state(world) == before  # same model, same batch run
    with psycopg.connect(world.postgres.url, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM model_performance_logs").fetchone() == (1,)
    updates = read_updates(world, world.kafka.topic("model-updates"))
    assert [u.model_version for u in updates] == [run.run_id, run.run_id]


def test_worse_candidate_keeps_production(world: Settings) -> None:
    before = _state(world)
    append_silver(world, silver_table(T0 + timedelta(days=10, hours=2), 2, 800, seed=2))
    bad = world.model_copy(
        update={
            "batch": world.batch.model_copy(
                update={
                    "als": world.batch.als.model_copy(update={"rank": 1, "max_iter": 1, "reg_param": 50.0}),
                    "ease_candidate": False,  # EASE would rescue the run
                    "front_end": "spark",  # the cluster path (validate + aggregate in Spark)
                }
            )
        }
    )
    run = pipeline.run_pipeline(bad, cutoff=T0 + timedelta(days=12, hours=3))
    assert run.status == "rejected", run.output("gate")
    assert pipeline.exit_code(run) == pipeline.EXIT_REJECTED
    assert "below production" in " ".join(run.output("gate")["reasons"])
    assert _state(world) == before
    with psycopg.connect(world.postgres.url, autocommit=True) as conn:
        st = conn.execute("SELECT status FROM models WHERE version = %s", (run.run_id,)).fetchone()
    assert st == ("deprecated",)
    assert run.task("publish")["status"] == "skipped"


def test_gate_compares_configs_not_what_production_memorised(
    postgres: Settings, kafka: Settings, spark_jars: Settings, tmp_path: Path
) -> None:
    """Two runs two hours apart: the second run's 24 h holdout is almost all data production was
    trained on. Scoring production's own factors there rewarded memorisation (the demo's second
    run was rejected at -45 %); the gate must refit production's config on the holdout's training
    part instead, so the same config passes and a worse config is still rejected."""
    with private_world(postgres, tmp_path, "tbfair", ease_candidate=False, gate_max_regression=0.05) as s:
        append_silver(s, silver_table(T0, 10, 4000, seed=1))
        first = pipeline.run_pipeline(s, cutoff=T0 + timedelta(days=10, hours=1))
        assert first.status == "succeeded" and first.output("train")["list_model"] == "als"

        append_silver(s, silver_table(T0 + timedelta(days=10, hours=1), 0.04, 60, seed=7))
        second = pipeline.run_pipeline(s, cutoff=T0 + timedelta(days=10, hours=3))
        gate = second.output("gate")
        assert second.status == "succeeded", gate
        assert gate["production_metrics"]["ndcg@10"] == second.output("train")["candidates"]["als"]["ndcg@10"]
        assert _state(s)[0] == second.run_id

        append_silver(s, silver_table(T0 + timedelta(days=10, hours=3), 0.04, 60, seed=8))
        worse = s.batch.als.model_copy(update={"rank": 1, "max_iter": 1, "reg_param": 50.0})
        bad = s.model_copy(update={"batch": s.batch.model_copy(update={"als": worse})})
        third = pipeline.run_pipeline(bad, cutoff=T0 + timedelta(days=10, hours=5))
        gate = third.output("gate")
        assert third.status == "rejected", gate
        assert "below production" in " ".join(gate["reasons"]) and "refit" in gate["production_scored_as"]
        assert _state(s)[0] == second.run_id


def test_window_over_the_driver_limit_takes_the_spark_path_with_the_same_result(
    postgres: Settings, kafka: Settings, spark_jars: Settings, tmp_path: Path
) -> None:
    """Task 3 picks its front end from the window's size before reading it: over
    ``batch.pandas_max_events`` the events stay in Spark, and the matrix and holdout are the same."""
    from batch import spark_events

    cutoff = T0 + timedelta(days=10, hours=1)
    with private_world(postgres, tmp_path / "w", "tbfront") as s:
        append_silver(s, silver_table(T0, 10, 4000, seed=1))
        assert spark_events.window_rows(s, cutoff - timedelta(days=30), cutoff, None) == 4000
        assert spark_events.window_rows(s, None, T0 - timedelta(days=1), None) == 0
        outputs, notes = [], []
        for name, cap in (("pandas", 0), ("spark", 1000)):
            b = s.batch.model_copy(update={"pandas_max_events": cap, "runs_dir": tmp_path / name})
            w = s.model_copy(update={"batch": b})
            run = pipeline.run_tasks(
                w,
                pipeline.open_run(w, cutoff=cutoff),
                only="train",
                on_event=lambda t, k, m: notes.append(m),
            )
            outputs.append(run.output("train"))
            assert run.output("train")["front_end"] == name
        assert any("exceed batch.pandas_max_events=1,000" in n for n in notes), notes
        local, spark = outputs
        for key in ("events", "users", "items", "pairs", "holdout"):
            assert local[key] == spark[key], key
        assert local["candidates"]["ease"]["ndcg@10"] == pytest.approx(spark["candidates"]["ease"]["ndcg@10"])
        a, b_ = (
            np.load(tmp_path / n / pipeline.run_id_for(cutoff) / "train_matrix.npz")
            for n in ("pandas", "spark")
        )
        assert all(np.array_equal(a[k], b_[k]) for k in ("indices", "indptr", "shape"))
        assert np.allclose(a["data"], b_["data"], rtol=1e-6)


def test_resume_after_failure_skips_completed_tasks(world: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    before = _state(world)
    append_silver(world, silver_table(T0 + timedelta(days=12, hours=4), 2, 800, seed=3))
    cutoff = T0 + timedelta(days=14, hours=5)

    def boom(ctx: pipeline.TaskContext) -> dict[str, object]:
        raise RuntimeError("registry unreachable (injected)")

    monkeypatch.setitem(pipeline.TASK_FUNCS, "gate", boom)
    with pytest.raises(RuntimeError, match="injected"):
        pipeline.run_pipeline(world, cutoff=cutoff)
    assert _state(world) == before  # a failed run leaves production and the batch view alone
    run = pipeline.RunLog.load(pipeline.runs_dir(world) / pipeline.run_id_for(cutoff))
    assert run.status == "failed" and run.task("gate")["status"] == "failed"
    monkeypatch.undo()

    events: list[tuple[str, str, str]] = []
    run = pipeline.run_pipeline(world, on_event=lambda t, k, m: events.append((t, k, m)))  # automatic resume
    assert run.run_id == pipeline.run_id_for(cutoff)
    assert [t for t, k, _ in events if k == "skip"] == ["active_users", "close_archive", "train"]
    assert [t for t, k, _ in events if k == "done"] == ["gate", "publish"]
    assert run.status == "succeeded" and _state(world)[0] == run.run_id
    assert run.data["attempts"] == 2


def test_no_new_data_is_a_clear_skip(world: Settings) -> None:
    before = _state(world)
    run = pipeline.run_pipeline(world, cutoff=T0 + timedelta(days=14, hours=6))
    assert run.status == "skipped" and "no events newer" in run.task("train")["output"]["reason"]
    assert pipeline.exit_code(run) == 0 and _state(world) == before


def test_gate_needs_no_production_snapshot(world: Settings) -> None:
    """The gate refits production's config (its registry row), so a lost production snapshot
    neither blocks nor weakens it: production is still compared."""
    from infra.s3 import s3_client

    with psycopg.connect(world.postgres.url, autocommit=True) as conn:
        prod = registry.production_model(conn, "als")
    assert prod is not None and prod.snapshot_uri
    bucket, _, key = prod.snapshot_uri.removeprefix("s3://").partition("/")
    s3_client(world).delete_object(Bucket=bucket, Key=f"{key}/manifest.json")
    append_silver(world, silver_table(T0 + timedelta(days=14, hours=7), 2, 800, seed=6))
    run = pipeline.run_pipeline(world, cutoff=T0 + timedelta(days=16, hours=8))
    gate = run.output("gate")
    assert gate["production"]["version"] == prod.version and gate["production_metrics"], gate
    assert gate["checks"]["vs_production"] and not gate["notes"]
    assert run.status == "succeeded" and _state(world)[0] == run.run_id


def test_missing_candidate_snapshot_stops_publish_and_keeps_production(world: Settings) -> None:
    from infra.s3 import s3_client

    before = _state(world)
    run = pipeline.list_runs(world)[-1]
    uri = run.output("train")["snapshot_uri"]
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    s3_client(world).delete_object(Bucket=bucket, Key=f"{key}/manifest.json")
    with pytest.raises(pipeline.PipelineError, match=r"missing or unreadable.*re-run from task 3"):
        pipeline.run_tasks(world, run, from_task=5)
    assert _state(world) == before


def test_window_without_events_is_a_clear_error(world: Settings) -> None:
    before = _state(world)  # the lake exists but holds nothing before T0
    with pytest.raises(pipeline.NoDataError, match="no interaction events"):
        pipeline.run_pipeline(world, cutoff=T0 - timedelta(days=1))
    assert _state(world) == before


def test_validation_stops_bad_data_with_a_report(world: Settings, tmp_path: Path) -> None:
    before = _state(world)
    s = batch_settings(world, tmp_path, world.kafka.topic_prefix, front_end="spark")  # GX on Spark
    now = datetime.now(UTC)
    good = silver_table(now - timedelta(days=3), 2, 500, seed=4)
    bad = silver_table(now + timedelta(hours=6), 0.1, 60, seed=5, rating_override=7.0)  # future + rating 7
    append_silver(s, good)
    append_silver(s, bad)
    append_silver(s, good.slice(0, 5))  # duplicate event ids
    with pytest.raises(pipeline.DataValidationError) as err:
        pipeline.run_pipeline(s, cutoff=now + timedelta(days=1))
    text = str(err.value)
    assert "rating" in text and "unique" in text and "occurred_at in the future" in text
    run = pipeline.list_runs(s)[-1]
    failed = {r["expectation"] for r in run.task("train")["validation"]["results"] if not r["success"]}
    assert {"expect_column_values_to_be_between", "expect_column_values_to_be_unique"} <= failed
    assert run.status == "failed" and _state(world) == before


def test_empty_window_is_a_clear_error(world: Settings, tmp_path: Path) -> None:
    s = batch_settings(world, tmp_path, world.kafka.topic_prefix, read_recent_from_postgres=False)
    with pytest.raises(pipeline.NoDataError, match="no interaction events"):
        pipeline.run_pipeline(s, cutoff=T0)

"""The demo end to end on a tiny world: the chosen user's recommendations must change after their
live events went through Kafka and the speed layer. Uses the real services, a private lake root
and world folder, and the demo's own topics (``lambdarec.demo.*``) and stream worker, which it
stops at the end."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra import processes
from lambdarec.cli.demo import instance_of, run_demo
from lambdarec.settings import Settings

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def test_demo_runs_the_whole_path(postgres: Settings, tmp_path: Path) -> None:
    """The lambda architecture end to end (issue #10's whole path), through the demo:
    history -> lake -> batch -> promotion; events -> Kafka -> speed layer -> Postgres/Redis -> API;
    then the next batch archives the live events, retrains and promotes, and the stream worker and
    the API switch to the new model without a restart. A scratch database, private lake, topics,
    runs dir, model prefix and ports: nothing shared is touched."""
    import uuid

    from infra.postgres import scratch_database
    from tests.integration.lake_support import lake_topics
    from tests.ports import free_port

    tag = uuid.uuid4().hex[:6]
    prefix = f"lambdarec.demowp{tag}."
    with scratch_database(postgres, prefix="test_demo_whole") as db:
        s = db.model_copy(
            update={
                "lake": db.lake.model_copy(update={"root": str(tmp_path / "lake")}),
                "stream": db.stream.model_copy(update={"web_port": free_port()}),
                "api": db.api.model_copy(update={"port": free_port(), "workers": 1}),
                "batch": db.batch.model_copy(
                    update={
                        "runs_dir": tmp_path / "runs",
                        "models_uri": f"s3://{db.s3.models_bucket}/test-demowp{tag}/models",
                    }
                ),
            }
        )
        topics = s.model_copy(update={"kafka": s.kafka.model_copy(update={"topic_prefix": prefix})})
        with lake_topics(topics, partitions=2):
            try:
                report = run_demo(
                    s,
                    users=150,
                    items=120,
                    events=15000,
                    smoke=False,
                    batch=True,
                    api=True,
                    topic_prefix=prefix,
                    world_dir=tmp_path / "world",
                    profile_timeout=120,
                )
            finally:  # a test leaves nothing running behind it (only what it started)
                processes.stop(s, instance=instance_of(prefix))
    assert report.user is not None and report.live_events >= 3
    assert report.user.startswith("wu")  # a world user, never confusable with a MovieLens id
    assert report.before and report.after
    assert report.after_source.startswith("taste vector")
    assert report.changed, (report.before, report.after)
    assert {"1. services", "6. history -> lake", "9. live events -> Kafka"} <= set(report.timings)
    # the API served the user before and after, personalised after the live events
    assert report.api_before is not None and report.api_after is not None, report.notes
    assert report.api_after[0] in ("realtime", "hybrid"), report.api_after
    assert [i for i, _ in report.api_before[1]] != [i for i, _ in report.api_after[1]]
    # batch: a first model promoted, then the next run promoted another and everyone switched
    assert report.model_before is not None, report.notes
    assert report.model_after is not None and report.model_after != report.model_before, report.notes
    assert report.worker_model == report.model_after, report.notes
    assert report.api_model == report.model_after, report.notes


def test_demo_on_real_movielens_100k(postgres: Settings, tmp_path: Path) -> None:
    """`lambdarec demo --movielens DIR` on the real ml-100k (RecBole's copy in the venv), in a
    scratch database, a private lake and private topics, all set only in the Settings object: the
    background worker must get them from the demo, or the profile never shows up here."""
    import socket
    import uuid

    import recbole

    from infra.postgres import scratch_database
    from tests.integration.lake_support import lake_topics

    ml100k = Path(recbole.__file__).parent / "dataset_example" / "ml-100k"
    prefix = f"lambdarec.demotest{uuid.uuid4().hex[:6]}."
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        web_port = sock.getsockname()[1]
    with scratch_database(postgres, prefix="test_demo_ml100k") as db:
        # Only in code: run_demo must hand all of it to the worker it starts (Settings.as_env).
        s = db.model_copy(
            update={
                "lake": db.lake.model_copy(update={"root": str(tmp_path / "lake")}),
                "stream": db.stream.model_copy(update={"web_port": web_port}),
            }
        )
        topics = s.model_copy(update={"kafka": s.kafka.model_copy(update={"topic_prefix": prefix})})
        with lake_topics(topics, partitions=2):
            try:
                report = run_demo(
                    s,
                    movielens=ml100k,
                    smoke=False,
                    batch=False,
                    api=False,
                    topic_prefix=prefix,
                    profile_timeout=180,
                )
            finally:
                processes.stop(s, instance=instance_of(prefix))
    assert report.notes["topics"].startswith(f"{prefix}* (stream app lambdarec-speed-lambdarec-demotest")
    assert report.notes["catalog"].startswith("1,682 items (1682 new")
    assert report.user is not None and report.user.isdigit()  # a MovieLens user id
    assert report.live_events >= 3
    assert report.before_source == "catalog order (no profile yet)"  # MovieLens has no popularity
    assert report.after_source.startswith("taste vector")
    assert report.changed, (report.before, report.after)
    assert all(i.isdigit() for i, _ in report.after)  # MovieLens items, nothing else in this catalog

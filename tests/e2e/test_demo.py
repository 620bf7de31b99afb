"""The demo end to end on a tiny world: the chosen user's recommendations must change after their
live events went through Kafka and the speed layer. Uses the real services, a private lake root
and world folder, and the demo's own topics (``lambdarec.demo.*``) and stream worker, which it
stops at the end."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra import processes
from lambdarec.cli.demo import DEMO_TOPIC_PREFIX, instance_of, run_demo
from lambdarec.settings import Settings

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def test_demo_changes_the_users_recommendations(settings: Settings, tmp_path: Path) -> None:
    s = settings.model_copy(
        update={"lake": settings.lake.model_copy(update={"root": str(tmp_path / "lake")})}
    )
    try:
        report = run_demo(
            s,
            users=60,
            items=50,
            events=4000,
            smoke=False,
            batch=False,
            api=False,
            world_dir=tmp_path / "world",
            profile_timeout=120,
        )
    finally:  # unlike `make demo`, a test leaves nothing running behind it (only what it started:
        # stop_all would also end other demos' workers on this shared machine)
        processes.stop(s, instance=instance_of(DEMO_TOPIC_PREFIX))
    assert report.user is not None and report.live_events >= 3
    assert report.user.startswith("wu")  # a world user, never confusable with a MovieLens id
    assert report.before and report.after
    assert report.after_source.startswith("taste vector")
    assert report.changed, (report.before, report.after)
    assert {"1. services", "6. history -> lake", "9. live events -> Kafka"} <= set(report.timings)


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
        # Only in code: run_demo must hand all of it to the worker it starts (process_env).
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

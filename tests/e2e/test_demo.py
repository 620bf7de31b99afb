"""The demo end to end on a tiny world: the chosen user's recommendations must change after their
live events went through Kafka and the speed layer. Uses the real services, a private lake root
and world folder, and the demo's own topics (``lambdarec.demo.*``) and stream worker, which it
stops at the end."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra import processes
from lambdarec.cli.demo import run_demo
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
    finally:  # unlike `make demo`, a test leaves nothing running behind it
        processes.stop_all(s)
    assert report.user is not None and report.live_events >= 3
    assert report.before and report.after
    assert report.after_source.startswith("taste vector")
    assert report.changed, (report.before, report.after)
    assert {"1. services", "6. history -> lake", "9. live events -> Kafka"} <= set(report.timings)

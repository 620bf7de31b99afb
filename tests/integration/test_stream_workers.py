"""Two speed-layer workers share the interactions partitions (the second joins mid-stream, so
there is a rebalance) and together process every event exactly once."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from lambdarec.settings import Settings
from tests.integration.stream_support import (
    committed_all,
    make_events,
    members_with_interactions,
    metric,
    publish_model,
    stream_env,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

N = 12_000


def test_two_workers_share_partitions_exactly_once(
    settings: Settings, kafka: Settings, postgres: Settings, redis_service: Settings, tmp_path: Path
) -> None:
    with stream_env(settings, tmp_path, partitions=6) as se:
        events = make_events(N, users=600, items=se.item_ids, seed=11, rec_every=41)
        publish_model(se, "v1")
        first = se.start_worker()
        se.produce(events[: N // 2])
        se.wait_for(lambda: se.rt_count() > 0, 120, "first worker processing")
        second = se.start_worker()  # joins mid-stream: rebalance
        # wait for the rebalance to settle with both workers owning interactions partitions, so
        # the second half is shared whatever the machine's speed
        se.wait_for(lambda: members_with_interactions(se) == 2, 180, "both workers assigned partitions")
        se.produce(events[N // 2 :])
        se.wait_for(lambda: se.rt_count() >= N and committed_all(se), 150, "every record processed")
        time.sleep(1.5)

        with se.pg() as conn:
            rows, distinct = conn.execute(
                "SELECT count(*), count(DISTINCT event_id) FROM rt_user_interactions"
            ).fetchone()
            totals = dict(conn.execute("SELECT user_id, total_interactions FROM user_profiles").fetchall())
            per_user = dict(
                conn.execute("SELECT user_id, count(*) FROM rt_user_interactions GROUP BY 1").fetchall()
            )
            fb = conn.execute(
                "SELECT count(*), count(DISTINCT event_id) FROM recommendation_feedback"
            ).fetchone()
            no_vector = conn.execute(
                "SELECT count(*) FROM user_profiles WHERE als_factors IS NULL AND preference_vector IS NULL"
            ).fetchone()[0]
        assert rows == distinct == N
        assert sum(totals.values()) == N and totals == per_user
        n_rec = sum(e.rec_id is not None for e in events)
        assert fb == (n_rec, n_rec)
        assert no_vector < len(totals) // 10  # almost everyone has a vector (some only disliked)

        # both workers did work, and between them applied every event (duplicates only from the rebalance)
        applied = [
            metric(w.metrics(), "lambdarec_stream_events_total", outcome="applied") for w in (first, second)
        ]
        assert all(a > 0 for a in applied), applied
        assert sum(applied) >= N

"""SIGKILL a speed-layer worker mid-stream, restart it: every event counts exactly once and the
vectors equal those of an uninterrupted run over the same records (real Kafka, Postgres, Redis)."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lambdarec.settings import Settings
from schemas.dead_letters import decode_dead_letter
from schemas.events import InteractionEvent, encode
from streams.dead_letters import dlq_topic
from tests.integration.events_support import consume_all
from tests.integration.stream_support import (
    StreamEnv,
    committed_all,
    make_events,
    metric,
    produce_raw,
    publish_model,
    stream_env,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

N = 16_000
USERS = 400
BAD = [b"{not json", b'{"event_id": "x"}', b"[]"] * 5
DUPLICATES = 100  # the last records sent again (new offsets, same event_id)


def _records(events: list[InteractionEvent]) -> list[InteractionEvent]:
    return events + events[-DUPLICATES:]


def _produce_slowly(
    se: StreamEnv, events: list[InteractionEvent], chunk: int = 2000, pause: float = 0.4
) -> None:
    produce_raw(se, BAD)
    for start in range(0, len(events), chunk):
        se.produce(events[start : start + chunk])
        time.sleep(pause)


def _run(se: StreamEnv, events: list[InteractionEvent], *, kill_at: int | None) -> dict[str, Any]:
    publish_model(se, "v1")
    w = se.start_worker()
    se.wait_for(
        lambda: metric(w.metrics(), "lambdarec_stream_model_info", version="v1") == 1, 60, "model v1 loaded"
    )
    producer = threading.Thread(target=_produce_slowly, args=(se, _records(events)))
    producer.start()
    killed_at = None
    if kill_at is not None:
        se.wait_for(lambda: se.rt_count() >= kill_at, 180, f"{kill_at} rows before the kill")
        se.kill(w, signal.SIGKILL)
        killed_at = se.rt_count()
        se.start_worker(port=w.port)  # same port: same local RocksDB directory, plus the changelog
    producer.join()
    se.wait_for(lambda: se.rt_count() >= len(events) and committed_all(se), 300, "every record processed")
    time.sleep(1.5)  # anything still in flight would show up now
    return {"profiles": se.profiles(), "killed_at": killed_at}


def _check_exactly_once(se: StreamEnv, events: list[InteractionEvent]) -> None:
    n = len(events)
    with se.pg() as conn:
        rows, distinct = conn.execute(
            "SELECT count(*), count(DISTINCT event_id) FROM rt_user_interactions"
        ).fetchone()
        assert rows == distinct == n
        per_user = dict(
            conn.execute("SELECT user_id, count(*) FROM rt_user_interactions GROUP BY 1").fetchall()
        )
        totals = dict(conn.execute("SELECT user_id, total_interactions FROM user_profiles").fetchall())
        feedback = conn.execute(
            "SELECT count(*), count(DISTINCT event_id) FROM recommendation_feedback"
        ).fetchone()
    assert sum(totals.values()) == n
    assert totals == per_user
    expected_users: dict[str, int] = {}
    for e in events:
        expected_users[e.user_id] = expected_users.get(e.user_id, 0) + 1
    assert totals == expected_users
    n_rec = sum(e.rec_id is not None for e in events)
    assert feedback == (n_rec, n_rec)
    # at-least-once: a redelivered batch may publish a dead letter twice, but every bad record is there
    letters = [decode_dead_letter(m.value()) for m in consume_all(se.settings, dlq_topic(se.settings))]
    assert len({(lt.partition, lt.offset) for lt in letters}) == len(BAD)
    assert all(lt.topic == se.settings.kafka.topic("interactions") for lt in letters)


def test_sigkill_mid_stream_exactly_once_and_same_vectors(
    settings: Settings, kafka: Settings, postgres: Settings, redis_service: Settings, tmp_path: Path
) -> None:
    with stream_env(settings, tmp_path / "clean") as clean:
        events = make_events(N, users=USERS, items=clean.item_ids, seed=7, rec_every=53)
        assert len({encode(e) for e in events}) == N
        ref = _run(clean, events, kill_at=None)
        _check_exactly_once(clean, events)
    with stream_env(settings, tmp_path / "crash") as crash:
        got = _run(crash, events, kill_at=N // 4)
        assert got["killed_at"] < N, "the kill must happen mid-stream"
        _check_exactly_once(crash, events)
        restarted = crash.workers[-1]
        text = restarted.metrics()
        assert metric(text, "lambdarec_stream_events_total", outcome="applied") > 0

    a, b = ref["profiles"], got["profiles"]
    assert a.keys() == b.keys() and len(a) > 100
    with_pref = with_als = 0
    for user in a:
        pa, pb = a[user], b[user]
        assert pa["n"] == pb["n"]
        assert (pa["pref"] is None) == (pb["pref"] is None), user
        if pa["pref"] is not None:
            with_pref += 1
            np.testing.assert_allclose(pa["pref"], pb["pref"], rtol=1e-4, atol=1e-5, err_msg=user)
        assert (pa["als"] is None) == (pb["als"] is None), user
        if pa["als"] is not None:
            with_als += 1
            assert pa["als_version"] == pb["als_version"] == "v1"
            np.testing.assert_allclose(pa["als"], pb["als"], rtol=1e-3, atol=1e-4, err_msg=user)
    assert with_pref > 100 and with_als > 100

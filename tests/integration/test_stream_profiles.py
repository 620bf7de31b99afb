"""A user's profile follows their events in real time, with no batch run: counters, the taste
vector and the ALS fold-in change, the Redis cache version is bumped, a newly promoted model is
picked up without a restart, and the worker's timer runs the partition maintenance."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import redis

from lambdarec.settings import Settings
from schemas.cache_keys import list_key, version_key
from schemas.events import EventType, InteractionEvent
from streams.models import load_fold_in_model
from streams.processors.foldin import FoldInModel
from streams.processors.weights import confidence_weights, taste_weights
from tests.integration.stream_support import (
    StreamEnv,
    as_array,
    metric,
    produce_raw,
    publish_model,
    stream_env,
)

pytestmark = pytest.mark.integration


def _ev(user: str, item: str, typ: str, at: datetime, rating: float | None = None) -> InteractionEvent:
    return InteractionEvent(
        event_id=uuid.uuid4(), user_id=user, item_id=item, type=EventType(typ), occurred_at=at, rating=rating
    )


def _expected_taste(se: StreamEnv, events: list[InteractionEvent]) -> np.ndarray:
    w8 = taste_weights(se.settings)
    h = se.settings.stream.half_life_days * 86400
    with se.pg() as conn:
        emb = {
            i: as_array(e).astype(np.float64)
            for i, e in conn.execute(
                "SELECT item_id, embedding FROM items WHERE item_id = ANY(%s)", ([e.item_id for e in events],)
            ).fetchall()
        }
    t_max = max(e.occurred_at.timestamp() for e in events)
    num = sum(
        w8.of(e.type, e.rating) * 2 ** (-(t_max - e.occurred_at.timestamp()) / h) * emb[e.item_id]
        for e in events
    )
    den = sum(abs(w8.of(e.type, e.rating)) * 2 ** (-(t_max - e.occurred_at.timestamp()) / h) for e in events)
    return num / den


def _expected_als(se: StreamEnv, model: FoldInModel, events: list[InteractionEvent]) -> np.ndarray:
    """The direct implicit-ALS least-squares solve over the user's whole history."""
    cw = confidence_weights(se.settings)
    r: dict[str, float] = {}
    for e in events:
        r[e.item_id] = r.get(e.item_id, 0.0) + cw.of(e.type, e.rating)
    pos = [(model.item_index[i], min(v, model.max_confidence)) for i, v in r.items() if v > 0]
    Y = model.Y
    Yu = Y[[p for p, _ in pos]]
    c = np.array([1 + model.alpha * v for _, v in pos])
    A = Y.T @ Y + (Yu * (c - 1)[:, None]).T @ Yu + model.reg * len(pos) * np.eye(model.rank)
    return np.linalg.solve(A, (c[:, None] * Yu).sum(axis=0))


def test_profile_follows_events_without_batch_run(
    settings: Settings, kafka: Settings, postgres: Settings, redis_service: Settings, tmp_path: Path
) -> None:
    extra = {"LAMBDAREC_STREAM__MAINTENANCE_INTERVAL_SEC": "2", "LAMBDAREC_STREAM__FLUSH_INTERVAL_SEC": "0.1"}
    with stream_env(settings, tmp_path, extra_env=extra) as se:
        now = datetime.now(UTC).replace(microsecond=0)
        # retention: an archived day four days back, which the worker's timer must drop
        old = (now - timedelta(days=4)).replace(hour=0, minute=0, second=0)
        old_name = f"rt_user_interactions_p{old:%Y%m%d}"
        with se.pg() as conn:
            conn.execute(
                f"CREATE TABLE {old_name} PARTITION OF rt_user_interactions"
                f" FOR VALUES FROM ('{old.isoformat()}') TO ('{(old + timedelta(days=1)).isoformat()}')"
            )
            conn.execute(
                "SELECT advance_archive_watermark('rt_user_interactions', %s)", (now - timedelta(hours=49),)
            )

        uri1 = publish_model(se, "v1", seed=1)
        model1 = load_fold_in_model(uri1, se.settings, "v1")
        w = se.start_worker()
        se.wait_for(
            lambda: metric(w.metrics(), "lambdarec_stream_model_info", version="v1") == 1, 60, "model v1"
        )

        user = f"alice-{uuid.uuid4().hex[:8]}"
        items = se.item_ids
        history = [_ev(user, items[i], "like", now - timedelta(minutes=30 - i)) for i in range(5)]
        se.produce(history)

        def total() -> int:
            return int(
                se.scalar("SELECT total_interactions FROM user_profiles WHERE user_id = %s", user) or 0
            )

        se.wait_for(lambda: total() == 5, 60, "first events in the profile")
        p1 = se.profiles()[user]
        assert p1["als_version"] == "v1"
        np.testing.assert_allclose(p1["pref"], _expected_taste(se, history), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(p1["als"], _expected_als(se, model1, history), rtol=1e-3, atol=1e-4)

        r = redis.Redis.from_url(se.settings.redis.url)
        v1 = int(r.get(version_key(user)) or 0)
        assert v1 >= 1  # the first batch already invalidated
        r.set(list_key(user, v1, "als"), b"cached list", ex=60)  # what serving would have cached

        more = [
            _ev(user, items[0], "dislike", now - timedelta(minutes=5)),
            _ev(user, items[10], "like", now - timedelta(minutes=4)),
            _ev(user, items[11], "rate", now - timedelta(minutes=3), rating=5.0),
        ]
        se.produce(more)
        se.wait_for(lambda: total() == 8, 60, "new events in the profile")
        p2 = se.profiles()[user]
        history += more
        assert p2["last"] > p1["last"]
        assert not np.allclose(p2["pref"], p1["pref"]) and not np.allclose(p2["als"], p1["als"])
        np.testing.assert_allclose(p2["pref"], _expected_taste(se, history), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(p2["als"], _expected_als(se, model1, history), rtol=1e-3, atol=1e-4)
        v2 = int(r.get(version_key(user)) or 0)
        assert v2 > v1  # every cached (variant, filter) list of the user is now unreachable
        assert r.get(list_key(user, v2, "als")) is None

        # a promotion: the running worker loads v2 and folds the user in against it on the next event
        uri2 = publish_model(se, "v2", seed=2)
        model2 = load_fold_in_model(uri2, se.settings, "v2")
        se.wait_for(
            lambda: metric(w.metrics(), "lambdarec_stream_model_info", version="v2") == 1, 60, "model v2"
        )
        last = _ev(user, items[20], "play", now - timedelta(minutes=1))
        newcomer = f"bob-{uuid.uuid4().hex[:8]}"
        se.produce([last, _ev(newcomer, items[3], "like", now)])
        # the two users' events may sit in different Kafka partitions, hence different batches
        se.wait_for(lambda: total() == 9 and newcomer in se.profiles(), 60, "events after the promotion")
        history.append(last)
        profiles = se.profiles()
        p3 = profiles[user]
        assert p3["als_version"] == "v2"
        np.testing.assert_allclose(p3["als"], _expected_als(se, model2, history), rtol=1e-3, atol=1e-4)
        bob = profiles[newcomer]
        assert (
            bob["n"] == 1
            and bob["pref"] is not None
            and bob["als"] is not None
            and bob["als_version"] == "v2"
        )

        # a bad record is dead-lettered and counted; metrics are on the worker's web port
        produce_raw(se, [b"{broken"])
        se.wait_for(
            lambda: metric(w.metrics(), "lambdarec_stream_dead_letters_total", reason="malformed_json") == 1,
            60,
            "dead letter counted",
        )
        text = w.metrics()
        assert metric(text, "lambdarec_stream_event_to_profile_seconds_count") >= 10
        assert metric(text, "lambdarec_stream_batch_size_count") >= 3
        assert "lambdarec_stream_consumer_lag{" in text
        assert metric(text, "lambdarec_stream_events_total", outcome="applied") == 10

        se.wait_for(
            lambda: se.scalar("SELECT to_regclass(%s)", old_name) is None, 60, "archived partition dropped"
        )
        assert metric(w.metrics(), "lambdarec_stream_maintenance_total", action="dropped") >= 1

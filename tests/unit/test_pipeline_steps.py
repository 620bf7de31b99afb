"""Pure steps of the pipeline: factor health, the time holdout, scoring a foreign snapshot."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from batch import pipeline
from batch.evaluation import make_eval_split

CUTOFF = datetime(2026, 11, 25, 2, tzinfo=UTC)


def test_nan_or_zero_factors_stop_training() -> None:
    ok = np.ones((3, 2), np.float32)
    pipeline._check_factors("ALS", ok, ok)
    bad = ok.copy()
    bad[:] = np.nan
    with pytest.raises(pipeline.PipelineError, match="100% of rows NaN"):
        pipeline._check_factors("ALS", bad, ok)
    with pytest.raises(pipeline.PipelineError, match="all-zero"):
        pipeline._check_factors("ALS", ok, np.zeros((3, 2), np.float32))


def _events(hours: list[float]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": ["u"] * len(hours),
            "item_id": [f"i{i}" for i in range(len(hours))],
            "occurred_at": pd.to_datetime([CUTOFF - timedelta(hours=h) for h in hours], utc=True),
        }
    )


def test_holdout_is_the_last_day_when_it_is_big_enough() -> None:
    train, test, how = pipeline.holdout_split(_events([1, 2, 30, 40, 50]), CUTOFF, 24, 2, 0.25)
    assert len(test) == 2 and len(train) == 3 and how.startswith("events after")


def test_holdout_falls_back_to_a_time_quantile() -> None:
    train, test, how = pipeline.holdout_split(_events([30, 40, 50, 60]), CUTOFF, 24, 2, 0.25)
    assert len(test) == 2 and len(train) == 2 and how.startswith("last 25%")


def test_production_snapshot_is_aligned_by_id() -> None:
    train = pd.DataFrame({"user_id": ["a", "a", "b"], "item_id": ["x", "y", "x"], "value": [1.0, 1.0, 1.0]})
    test = pd.DataFrame({"user_id": ["a", "b", "c"], "item_id": ["z", "y", "x"]})
    split = make_eval_split(train, test, value_col="value")
    # snapshot knows users b, a (other order) and items y, x, z; z is new to the split's train
    m = pipeline.evaluate_factors(
        np.array(["b", "a"]),
        np.array(["y", "x", "q"]),
        np.array([[1.0, 0.0], [0.0, 1.0]], np.float32),
        np.array([[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]], np.float32),
        split,
        1,
    )
    assert m["precision@1"] == pytest.approx(1.0)  # b gets y (hit); a has seen x, y: no list
    assert m["user_coverage"] == pytest.approx(1 / 3)  # c is cold; a has no unseen known item

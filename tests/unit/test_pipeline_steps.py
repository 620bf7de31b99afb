"""Pure steps of the pipeline: factor health, the time holdout, pairs, the front-end choice."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from batch import pipeline
from batch.spark_events import EVENT_BYTES, FrontEnd, choose_front_end
from lambdarec.settings import Settings

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


def test_pairs_give_the_matrix_and_holdout_single_event_rows_kept() -> None:
    pairs = pd.DataFrame(
        {
            "user_id": ["a", "a", "b", "c", "d"],
            "item_id": ["x", "y", "x", "z", "x"],
            "w_all": [2.0, 500.0, 1.0, -1.0, 1.0],  # c's only pair is a dislike; 500 is capped
            "w_train": [2.0, np.nan, 1.0, -1.0, np.nan],  # y and d's x only in the holdout
            "test_pos": [False, True, False, False, True],
        }
    )
    full = pipeline.pairs_matrix(
        pairs["user_id"][:3], pairs["item_id"][:3], pairs["w_all"][:3].to_numpy(), 100
    )
    assert list(full.user_ids) == ["a", "b"] and list(full.item_ids) == ["x", "y"]
    assert full.matrix.toarray().tolist() == [[2.0, 100.0], [1.0, 0.0]]
    split = pipeline.split_from_pairs(pairs, 100)
    assert list(split.user_ids) == ["a", "b"]  # b: a single event, still trained on
    assert split.test.nnz == 1 and split.n_cold_test_users == 1  # a's y; d is cold


def _front(n: int, limit: int | None, **batch: object) -> FrontEnd:
    s = Settings()
    s = s.model_copy(update={"batch": s.batch.model_copy(update=batch)})
    return choose_front_end(s, n, limit)


def test_front_end_is_chosen_from_the_window_size() -> None:
    gib = 1 << 30
    fits = gib // 2 // EVENT_BYTES
    assert _front(fits, gib).local and not _front(fits + 1, gib).local
    assert "spark.driver.maxResultSize" in _front(fits + 1, gib).reason
    assert _front(10**9, None).local  # maxResultSize=0: no limit
    capped = _front(1001, gib, pandas_max_events=1000)
    assert not capped.local and "pandas_max_events=1,000" in capped.reason
    assert _front(1000, gib, pandas_max_events=1000).local
    assert _front(10**9, gib, front_end="pandas").local  # explicit: obeyed
    assert not _front(10, gib, front_end="spark").local

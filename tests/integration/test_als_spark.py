"""Spark ALS: trains from settings, factors come back aligned, and Spark's own
``recommendForAllUsers`` gives the same lists as ``batch/topk.py`` on those factors."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from batch.models.als import SparkALS, matrix_to_spark
from batch.topk import topk_factors
from lambdarec.settings import AlsSettings

pytestmark = pytest.mark.integration


def _same_up_to_ties(a: np.ndarray, b: np.ndarray, scores: np.ndarray, tol: float = 1e-5) -> bool:
    """Lists equal, except that items whose scores differ by < tol may swap (float summation order)."""
    for u in range(a.shape[0]):
        if (a[u] == b[u]).all():
            continue
        sa, sb = scores[u, a[u]], scores[u, b[u]]
        if not np.allclose(sa, sb, atol=tol):  # same score at every rank, so only tied items moved
            return False
    return True


def _matrix(seed: int = 0) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    n_users, n_items = 120, 80
    taste = rng.integers(0, 4, n_users)
    genre = rng.integers(0, 4, n_items)
    p = np.where(taste[:, None] == genre[None, :], 0.35, 0.03)
    mask = rng.random((n_users, n_items)) < p
    values = rng.integers(1, 6, (n_users, n_items)) * mask
    return sp.csr_matrix(values.astype(np.float32))


def test_implicit_als_lists_equal_topk(spark) -> None:  # type: ignore[no-untyped-def]
    X = _matrix()
    model = SparkALS(spark, AlsSettings(rank=6, max_iter=5, reg_param=0.1, alpha=2.0)).fit(X)
    assert model.user_factors.shape == (120, 6) and model.item_factors.shape == (80, 6)
    assert np.abs(model.item_factors).sum(axis=1).min() > 0  # every item got a trained vector
    p = model.params()
    assert (p["rank"], p["alpha"], p["implicit_prefs"], p["scale_reg"]) == (6, 2.0, True, True)
    k = 10
    spark_lists = model.recommend_spark(k)
    ours, _ = topk_factors(model.user_factors, model.item_factors, k)
    full = model.user_factors @ model.item_factors.T
    assert _same_up_to_ties(spark_lists, ours, full)
    assert (spark_lists == ours).mean() > 0.99
    # and the model learned the block structure: top-1 is in the user's genre for most users
    rng = np.random.default_rng(0)
    taste = rng.integers(0, 4, 120)
    genre = rng.integers(0, 4, 80)
    assert np.mean(genre[ours[:, 0]] == taste) > 0.8


def test_explicit_als_predictions_equal_spark_transform(spark) -> None:  # type: ignore[no-untyped-def]
    X = _matrix(1)
    model = SparkALS(spark, AlsSettings(rank=4, max_iter=5, reg_param=0.05, implicit_prefs=False)).fit(X)
    pairs = matrix_to_spark(spark, X).limit(200)
    pdf = model.model.transform(pairs).toPandas()  # type: ignore[union-attr]
    ours = model.predict(pdf["user"].to_numpy(), pdf["item"].to_numpy())
    np.testing.assert_allclose(ours, pdf["prediction"].to_numpy(), rtol=1e-5, atol=1e-5)
    rmse_train = float(np.sqrt(np.mean((pdf["rating"] - pdf["prediction"]) ** 2)))
    assert rmse_train < 1.0  # it fits the ratings it saw


def test_spark_aggregation_equals_the_pandas_matrix_and_holdout(spark) -> None:  # type: ignore[no-untyped-def]
    """batch/spark_events.py must build exactly what batch/interactions.py builds from raw rows:
    same weights, decay, dislike/bad-rating drop, cap, holdout train matrix and test truth."""
    from datetime import UTC, datetime, timedelta

    import pandas as pd

    from batch import pipeline, spark_events
    from batch.interactions import event_weights, implicit_matrix
    from batch.spark_events import EVENT_COLUMNS
    from lambdarec.settings import BatchSettings

    rng = np.random.default_rng(3)
    n = 3000
    cutoff = datetime(2026, 11, 25, 2, tzinfo=UTC)
    types = rng.choice(["view", "click", "like", "dislike", "rate", "purchase", "unknown"], n)
    pdf = pd.DataFrame(
        {
            "event_id": [f"e{i}" for i in range(n)],
            "user_id": [f"u{x}" for x in rng.integers(0, 60, n)],
            "item_id": [f"i{x}" for x in rng.integers(0, 40, n)],
            "type": types,
            "occurred_at": pd.to_datetime(
                [cutoff - timedelta(hours=float(h)) for h in rng.random(n) * 24 * 20], utc=True
            ),
            "rating": np.where(types == "rate", rng.integers(1, 6, n).astype(float), np.nan),
        }
    )[EVENT_COLUMNS]
    b = BatchSettings(max_confidence=20.0)
    spark.conf.set("spark.sql.session.timeZone", "UTC")  # naive UTC times below, as read_events sets
    sdf = spark.createDataFrame(pdf.assign(occurred_at=pdf["occurred_at"].dt.tz_convert(None)))
    split_at = cutoff - timedelta(days=2)
    pairs = spark_events.aggregate_pairs(sdf, b, cutoff, split_at)
    keep = pairs["w_all"] > 0
    ours = pipeline.pairs_matrix(
        pairs.loc[keep, "user_id"], pairs.loc[keep, "item_id"], pairs.loc[keep, "w_all"].to_numpy(), 20.0
    )
    ref = implicit_matrix(pdf, b, now=pd.Timestamp(cutoff))
    assert list(ours.user_ids) == list(ref.user_ids) and list(ours.item_ids) == list(ref.item_ids)
    np.testing.assert_allclose(ours.matrix.toarray(), ref.matrix.toarray(), rtol=1e-5)

    # the driver-side front end (batch.front_end=pandas) yields the same pairs
    local = spark_events.aggregate_pairs_pandas(pdf, b, cutoff, split_at)
    a = pairs.sort_values(["user_id", "item_id"]).reset_index(drop=True)
    c = local.sort_values(["user_id", "item_id"]).reset_index(drop=True)
    assert a[["user_id", "item_id", "test_pos"]].equals(c[["user_id", "item_id", "test_pos"]])
    np.testing.assert_allclose(a["w_all"], c["w_all"], rtol=1e-9)
    np.testing.assert_allclose(a["w_train"].fillna(0.0), c["w_train"], rtol=1e-9, atol=1e-12)

    split = pipeline.split_from_pairs(pairs, 20.0)
    before = pdf["occurred_at"] < pd.Timestamp(split_at)
    tr = implicit_matrix(pdf[before], b, now=pd.Timestamp(cutoff))
    test = pdf[~before]
    truth = set(
        map(
            tuple,
            test.loc[event_weights(test, b, now=pd.Timestamp(cutoff)) > 0, ["user_id", "item_id"]].values,
        )
    )
    users = pd.Index(split.user_ids)
    assert set(users) == set(tr.user_ids)
    coo = split.test.tocoo()
    got = {(split.user_ids[r], split.item_ids[c]) for r, c in zip(coo.row, coo.col, strict=True)}
    assert got == {p for p in truth if p[0] in set(users)}
    assert split.train.sum() == pytest.approx(float(tr.matrix.sum()), rel=1e-5)

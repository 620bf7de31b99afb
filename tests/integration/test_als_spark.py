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

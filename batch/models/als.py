"""Spark ALS (``pyspark.ml.recommendation.ALS``), the batch layer's production model.

Why Spark for training but not for top-K: ALS training shuffles the ratings by block and scales
out with the lake; the trained factors, though, are small (rank x (users + items) floats), so they
are collected into numpy, scored with ``batch/topk.py`` (>= 5x faster than
``recommendForAllUsers``, see ``benchmarks/bench_topk.py``) and written as a model snapshot.

All hyperparameters come from :class:`lambdarec.settings.AlsSettings` (``settings.batch.als``).
The input is the same user x item CSR matrix as every other model (integer row/column indices are
the Spark user/item ids, so factors come back aligned with our id maps), or a Spark DataFrame of
``(user, item, rating)`` for data that never leaves the cluster.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Self

import numpy as np
import pandas as pd
import scipy.sparse as sp

from batch.models.base import FactorModel
from lambdarec.settings import AlsSettings

if TYPE_CHECKING:
    from pyspark.ml.recommendation import ALSModel
    from pyspark.sql import DataFrame, SparkSession

USER_COL, ITEM_COL, RATING_COL = "user", "item", "rating"


def build_als(settings: AlsSettings):
    """An unfitted ``pyspark.ml.recommendation.ALS`` configured from ``settings``."""
    from pyspark.ml.recommendation import ALS

    return ALS(
        rank=settings.rank,
        maxIter=settings.max_iter,
        regParam=settings.reg_param,
        implicitPrefs=settings.implicit_prefs,
        alpha=settings.alpha,
        nonnegative=settings.nonnegative,
        seed=settings.seed,
        numUserBlocks=settings.num_user_blocks,
        numItemBlocks=settings.num_item_blocks,
        checkpointInterval=settings.checkpoint_interval,
        coldStartStrategy=settings.cold_start_strategy,
        userCol=USER_COL,
        itemCol=ITEM_COL,
        ratingCol=RATING_COL,
    )


def matrix_to_spark(spark: SparkSession, X: sp.spmatrix) -> DataFrame:
    """A CSR matrix as a Spark DataFrame ``(user int, item int, rating float)`` via Arrow."""
    spark.conf.set("spark.sql.execution.arrow.pyspark.enabled", "true")
    coo = sp.coo_matrix(X)
    pdf = pd.DataFrame(
        {
            USER_COL: coo.row.astype(np.int32),
            ITEM_COL: coo.col.astype(np.int32),
            RATING_COL: coo.data.astype(np.float32),
        }
    )
    return spark.createDataFrame(pdf)


def factors_to_numpy(df: DataFrame, n: int, rank: int) -> np.ndarray:
    """``userFactors``/``itemFactors`` (``id``, ``features``) as a dense ``(n, rank)`` array.

    Ids never seen in training (a user or item without ratings) keep a zero vector: they score 0
    for everything, which the caller can detect (row norm 0) and serve with a fallback.
    """
    pdf: pd.DataFrame = df.toPandas()
    out = np.zeros((n, rank), dtype=np.float32)
    if len(pdf):
        ids = pdf["id"].to_numpy(np.int64)
        out[ids] = np.stack(pdf["features"].to_numpy()).astype(np.float32)
    return out


class SparkALS(FactorModel):
    """``SparkALS(spark, settings.batch.als).fit(X)``; then ``recommend``/``predict`` in numpy."""

    name = "als"

    def __init__(self, spark: SparkSession, settings: AlsSettings | None = None) -> None:
        super().__init__()
        self.spark = spark
        self.settings = settings or AlsSettings()
        self.model: ALSModel | None = None

    def fit(self, X: sp.spmatrix) -> Self:
        super().fit(X)
        self.fit_spark(matrix_to_spark(self.spark, self.X), *self.X.shape)
        return self

    def fit_spark(self, ratings: DataFrame, n_users: int, n_items: int) -> ALSModel:
        """Train on a Spark DataFrame ``(user, item, rating)`` with ids in ``[0, n)``; keep factors."""
        self.model = build_als(self.settings).fit(ratings)
        rank = self.settings.rank
        self.user_factors = factors_to_numpy(self.model.userFactors, n_users, rank)
        self.item_factors = factors_to_numpy(self.model.itemFactors, n_items, rank)
        return self.model

    def params(self) -> dict[str, Any]:
        # Spark scales regParam by each row's number of ratings (ALS-WR): scale_reg is always true.
        return {**self.settings.model_dump(), "scale_reg": True}

    def recommend_spark(self, k: int) -> np.ndarray:
        """Spark's own ``recommendForAllUsers(k)`` as an ``(n_users, k)`` index array (-1 padded).

        Spark does not exclude seen items; this exists to cross-check and benchmark ``topk``.
        """
        if self.model is None:
            raise RuntimeError("als: call fit() first")
        return spark_recommend_for_all_users(self.model, self.user_factors.shape[0], k)


def spark_recommend_for_all_users(model: ALSModel, n_users: int, k: int) -> np.ndarray:
    """``model.recommendForAllUsers(k)`` collected into an ``(n_users, k)`` int32 array."""
    from pyspark.sql import functions as F

    rows: pd.DataFrame = (
        model.recommendForAllUsers(k)
        .select(USER_COL, F.posexplode("recommendations").alias("pos", "rec"))
        .select(USER_COL, "pos", F.col("rec." + ITEM_COL).alias(ITEM_COL))
        .toPandas()
    )
    out = np.full((n_users, k), -1, dtype=np.int32)
    out[rows[USER_COL].to_numpy(np.int64), rows["pos"].to_numpy(np.int64)] = rows[ITEM_COL].to_numpy()
    return out

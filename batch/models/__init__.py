"""Batch-layer recommenders behind one interface (:class:`batch.models.base.Recommender`).

``als`` (Spark ALS, the production model), ``ease`` (closed-form item-item), ``ials`` (numpy
implicit ALS, for comparison and tests without a JVM) and ``popularity`` (the floor any model must
beat). Every model fits a user x item CSR matrix from ``batch/interactions.py`` and recommends
through ``batch/topk.py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from batch.models.base import FactorModel, Popularity, Recommender
from batch.models.ease import EASE
from batch.models.ials import ImplicitALS

if TYPE_CHECKING:
    from lambdarec.settings import BatchSettings

__all__ = ["EASE", "MODEL_NAMES", "FactorModel", "ImplicitALS", "Popularity", "Recommender", "build_model"]

MODEL_NAMES = ("popularity", "ease", "ials", "als", "als-explicit")


def build_model(name: str, settings: BatchSettings, spark: object | None = None) -> Recommender:
    """A fresh model by name, configured from ``settings.batch`` (Spark models need ``spark``)."""
    als = settings.als
    if name == "popularity":
        return Popularity()
    if name == "ease":
        return EASE(lam=settings.ease_lambda, max_items=settings.ease_max_items)
    if name == "ials":
        return ImplicitALS(
            rank=als.rank, reg_param=als.reg_param, alpha=als.alpha, max_iter=als.max_iter, seed=als.seed
        )
    if name in ("als", "als-explicit"):
        if spark is None:
            raise ValueError(f"model {name!r} needs a SparkSession")
        from batch.models.als import SparkALS

        cfg = als.model_copy(update={"implicit_prefs": name == "als"})
        model = SparkALS(spark, cfg)  # type: ignore[arg-type]
        if name == "als-explicit":
            model.name = "als-explicit"
        return model
    raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODEL_NAMES)}")

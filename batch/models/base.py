"""The common model interface: ``fit(X)`` then ``recommend(users, k, exclude_seen)``.

Why one interface: the offline evaluation, the promotion gate and the snapshot writer treat every
candidate the same way; a model only has to say how it scores a block of users. Top-K selection,
memory bounds and seen-item exclusion live in ``batch/topk.py`` and are shared.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Self

import numpy as np
import scipy.sparse as sp

from batch.topk import topk_blocked
from schemas.model_snapshot import ModelSnapshot


class Recommender(ABC):
    """Fits a ``(n_users, n_items)`` CSR matrix of confidences/ratings; scores users' rows."""

    name: str = "model"

    def __init__(self) -> None:
        self._X: sp.csr_matrix | None = None

    @property
    def X(self) -> sp.csr_matrix:
        """The training matrix (what ``exclude_seen`` excludes)."""
        if self._X is None:
            raise RuntimeError(f"{self.name}: call fit() first")
        return self._X

    @property
    def n_items(self) -> int:
        return self.X.shape[1]

    def fit(self, X: sp.spmatrix) -> Self:
        """Fit on ``X`` (users x items). Subclasses call ``super().fit(X)`` then train."""
        X = sp.csr_matrix(X, dtype=np.float32)
        X.sum_duplicates()
        X.sort_indices()
        self._X = X
        return self

    @abstractmethod
    def score(self, users: np.ndarray) -> np.ndarray:
        """Dense float32 scores ``(len(users), n_items)`` for training-row indices ``users``."""

    def recommend(
        self,
        users: np.ndarray | None = None,
        k: int = 10,
        *,
        exclude_seen: bool = True,
        memory_mb: float = 64,
        n_threads: int = 1,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` item indices and scores for ``users`` (default: all), best first.

        ``exclude_seen`` drops the items each user has in the training matrix. Rows are padded
        with ``-1`` when a user has fewer than ``k`` candidates.
        """
        users = np.arange(self.X.shape[0]) if users is None else np.asarray(users, dtype=np.int64)
        exclude = self.X[users] if exclude_seen else None
        return topk_blocked(
            lambda a, b: self.score(users[a:b]),
            len(users),
            self.n_items,
            k,
            exclude=exclude,
            memory_mb=memory_mb,
            n_threads=n_threads,
        )


class FactorModel(Recommender):
    """A model whose scores are ``user_factors @ item_factors.T`` (ALS variants).

    Only these two arrays go into a model snapshot; the speed layer folds new users in against
    ``item_factors``.
    """

    user_factors: np.ndarray
    item_factors: np.ndarray

    def score(self, users: np.ndarray) -> np.ndarray:
        return self.user_factors[users] @ self.item_factors.T

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Predicted value of each (user, item) pair (explicit ALS: the rating, for RMSE)."""
        return np.einsum("ij,ij->i", self.user_factors[users], self.item_factors[items])

    def params(self) -> dict[str, Any]:
        """Hyperparameters recorded in the snapshot manifest; the speed layer's fold-in reads
        ``alpha``, ``reg_param`` and ``scale_reg`` from there to solve new users consistently."""
        return {}

    def to_snapshot(
        self,
        model_version: str,
        user_ids: np.ndarray,
        item_ids: np.ndarray,
        *,
        metrics: dict[str, float] | None = None,
        extra_params: dict[str, Any] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> ModelSnapshot:
        """The model as a :class:`ModelSnapshot`; ``user_ids[i]``/``item_ids[j]`` name row/column
        ``i``/``j`` of the training matrix (e.g. ``InteractionMatrix.user_ids``)."""
        return ModelSnapshot(
            model_version=model_version,
            algorithm=self.name,
            user_ids=np.asarray(user_ids),
            item_ids=np.asarray(item_ids),
            user_factors=np.asarray(self.user_factors, dtype=np.float32),
            item_factors=np.asarray(self.item_factors, dtype=np.float32),
            params={**self.params(), **(extra_params or {})},
            metrics=dict(metrics or {}),
            extra=dict(extra or {}),
        )


class Popularity(Recommender):
    """Most-interacted items first, same list for everyone: the floor every model must beat."""

    name = "popularity"

    def fit(self, X: sp.spmatrix) -> Self:
        super().fit(X)
        counts = np.diff(sp.csc_matrix(self.X).indptr).astype(np.float32)
        self._pop = counts / max(1.0, float(counts.max()))
        return self

    def score(self, users: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self._pop, (len(users), self._pop.size)).copy()

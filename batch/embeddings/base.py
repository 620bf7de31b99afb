"""The embedding provider contract: text in, L2-normalised float32 vectors out.

Everything downstream (the ``items.embedding`` pgvector column, the speed layer's content-taste
vector, similar-item search, cold start) only relies on this contract, so providers can be swapped
by configuration. Vectors are unit length so that cosine similarity is a plain dot product, which
is what pgvector's ``vector_cosine_ops`` HNSW index and the speed layer's running averages assume.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, TypeGuard, runtime_checkable

import numpy as np


@runtime_checkable
class EmbeddingProvider(Protocol):
    """Turns texts into vectors.

    ``name`` identifies the provider family (``"tfidf-svd"``), ``model_id`` the exact model that
    produced a vector (stored in ``items.embedding_model``: when it changes, every item is
    re-embedded, because vectors from two models are not comparable). ``dim`` is the output width.
    """

    name: str
    dim: int

    @property
    def model_id(self) -> str: ...

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """``(len(texts), dim)`` float32, each row unit length (all-zero only for empty text)."""
        ...


@runtime_checkable
class FittedProvider(EmbeddingProvider, Protocol):
    """A provider that learns from the catalog (TF-IDF + SVD): fit once, save, reload, transform.

    Fitting on the catalog and saving the fitted model is what keeps vectors comparable: new items
    are transformed by the saved model instead of a refit that would move every existing vector.
    """

    @property
    def is_fitted(self) -> bool: ...

    def fit(self, texts: Sequence[str]) -> None: ...

    def save(self, path: str | Path) -> None: ...


def is_fittable(p: EmbeddingProvider) -> TypeGuard[FittedProvider]:
    """True for providers that learn from the catalog (checked on the class, so an unfitted
    provider's ``model_id``, which raises, is never touched)."""
    return all(callable(getattr(type(p), a, None)) for a in ("fit", "save")) and hasattr(type(p), "is_fitted")


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Row-wise unit length in float32; zero rows stay zero instead of becoming NaN."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    np.maximum(norms, np.float32(1e-12), out=norms)
    return x / norms


def fit_width(x: np.ndarray, dim: int) -> np.ndarray:
    """Zero-pad rows to ``dim`` columns (cosine and dot products are unchanged by zero padding).

    A model narrower than the configured column (384-d MiniLM in a 768-d column, or an SVD with
    fewer components than ``dim`` on a small catalog) is padded; a wider one is an error because
    truncating would silently change similarities.
    """
    n, d = x.shape
    if d == dim:
        return x
    if d > dim:
        raise ValueError(
            f"embedding width {d} exceeds the configured dimension {dim} (LAMBDAREC_EMBEDDING__DIM); "
            "raise the setting (and re-run migrations) or choose a smaller model"
        )
    out = np.zeros((n, dim), dtype=np.float32)
    out[:, :d] = x
    return out

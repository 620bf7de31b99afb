"""EASE: the closed-form item-item model of Steck (2019), "Embarrassingly Shallow Autoencoders".

Why it is here: on MovieLens-sized catalogs it is the strongest simple baseline (it beats the
neural models of the Microsoft Recommenders benchmark on ml-100k), it has one hyperparameter and
no iterations; the daily pipeline trains it next to ALS and publishes whichever family wins the
holdout (docs/batch.md, "Two model families, one snapshot").

``B = I - P · diag(1 / diag(P))`` with ``P = (XᵀX + λI)⁻¹`` (diagonal of ``B`` forced to zero);
scores are ``X_u · B``. Memory bound: the Gram matrix is dense ``n_items²`` and is inverted in
place (Cholesky ``potrf``/``potri``), then ``B`` is formed in the same buffer: peak about
``2 · n_items² · itemsize`` — float64 up to 4k items (0.25 GB), float32 beyond (20k items: 3.2 GB,
the default ``batch.ease_max_items``). Time is ``O(n_items³)``: ~20k items is minutes on 2 cores.
"""

from __future__ import annotations

from typing import Self

import numpy as np
import scipy.linalg.lapack as lapack
import scipy.sparse as sp

from batch.models.base import Recommender

#: float64 below this many items (ml-100k's 1,682 stay bit-comparable with the reference library);
#: float32 above, where LAPACK's potrf/potri run ~3x faster (8k items: 8 s vs 27 s on this box,
#: same top-50 lists) and the inverse is well conditioned anyway (lambda = 500 on the diagonal).
FLOAT64_MAX_ITEMS = 4_000


class EASE(Recommender):
    """``EASE(lam=500).fit(X).recommend(users, k=10)``. ``binarize`` uses 1 for any positive entry."""

    name = "ease"

    def __init__(self, lam: float = 500.0, *, binarize: bool = True, max_items: int = 20_000) -> None:
        super().__init__()
        if lam <= 0:
            raise ValueError("lam must be > 0")
        self.lam = lam
        self.binarize = binarize
        self.max_items = max_items
        self.B: np.ndarray | None = None

    def fit(self, X: sp.spmatrix) -> Self:
        super().fit(X)
        X = self.X
        if self.binarize:
            X = X.copy()
            X.data = (X.data > 0).astype(np.float32)
            X.eliminate_zeros()
            self._X_in = X
        else:
            self._X_in = X
        n = X.shape[1]
        if n > self.max_items:
            raise ValueError(
                f"EASE on {n} items needs a dense {n}x{n} inverse (> batch.ease_max_items="
                f"{self.max_items}); use ALS for catalogs this large"
            )
        dtype = np.float64 if n <= FLOAT64_MAX_ITEMS else np.float32
        G = (X.T @ X).toarray().astype(dtype, copy=False)
        G[np.diag_indices(n)] += self.lam
        potrf, potri = lapack.get_lapack_funcs(("potrf", "potri"), (G,))
        c, info = potrf(G, lower=False, overwrite_a=True, clean=False)
        if info != 0:
            raise np.linalg.LinAlgError(f"EASE: Gram matrix not positive definite (potrf info={info})")
        P, info = potri(c, lower=False, overwrite_c=True)
        if info != 0:
            raise np.linalg.LinAlgError(f"EASE: inversion failed (potri info={info})")
        # potri fills the upper triangle only; mirror it in blocks (no n² temporaries).
        step = 1024
        for j in range(step, n, step):
            P[j : j + step, :j] = P[:j, j : j + step].T
        for j in range(0, n, step):
            blk = P[j : j + step, j : j + step]
            blk[...] = np.triu(blk) + np.triu(blk, 1).T
        diag = P.diagonal().copy()
        P /= -diag  # column j divided by P_jj
        P[np.diag_indices(n)] = 0.0
        self.B = P.astype(np.float32, copy=False)
        return self

    def score(self, users: np.ndarray) -> np.ndarray:
        if self.B is None:
            raise RuntimeError("ease: call fit() first")
        return np.asarray(self._X_in[users] @ self.B, dtype=np.float32)

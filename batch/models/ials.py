"""Implicit ALS in numpy/scipy (Hu, Koren & Volinsky 2008), the exact solver Spark uses.

Why have it next to Spark ALS: it needs no JVM, so the offline evaluation and tuning run in
seconds on small data and unit tests can cover the model; it follows Spark's conventions
(confidence ``1 + alpha * r`` on positive entries, preference ``r > 0``, regularisation
``reg_param * n_u`` scaled by each user's/item's number of positive entries — Spark's ALS-WR), so
a setting tuned here carries over to the Spark job.

Each half-step solves, for every user at once, ``(YᵀY + Yᵀ(C_u - I)Y + λ n_u I) x_u = YᵀC_u p_u``.
The per-user sums ``Σ_i alpha r_ui y_i y_iᵀ`` are one sparse-times-dense product with the
row-wise outer products of ``Y`` (``n_items x rank²``), then a batched ``np.linalg.solve``; users
are processed in chunks that bound memory to ~``chunk · rank² · 8`` bytes.
"""

from __future__ import annotations

from typing import Any, Self

import numpy as np
import scipy.sparse as sp

from batch.models.base import FactorModel


class ImplicitALS(FactorModel):
    """``ImplicitALS(rank=10, reg_param=0.1, alpha=1.0, max_iter=10).fit(X)``."""

    name = "ials"

    def __init__(
        self,
        rank: int = 10,
        *,
        reg_param: float = 0.1,
        alpha: float = 1.0,
        max_iter: int = 10,
        seed: int = 42,
        scale_reg: bool = True,
        chunk_rows: int = 4096,
    ) -> None:
        super().__init__()
        self.rank = rank
        self.reg_param = reg_param
        self.alpha = alpha
        self.max_iter = max_iter
        self.seed = seed
        self.scale_reg = scale_reg
        self.chunk_rows = chunk_rows

    def fit(self, X: sp.spmatrix) -> Self:
        super().fit(X)
        R = self.X.copy()
        R.data = np.maximum(R.data, 0)  # negative entries carry no preference here
        R.eliminate_zeros()
        rng = np.random.default_rng(self.seed)
        n_users, n_items = R.shape
        # Spark initialises with |N(0,1)| / sqrt(rank) rows scaled to unit norm; any small random
        # start works for ALS, this one keeps the first solve well conditioned.
        self.user_factors = np.zeros((n_users, self.rank), dtype=np.float32)
        self.item_factors = (np.abs(rng.standard_normal((n_items, self.rank))) / np.sqrt(self.rank)).astype(
            np.float32
        )
        Rt = sp.csr_matrix(R.T)
        for _ in range(self.max_iter):
            self.user_factors = self._solve(R, self.item_factors)
            self.item_factors = self._solve(Rt, self.user_factors)
        return self

    def params(self) -> dict[str, Any]:
        return {
            "rank": self.rank,
            "reg_param": self.reg_param,
            "alpha": self.alpha,
            "max_iter": self.max_iter,
            "implicit_prefs": True,
            "scale_reg": self.scale_reg,
            "seed": self.seed,
        }

    def _solve(self, R: sp.csr_matrix, Y: np.ndarray) -> np.ndarray:
        """Exact least-squares update of the row factors of ``R`` given column factors ``Y``."""
        r = self.rank
        Y64 = Y.astype(np.float64)
        YtY = Y64.T @ Y64
        YY = np.einsum("ir,is->irs", Y64, Y64).reshape(Y.shape[0], r * r)
        out = np.zeros((R.shape[0], r), dtype=np.float32)
        eye = np.eye(r)
        for start in range(0, R.shape[0], self.chunk_rows):
            Rc = R[start : start + self.chunk_rows]
            n_pos = np.diff(Rc.indptr)
            rows = np.flatnonzero(n_pos)
            if rows.size == 0:
                continue
            Rc = Rc[rows]
            W = Rc.copy()
            W.data = (self.alpha * W.data).astype(np.float64)  # c - 1
            C = Rc.copy()
            C.data = (1.0 + self.alpha * C.data).astype(np.float64)  # c (p = 1 on positives)
            A = (W @ YY).reshape(-1, r, r) + YtY
            lam = self.reg_param * (n_pos[rows] if self.scale_reg else np.ones(rows.size))
            A += lam[:, None, None] * eye
            b = C @ Y64
            out[start + rows] = np.linalg.solve(A, b[:, :, None])[:, :, 0]
        return out

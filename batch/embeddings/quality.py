"""Does an embedding put similar items together? Neighbour label agreement vs a random baseline.

The question the issue asks of a provider is "do similar items share genres and tags?". For a
sample of query items we take the k nearest neighbours by cosine (excluding the item itself) and
measure:

* ``precision@k``: the fraction of neighbours that share at least one label (genre) with the query;
* ``jaccard@k``: the mean Jaccard overlap of their label sets (rewards sharing *all* genres);

and compare with what k random items would score (computed exactly, not sampled). ``lift`` is
precision / random precision. Items without labels are not used as queries.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class NeighbourQuality:
    """Scores for one embedding on one label kind (genres or tags)."""

    k: int
    queries: int
    precision: float
    random_precision: float
    jaccard: float
    random_jaccard: float

    @property
    def lift(self) -> float:
        return self.precision / self.random_precision if self.random_precision else float("nan")

    def as_row(self) -> str:
        return (
            f"P@{self.k} {self.precision:.3f} (random {self.random_precision:.3f}, lift {self.lift:.2f}x)  "
            f"Jaccard@{self.k} {self.jaccard:.3f} (random {self.random_jaccard:.3f})  n={self.queries}"
        )


def _label_matrix(labels: Sequence[Sequence[str]]) -> np.ndarray:
    vocab = {lab: i for i, lab in enumerate(sorted({x for ls in labels for x in ls}))}
    m = np.zeros((len(labels), max(1, len(vocab))), dtype=np.float32)
    for i, ls in enumerate(labels):
        for x in ls:
            m[i, vocab[x]] = 1.0
    return m


def nearest(emb: np.ndarray, queries: np.ndarray, k: int, block: int = 512) -> np.ndarray:
    """Indices ``(len(queries), k)`` of each query's k most cosine-similar rows, itself excluded.

    ``emb`` must be L2-normalised (providers guarantee it), so cosine is a dot product; blocks keep
    the similarity matrix at ``block x n`` floats.
    """
    out = np.empty((len(queries), k), dtype=np.int64)
    for s in range(0, len(queries), block):
        q = queries[s : s + block]
        sims = emb[q] @ emb.T
        sims[np.arange(len(q)), q] = -np.inf
        part = np.argpartition(-sims, k, axis=1)[:, :k]
        order = np.take_along_axis(sims, part, axis=1).argsort(axis=1)[:, ::-1]
        out[s : s + block] = np.take_along_axis(part, order, axis=1)
    return out


def neighbour_quality(
    emb: np.ndarray,
    labels: Sequence[Sequence[str]],
    k: int = 10,
    sample: int = 2000,
    seed: int = 0,
) -> NeighbourQuality:
    """Label agreement of the k nearest neighbours of up to ``sample`` labelled query items."""
    n = len(labels)
    if emb.shape[0] != n:
        raise ValueError(f"{emb.shape[0]} vectors for {n} label sets")
    lab = _label_matrix(labels)
    sizes = lab.sum(axis=1)
    candidates = np.flatnonzero(sizes > 0)
    if len(candidates) == 0 or n <= k:
        raise ValueError("need labelled items and more than k items")
    rng = np.random.default_rng(seed)
    queries = np.sort(rng.choice(candidates, size=min(sample, len(candidates)), replace=False))
    nn = nearest(np.asarray(emb, dtype=np.float32), queries, k)
    inter = np.einsum("qg,qkg->qk", lab[queries], lab[nn])
    union = sizes[queries][:, None] + sizes[nn] - inter
    precision = float((inter > 0).mean())
    jaccard = float(np.where(union > 0, inter / np.maximum(union, 1), 0).mean())
    # Exact expectation over a uniformly random *other* item, per query, then averaged.
    inter_all = lab[queries] @ lab.T  # (q, n)
    inter_all[np.arange(len(queries)), queries] = 0
    share = (inter_all > 0).sum(axis=1)
    rand_p = float((share / (n - 1)).mean())
    union_all = sizes[queries][:, None] + sizes[None, :] - inter_all
    jac_all = np.where(union_all > 0, inter_all / np.maximum(union_all, 1), 0)
    jac_all[np.arange(len(queries)), queries] = 0
    rand_j = float((jac_all.sum(axis=1) / (n - 1)).mean())
    return NeighbourQuality(k, len(queries), precision, rand_p, jaccard, rand_j)

"""Merge, MMR and novelty: the ranking of a recommendation list, as plain functions.

Why plain functions over numpy and small dataclasses: the blend must be testable without a
database, and the same code ranks speed, batch and popular candidates. The service layer
(:mod:`serving.recommend`) fetches candidates and item metadata; this module only decides order.

>>> c = {"realtime": [Candidate("a", 0.9, "realtime"), Candidate("b", 0.1, "realtime")],
...      "popular": [Candidate("b", 50.0, "popular")]}
>>> [(s.item_id, s.source) for s in blend(c, {"realtime": 0.6, "popular": 0.4})]
[('a', 'realtime'), ('b', 'popular')]
"""

from __future__ import annotations

import math
from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

SOURCES = ("realtime", "batch", "popular")


@dataclass(slots=True)
class Candidate:
    """One item proposed by one source; ``score`` is on that source's own scale."""

    item_id: str
    score: float
    source: str
    #: the item the source related this one to (e.g. the watched item of an item-item match)
    anchor: str | None = None
    #: a genre the source picked it for (popular in a favourite genre)
    genre: str | None = None


@dataclass(slots=True)
class Scored:
    """A blended item: ``score`` in [0, 1]-ish, ``source`` is the source that contributed most."""

    item_id: str
    score: float
    source: str
    contributions: dict[str, float] = field(default_factory=dict)
    anchor: str | None = None
    genre: str | None = None


def normalize(scores: Sequence[float]) -> list[float]:
    """Min-max to [0, 1] so that sources with different scales can be weighted (all equal -> 1)."""
    if not scores:
        return []
    lo, hi = min(scores), max(scores)
    if hi - lo < 1e-12:
        return [1.0] * len(scores)
    return [(s - lo) / (hi - lo) for s in scores]


def blend(
    candidates: Mapping[str, Sequence[Candidate]],
    weights: Mapping[str, float],
    *,
    banned: Container[str] = frozenset(),
    limit: int | None = None,
) -> list[Scored]:
    """Weighted sum of per-source normalised scores, best first (ties: item id, deterministic).

    An item proposed by several sources sums their contributions (agreement is evidence); its
    reported ``source`` is the largest contributor (the earlier source on a tie), whose candidate
    gives ``anchor`` and ``genre``. A source proposing an item twice counts its better score.
    Sources with weight <= 0 are ignored. ``banned`` items are left out and only the best
    ``limit`` are built: an uncached list re-ranks the head of a few hundred candidates.

    Why arrays: the per-candidate dictionary walk this replaces cost ~0.9 ms per list; here the
    contributions are one (items x sources) matrix, and :class:`Scored` objects are made only for
    what is returned.
    """
    srcs = [(src, float(weights.get(src, 0.0)), c) for src, c in candidates.items()]
    srcs = [(src, w, c) for src, w, c in srcs if w > 0 and c]
    if not srcs:
        return []
    uid: dict[str, int] = {}
    flat: list[Candidate] = []
    rows: list[int] = []
    cols: list[np.ndarray] = []
    contribs: list[np.ndarray] = []
    for j, (_, w, cands) in enumerate(srcs):
        sc = np.fromiter((c.score for c in cands), dtype=np.float64, count=len(cands))
        lo, hi = sc.min(), sc.max()
        norm = np.ones(len(sc)) if hi - lo < 1e-12 else (sc - lo) / (hi - lo)  # == normalize()
        # a small floor keeps the weakest candidate of a source above an absent one
        contribs.append(w * (0.05 + 0.95 * norm))
        cols.append(np.full(len(cands), j))
        rows.extend(uid.setdefault(c.item_id, len(uid)) for c in cands)
        flat.extend(cands)
    u, col, contrib = np.asarray(rows), np.concatenate(cols), np.concatenate(contribs)
    mat = np.zeros((len(uid), len(srcs)))
    np.maximum.at(mat, (u, col), contrib)
    score = mat.sum(axis=1)
    best = mat.argmax(axis=1)  # first maximum: the earlier source wins a tie
    # the candidate that gave each item its winning contribution (the first one, on a tie)
    winner = np.flatnonzero((col == best[u]) & (contrib == mat[u, col]))
    first = np.zeros(len(uid), dtype=np.int64)
    found, at = np.unique(u[winner], return_index=True)
    first[found] = winner[at]
    ids = list(uid)
    order = np.lexsort((np.asarray(ids), -score))
    names = [src for src, _, _ in srcs]
    rows_l, score_l, best_l, first_l = mat.tolist(), score.tolist(), best.tolist(), first.tolist()
    out: list[Scored] = []
    for i in order.tolist():
        item = ids[i]
        if item in banned:
            continue
        cand = flat[first_l[i]]
        contributions = {names[j]: v for j, v in enumerate(rows_l[i]) if v}
        out.append(Scored(item, score_l[i], names[best_l[i]], contributions, cand.anchor, cand.genre))
        if limit is not None and len(out) >= limit:
            break
    return out


def exclude(items: Iterable[Scored], banned: set[str]) -> list[Scored]:
    """Drop seen/disliked items, keeping order."""
    return [s for s in items if s.item_id not in banned]


def novelty(popularity: float, max_popularity: float) -> float:
    """1 for the least popular item, 0 for the most popular (log scale: popularity is long-tailed)."""
    if max_popularity <= 0:
        return 0.0
    return 1.0 - math.log1p(max(popularity, 0.0)) / math.log1p(max_popularity)


def apply_novelty(
    items: Sequence[Scored], popularity: Mapping[str, float], preference: float, max_boost: float
) -> list[Scored]:
    """Boost less popular items by ``preference * max_boost * novelty``; re-sorted.

    ``preference`` is the user's novelty_preference in [0, 1]; at 0 the order is unchanged.
    """
    if preference <= 0 or max_boost <= 0 or not items:
        return list(items)
    top = max((popularity.get(s.item_id, 0.0) for s in items), default=0.0)
    for s in items:
        s.score += preference * max_boost * novelty(popularity.get(s.item_id, 0.0), top)
    return sorted(items, key=lambda s: (-s.score, s.item_id))


def mmr(
    items: Sequence[Scored],
    vectors: Mapping[str, np.ndarray],
    k: int,
    diversity: float,
) -> list[Scored]:
    """Maximal marginal relevance: pick ``k`` items trading relevance for dissimilarity.

    ``diversity`` (the user's diversity_preference, 0..1) is the weight of dissimilarity:
    ``argmax (1 - diversity) * rel(i) - diversity * max_sim(i, picked)`` with ``rel`` the blended
    score min-max normalised and ``sim`` the cosine of item embeddings. Items without a vector
    count as dissimilar to everything. At ``diversity == 0`` this is the plain top-k.
    """
    if k <= 0 or not items:
        return []
    if diversity <= 0 or len(items) <= 1:
        return list(items[:k])
    n = len(items)
    dim = next((len(v) for v in vectors.values()), 0)
    mat = np.zeros((n, max(dim, 1)), dtype=np.float64)
    rows = [(i, v) for i, s in enumerate(items) if (v := vectors.get(s.item_id)) is not None]
    rows = [(i, v) for i, v in rows if len(v) == dim]
    if rows:  # one normalisation for the whole block (a norm per item cost ~5 us each)
        idx = [i for i, _ in rows]
        block = np.asarray([v for _, v in rows], dtype=np.float64)
        norms = np.linalg.norm(block, axis=1, keepdims=True)
        mat[idx] = np.divide(block, norms, out=np.zeros_like(block), where=norms > 0)
    return mmr_unit(items, mat, k, diversity)


def mmr_unit(items: Sequence[Scored], unit: np.ndarray, k: int, diversity: float) -> list[Scored]:
    """:func:`mmr` with the vectors given as a matrix: row ``i`` is ``items[i]``'s embedding at
    unit length (a zero row: no embedding). The in-memory catalog hands its rows over as they
    are, with no per-item dictionary or normalisation."""
    if k <= 0 or not items:
        return []
    if diversity <= 0 or len(items) <= 1:
        return list(items[:k])
    rel = np.asarray(normalize([s.score for s in items]), dtype=np.float64)
    n = len(items)
    u = np.asarray(unit, dtype=np.float32)  # the catalog's rows are float16: float32 loses nothing
    sims = (u @ u.T).astype(np.float64)
    max_sim = np.full(n, -np.inf)
    chosen: list[int] = []
    available = np.ones(n, dtype=bool)
    lam = 1.0 - diversity
    for _ in range(min(k, n)):
        penalty = np.where(np.isfinite(max_sim), max_sim, 0.0)
        value = lam * rel - diversity * penalty
        value[~available] = -np.inf
        best = int(np.argmax(value))
        chosen.append(best)
        available[best] = False
        max_sim = np.maximum(max_sim, sims[best])
    return [items[i] for i in chosen]


def top_by_dot(
    user: np.ndarray, item_ids: np.ndarray, item_factors: np.ndarray, n: int, banned: set[str] | None = None
) -> list[Candidate]:
    """The ``n`` items of highest ``item_factors @ user`` (ALS score), skipping ``banned``."""
    if user.shape[0] != item_factors.shape[1] or len(item_ids) == 0:
        return []
    scores = item_factors @ user.astype(item_factors.dtype, copy=False)
    want = min(len(scores), n + (len(banned) if banned else 0))
    idx = top_rows(scores, want)
    out: list[Candidate] = []
    for i in idx.tolist():
        iid = str(item_ids[i])
        if banned and iid in banned:
            continue
        out.append(Candidate(iid, float(scores[i]), "realtime"))
        if len(out) >= n:
            break
    return out


def top_rows(scores: np.ndarray, want: int) -> np.ndarray:
    """Rows of the ``want`` highest ``scores`` (at least; maybe a few more), best first.

    Why not a plain ``argpartition`` over all rows: on 60k scores it cost ~0.5 ms, half of an
    uncached list. A threshold read off every 16th score (a partition of 1/16 of the rows), set
    low enough that about twice ``want`` rows pass, leaves a few hundred rows to sort; when fewer
    than ``want`` pass (unlikely), the exact ``argpartition`` runs instead. Either way every row
    of the true top ``want`` is in the answer, in score order.
    """
    n = len(scores)
    if want <= 0:
        return np.zeros(0, dtype=np.int64)
    idx: np.ndarray | None = None
    if want < n:
        step = 16
        sample = scores[::step]
        if n >= 4096 and 2 * want < len(sample) * step // 4:
            r = min(len(sample) - 1, 2 * want // step + 8)  # rank from the top, in the sample
            thr = np.partition(sample, len(sample) - 1 - r)[len(sample) - 1 - r]
            passed = np.flatnonzero(scores >= thr)
            if len(passed) >= want:
                idx = passed
        if idx is None:
            idx = np.argpartition(-scores, want - 1)[:want]
    else:
        idx = np.arange(n)
    return idx[np.argsort(-scores[idx], kind="stable")]

"""Merge, MMR and novelty: the ranking of a recommendation list, as plain functions.

Why plain functions over numpy and small dataclasses: the blend must be testable without a
database, and the same code ranks speed, batch and popular candidates. The service layer
(:mod:`serving.recommend`) fetches candidates and item metadata; this module only decides order.

Everything here works on integer item keys (catalog rows) in arrays: :class:`Pool` per source,
:func:`blend_rows`, :func:`novelty_boost`, :func:`mmr_order`; :class:`Scored` objects are made for
the served items only (``tests/unit/ranking_objects.py`` has object-level wrappers the tests read
more easily).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
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


def minmax(scores: np.ndarray) -> np.ndarray:
    """Min-max to [0, 1] so that sources with different scales can be weighted (all equal -> 1)."""
    sc = np.asarray(scores, dtype=np.float64)
    if not len(sc):
        return sc
    lo, hi = sc.min(), sc.max()
    return np.ones(len(sc)) if hi - lo < 1e-12 else (sc - lo) / (hi - lo)


@dataclass(slots=True)
class Pool:
    """One source's candidates as arrays over a request's item keys (catalog rows, see
    :class:`serving.catalog.Lookup`): no object per candidate."""

    source: str
    keys: np.ndarray  # int64
    scores: np.ndarray  # float64, on the source's own scale
    #: key of the item the source related each one to, -1 for none
    anchors: np.ndarray | None = None
    #: a genre the source picked each one for (object array, None for none)
    genres: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.keys)

    @classmethod
    def concat(cls, source: str, pools: Sequence[Pool]) -> Pool:
        if len(pools) == 1 and pools[0].source == source:
            return pools[0]  # pools are never modified in place: no copy needed
        n = [len(p) for p in pools]
        return cls(
            source,
            np.concatenate([p.keys for p in pools]) if pools else np.zeros(0, np.int64),
            np.concatenate([p.scores for p in pools]) if pools else np.zeros(0),
            np.concatenate([_or_full(p.anchors, k, -1, np.int64) for p, k in zip(pools, n, strict=True)])
            if any(p.anchors is not None for p in pools)
            else None,
            np.concatenate([_or_full(p.genres, k, None, object) for p, k in zip(pools, n, strict=True)])
            if any(p.genres is not None for p in pools)
            else None,
        )


def _or_full(a: np.ndarray | None, n: int, fill: object, dtype: type) -> np.ndarray:
    return np.full(n, fill, dtype=dtype) if a is None else a


@dataclass(slots=True)
class Blended:
    """A blended list as arrays, best first: row ``i`` is one item."""

    keys: np.ndarray  # int64
    scores: np.ndarray  # float64
    source: np.ndarray  # index into ``names``: the largest contributor
    names: list[str]
    anchors: np.ndarray  # int64 keys, -1 for none
    genres: np.ndarray  # object
    contributions: np.ndarray  # (items, sources) float64, 0 where a source did not propose it

    def __len__(self) -> int:
        return len(self.keys)

    def take(self, idx: np.ndarray) -> Blended:
        return Blended(self.keys[idx], self.scores[idx], self.source[idx], self.names, self.anchors[idx],
                       self.genres[idx], self.contributions[idx])  # fmt: skip

    def scored(
        self, item_id: Callable[[int], str], anchor_id: Callable[[int], str] | None = None
    ) -> list[Scored]:
        """:class:`Scored` objects (build them only for the items served)."""
        anchor_id = anchor_id or item_id
        names, out = self.names, []
        rows = self.contributions.tolist()
        for i, (key, score, src, anchor, genre) in enumerate(
            zip(
                self.keys.tolist(),
                self.scores.tolist(),
                self.source.tolist(),
                self.anchors.tolist(),
                self.genres.tolist(),
                strict=True,
            )
        ):
            contributions = {names[j]: v for j, v in enumerate(rows[i]) if v}
            out.append(Scored(item_id(key), score, names[src], contributions,
                              anchor_id(anchor) if anchor >= 0 else None, genre))  # fmt: skip
        return out


def blend_rows(
    pools: Sequence[Pool],
    weights: Mapping[str, float],
    tie_rank: Callable[[np.ndarray], np.ndarray],
    *,
    banned: np.ndarray | None = None,
    limit: int | None = None,
) -> Blended:
    """Weighted sum of per-source normalised scores over item keys, best first.

    An item proposed by several sources sums their contributions (agreement is evidence); its
    ``source`` is the largest contributor (the earlier source on a tie), whose candidate gives
    ``anchor`` and ``genre``. A source proposing an item twice counts its better score. Sources
    with weight <= 0 are ignored. Ties in score go by ``tie_rank(keys)`` (the rank of the item
    id, so the order is the one a sort by id gives); ``banned`` keys are left out and only the
    best ``limit`` kept.

    Why keys: the string ids, a dictionary id -> position and a lexsort over a string array cost
    most of an uncached list; here everything is integer arrays.
    """
    use = [(p, float(weights.get(p.source, 0.0))) for p in pools]
    use = [(p, w) for p, w in use if w > 0 and len(p)]
    names = [p.source for p, _ in use]
    if not use:
        z = np.zeros(0, np.int64)
        return Blended(z, np.zeros(0), z, names, z, np.zeros(0, object), np.zeros((0, 0)))
    sizes = [len(p) for p, _ in use]
    contrib = np.empty(sum(sizes))
    at = 0
    for (p, w), m in zip(use, sizes, strict=True):
        sc = np.asarray(p.scores, dtype=np.float64)
        lo, hi = sc.min(), sc.max()
        part = contrib[at : at + m]
        # w * (0.05 + 0.95 * minmax(scores)) in place, operation for operation (equal scores
        # stay equal); a small floor keeps the weakest candidate of a source above an absent one
        if hi - lo < 1e-12:
            part.fill(w * (0.05 + 0.95 * 1.0))
        else:
            np.subtract(sc, lo, out=part)
            part /= hi - lo
            part *= 0.95
            part += 0.05
            part *= w
        at += m
    n_src = len(use)
    col = np.repeat(np.arange(n_src), sizes)
    # np.unique(return_inverse=True) without its wrappers: the keys sorted, the inverse by cumsum
    cand = np.concatenate([p.keys for p, _ in use])
    by_key = np.argsort(cand, kind="stable")
    sk = cand[by_key]
    new = np.empty(len(sk), dtype=bool)
    new[0] = True
    np.not_equal(sk[1:], sk[:-1], out=new[1:])
    keys = sk[new]
    u = np.empty(len(cand), dtype=np.intp)
    u[by_key] = np.cumsum(new) - 1
    # (items x sources) in one flat array: ufunc.at on 1-d indices takes numpy's fast path
    cell = u * n_src + col
    flat = np.zeros(len(keys) * n_src)
    np.maximum.at(flat, cell, contrib)
    mat = flat.reshape(len(keys), n_src)
    score = mat.sum(axis=1)
    best = mat.argmax(axis=1)  # first maximum: the earlier source wins a tie
    # the candidate that gave each item its winning contribution (the first one, on a tie)
    winner = np.flatnonzero((col == best[u]) & (contrib == flat[cell]))
    first = np.full(len(keys), len(cand), dtype=np.intp)
    np.minimum.at(first, u[winner], winner)
    order = np.lexsort((tie_rank(keys), -score))
    if banned is not None and len(banned) and len(keys):
        # ``keys`` come sorted: a binary search per banned key
        pos = np.minimum(np.searchsorted(keys, banned), len(keys) - 1)
        drop = np.zeros(len(keys), dtype=bool)
        drop[pos[keys[pos] == banned]] = True
        order = order[~drop[order]]
    if limit is not None:
        order = order[:limit]
    pick = first[order]
    anchors = _pick([p.anchors for p, _ in use], sizes, pick, -1, np.int64)
    genres = _pick([p.genres for p, _ in use], sizes, pick, None, object)
    return Blended(keys[order], score[order], best[order], names, anchors, genres, mat[order])


def _pick(
    parts: list[np.ndarray | None], sizes: list[int], pick: np.ndarray, fill: object, dtype: type
) -> np.ndarray:
    """Rows ``pick`` of the concatenation of ``parts`` (None: ``fill`` for that part)."""
    if all(a is None for a in parts):
        return np.full(len(pick), fill, dtype=dtype)
    return np.concatenate([_or_full(a, n, fill, dtype) for a, n in zip(parts, sizes, strict=True)])[pick]


def novelty(popularity: float, max_popularity: float) -> float:
    """1 for the least popular item, 0 for the most popular (log scale: popularity is long-tailed)."""
    if max_popularity <= 0:
        return 0.0
    return 1.0 - math.log1p(max(popularity, 0.0)) / math.log1p(max_popularity)


def novelty_boost(popularity: np.ndarray, preference: float, max_boost: float) -> np.ndarray:
    """``preference * max_boost * novelty`` per item (:func:`novelty` against the most popular of
    them), as one array; zeros when there is nothing to boost."""
    pop = np.asarray(popularity, dtype=np.float64)
    top = pop.max() if len(pop) else 0.0
    if preference <= 0 or max_boost <= 0 or top <= 0:
        return np.zeros(len(pop))
    return preference * max_boost * (1.0 - np.log1p(np.maximum(pop, 0.0)) / math.log1p(top))


def mmr_order(scores: np.ndarray, unit: np.ndarray, k: int, diversity: float) -> list[int]:
    """Maximal marginal relevance: the positions of ``k`` items, best first, picked by
    ``argmax (1 - diversity) * rel(i) - diversity * max_sim(i, picked)``, with ``rel`` the
    :func:`minmax` of ``scores`` and ``sim`` the dot product of the ``unit`` embedding rows (a
    zero row: no embedding, dissimilar to everything). At ``diversity <= 0``: the first ``k``."""
    n = len(scores)
    if k <= 0 or n == 0:
        return []
    if diversity <= 0 or n <= 1:
        return list(range(min(k, n)))
    rel = minmax(scores)
    u = np.asarray(unit, dtype=np.float32)  # the catalog's rows are float16: float32 loses nothing
    lam = 1.0 - diversity
    # ``lam * rel - diversity * max_sim``, picked items at -inf: a picked item's relevance term
    # is set to -inf once (-inf minus a finite similarity stays -inf), so each pick costs a
    # mat-vec and three in-place array operations, the same arithmetic as the full expression
    lam_rel = lam * rel
    value = lam_rel.copy()
    max_sim = np.full(n, -np.inf)
    chosen: list[int] = []
    # one similarity row per pick (k mat-vecs), not the whole (n x n) matrix
    for _ in range(min(k, n)):
        best = int(value.argmax())
        chosen.append(best)
        lam_rel[best] = -np.inf
        np.maximum(max_sim, u @ u[best], out=max_sim)  # float32 -> float64 is exact
        np.multiply(max_sim, diversity, out=value)
        np.subtract(lam_rel, value, out=value)
    return chosen


def top_scores(scores: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the ``n`` highest ``scores`` (e.g. :meth:`serving.models.ItemFactors.scores`) and
    their scores as float64, best first."""
    idx = top_rows(scores, min(len(scores), n))[:n]
    return idx, scores[idx].astype(np.float64)


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
    uncached list. A threshold read off every 32nd score (a partition of 1/32 of the rows), set
    low enough that about twice ``want`` rows pass, leaves a few hundred rows to sort (every
    16th: a partition twice as long for ~130 fewer rows to sort, ~8 us more); when fewer
    than ``want`` pass (unlikely), the exact ``argpartition`` runs instead. Either way every row
    of the true top ``want`` is in the answer, in score order.
    """
    n = len(scores)
    if want <= 0:
        return np.zeros(0, dtype=np.int64)
    idx: np.ndarray | None = None
    if want < n:
        step = 32
        if n >= 4096 and 2 * want < (n + step - 1) // step * step // 4:
            sample = scores[::step].copy()  # partitioned in place (methods: no numpy wrappers)
            r = min(len(sample) - 1, 2 * want // step + 8)  # rank from the top, in the sample
            sample.partition(len(sample) - 1 - r)
            passed = (scores >= sample[len(sample) - 1 - r]).nonzero()[0]
            if len(passed) >= want:
                idx = passed
        if idx is None:
            idx = np.argpartition(-scores, want - 1)[:want]
    else:
        idx = np.arange(n)
    return idx[(-scores[idx]).argsort(kind="stable")]

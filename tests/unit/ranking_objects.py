"""Object-level wrappers over serving/ranking.py's array functions, for tests that read better
with item ids than with catalog keys. Serving itself works on the arrays (serving/recommend.py)."""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping, Sequence

import numpy as np

from serving.ranking import Candidate, Pool, Scored, blend_rows, mmr_order, novelty_boost


def blend(
    candidates: Mapping[str, Sequence[Candidate]],
    weights: Mapping[str, float],
    *,
    banned: Container[str] = frozenset(),
    limit: int | None = None,
) -> list[Scored]:
    """:func:`blend_rows` over :class:`Candidate` lists (ties: item id, deterministic).

    >>> c = {"realtime": [Candidate("a", 0.9, "realtime")], "popular": [Candidate("a", 5.0, "popular")]}
    >>> [(s.item_id, round(s.score, 2), s.source) for s in blend(c, {"realtime": 0.6, "popular": 0.4})]
    [('a', 1.0, 'realtime')]
    """
    uid: dict[str, int] = {}
    labels: dict[str, int] = {}
    pools = []
    for src, cands in candidates.items():
        keys = np.fromiter((uid.setdefault(c.item_id, len(uid)) for c in cands), np.int64, len(cands))
        anchors = np.fromiter(
            (-1 if c.anchor is None else labels.setdefault(c.anchor, len(labels)) for c in cands),
            np.int64,
            len(cands),
        )
        genres = np.empty(len(cands), dtype=object)
        genres[:] = [c.genre for c in cands]
        pools.append(Pool(src, keys, np.asarray([c.score for c in cands], dtype=np.float64), anchors, genres))
    ids = list(uid)
    rank = np.argsort(np.argsort(np.asarray(ids, dtype=object), kind="stable"), kind="stable")
    bad = np.fromiter((k for i, k in uid.items() if i in banned), np.int64) if banned else None
    out = blend_rows(pools, weights, lambda k: rank[k], banned=bad, limit=limit)
    anchor_ids = list(labels)
    return out.scored(ids.__getitem__, anchor_ids.__getitem__)


def exclude(items: Iterable[Scored], banned: set[str]) -> list[Scored]:
    """Drop seen/disliked items, keeping order."""
    return [s for s in items if s.item_id not in banned]


def apply_novelty(
    items: Sequence[Scored], popularity: Mapping[str, float], preference: float, max_boost: float
) -> list[Scored]:
    """Boost less popular items by ``preference * max_boost * novelty``; re-sorted.

    ``preference`` is the user's novelty_preference in [0, 1]; at 0 the order is unchanged.
    """
    if preference <= 0 or max_boost <= 0 or not items:
        return list(items)
    boost = novelty_boost(np.asarray([popularity.get(s.item_id, 0.0) for s in items]), preference, max_boost)
    for s, b in zip(items, boost.tolist(), strict=True):
        s.score += b
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
    return [items[i] for i in mmr_order(np.asarray([s.score for s in items]), unit, k, diversity)]

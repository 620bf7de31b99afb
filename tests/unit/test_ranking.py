"""Blend, exclusion, novelty and MMR of serving/ranking.py (pure functions, no services)."""

from __future__ import annotations

import numpy as np
import pytest

from serving.explain import explain
from serving.ranking import Candidate, Scored, minmax, novelty, top_by_dot
from tests.unit.ranking_objects import apply_novelty, blend, exclude, mmr


def test_minmax_handles_constant_and_empty() -> None:
    assert minmax(np.array([])).tolist() == []
    assert minmax(np.array([3.0, 3.0])).tolist() == [1.0, 1.0]
    assert minmax(np.array([1.0, 3.0, 2.0])).tolist() == [0.0, 1.0, 0.5]


def test_blend_weights_sources_and_sums_agreement() -> None:
    cands = {
        "realtime": [Candidate("a", 0.9, "realtime", anchor="x"), Candidate("b", 0.1, "realtime")],
        "batch": [Candidate("b", 5.0, "batch"), Candidate("c", 1.0, "batch")],
        "popular": [Candidate("c", 1000.0, "popular")],
    }
    out = blend(cands, {"realtime": 0.5, "batch": 0.35, "popular": 0.15})
    by_id = {s.item_id: s for s in out}
    # b: weakest realtime (0.5*0.05) + best batch (0.35*1.0) -> batch is its main source
    assert by_id["b"].source == "batch" and by_id["b"].score == pytest.approx(0.025 + 0.35)
    assert by_id["a"].source == "realtime" and by_id["a"].anchor == "x"
    assert [s.item_id for s in out] == ["a", "b", "c"]


def test_blend_ignores_zero_weight_sources_and_is_deterministic() -> None:
    cands = {
        "batch": [Candidate("z", 1, "batch"), Candidate("y", 1, "batch")],
        "popular": [Candidate("q", 9, "popular")],
    }
    out = blend(cands, {"batch": 1.0, "popular": 0.0})
    assert [s.item_id for s in out] == ["y", "z"]


def test_exclude_keeps_order() -> None:
    items = [Scored("a", 3, "batch"), Scored("b", 2, "batch"), Scored("c", 1, "batch")]
    assert [s.item_id for s in exclude(items, {"b"})] == ["a", "c"]


def test_novelty_boost_prefers_the_long_tail_only_when_asked() -> None:
    assert novelty(0, 100) == 1.0 and novelty(100, 100) == 0.0
    items = [Scored("hit", 1.0, "popular"), Scored("niche", 0.95, "popular")]
    pop = {"hit": 10_000.0, "niche": 3.0}
    assert [s.item_id for s in apply_novelty(items, pop, 0.0, 0.2)] == ["hit", "niche"]
    boosted = apply_novelty([Scored("hit", 1.0, "popular"), Scored("niche", 0.95, "popular")], pop, 1.0, 0.2)
    assert [s.item_id for s in boosted] == ["niche", "hit"]


def test_mmr_trades_relevance_for_diversity() -> None:
    e1, e2 = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    items = [Scored("a", 1.0, "batch"), Scored("a2", 0.99, "batch"), Scored("b", 0.5, "batch")]
    vecs = {"a": e1, "a2": e1 * 2, "b": e2}
    assert [s.item_id for s in mmr(items, vecs, 2, 0.0)] == ["a", "a2"]  # plain top-k
    assert [s.item_id for s in mmr(items, vecs, 2, 0.7)] == ["a", "b"]  # near-duplicate pushed out
    assert mmr(items, vecs, 0, 0.5) == []
    assert len(mmr(items, {}, 5, 0.5)) == 3  # no vectors: still k items


def test_top_by_dot_skips_banned_and_orders() -> None:
    ids = np.array(["i0", "i1", "i2", "i3"], dtype=object)
    f = np.array([[1, 0], [0.5, 0], [0, 1], [2, 0]], dtype=np.float32)
    out = top_by_dot(np.array([1.0, 0.0], dtype=np.float32), ids, f, 2, {"i3"})
    assert [c.item_id for c in out] == ["i0", "i1"] and out[0].source == "realtime"
    assert top_by_dot(np.ones(3, dtype=np.float32), ids, f, 2) == []  # rank mismatch: no candidates


def test_explanations() -> None:
    assert explain("realtime", anchor_title="Heat") == "because you watched Heat"
    assert explain("batch") == "picked for you from your viewing history"
    assert (
        explain("popular", genre="Drama", cold_start=True)
        == "popular in Drama (one of your favourite genres)"
    )
    assert explain("popular") == "trending now"


def _blend_reference(cands: dict[str, list[Candidate]], weights: dict[str, float]) -> list[Scored]:
    """The per-candidate dictionary walk ``blend`` replaced: the vectorised one must agree."""
    merged: dict[str, Scored] = {}
    for source, cs in cands.items():
        w = float(weights.get(source, 0.0))
        if w <= 0 or not cs:
            continue
        for cand, norm in zip(cs, minmax(np.asarray([c.score for c in cs])).tolist(), strict=True):
            contrib = w * (0.05 + 0.95 * norm)
            s = merged.get(cand.item_id)
            if s is None:
                s = merged[cand.item_id] = Scored(cand.item_id, 0.0, source)
            prev = s.contributions.get(source, 0.0)
            if contrib > prev:
                s.contributions[source] = contrib
                s.score += contrib - prev
                if source == max(s.contributions, key=s.contributions.__getitem__):
                    s.source = source
                    s.anchor, s.genre = cand.anchor, cand.genre
    return sorted(merged.values(), key=lambda s: (-s.score, s.item_id))


@pytest.mark.parametrize("seed", range(40))
def test_blend_matches_the_reference_walk(seed: int) -> None:
    rng = np.random.default_rng(seed)
    pool = [f"i{n}" for n in range(int(rng.integers(3, 60)))]
    cands: dict[str, list[Candidate]] = {}
    for src in rng.permutation(["realtime", "batch", "popular"]).tolist():
        picks = rng.choice(pool, size=int(rng.integers(0, 40)))  # duplicates within a source too
        scores = rng.integers(0, 5, len(picks)) if seed % 3 == 0 else rng.random(len(picks))  # ties
        cands[src] = [
            Candidate(str(p), float(s), src, anchor=f"a{k}" if k % 3 else None, genre=f"g{k % 4}")
            for k, (p, s) in enumerate(zip(picks, scores, strict=True))
        ]
    weights = {"realtime": 0.5, "batch": 0.35 if seed % 4 else 0.0, "popular": 0.15}
    if seed % 5 == 0:  # equal weights: equal contributions, the earlier source must win the tie
        weights = {"realtime": 0.4, "batch": 0.4, "popular": 0.4}
    want = _blend_reference(cands, weights)
    got = blend(cands, weights)
    assert [(s.item_id, s.source, s.anchor, s.genre) for s in got] == [
        (s.item_id, s.source, s.anchor, s.genre) for s in want
    ]
    assert [s.score for s in got] == pytest.approx([s.score for s in want], abs=1e-12)
    assert [s.contributions for s in got] == [pytest.approx(s.contributions) for s in want]
    banned = set(pool[::3])
    limited = blend(cands, weights, banned=banned, limit=7)
    assert [s.item_id for s in limited] == [s.item_id for s in want if s.item_id not in banned][:7]


@pytest.mark.parametrize("n", [10, 5000, 60_000])
def test_top_by_dot_equals_a_full_sort(n: int) -> None:
    rng = np.random.default_rng(n)
    ids = np.array([f"i{k}" for k in range(n)], dtype=object)
    f = rng.standard_normal((n, 10)).astype(np.float32)
    user = rng.standard_normal(10).astype(np.float32)
    banned = {f"i{k}" for k in rng.integers(0, n, 30)}
    scores = f @ user
    order = [f"i{k}" for k in np.argsort(-scores, kind="stable") if f"i{k}" not in banned][:100]
    got = top_by_dot(user, ids, f, 100, banned)
    assert [c.item_id for c in got] == order
    assert [c.score for c in got] == pytest.approx(
        sorted((float(scores[int(i[1:])]) for i in order), reverse=True)
    )

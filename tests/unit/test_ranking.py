"""Blend, exclusion, novelty and MMR of serving/ranking.py (pure functions, no services)."""

from __future__ import annotations

import numpy as np
import pytest

from serving.explain import explain
from serving.ranking import (
    Candidate,
    Scored,
    apply_novelty,
    blend,
    exclude,
    mmr,
    normalize,
    novelty,
    top_by_dot,
)


def test_normalize_handles_constant_and_empty() -> None:
    assert normalize([]) == []
    assert normalize([3.0, 3.0]) == [1.0, 1.0]
    assert normalize([1.0, 3.0, 2.0]) == [0.0, 1.0, 0.5]


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

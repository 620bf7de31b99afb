"""The array side of the uncached path (serving/ranking.py, serving/catalog.py's Lookup keys,
serving/models.py's catalog rows) against the object versions it replaced."""

from __future__ import annotations

import math
import time

import hypothesis.strategies as st
import numpy as np
import pytest
from hypothesis import given, settings

from serving.candidates import ItemFilters, ItemMeta
from serving.catalog import Lookup, Snapshot, _Extra, widen
from serving.models import ItemFactors
from serving.ranking import (
    Candidate,
    Pool,
    blend_rows,
    minmax,
    mmr_order,
    novelty,
    novelty_boost,
    top_scores,
)
from tests.unit.test_ranking import _blend_reference

SOURCES = ("realtime", "batch", "popular")

_source = st.lists(
    st.tuples(
        st.integers(0, 25),  # key
        st.one_of(st.integers(0, 3).map(float), st.floats(-5, 5)),  # ties and spreads
        st.integers(-1, 25),  # anchor key (-1: none)
        st.sampled_from([None, "Drama", "Comedy"]),
    ),
    max_size=30,
)


@settings(max_examples=500, deadline=None)
@given(
    sources=st.tuples(_source, _source, _source),
    weights=st.tuples(*[st.sampled_from([0.0, 0.15, 0.35, 0.4, 0.5])] * 3),
    perm_seed=st.integers(0, 2**16),
    banned=st.sets(st.integers(0, 25), max_size=8),
    limit=st.one_of(st.none(), st.integers(1, 12)),
)
def test_blend_rows_matches_the_reference_walk(
    sources: tuple[list[tuple[int, float, int, str | None]], ...],
    weights: tuple[float, float, float],
    perm_seed: int,
    banned: set[int],
    limit: int | None,
) -> None:
    """Keys tie-broken by a rank of their ids give the order the string sort of the reference
    gives (ids are named so their sort order is the rank)."""
    rank = np.random.default_rng(perm_seed).permutation(26)
    ident = [f"k{rank[k]:03d}" for k in range(26)]
    cands = {
        src: [Candidate(ident[k], s, src, ident[a] if a >= 0 else None, g) for k, s, a, g in rows]
        for src, rows in zip(SOURCES, sources, strict=True)
    }
    pools = [
        Pool(
            src,
            np.asarray([r[0] for r in rows], dtype=np.int64),
            np.asarray([r[1] for r in rows], dtype=np.float64),
            np.asarray([r[2] for r in rows], dtype=np.int64),
            np.asarray([r[3] for r in rows], dtype=object),
        )
        for src, rows in zip(SOURCES, sources, strict=True)
    ]
    w = dict(zip(SOURCES, weights, strict=True))
    ref = _blend_reference(cands, w)
    for s in ref:  # the walk's running total drifts by an ulp where a source repeats an item
        s.score = sum(s.contributions.values())
    ref.sort(key=lambda s: (-s.score, s.item_id))
    want = [s for s in ref if int(s.item_id[1:]) not in {int(rank[b]) for b in banned}]
    want = want[:limit] if limit is not None else want
    got = blend_rows(pools, w, lambda k: rank[k], banned=np.asarray(sorted(banned), np.int64), limit=limit)
    out = got.scored(ident.__getitem__)
    assert [(s.item_id, s.source, s.anchor, s.genre) for s in out] == [
        (s.item_id, s.source, s.anchor, s.genre) for s in want
    ]
    assert [s.score for s in out] == pytest.approx([s.score for s in want], abs=1e-12)
    assert [s.contributions for s in out] == [pytest.approx(s.contributions) for s in want]


def _mmr_reference(scores: list[float], unit: np.ndarray, k: int, diversity: float) -> list[int]:
    """The full-matrix MMR ``mmr_order`` replaced."""
    rel = minmax(np.asarray(scores))
    sims = (unit @ unit.T).astype(np.float64)
    max_sim = np.full(len(scores), -np.inf)
    chosen: list[int] = []
    available = np.ones(len(scores), dtype=bool)
    for _ in range(min(k, len(scores))):
        value = (1 - diversity) * rel - diversity * np.where(np.isfinite(max_sim), max_sim, 0.0)
        value[~available] = -np.inf
        best = int(np.argmax(value))
        chosen.append(best)
        available[best] = False
        max_sim = np.maximum(max_sim, sims[best])
    return chosen


@pytest.mark.parametrize("seed", range(30))
def test_mmr_order_matches_the_full_matrix_version(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 80))
    unit = rng.standard_normal((n, 16)).astype(np.float32)
    unit[rng.random(n) < 0.1] = 0  # items without an embedding
    norms = np.linalg.norm(unit, axis=1, keepdims=True)
    unit = np.divide(unit, norms, out=np.zeros_like(unit), where=norms > 0)
    scores = rng.random(n).tolist()
    k, diversity = int(rng.integers(1, 15)), float(rng.choice([0.2, 0.5, 0.9]))
    assert mmr_order(np.asarray(scores), unit, k, diversity) == _mmr_reference(scores, unit, k, diversity)
    assert mmr_order(np.asarray(scores), unit, k, 0.0) == list(range(min(k, n)))


def test_novelty_boost_is_the_scalar_novelty() -> None:
    pop = np.asarray([0.0, 3.0, 120.0, -2.0, 40.0])
    got = novelty_boost(pop, 0.7, 0.2)
    assert got.tolist() == pytest.approx([0.7 * 0.2 * novelty(p, 120.0) for p in pop.tolist()])
    assert not novelty_boost(pop, 0.0, 0.2).any() and not novelty_boost(np.zeros(3), 1.0, 0.2).any()
    assert math.isclose(novelty(120.0, 120.0), 0.0)


@pytest.mark.parametrize("n", [7, 60_000])
def test_als_scores_and_top_scores_equal_a_full_sort(n: int) -> None:
    rng = np.random.default_rng(n)
    f = rng.standard_normal((n, 10)).astype(np.float32)
    user = rng.standard_normal(10).astype(np.float32)
    model = ItemFactors.build("v", np.asarray([f"i{k}" for k in range(n)]), f)
    scores = model.scores(user)
    assert scores is not None and np.allclose(scores, f @ user, atol=1e-5)
    rows, top = top_scores(scores, 100)
    want = np.argsort(-scores, kind="stable")[:100]
    assert rows.tolist() == want.tolist() and top.tolist() == scores[want].tolist()
    assert model.scores(np.ones(3, np.float32)) is None  # rank mismatch: no candidates


def _snapshot() -> Snapshot:
    # rows not in id order, as after a refresh appended new ids
    ids = ["m3", "m1", "m9", "m2"]
    vecs = np.asarray([[1, 0], [0, 1], [0.6, 0.8], [0, 0]], dtype=np.float16)
    genres = np.asarray([[True, False], [False, True], [True, True], [False, False]])
    return Snapshot(ids, {i: r for r, i in enumerate(ids)}, ["T3", "T1", "T9", "T2"],
                    np.asarray([1990, 2005, -1, 2010], np.int32), np.asarray([5.0, 1.0, 0.0, 9.0]),
                    ["comedy", "drama"], {"comedy": 0, "drama": 1}, genres, vecs,
                    np.asarray([True, True, True, False]))  # fmt: skip


def test_lookup_keys_are_rows_then_others_and_rank_by_id() -> None:
    snap = _snapshot()
    fresh = _Extra(
        time.monotonic() + 60, ItemMeta("m5", "Fresh", 2020, 7.0, ["drama"]), np.asarray([0.0, 1.0])
    )
    gone = _Extra(time.monotonic() + 60, None, None)  # known missing
    look = Lookup(snap, {"m5": fresh, "m0": gone})
    keys = look.keys(["m9", "m5", "m1", "m0", "m4", "m5"])
    assert keys.tolist() == [2, 4, 1, 5, 6, 4]
    assert [look.item_id(k) for k in keys.tolist()] == ["m9", "m5", "m1", "m0", "m4", "m5"]
    # rank by id, with and without keys of items outside the snapshot
    assert np.argsort(look.tie_rank(np.asarray([0, 1, 2, 3]))).tolist() == [1, 3, 0, 2]  # m1 m2 m3 m9
    mixed = np.asarray([2, 4, 0, 5, 6])
    assert [look.item_id(k) for k in mixed[np.argsort(look.tie_rank(mixed))].tolist()] == [
        "m0", "m3", "m4", "m5", "m9",
    ]  # fmt: skip
    assert look.missing(keys) == ["m4"]  # m5 fetched and fresh, m0 known to be missing
    f = ItemFilters(genre="drama", year_from=2000)
    assert look.accepts(keys, f).tolist() == [False, True, True, False, False, True]
    assert look.accepts(np.asarray([0, 1, 2]), ItemFilters()).tolist() == [True, True, True]
    assert look.popularity_of(keys).tolist() == [0.0, 7.0, 1.0, 0.0, 0.0, 7.0]
    unit = look.unit_of(np.asarray([2, 4, 6, 3]))
    assert unit.dtype == np.float32 and np.allclose(unit, [[0.6, 0.8], [0, 1], [0, 0], [0, 0]], atol=1e-3)
    assert (
        look.title_of(look.key("m5")) == "Fresh"
        and look.title_of(look.key("m3")) == "T3"
        and look.title_of(look.key("m0")) is None
    )


def test_item_factors_map_to_catalog_rows_once_per_snapshot() -> None:
    snap = _snapshot()
    model = ItemFactors.build("v1", np.asarray(["m2", "m7", "m3"]), np.ones((3, 2)))
    rows = model.catalog_rows(snap)
    assert rows.tolist() == [3, -1, 0]
    assert model.catalog_rows(snap) is rows  # memoised for the snapshot
    other = _snapshot()
    assert model.catalog_rows(other) is not rows and model.catalog_rows(other).tolist() == [3, -1, 0]


def test_lookup_keeps_what_it_pinned_when_a_load_drops_the_overlay() -> None:
    """A full load that lands while a list awaits drops overlay entries its new snapshot holds;
    the list's Lookup (over the older snapshot) must still see them."""
    extras = {"m5": _Extra(time.monotonic() + 60, ItemMeta("m5", "Fresh", 2020, 7.0, []), None)}
    look = Lookup(_snapshot(), extras)
    keys = look.keys(["m5", "m3"])
    assert look.missing(keys) == []  # fetched and fresh: pinned
    extras.clear()  # Catalog._drop_extras_in after a load
    assert look.accepts(keys, ItemFilters(year_from=2000)).tolist() == [True, False]
    assert look.title_of(look.key("m5")) == "Fresh" and look.popularity_of(keys).tolist() == [7.0, 5.0]
    stale = Lookup(_snapshot(), {"m5": _Extra(time.monotonic() - 1, None, None)})
    assert stale.missing(stale.keys(["m5"])) == ["m5"]  # expired: fetched again


def test_widen_is_numpys_float16_conversion_bit_for_bit() -> None:
    """Every finite float16 (normals, subnormals, both zeros, both signs), in any row order."""
    bits = np.arange(-(2**15), 2**15, dtype=np.int32).astype(np.int16)
    half = bits.view(np.float16)
    half = half[np.isfinite(half)]
    block = np.resize(half, (len(half) // 64 + 1) * 64).reshape(-1, 64)
    rows = np.random.default_rng(3).permutation(len(block))
    got = widen(block, rows)
    want = block[rows].astype(np.float32)
    assert got.dtype == np.float32 and got.shape == want.shape
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))
    assert widen(block, rows[:0]).shape == (0, 64)


def test_batch_json_sent_as_text_parses_like_the_jsonb_loader() -> None:
    """The profile statement sends the batch list as text for orjson: the same list as json.loads
    gives, including what orjson refuses (integers beyond 64 bits) and malformed entries."""
    import json

    from serving.candidates import _batch_list, _json

    docs = [
        '[{"item_id": "a", "score": 0.9, "because": "x"}, {"item_id": "b", "score": 1}]',
        '[{"item_id": "a", "score": 123456789012345678901234567890}, {"item_id": "c"}]',
        '[{"item_id": 5, "score": 1.0}, "junk", null, {"score": 2.0}, {"item_id": "d", "because": 3}]',
        '{"item_id": "a"}',
        "[]",
    ]
    for doc in docs:
        assert _batch_list(_json(doc)) == _batch_list(json.loads(doc)), doc
    assert _json(None) is None

"""The speed layer's processors without a broker: taste math, fold-in exactness, dedupe, batching."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from schemas.events import EventType, InteractionEvent
from streams import state as state_mod
from streams.processors import foldin, taste
from streams.processors.dedupe import DedupeState, accept
from streams.processors.profiles import Incoming, ProfileConfig, apply_batch, group_by_user
from streams.processors.weights import EventWeights
from streams.state import UserState, decode_state, encode_state

WEIGHTS = EventWeights({"view": 1.0, "like": 4.0, "dislike": -4.0, "play": 2.0}, rate_weight=4.0)
T0 = datetime(2024, 5, 1, tzinfo=UTC)
DAY = 86400.0


# ---------------------------------------------------------------------------------------- taste
def _direct_taste(w: np.ndarray, t: np.ndarray, e: np.ndarray, h: float) -> np.ndarray:
    d = np.exp2(-(t.max() - t) / h)
    return (w * d) @ e / np.abs(w * d).sum()


def test_taste_equals_decayed_weighted_mean_in_any_order_and_batching() -> None:
    rng = np.random.default_rng(1)
    n, dim, h = 40, 16, 7 * DAY
    w = rng.choice([1.0, 2.0, 4.0, -4.0], n)
    t = rng.uniform(0, 60 * DAY, n)
    e = rng.normal(size=(n, dim))
    expected = _direct_taste(w, t, e, h)
    for split in ([n], [1] * n, [7, 13, 20]):
        order = rng.permutation(n)
        s = taste.TasteState()
        start = 0
        for size in split:
            idx = order[start : start + size]
            taste.add_events(s, w[idx], t[idx], e[idx], half_life_sec=h)
            start += size
        got = taste.mean(s)
        assert got is not None
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_taste_decay_halves_old_events() -> None:
    s = taste.TasteState()
    taste.add_events(s, np.array([1.0]), np.array([0.0]), np.array([[1.0, 0.0]]), half_life_sec=DAY)
    taste.add_events(s, np.array([1.0]), np.array([2 * DAY]), np.array([[0.0, 1.0]]), half_life_sec=DAY)
    got = taste.mean(s)
    assert got is not None
    np.testing.assert_allclose(got, [0.25 / 1.25, 1 / 1.25], rtol=1e-6)


def test_negative_weight_pulls_away() -> None:
    liked, disliked = np.array([1.0, 0.0, 0.0]), np.array([0.6, 0.8, 0.0])
    s = taste.TasteState()
    taste.add_events(s, np.array([4.0]), np.array([0.0]), liked[None], half_life_sec=DAY)
    before = taste.mean(s)
    taste.add_events(s, np.array([-4.0]), np.array([0.0]), disliked[None], half_life_sec=DAY)
    after = taste.mean(s)
    assert before is not None and after is not None

    def cos(a: np.ndarray, b: np.ndarray) -> float:
        return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))

    assert cos(after, disliked) < cos(before, disliked)
    assert cos(after, disliked) < 0  # pushed to the other side
    assert np.linalg.norm(after) < np.linalg.norm(before)  # |w| denominator: a dislike never inflates


def test_taste_only_negative_is_still_defined_and_zero_weight_is_noop() -> None:
    s = taste.TasteState()
    taste.add_events(s, np.array([0.0]), np.array([0.0]), np.ones((1, 3)), half_life_sec=DAY)
    assert taste.mean(s) is None
    taste.add_events(s, np.array([-4.0]), np.array([0.0]), np.ones((1, 3)), half_life_sec=DAY)
    np.testing.assert_allclose(taste.mean(s), -np.ones(3))


# --------------------------------------------------------------------------------------- fold-in
def _model(
    n_items: int = 30, k: int = 5, seed: int = 0, version: str = "v1", **kw: float
) -> foldin.FoldInModel:
    rng = np.random.default_rng(seed)
    ids = [f"i{i}" for i in range(n_items)]
    return foldin.FoldInModel.from_factors(version, ids, rng.normal(size=(n_items, k)) * 0.3, **kw)  # type: ignore[arg-type]


def _direct_foldin(model: foldin.FoldInModel, history: list[tuple[str, float]]) -> np.ndarray | None:
    """x_u = (YᵀC_uY + λ_u I)⁻¹ YᵀC_u p_u with dense C_u over all items, from the full history."""
    r: dict[str, float] = {}
    for item, w in history:
        r[item] = r.get(item, 0.0) + w
    n, k = model.Y.shape
    c = np.ones(n)
    p = np.zeros(n)
    for item, v in r.items():
        row = model.item_index.get(item)
        if row is not None and v > 0:
            c[row] = 1 + model.alpha * min(v, model.max_confidence)
            p[row] = 1
    n_pos = int(p.sum())
    if n_pos == 0:
        return None
    Y = model.Y
    lam = model.reg * (n_pos if model.scale_reg else 1)
    return np.linalg.solve(Y.T @ (c[:, None] * Y) + lam * np.eye(k), Y.T @ (c * p))


@pytest.mark.parametrize("scale_reg", [True, False])
def test_foldin_equals_direct_least_squares_over_full_history(scale_reg: bool) -> None:
    model = _model(alpha=2.0, reg=0.05, scale_reg=scale_reg, max_confidence=6.0)
    rnd = random.Random(3)
    history = [
        (f"i{rnd.randrange(40)}", rnd.choice([1.0, 2.0, 4.0, -4.0, 1.0])) for _ in range(200)
    ]  # i30..i39 are not in the model: kept in pairs, no contribution
    state = foldin.AlsState()
    for start in range(0, len(history), 17):
        chunk = history[start : start + 17]
        foldin.add_interactions(state, model, [i for i, _ in chunk], [w for _, w in chunk], max_pairs=1000)
        got = foldin.solve([state], model)[0]
        want = _direct_foldin(model, history[: start + 17])
        if want is None:
            assert got is None
        else:
            assert got is not None
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_foldin_new_user_gets_vector_after_first_event_and_dislike_alone_gives_none() -> None:
    model = _model()
    s = foldin.AlsState()
    foldin.add_interactions(s, model, ["i1"], [-4.0], max_pairs=100)
    assert foldin.solve([s], model) == [None]
    foldin.add_interactions(s, model, ["i2"], [1.0], max_pairs=100)
    x = foldin.solve([s], model)[0]
    assert x is not None and x.shape == (model.rank,)


def test_foldin_model_change_rebuilds_from_pairs() -> None:
    old, new = _model(seed=1, version="v1"), _model(seed=2, version="v2", n_items=35)
    history = [("i1", 4.0), ("i3", 1.0), ("i33", 2.0), ("i3", 2.0), ("i5", -4.0)]
    s = foldin.AlsState()
    foldin.add_interactions(s, old, [i for i, _ in history], [w for _, w in history], max_pairs=100)
    assert s.model_version == "v1"
    got = foldin.solve([s], new)[0]  # lazily rebuilt for v2
    assert s.model_version == "v2"
    np.testing.assert_allclose(got, _direct_foldin(new, history), rtol=1e-4, atol=1e-5)


def test_foldin_without_model_keeps_pairs_for_later() -> None:
    s = foldin.AlsState()
    foldin.add_interactions(s, None, ["i1", "i2"], [1.0, 4.0], max_pairs=100)
    assert s.pairs == {"i1": 1.0, "i2": 4.0} and s.A is None
    model = _model()
    np.testing.assert_allclose(foldin.solve([s], model)[0], _direct_foldin(model, [("i1", 1.0), ("i2", 4.0)]),
                               rtol=1e-4, atol=1e-5)  # fmt: skip


def test_foldin_pairs_bounded_and_consistent() -> None:
    model = _model()
    s = foldin.AlsState()
    items = [f"i{i}" for i in range(10)]
    foldin.add_interactions(s, model, items, [1.0] * 10, max_pairs=4)
    assert list(s.pairs) == items[-4:]
    want = _direct_foldin(model, [(i, 1.0) for i in items[-4:]])
    np.testing.assert_allclose(foldin.solve([s], model)[0], want, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------- dedupe
def test_dedupe_offsets_and_window() -> None:
    s = DedupeState()
    ids = [uuid.uuid4().bytes for _ in range(5)]
    assert accept(s, ids[0], 0, 10, window=3)
    assert not accept(s, ids[0], 0, 10, 3)  # redelivery, same offset
    assert not accept(s, ids[1], 0, 9, 3)  # redelivery of an older offset: already applied
    assert not accept(s, ids[0], 0, 11, 3)  # duplicate send, new offset
    for n, i in enumerate(ids[1:], start=12):
        assert accept(s, i, 0, n, 3)
    assert s.ids == b"".join(ids[2:])  # bounded, oldest dropped
    assert accept(s, ids[0], 0, 20, 3)  # fell out of the window (Postgres still dedupes rows)
    assert accept(
        s, uuid.uuid4().bytes, 1, 0, 3
    )  # another partition (topic repartitioned): offsets not comparable


# ------------------------------------------------------------------------------------- batching
def _event(user: str, item: str, typ: str, minutes: float, rating: float | None = None) -> InteractionEvent:
    return InteractionEvent(
        event_id=uuid.uuid4(),
        user_id=user,
        item_id=item,
        type=EventType(typ),
        occurred_at=T0 + timedelta(minutes=minutes),
        rating=rating,
    )


def _stream(n: int, seed: int = 0) -> list[Incoming]:
    rnd = random.Random(seed)
    out = []
    offsets = {p: 0 for p in range(3)}
    for _ in range(n):
        u = f"u{rnd.randrange(6)}"
        p = int(u[1:]) % 3
        typ = rnd.choice(["view", "view", "like", "dislike", "play", "rate"])
        ev = _event(
            u,
            f"i{rnd.randrange(25)}",
            typ,
            rnd.uniform(0, 5000),
            rnd.choice([1.0, 3.5, 5.0]) if typ == "rate" else None,
        )
        out.append(Incoming(ev, p, offsets[p], 1_700_000_000_000))
        offsets[p] += 1
    return out


CONFIG = ProfileConfig(WEIGHTS, WEIGHTS, half_life_sec=3 * DAY, dedupe_window=64, max_pairs=1000)


def _embeddings(dim: int = 8) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(5)
    return {f"i{i}": rng.normal(size=dim).astype(np.float32) for i in range(20)}  # i20..i24: unembedded


def _run(batches: list[list[Incoming]], model: foldin.FoldInModel | None) -> tuple[dict[str, UserState], int]:
    states: dict[str, UserState] = {}
    applied = 0
    for b in batches:
        # states go through the table codec between batches, as in the worker
        states = {u: decode_state(encode_state(s)) for u, s in states.items()}
        applied += apply_batch(b, states, embeddings=_embeddings(), model=model, config=CONFIG).applied
    return states, applied


def test_group_by_user_keeps_order() -> None:
    items = _stream(30)
    groups = group_by_user(items)
    assert sum(map(len, groups.values())) == 30
    for lst in groups.values():
        assert [it.offset for it in lst] == sorted(it.offset for it in lst)


def test_batching_and_redelivery_do_not_change_the_result() -> None:
    model = _model(n_items=25)
    items = _stream(300)
    one, n1 = _run([items], model)
    # small batches, with every batch delivered twice (a crash before the ack) and a replayed prefix
    batches: list[list[Incoming]] = []
    for s in range(0, 300, 37):
        batches += [items[s : s + 37], items[s : s + 37]]
    batches.append(items[:100])
    many, n2 = _run(batches, model)
    assert n1 == n2 == 300
    assert one.keys() == many.keys()
    for u in one:
        a, b = taste.mean(one[u].taste), taste.mean(many[u].taste)
        assert (a is None) == (b is None)
        if a is not None:
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
        xa, xb = foldin.solve([one[u].als], model)[0], foldin.solve([many[u].als], model)[0]
        np.testing.assert_allclose(xa, xb, rtol=1e-4, atol=1e-5)


def test_apply_batch_reports_users_duplicates_and_vectors() -> None:
    model = _model(n_items=25)
    items = _stream(50)
    dup = Incoming(items[0].event, items[0].partition, 999, None)  # same event_id, new offset
    states: dict[str, UserState] = {}
    res = apply_batch([*items, dup], states, embeddings=_embeddings(), model=model, config=CONFIG)
    assert res.applied == 50 and res.duplicates == 1
    for upd in res.users.values():
        assert upd.events and upd.als_version in (None, "v1")
        if upd.taste is not None:
            assert upd.taste.dtype == np.float32 and upd.taste.shape == (8,)
    again = apply_batch(items, states, embeddings=_embeddings(), model=model, config=CONFIG)
    assert again.applied == 0 and again.duplicates == 50 and not again.users


def test_state_codec_round_trip() -> None:
    model = _model(n_items=25)
    states: dict[str, UserState] = {}
    apply_batch(_stream(40), states, embeddings=_embeddings(), model=model, config=CONFIG)
    for s in states.values():
        back = decode_state(encode_state(s))
        assert back.dedupe == s.dedupe and back.als.pairs == s.als.pairs and back.als.n_pos == s.als.n_pos
        np.testing.assert_allclose(back.als.A, s.als.A)
        if s.taste.vsum is not None:
            np.testing.assert_allclose(back.taste.vsum, s.taste.vsum, rtol=1e-6)
    assert decode_state(None) == UserState() or decode_state(None).taste.vsum is None
    assert decode_state(b"\x00garbage").als.pairs == {}


# ------------------------------------------------------------------------------ batched updates
def test_taste_add_events_many_equals_one_user_at_a_time() -> None:
    rng = np.random.default_rng(7)
    h, dim = 2 * DAY, 6
    one = [taste.TasteState() for _ in range(4)]
    many = [taste.TasteState() for _ in range(4)]
    for round_ in range(3):
        owner = np.sort(rng.choice([0, 1, 3], 20))  # user 2 gets nothing
        w = rng.choice([1.0, 4.0, -4.0], 20)
        t = rng.uniform(0, 30 * DAY, 20) + round_ * DAY
        e = rng.normal(size=(20, dim))
        for j in range(4):
            sel = owner == j
            if sel.any():
                taste.add_events(one[j], w[sel], t[sel], e[sel], half_life_sec=h)
        taste.add_events_many(many, owner, w, t, e, half_life_sec=h)
    for a, b, m in zip(one, many, taste.means(many), strict=True):
        assert (a.vsum is None) == (b.vsum is None) == (m is None)
        if a.vsum is not None:
            np.testing.assert_allclose(b.vsum, a.vsum, rtol=1e-12)
            assert b.wsum == pytest.approx(a.wsum) and b.ts == a.ts
            np.testing.assert_allclose(m, taste.mean(a), rtol=1e-6)


@pytest.mark.parametrize("max_pairs", [3, 1000])
def test_foldin_add_interactions_many_equals_event_by_event(max_pairs: int) -> None:
    model = _model(n_items=30)
    rnd = random.Random(11)
    histories = [
        [
            (f"i{rnd.randrange(35)}", rnd.choice([1.0, 2.0, 4.0, -4.0, 0.0]))
            for _ in range(rnd.randrange(0, 25))
        ]
        for _ in range(5)
    ]
    seq = [foldin.AlsState() for _ in histories]
    for s, hist in zip(seq, histories, strict=True):
        for item, w in hist:  # one event at a time: the definition
            foldin.add_interactions(s, model, [item], [w], max_pairs=max_pairs)
    batched = [foldin.AlsState() for _ in histories]
    for half in (slice(0, 12), slice(12, None)):
        part = [h[half] for h in histories]
        foldin.add_interactions_many(
            batched,
            model,
            [[i for i, _ in h] for h in part],
            [[w for _, w in h] for h in part],
            max_pairs=max_pairs,
        )
    for a, b in zip(seq, batched, strict=True):
        assert list(a.pairs.items()) == list(b.pairs.items()) and a.n_pos == b.n_pos
        if a.A is not None:
            np.testing.assert_allclose(b.A, a.A, atol=1e-12)
            np.testing.assert_allclose(b.b, a.b, atol=1e-12)
    for xa, xb in zip(foldin.solve(seq, model), foldin.solve(batched, model), strict=True):
        if xa is None:
            assert xb is None
        else:
            np.testing.assert_allclose(xb, xa, rtol=1e-5, atol=1e-6)


def test_state_codec_big_pairs_memo_hands_out_copies() -> None:
    s = UserState()
    s.als.pairs = {f"item-{i}": float(i % 5 - 1) for i in range(500)}  # far above the memo threshold
    raw = encode_state(s)
    first = decode_state(raw)
    assert first.als.pairs == s.als.pairs and list(first.als.pairs) == list(s.als.pairs)
    first.als.pairs.clear()  # what a batch does to its copy must not leak into the next decode
    s.als.pairs["item-0"] = 99.0  # nor what happens to the encoded object afterwards
    again = decode_state(raw)
    assert len(again.als.pairs) == 500 and again.als.pairs["item-0"] == -1.0
    # the same bytes decoded without the memo (a fresh process) give the same map
    state_mod._pairs_memo.clear()
    state_mod._pairs_memo_bytes = 0
    assert decode_state(raw).als.pairs == again.als.pairs


def test_decoded_arrays_are_read_only_and_processing_replaces_them() -> None:
    model = _model(n_items=25)
    states: dict[str, UserState] = {}
    items = _stream(60)
    apply_batch(items[:30], states, embeddings=_embeddings(), model=model, config=CONFIG)
    states = {u: decode_state(encode_state(s)) for u, s in states.items()}
    for s in states.values():
        assert s.taste.vsum is None or not s.taste.vsum.flags.writeable
    res = apply_batch(items[30:], states, embeddings=_embeddings(), model=model, config=CONFIG)
    assert res.applied == 30

"""Vectorised event generation: sessions -> engagements -> funnels -> time-ordered event rows.

A *session* is one user on one surface (web, mobile, email, push) at one time; it holds a few
*engagements*, each with one item. An engagement is a funnel over the contract's event types,
in time order::

    view -> click -> (watchlist | save | purchase) -> play -> [watching]
         -> rate, like | dislike, favorite, share

Every step's probability rises (dislike: falls) with the user's standardised utility ``z`` for the
item, ratings are ``round(2.4 + 0.8 z + harshness_u + noise)`` clipped to 1..5, and items are picked
among popularity-sampled candidates with probability proportional to ``exp(beta z)``
(sampling-importance-resampling: ``P(i | u) ~ popularity_i * exp(beta z)``), so popularity is
power-law and choices follow taste. Sessions that start from a served list (all email/push ones,
a share of web/mobile ones) carry ``rec_id`` and 0-based ``position`` on every event and pick with a
sharper ``beta``, as a decent recommender would have served them.

Everything is numpy over arrays of sessions; no Python loop runs per event.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

#: Funnel columns, in time order. "play_end" is the end of watching: not an event, a time mark.
COLUMNS = (
    "view",
    "click",
    "watchlist",
    "save",
    "purchase",
    "play",
    "play_end",
    "rate",
    "like",
    "dislike",
    "favorite",
    "share",
)
EVENT_TYPES = tuple(c for c in COLUMNS if c != "play_end")
_COL = {c: j for j, c in enumerate(COLUMNS)}
_EMIT = np.array([c != "play_end" for c in COLUMNS])
#: column index -> index into EVENT_TYPES (-1 for play_end)
_TYPE_OF_COL = np.array([EVENT_TYPES.index(c) if c != "play_end" else -1 for c in COLUMNS], dtype=np.int8)

SOURCES = ("web", "mobile", "email", "push")
SOURCE_P = (0.47, 0.43, 0.05, 0.05)
DEVICES = ("desktop", "tv", "ios", "android")
#: P(device | source), rows follow SOURCES.
DEVICE_P = np.array(
    [
        [0.85, 0.15, 0.0, 0.0],
        [0.0, 0.0, 0.5, 0.5],
        [0.4, 0.0, 0.3, 0.3],
        [0.0, 0.0, 0.5, 0.5],
    ]
)
SURFACES = ("browse", "home_row", "email", "push")
PRICES = np.array([2.99, 3.99, 4.99, 9.99, 14.99])
US = 1_000_000

#: The Arrow schema of generated events: the InteractionEvent v1 fields (schemas/events.py).
#: ``context`` is the JSON object as text (free-form per the contract); times are UTC microseconds.
EVENT_SCHEMA = pa.schema(
    [
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("type", pa.string(), nullable=False),
        pa.field("rating", pa.float64()),
        pa.field("value", pa.float64()),
        pa.field("watch_duration_sec", pa.float64()),
        pa.field("session_id", pa.string()),
        pa.field("source", pa.string()),
        pa.field("rec_id", pa.string()),
        pa.field("position", pa.int32()),
        pa.field("context", pa.string()),
        pa.field("occurred_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def uuid4_strings(rng: np.random.Generator, n: int) -> pa.StringArray:
    """``n`` RFC 4122 version-4 UUID strings from ``rng`` (deterministic, vectorised, no Python loop)."""
    b = rng.integers(0, 256, size=(n, 16), dtype=np.uint8)
    b[:, 6] = (b[:, 6] & 0x0F) | 0x40
    b[:, 8] = (b[:, 8] & 0x3F) | 0x80
    hexed = np.empty((n, 32), dtype=np.uint8)
    hexed[:, 0::2] = _HEX[b >> 4]
    hexed[:, 1::2] = _HEX[b & 0x0F]
    out = np.full((n, 36), ord("-"), dtype=np.uint8)
    out[:, 0:8] = hexed[:, 0:8]
    out[:, 9:13] = hexed[:, 8:12]
    out[:, 14:18] = hexed[:, 12:16]
    out[:, 19:23] = hexed[:, 16:20]
    out[:, 24:36] = hexed[:, 20:32]
    offsets = np.arange(0, 36 * (n + 1), 36, dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(out.tobytes()))


class AliasSampler:
    """Walker/Vose alias table: O(1) draws from a fixed discrete distribution.

    Drawing tens of millions of users and items from 60k-160k-way distributions is the hot loop
    of the generator; a binary search per draw (``searchsorted`` on the CDF) was a fifth of it.
    """

    def __init__(self, weights: np.ndarray) -> None:
        p = np.asarray(weights, dtype=np.float64)
        n = len(p)
        scaled = p * (n / p.sum())
        prob = np.ones(n)
        alias = np.arange(n, dtype=np.int64)
        small = [i for i in range(n) if scaled[i] < 1.0]
        large = [i for i in range(n) if scaled[i] >= 1.0]
        while small and large:
            s_, l_ = small.pop(), large.pop()
            prob[s_] = scaled[s_]
            alias[s_] = l_
            scaled[l_] -= 1.0 - scaled[s_]
            (small if scaled[l_] < 1.0 else large).append(l_)
        self.prob = prob
        self.alias = alias

    def sample(self, rng: np.random.Generator, size: int | tuple[int, ...]) -> np.ndarray:
        idx = rng.integers(0, len(self.prob), size=size)
        return np.where(rng.random(size) < self.prob[idx], idx, self.alias[idx])


@dataclass
class WorldArrays:
    """What the generator needs per step, precomputed once (features, samplers, runtimes)."""

    user_feat: np.ndarray  # (N, D) float32
    item_feat: np.ndarray  # (M, D) float32
    quality: np.ndarray  # (M,) float32
    harshness: np.ndarray  # (N,)
    user_sampler: AliasSampler  # activity
    item_sampler: AliasSampler  # popularity
    runtime_sec: np.ndarray  # (M,) float64
    price: np.ndarray  # (M,) float64
    mu: float
    sigma: float
    item_ids: pa.StringArray  # (M,) row -> item_id (``WorldIds.item_ids``)
    user_ids: pa.StringArray  # (N,) row -> user_id
    candidates: int = 8
    beta_browse: float = 0.8
    beta_rec: float = 1.6
    rec_share: float = 0.3


#: Expected events per engagement, used to size a window's session draw (refined as we go).
EXPECTED_EVENTS_PER_ENGAGEMENT = 1.9
EXPECTED_ENGAGEMENTS_PER_SESSION = 3.0


@dataclass
class Engagements:
    """One draw of sessions expanded to engagements (arrays aligned on engagement index)."""

    user: np.ndarray
    item: np.ndarray
    z: np.ndarray
    session: np.ndarray  # global session number within the window draw
    present: np.ndarray  # (E, len(COLUMNS)) bool
    times: np.ndarray  # (E, len(COLUMNS)) float64 seconds from engagement start
    watch: np.ndarray  # (E,) seconds watched (play)
    rating: np.ndarray  # (E,) float64
    position: np.ndarray  # (E,) int32, -1 when not from a served list
    start_us: np.ndarray  # (E,) int64 engagement start time


def _draw(
    rng: np.random.Generator, w: WorldArrays, n_sessions: int, t0_us: int, span_us: int
) -> tuple[Engagements, dict[str, np.ndarray]]:
    """Sessions and their engagements/funnels for one window (times not yet clipped to it)."""
    s = n_sessions
    sess_user = w.user_sampler.sample(rng, s)
    sess_start = t0_us + (rng.random(s) * span_us).astype(np.int64)
    sess_src = np.searchsorted(np.cumsum(SOURCE_P), rng.random(s) * sum(SOURCE_P)).clip(max=len(SOURCES) - 1)
    dev_cdf = np.cumsum(DEVICE_P, axis=1)[sess_src]
    sess_dev = (rng.random(s)[:, None] > dev_cdf).sum(axis=1).clip(max=len(DEVICES) - 1)
    notif = sess_src >= 2
    sess_rec = notif | (rng.random(s) < w.rec_share)
    sess_len = np.where(
        notif, rng.geometric(0.6, size=s), rng.geometric(1 / EXPECTED_ENGAGEMENTS_PER_SESSION, size=s)
    )

    eng_sess = np.repeat(np.arange(s), sess_len)
    e = len(eng_sess)
    user = sess_user[eng_sess]
    rec = sess_rec[eng_sess]
    beta = np.where(rec, w.beta_rec, w.beta_browse).astype(np.float32)

    # Choose items: C popularity-sampled candidates, keep one with P ~ exp(beta z) (Gumbel-max).
    item = np.empty(e, dtype=np.int64)
    z = np.empty(e, dtype=np.float32)
    c = w.candidates
    step = 65536
    for a in range(0, e, step):
        b_ = min(e, a + step)
        cand = w.item_sampler.sample(rng, (b_ - a, c))
        uf = w.user_feat[user[a:b_]]
        zc = (np.einsum("nd,ncd->nc", uf, w.item_feat[cand]) + w.quality[cand] - w.mu) / w.sigma
        pick = np.argmax(beta[a:b_, None] * zc + rng.gumbel(size=zc.shape).astype(np.float32), axis=1)
        item[a:b_] = cand[np.arange(b_ - a), pick]
        z[a:b_] = zc[np.arange(b_ - a), pick]

    # Funnel: which steps happen.
    zz = z.astype(np.float64)
    u = rng.random((e, len(COLUMNS)))
    p = np.zeros((e, len(COLUMNS)), dtype=bool)
    p[:, _COL["view"]] = True
    click = u[:, 1] < _sigmoid(-1.3 + 0.9 * zz)
    play = click & (u[:, 5] < _sigmoid(0.9 * zz))
    p[:, _COL["click"]] = click
    p[:, _COL["watchlist"]] = click & ~play & (u[:, 2] < 0.35 * _sigmoid(zz))
    p[:, _COL["save"]] = click & (u[:, 3] < 0.06)
    p[:, _COL["purchase"]] = click & (u[:, 4] < 0.08 * _sigmoid(zz - 0.5))
    p[:, _COL["play"]] = play
    p[:, _COL["play_end"]] = play
    p[:, _COL["rate"]] = play & (u[:, 7] < 0.5)
    like = play & (u[:, 8] < 0.45 * _sigmoid(2 * zz - 1))
    p[:, _COL["like"]] = like
    p[:, _COL["dislike"]] = (play & ~like & (u[:, 9] < 0.4 * _sigmoid(-2 * zz - 1))) | (
        ~click & (u[:, 9] < 0.02 * _sigmoid(-zz))
    )
    p[:, _COL["favorite"]] = play & (u[:, 10] < 0.15 * _sigmoid(2 * zz - 1))
    p[:, _COL["share"]] = play & (u[:, 11] < 0.06 * _sigmoid(2 * zz))

    # When: exponential gaps between present steps; watching sits between play and play_end.
    completion = _sigmoid(0.8 + zz + rng.standard_normal(e)).clip(0.02, 1.0)
    watch = np.round(w.runtime_sec[item] * completion)
    gaps = rng.exponential(8.0, size=(e, len(COLUMNS))) + 1.0
    gaps[:, _COL["view"]] = 0.0
    gaps[:, _COL["play_end"]] = watch
    times = np.cumsum(np.where(p, gaps, 0.0), axis=1)

    # Engagements of a session follow each other: start = session start + previous durations + pauses.
    dur = times[:, -1] + rng.exponential(25.0, size=e) + 2.0
    cs = np.cumsum(dur)
    first = np.searchsorted(eng_sess, eng_sess, side="left")
    excl = cs - dur - (cs[first] - dur[first])
    start_us = sess_start[eng_sess] + (excl * US).astype(np.int64)

    rating = np.clip(np.rint(2.4 + 0.8 * zz + w.harshness[user] + rng.normal(0.0, 0.55, size=e)), 1.0, 5.0)
    position = np.where(rec, np.minimum(rng.geometric(0.2, size=e) - 1, 49), -1).astype(np.int32)
    eng = Engagements(user, item, z, eng_sess, p, times, watch, rating, position, start_us)
    sess = {"src": sess_src, "dev": sess_dev, "rec": sess_rec, "notif": notif}
    return eng, sess


def _context_strings() -> list[str]:
    """Every distinct context JSON: (device, surface) pairs; indexed by dev * len(SURFACES) + surface."""
    return [json.dumps({"device": d, "surface": s}, separators=(",", ":")) for d in DEVICES for s in SURFACES]


_CONTEXTS = pa.array(_context_strings(), pa.string())
_TYPES = pa.array(list(EVENT_TYPES), pa.string())
_SOURCES = pa.array(list(SOURCES), pa.string())


def window_events(
    rng: np.random.Generator, w: WorldArrays, budget: int, t0_us: int, span_us: int
) -> pa.Table:
    """Exactly ``budget`` events whose sessions start in ``[t0, t0 + span)``, sorted by time.

    Sessions are drawn in random order until their events reach the budget; the tail beyond the
    budget is cut (whole sessions, then the last engagement's latest steps), so the cut never
    leaves an event without the steps before it.
    """
    parts: list[tuple[Engagements, dict[str, np.ndarray]]] = []
    total = 0
    est = EXPECTED_EVENTS_PER_ENGAGEMENT * EXPECTED_ENGAGEMENTS_PER_SESSION
    while total < budget:
        need = budget - total
        n_sess = max(8, int(need / est * 1.08) + 8)
        eng, sess = _draw(rng, w, n_sess, t0_us, span_us)
        cnt = int(eng.present[:, _EMIT].sum())
        parts.append((eng, sess))
        total += cnt
        est = max(0.5, cnt / n_sess)

    # Concatenate draws (session numbers offset so they stay distinct).
    offs = 0
    cols: dict[str, list[np.ndarray]] = {
        k: []
        for k in (
            "user",
            "item",
            "z",
            "session",
            "present",
            "times",
            "watch",
            "rating",
            "position",
            "start_us",
        )
    }
    sess_cols: dict[str, list[np.ndarray]] = {k: [] for k in ("src", "dev", "rec", "notif")}
    for eng, sess in parts:
        for k in cols:
            v = getattr(eng, k)
            cols[k].append(v + offs if k == "session" else v)
        for k in sess_cols:
            sess_cols[k].append(sess[k])
        offs += len(sess["src"])
    e = {k: np.concatenate(v) for k, v in cols.items()}
    s = {k: np.concatenate(v) for k, v in sess_cols.items()}

    # Cut to the budget in generation (session-major, funnel) order.
    emit = e["present"] & _EMIT[None, :]
    per_eng = emit.sum(axis=1)
    cum = np.cumsum(per_eng)
    last = int(np.searchsorted(cum, budget, side="left"))
    keep_in_last = budget - (int(cum[last - 1]) if last > 0 else 0)
    emit = emit[: last + 1]
    row_cum = np.cumsum(emit[-1])
    emit[-1] &= row_cum <= keep_in_last
    n_eng = last + 1
    ev_eng, ev_col = np.nonzero(emit)
    n = len(ev_eng)
    assert n == budget, (n, budget)
    occurred = e["start_us"][ev_eng] + (e["times"][ev_eng, ev_col] * US).astype(np.int64)
    # Time order; stable, so one engagement's steps keep their funnel order on equal timestamps.
    order = np.argsort(occurred, kind="stable")
    ev_eng, ev_col, occurred = ev_eng[order], ev_col[order], occurred[order]

    sess_of = e["session"][ev_eng]
    n_sess_used = int(e["session"][n_eng - 1]) + 1
    type_idx = _TYPE_OF_COL[ev_col]
    is_rate = ev_col == _COL["rate"]
    is_play = ev_col == _COL["play"]
    is_buy = ev_col == _COL["purchase"]
    pos = e["position"][ev_eng]
    has_rec = pos >= 0
    items = e["item"][ev_eng]

    session_ids = uuid4_strings(rng, n_sess_used)
    rec_ids = uuid4_strings(rng, n_sess_used)
    surface = np.where(s["notif"], s["src"], np.where(s["rec"], 1, 0))  # email->2, push->3
    ctx_idx = (s["dev"] * len(SURFACES) + surface)[:n_sess_used]

    sess_idx = pa.array(sess_of.astype(np.int64))
    return pa.table(
        {
            "event_id": uuid4_strings(rng, n),
            "user_id": w.user_ids.take(pa.array(e["user"][ev_eng])),
            "item_id": w.item_ids.take(pa.array(items)),
            "type": _TYPES.take(pa.array(type_idx.astype(np.int64))),
            "rating": pa.array(e["rating"][ev_eng], mask=~is_rate),
            "value": pa.array(w.price[items], mask=~is_buy),
            "watch_duration_sec": pa.array(e["watch"][ev_eng], mask=~is_play),
            "session_id": session_ids.take(sess_idx),
            "source": _SOURCES.take(pa.array(s["src"][sess_of].astype(np.int64))),
            "rec_id": pc.if_else(pa.array(has_rec), rec_ids.take(sess_idx), pa.scalar(None, pa.string())),
            "position": pa.array(pos, pa.int32(), mask=~has_rec),
            "context": _CONTEXTS.take(pa.array(ctx_idx[sess_of].astype(np.int64))),
            "occurred_at": pa.array(occurred, pa.timestamp("us", tz="UTC")),
        },
        schema=EVENT_SCHEMA,
    )

"""ALS fold-in: a user's latent factors, solved against the production model's item factors.

Why exact and incremental: implicit ALS (Hu, Koren & Volinsky 2008, as ``batch/models/ials.py``
and Spark fit it) gives the user factor that best explains their confidences in closed form,

    x_u = (YᵀY + Yᵀ(C_u − I)Y + λ_u I)⁻¹ YᵀC_u p_u

where ``C_u`` holds ``1 + alpha·r_ui`` and ``p_ui = 1`` on the user's positive items and
``λ_u = reg·n_u`` (Spark's ALS-WR scaling by the number of positive items; ``scale_reg=False``
gives plain ``λ``). Only the user's own items enter the two sums, so the per-user state is

* ``A_u = Yᵀ(C_u − I)Y = Σ_i alpha·r_ui·y_i y_iᵀ`` (k×k) and ``b_u = YᵀC_u p_u = Σ_i (1 + alpha·r_ui) y_i``
  (k) over positive items, plus ``n_u``;
* ``pairs``: ``r_ui`` per item (the sum of the event weights, capped at ``max_confidence`` when
  used, positive iff > 0, exactly as ``batch/interactions.py`` builds the training matrix but
  without age decay: the events folded in are recent, and the next batch run decays them).

An event changes one ``r_ui``: its old contribution is taken out of ``A_u``/``b_u`` and the new
one put in, O(k²); ``YᵀY`` is precomputed once per model, so an update costs a k×k solve, never
a pass over history. The result equals the direct least-squares solve over the whole history
(tests/unit/test_stream_processors.py checks that).

**Model change**: ``A_u``/``b_u`` depend on ``Y``. ``pairs`` do not, so a user's state for an
older model is *rebuilt lazily* from ``pairs`` with the new ``Y`` the next time the user has an
event (O(n_items_u·k²) once); users without new events keep their old factors, tagged with the
old ``als_model_version``, until then. ``pairs`` is bounded (``max_pairs``, least recently
touched item dropped, with its contribution), so for very long histories the fold-in covers the
most recent ``max_pairs`` items.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streams.processors.taste import segment_sums


@dataclass(frozen=True)
class FoldInModel:
    """Item factors of one model version, with what every fold-in needs precomputed."""

    version: str
    item_index: dict[str, int]
    Y: np.ndarray  # float64 (n_items, k)
    YtY: np.ndarray  # float64 (k, k)
    alpha: float = 1.0
    reg: float = 0.1
    scale_reg: bool = True
    max_confidence: float = 100.0

    @property
    def rank(self) -> int:
        return int(self.Y.shape[1])

    @classmethod
    def from_factors(
        cls,
        version: str,
        item_ids: Iterable[Any],
        factors: np.ndarray,
        *,
        alpha: float = 1.0,
        reg: float = 0.1,
        scale_reg: bool = True,
        max_confidence: float = 100.0,
    ) -> FoldInModel:
        """Build from a snapshot's ``(item_ids, item_factors)``; ids become strings (events carry strings)."""
        Y = np.ascontiguousarray(factors, dtype=np.float64)
        index = {str(i): n for n, i in enumerate(item_ids)}
        return cls(version, index, Y, Y.T @ Y, alpha, reg, scale_reg, max_confidence)


@dataclass
class AlsState:
    """One user's fold-in state; ``A``/``b``/``n_pos`` belong to ``model_version``."""

    pairs: dict[str, float] = field(default_factory=dict)
    model_version: str | None = None
    A: np.ndarray | None = None  # float64 (k, k)
    b: np.ndarray | None = None  # float64 (k,)
    n_pos: int = 0


def _effective(model: FoldInModel, r: float) -> float:
    """The capped confidence term ``r`` enters the model with (0 = not a positive item)."""
    return min(r, model.max_confidence) if r > 0 else 0.0


def rebuild(state: AlsState, model: FoldInModel) -> None:
    """Recompute ``A``/``b``/``n_pos`` for ``model`` from ``pairs`` (after a model change)."""
    k = model.rank
    state.A, state.b, state.n_pos, state.model_version = np.zeros((k, k)), np.zeros(k), 0, model.version
    rows, conf = [], []
    for item, r in state.pairs.items():
        row = model.item_index.get(item)
        e = _effective(model, r)
        if row is not None and e > 0:
            rows.append(row)
            conf.append(e)
    if rows:
        Yu = model.Y[rows]
        c = np.asarray(conf)
        state.A = (Yu * (model.alpha * c)[:, None]).T @ Yu
        state.b = ((1.0 + model.alpha * c)[:, None] * Yu).sum(axis=0)
        state.n_pos = len(rows)


def add_interactions(
    state: AlsState,
    model: FoldInModel | None,
    items: Sequence[str],
    weights: Sequence[float],
    *,
    max_pairs: int,
) -> None:
    """Add ``weights[i]`` to ``r`` of ``items[i]`` and update ``A``/``b`` exactly.

    With ``model`` None (no production model yet) only ``pairs`` are kept, so the factors can be
    computed as soon as a model arrives.
    """
    add_interactions_many([state], model, [items], [weights], max_pairs=max_pairs)


def add_interactions_many(
    states: Sequence[AlsState],
    model: FoldInModel | None,
    items: Sequence[Sequence[str]],
    weights: Sequence[Sequence[float]],
    *,
    max_pairs: int,
) -> None:
    """:func:`add_interactions` for many users at once (``items[j]``/``weights[j]`` go to ``states[j]``).

    Why this shape: an item's contribution to ``A``/``b`` is linear in its effective confidence,
    so the successive swaps of one batch telescope to "final minus initial" per (user, item).
    Only ``pairs`` (a dict) is walked in Python; the O(k²) updates of every user of the batch are
    then one stacked array operation instead of an ``np.outer`` per event.
    """
    changes: list[tuple[int, int, float, float]] = []  # (user j, item row, e before, e after)
    index = model.item_index if model is not None else None
    cap = model.max_confidence if model is not None else 0.0
    for j, (state, its, ws) in enumerate(zip(states, items, weights, strict=True)):
        if model is None:
            # A/b can no longer follow pairs: mark them stale, the next solve rebuilds them
            state.model_version, state.A, state.b, state.n_pos = None, None, None, 0
        elif state.model_version != model.version:
            rebuild(state, model)
        pairs = state.pairs
        before: dict[str, float] = {}  # r of each touched item before this batch
        for item, w in zip(its, ws, strict=True):
            if w == 0.0:
                continue
            r_old = pairs.pop(item, 0.0)  # pop + insert = move to the most recent end
            before.setdefault(item, r_old)
            pairs[item] = r_old + w
            while len(pairs) > max_pairs:
                oldest = next(iter(pairs))
                before.setdefault(oldest, pairs.pop(oldest))
        if index is None:
            continue
        for item, r0 in before.items():
            row = index.get(item)
            if row is None:
                continue
            r1 = pairs.get(item, 0.0)
            # _effective, inlined (the hot loop of a batch)
            e0 = (r0 if r0 < cap else cap) if r0 > 0 else 0.0
            e1 = (r1 if r1 < cap else cap) if r1 > 0 else 0.0
            if e0 != e1:
                changes.append((j, row, e0, e1))
    if model is None or not changes:
        return
    ch = np.array(changes)
    u, rows, old, new = ch[:, 0].astype(np.intp), ch[:, 1].astype(np.intp), ch[:, 2], ch[:, 3]
    Yr = model.Y[rows]
    da = model.alpha * (new - old)
    # b gets (1 + alpha·e)·y for a positive item, nothing otherwise
    db = np.where(new > 0, 1.0 + model.alpha * new, 0.0) - np.where(old > 0, 1.0 + model.alpha * old, 0.0)
    dn = (new > 0).astype(np.int64) - (old > 0)
    starts = np.flatnonzero(np.r_[True, u[1:] != u[:-1]])  # users' changes are contiguous
    dA = segment_sums(da, Yr[:, :, None] * Yr[:, None, :], starts)
    dB = segment_sums(db, Yr, starts)
    dN = np.add.reduceat(dn, starts)
    for n, j in enumerate(u[starts].tolist()):
        s = states[j]
        assert s.A is not None and s.b is not None
        s.A = s.A + dA[n]
        s.b = s.b + dB[n]
        s.n_pos += int(dN[n])


def solve(states: Sequence[AlsState], model: FoldInModel) -> list[np.ndarray | None]:
    """The factors of each state (float32), one batched k×k solve; None without positive items.

    States for another model version are rebuilt first.
    """
    out: list[np.ndarray | None] = [None] * len(states)
    idx = []
    for n, s in enumerate(states):
        if s.model_version != model.version:
            rebuild(s, model)
        if s.n_pos > 0:
            idx.append(n)
    if not idx:
        return out
    k = model.rank
    chosen = [states[n] for n in idx]
    n_pos = np.fromiter((s.n_pos for s in chosen), np.float64, len(chosen))
    lam = model.reg * (n_pos if model.scale_reg else np.ones_like(n_pos))
    A = np.stack([s.A for s in chosen])  # type: ignore[misc]
    A += model.YtY
    A[:, np.arange(k), np.arange(k)] += lam[:, None]
    b = np.stack([s.b for s in chosen])  # type: ignore[misc]
    x = np.linalg.solve(A, b[:, :, None])[:, :, 0].astype(np.float32)
    for j, n in enumerate(idx):
        out[n] = x[j]
    return out

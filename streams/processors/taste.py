"""The content taste vector: a time-decayed, event-type-weighted mean of item embeddings.

Why this form: serving ranks items by cosine similarity to it (``items.embedding <=> vector``),
so it must live in the embedding space and follow recent behaviour. With weights ``w_i`` (from
:mod:`.weights`; a dislike or a low rating is negative), event times ``t_i``, embeddings
``e_i``, half-life ``h`` and ``T`` the latest event time seen,

    taste = Σ w_i 2^(-(T - t_i)/h) e_i  /  Σ |w_i| 2^(-(T - t_i)/h)

Negative events pull the mean away from their items (numerator) and dilute it (denominator
uses ``|w|``, so a dislike never inflates the vector by shrinking the total weight).

The state is the two sums as of ``T`` (:class:`TasteState`): an event costs O(dim) whatever
the user's history. Rescaling to a later ``T`` multiplies both sums by the same factor; an event
older than ``T`` enters with its own decay. The result is therefore independent of arrival order
and of how events are batched, which is what lets a replay after a crash reproduce the vector.

>>> s = TasteState()
>>> add_events(s, np.array([1.0]), np.array([0.0]), np.array([[1.0, 0.0]]), half_life_sec=10)
>>> add_events(s, np.array([1.0]), np.array([10.0]), np.array([[0.0, 1.0]]), half_life_sec=10)
>>> [round(float(x), 3) for x in mean(s)]   # the older view counts half
[0.333, 0.667]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

EMPTY_TS = -math.inf


@dataclass
class TasteState:
    """``vsum`` = Σ w·decay·e and ``wsum`` = Σ |w|·decay, both decayed to time ``ts``."""

    vsum: np.ndarray | None = None  # float64 (dim,)
    wsum: float = 0.0
    ts: float = EMPTY_TS  # epoch seconds of the latest event absorbed


def add_events(
    state: TasteState,
    weights: np.ndarray,
    times: np.ndarray,
    embeddings: np.ndarray,
    *,
    half_life_sec: float,
) -> None:
    """Absorb events (``weights[i]`` at epoch ``times[i]`` on an item embedded as
    ``embeddings[i]``) into ``state`` in O(n·dim). Zero-weight events change nothing."""
    if len(weights) == 0:
        return
    dim = embeddings.shape[1]
    if state.vsum is None or state.vsum.shape[0] != dim:  # first events, or the embedding model changed
        state.vsum, state.wsum, state.ts = np.zeros(dim), 0.0, EMPTY_TS
    new_ts = max(state.ts, float(times.max()))
    if state.ts != EMPTY_TS and new_ts > state.ts:
        f = 2.0 ** (-(new_ts - state.ts) / half_life_sec)
        state.vsum *= f
        state.wsum *= f
    state.ts = new_ts
    coef = weights * np.exp2(-(new_ts - times) / half_life_sec)
    state.vsum += coef @ embeddings
    state.wsum += float(np.abs(coef).sum())


def mean(state: TasteState) -> np.ndarray | None:
    """The taste vector (float32), or None before any weighted event."""
    if state.vsum is None or state.wsum <= 0.0:
        return None
    return (state.vsum / state.wsum).astype(np.float32)

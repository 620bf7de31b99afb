"""Per-user speed-layer state and how it is stored in the faust table ``user_profile_state``.

Why one record per user holding everything (dedupe window, taste sums, fold-in normal
equations): a changelog record is the unit of atomicity. If the ids a user's state has absorbed
lived in another table, a crash between the two writes would make redelivered events count twice
or not at all. See :mod:`streams.processors.dedupe`.

The record is msgpack (msgspec) with the numpy arrays as raw little-endian bytes: compact (the
768-d taste sum is stored as float32, 3 KiB) and about 5 µs to decode or encode. ``FORMAT``
versions it; an unknown version is treated as "no state" (rebuilt from new events) rather than
crashing a worker after a downgrade.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np
from faust.streams import _current_event  # faust's "current event" ContextVar (see event_context)

from streams.processors.dedupe import DedupeState
from streams.processors.foldin import AlsState
from streams.processors.taste import TasteState

FORMAT = 1


@dataclass
class UserState:
    """Everything the speed layer keeps about one user."""

    dedupe: DedupeState = field(default_factory=DedupeState)
    taste: TasteState = field(default_factory=TasteState)
    als: AlsState = field(default_factory=AlsState)


class _Wire(msgspec.Struct, array_like=True):
    v: int
    part: int
    off: int
    ids: bytes
    tsum: bytes
    twt: float
    tts: float
    mv: str | None
    pairs: dict[str, float]
    a: bytes
    b: bytes
    npos: int


_enc = msgspec.msgpack.Encoder()
_dec = msgspec.msgpack.Decoder(_Wire)


def encode_state(s: UserState) -> bytes:
    """The table value for ``s``."""
    t, a = s.taste, s.als
    return _enc.encode(
        _Wire(
            FORMAT,
            s.dedupe.partition,
            s.dedupe.offset,
            s.dedupe.ids,
            b"" if t.vsum is None else t.vsum.astype("<f4").tobytes(),
            t.wsum,
            t.ts,
            a.model_version,
            a.pairs,
            b"" if a.A is None else a.A.astype("<f8").tobytes(),
            b"" if a.b is None else a.b.astype("<f8").tobytes(),
            a.n_pos,
        )
    )


def decode_state(raw: bytes | None) -> UserState:
    """The state stored as ``raw`` (a fresh one for None, garbage or an unknown format)."""
    if not raw:
        return UserState()
    try:
        w = _dec.decode(raw)
    except msgspec.MsgspecError:
        return UserState()
    if w.v != FORMAT:
        return UserState()
    taste = TasteState(
        np.frombuffer(w.tsum, "<f4").astype(np.float64) if w.tsum else None,
        w.twt,
        w.tts,
    )
    A = np.frombuffer(w.a, "<f8").copy() if w.a else None
    if A is not None:
        k = math.isqrt(len(A))
        A = A.reshape(k, k)
    als = AlsState(w.pairs, w.mv, A, np.frombuffer(w.b, "<f8").copy() if w.b else None, w.npos)
    return UserState(DedupeState(w.part, w.off, w.ids), taste, als)


class _MessageEvent:
    """The part of a faust ``Event`` the table and its store read: ``.message``."""

    __slots__ = ("__weakref__", "message")

    def __init__(self, message: Any) -> None:
        self.message = message


@contextmanager
def event_context(event: Any) -> Iterator[None]:
    """Make ``event`` (a faust Event, or a Message: wrapped) faust's current event while
    reading/writing the table.

    Why: a faust table sends a changed key to the changelog partition of the *current event*
    (and the RocksDB store files it under that partition), which keeps the table co-partitioned
    with the source topic whatever partitioner the producers used (librdkafka's default is not
    the Java/aiokafka murmur2). The speed layer writes the state of a whole batch after its
    Postgres commit, outside per-event iteration, so it sets the user's last record explicitly;
    it gets Messages in batches (``streams/consumer.py``), not Events, hence the wrapper.
    """
    current = event if hasattr(event, "message") else _MessageEvent(event)
    token = _current_event.set(weakref.ref(current))  # type: ignore[arg-type]
    try:
        yield
    finally:
        _current_event.reset(token)

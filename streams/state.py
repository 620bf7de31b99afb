"""Per-user speed-layer state and how it is stored in the faust table ``user_profile_state``.

Why one record per user holding everything (dedupe window, taste sums, fold-in normal
equations): a changelog record is the unit of atomicity. If the ids a user's state has absorbed
lived in another table, a crash between the two writes would make redelivered events count twice
or not at all. See :mod:`streams.processors.dedupe`.

The record is msgpack (msgspec) with the numpy arrays as raw little-endian bytes: compact (the
768-d taste sum is stored as float32, 3 KiB) and about 5 µs to decode or encode. ``FORMAT``
versions it; an unknown version is treated as "no state" (rebuilt from new events) rather than
crashing a worker after a downgrade. Decoded arrays are read-only views of the record (the
processors replace arrays, they never write into them).

The one costly part is the fold-in's ``item -> r`` map: up to ``max_pairs`` (2000) entries, and
the users who have that many are the heavy ones, present in every batch, whose map msgspec
rebuilt each time (~90 % of the speed layer's state decoding). So a map whose encoding is big
is remembered by its exact bytes when encoded (:data:`_pairs_memo`, bounded) and the next decode
of those same bytes copies the remembered dict instead of parsing it. Keyed by content, the memo
can never hand out a map the record does not hold, whatever happened in between (a retried
batch, a rebalance); the record format is unchanged.
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
    pairs: msgspec.Raw  # a msgpack map str -> float, see _decode_pairs
    a: bytes
    b: bytes
    npos: int


_enc = msgspec.msgpack.Encoder()
_dec = msgspec.msgpack.Decoder(_Wire)
_pairs_dec = msgspec.msgpack.Decoder(dict[str, float])

#: encoded maps shorter than this are parsed (as fast as a memo lookup); longer ones are memoised
PAIRS_MEMO_MIN_BYTES = 1024
#: bound on the memo, in encoded bytes (the dicts take about as much again)
PAIRS_MEMO_MAX_BYTES = 32 << 20
#: encoded ``pairs`` -> that map (never handed out: callers get copies), least recently used first
_pairs_memo: dict[bytes, dict[str, float]] = {}
_pairs_memo_bytes = 0


def _remember_pairs(key: bytes, pairs: dict[str, float]) -> None:
    global _pairs_memo_bytes
    if key in _pairs_memo:
        del _pairs_memo[key]
    else:
        _pairs_memo_bytes += len(key)
    _pairs_memo[key] = pairs  # (re)inserted last: most recently used
    while _pairs_memo_bytes > PAIRS_MEMO_MAX_BYTES and _pairs_memo:
        oldest = next(iter(_pairs_memo))
        del _pairs_memo[oldest]
        _pairs_memo_bytes -= len(oldest)


def _encode_pairs(pairs: dict[str, float]) -> bytes:
    raw = _enc.encode(pairs)
    if len(raw) >= PAIRS_MEMO_MIN_BYTES:
        _remember_pairs(raw, dict(pairs))
    return raw


def _decode_pairs(raw: msgspec.Raw) -> dict[str, float]:
    if len(raw) < PAIRS_MEMO_MIN_BYTES:
        return _pairs_dec.decode(raw)
    key = bytes(raw)
    pairs = _pairs_memo.get(key)
    if pairs is None:
        pairs = _pairs_dec.decode(key)
    _remember_pairs(key, pairs)
    return dict(pairs)


def encode_state(s: UserState) -> bytes:
    """The table value for ``s``."""
    t, a = s.taste, s.als
    return _enc.encode(
        _Wire(
            FORMAT,
            s.dedupe.partition,
            s.dedupe.offset,
            s.dedupe.ids,
            b"" if t.vsum is None else t.vsum.astype("<f4", copy=False).tobytes(),
            t.wsum,
            t.ts,
            a.model_version,
            msgspec.Raw(_encode_pairs(a.pairs)),
            b"" if a.A is None else a.A.astype("<f8", copy=False).tobytes(),
            b"" if a.b is None else a.b.astype("<f8", copy=False).tobytes(),
            a.n_pos,
        )
    )


def decode_state(raw: bytes | None) -> UserState:
    """The state stored as ``raw`` (a fresh one for None, garbage or an unknown format)."""
    if not raw:
        return UserState()
    try:
        w = _dec.decode(raw)
        if w.v != FORMAT:
            return UserState()
        pairs = _decode_pairs(w.pairs)
    except msgspec.MsgspecError:
        return UserState()
    # read-only views of the record's bytes, no copies: the processors replace arrays, never
    # write into them
    taste = TasteState(np.frombuffer(w.tsum, "<f4") if w.tsum else None, w.twt, w.tts)
    A = b = None
    if w.a:
        A = np.frombuffer(w.a, "<f8")
        k = math.isqrt(len(A))
        A = A.reshape(k, k)
    if w.b:
        b = np.frombuffer(w.b, "<f8")
    als = AlsState(pairs, w.mv, A, b, w.npos)
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

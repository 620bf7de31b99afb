"""The dead-letter contract: what a rejected record of ``interactions`` looks like, and the one
decoder every consumer uses (speed layer, lake archiver, DLQ replay) so they agree on what is bad.

:func:`decode_event` never raises: a bad record becomes a :class:`DeadLetter` carrying the reason,
the original bytes and its Kafka origin, instead of crashing a consumer or being dropped. The
Kafka side (publishing, inspecting, replaying the DLQ topic) lives in ``streams/dead_letters.py``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum

import msgspec

from schemas import events as ev


class Reason(StrEnum):
    """Why a record was dead-lettered (the value of ``DeadLetter.reason``)."""

    MALFORMED_JSON = ev.ErrorKind.MALFORMED_JSON.value
    NOT_AN_OBJECT = ev.ErrorKind.NOT_AN_OBJECT.value
    OVERSIZED = ev.ErrorKind.OVERSIZED.value
    UNSUPPORTED_VERSION = ev.ErrorKind.UNSUPPORTED_VERSION.value
    INVALID_FIELD = ev.ErrorKind.INVALID_FIELD.value
    EMPTY = "empty"  # null value (tombstone) or zero bytes
    INTERNAL_ERROR = "internal_error"  # a bug in the decoder; the record is kept, not lost
    #: decoded fine, but the speed layer failed to apply it alone, again and again (a poison record)
    PROCESSING_FAILED = "processing_failed"


class DeadLetter(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """One rejected record and everything needed to understand and replay it.

    On the DLQ topic it is JSON; ``payload`` and ``key`` (``bytes``) are base64 there, so any
    bytes (even invalid UTF-8) survive the round trip unchanged.
    """

    reason: Reason
    error: str
    field: str | None = None
    payload: bytes
    key: bytes | None = None
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    #: Kafka timestamp of the original record (ms since epoch), when known
    source_timestamp_ms: int | None = None
    dead_lettered_at: datetime


_dl_encoder = msgspec.json.Encoder()
_dl_decoder = msgspec.json.Decoder(DeadLetter)


def encode_dead_letter(letter: DeadLetter) -> bytes:
    """JSON for the DLQ topic."""
    return _dl_encoder.encode(letter)


def decode_dead_letter(raw: bytes) -> DeadLetter:
    """Parse a DLQ record (raises msgspec.MsgspecError on a record that is not a DeadLetter)."""
    return _dl_decoder.decode(raw)


def decode_event(
    raw: bytes | None,
    *,
    key: bytes | None = None,
    topic: str | None = None,
    partition: int | None = None,
    offset: int | None = None,
    timestamp_ms: int | None = None,
) -> ev.InteractionEvent | DeadLetter:
    """The valid event, or a DeadLetter saying why not (with the origin, when given). Never raises.

    >>> decode_event(b"{oops").reason
    <Reason.MALFORMED_JSON: 'malformed_json'>
    """

    def dead(reason: Reason, error: str, field: str | None = None) -> DeadLetter:
        return DeadLetter(
            reason=reason,
            error=error,
            field=field,
            payload=bytes(raw or b""),
            key=key,
            topic=topic,
            partition=partition,
            offset=offset,
            source_timestamp_ms=timestamp_ms,
            dead_lettered_at=datetime.now(UTC),
        )

    if not raw:
        return dead(Reason.EMPTY, "empty record (null or zero-length value)")
    try:
        return ev.decode(raw)
    except ev.EventValidationError as exc:
        return dead(Reason(exc.kind.value), exc.message, exc.field)
    except Exception as exc:  # the contract of this function is "never raises"
        return dead(Reason.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}")

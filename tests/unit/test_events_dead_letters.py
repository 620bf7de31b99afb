"""decode_event never raises; DeadLetter keeps the original bytes and origin through JSON."""

from __future__ import annotations

import base64
import json
import uuid

import pytest

from schemas import events as ev
from schemas.dead_letters import (
    DeadLetter,
    Reason,
    decode_dead_letter,
    decode_event,
    decode_plain_events,
    encode_dead_letter,
)

VALID = json.dumps(
    {
        "event_id": str(uuid.uuid4()),
        "user_id": "u",
        "item_id": "i",
        "type": "like",
        "occurred_at": "2024-01-01T00:00:00Z",
    }
).encode()


def test_valid_record_is_an_event() -> None:
    assert isinstance(decode_event(VALID), ev.InteractionEvent)


@pytest.mark.parametrize(
    ("raw", "reason", "field"),
    [
        (None, Reason.EMPTY, None),
        (b"", Reason.EMPTY, None),
        (b"\xff\xfe{garbage", Reason.MALFORMED_JSON, None),
        (b'"a string"', Reason.NOT_AN_OBJECT, None),
        (b"{" + b" " * 10_000 + b"}", Reason.OVERSIZED, None),
        (VALID.replace(b'"like"', b'"rate"'), Reason.INVALID_FIELD, "rating"),
        (VALID[:-1] + b', "schema_version": 9}', Reason.UNSUPPORTED_VERSION, "schema_version"),
    ],
)
def test_bad_records_become_dead_letters(raw: bytes | None, reason: Reason, field: str | None) -> None:
    dl = decode_event(raw, key=b"k", topic="t", partition=3, offset=42, timestamp_ms=1700000000000)
    assert isinstance(dl, DeadLetter)
    assert dl.reason is reason and dl.field == field and dl.error
    assert (dl.topic, dl.partition, dl.offset, dl.key) == ("t", 3, 42, b"k")
    assert dl.payload == (raw or b"")
    assert dl.dead_lettered_at.tzinfo is not None


def test_dead_letter_json_round_trip_with_base64_payload() -> None:
    payload = b"\x00\xffnot json\n"
    dl = decode_event(payload, key=b"\x01user", topic="lambdarec.interactions", partition=1, offset=7)
    assert isinstance(dl, DeadLetter)
    wire = encode_dead_letter(dl)
    doc = json.loads(wire)
    assert base64.b64decode(doc["payload"]) == payload
    assert doc["reason"] == "malformed_json" and doc["partition"] == 1 and doc["offset"] == 7
    assert decode_dead_letter(wire) == dl


def test_internal_errors_are_dead_lettered_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(raw: bytes) -> ev.InteractionEvent:
        raise RuntimeError("decoder bug")

    monkeypatch.setattr(ev, "decode", boom)
    dl = decode_event(VALID)
    assert isinstance(dl, DeadLetter) and dl.reason is Reason.INTERNAL_ERROR
    assert "decoder bug" in dl.error and dl.payload == VALID


def _event(user: str, **extra: object) -> bytes:
    doc = {
        "event_id": str(uuid.uuid4()),
        "user_id": user,
        "item_id": "i",
        "type": "like",
        "occurred_at": "2024-01-01T00:00:00Z",
        **extra,
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def test_plain_records_decode_in_one_call_like_decode_event() -> None:
    raws = [_event(f"u{k}", context={"k": [k, {"n": None}]}) for k in range(50)]
    fast = decode_plain_events(raws)
    assert all(e is not None for e in fast)  # the shortcut took every plain record
    assert fast == [decode_event(r) for r in raws]


@pytest.mark.parametrize(
    "odd",
    [
        None,
        b"",
        b"{oops}",
        b'"a string"',
        b"{" + b" " * 10_000 + b"}",
        VALID.replace(b'"like"', b'"rate"'),
        VALID + VALID,  # two events in one record: never two events
        json.dumps({"indent": True}).encode(),
        json.dumps(json.loads(VALID), indent=2).encode(),  # valid, with raw newlines
        VALID[:-1] + b',"context":{"s":"caf\\u00e9"}}',  # an escape: decode_event checks the ids
        VALID.replace(b'"u"', b'"u\\u0001"'),  # a control character in an id
        b" " + VALID,
    ],
)
def test_odd_records_are_left_to_decode_event(odd: bytes | None) -> None:
    """Whatever sits among valid records, the shortcut returns only what decode_event returns."""
    raws: list[bytes | None] = [_event("a"), odd, _event("b")]
    fast = decode_plain_events(raws)
    for raw, event in zip(raws, fast, strict=True):
        if event is not None:
            assert event == decode_event(raw)
    if isinstance(decode_event(odd), DeadLetter):
        assert fast[1] is None


def test_records_cannot_be_spliced_into_one_event() -> None:
    """Two records that are malformed alone but would form valid JSON when joined."""
    head = VALID[:-1] + b',"context":{"l":[{}'  # ends with "}"
    tail = b"{}]}}"  # starts with "{"
    assert decode_plain_events([head, tail]) == [None, None]
    assert all(isinstance(decode_event(r), DeadLetter) for r in (head, tail))

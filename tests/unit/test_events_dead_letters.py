"""decode_event never raises; DeadLetter keeps the original bytes and origin through JSON."""

from __future__ import annotations

import base64
import json
import uuid

import pytest

from schemas import events as ev
from schemas.dead_letters import DeadLetter, Reason, decode_dead_letter, decode_event, encode_dead_letter

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

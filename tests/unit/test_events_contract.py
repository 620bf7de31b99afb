"""InteractionEvent v1: every rule, its error message, evolution, and the committed JSON Schema."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import hypothesis.strategies as st
import jsonschema
import msgspec
import pytest
from hypothesis import given, settings

from lambdarec.settings import EventSettings
from schemas import events as ev

EID = "0b7e7f7c-4a4b-4f35-9a8a-5a0f2f3b0c11"


def base(**over: Any) -> dict[str, Any]:
    d: dict[str, Any] = {
        "event_id": EID,
        "user_id": "u1",
        "item_id": "i1",
        "type": "view",
        "occurred_at": "2024-05-01T12:00:00Z",
    }
    d.update(over)
    return {k: v for k, v in d.items() if v is not ...}


def raw(**over: Any) -> bytes:
    return json.dumps(base(**over)).encode()


@pytest.fixture(autouse=True)
def default_limits() -> Iterator[None]:
    ev.configure(EventSettings())
    yield
    ev.configure(None)


def test_minimal_event_decodes_and_encodes_canonically() -> None:
    e = ev.decode(raw())
    assert e.event_id == uuid.UUID(EID)
    assert e.type is ev.EventType.VIEW
    assert e.occurred_at == datetime(2024, 5, 1, 12, tzinfo=UTC)
    assert e.schema_version == 1 and e.received_at is None
    out = json.loads(ev.encode(e))
    # unset optional fields are left out; schema_version is always written
    assert out == {**base(), "schema_version": 1}
    assert e.key == b"u1"


def test_full_event() -> None:
    e = ev.decode(
        raw(
            type="rate",
            rating=3.5,
            value=1.25,
            watch_duration_sec=0,
            session_id="s1",
            source="mobile",
            rec_id="r1",
            position=0,
            context={"device": "ios", "experiment": "b", "nested": {"x": [1, 2]}},
            occurred_at="2024-05-01T14:00:00+02:00",
            received_at="2024-05-01T12:00:01Z",
        )
    )
    assert e.rating == 3.5 and e.source is ev.Source.MOBILE and e.position == 0
    assert ev.decode(ev.encode(e)) == e


@pytest.mark.parametrize(
    ("payload", "field", "message"),
    [
        (b'{"event_id": ', None, "malformed JSON"),
        (b"[1, 2]", None, "must be a JSON object"),
        (b"null", None, "must be a JSON object"),
        (raw(event_id=...), "event_id", "field required"),
        (raw(user_id=...), "user_id", "field required"),
        (raw(occurred_at=...), "occurred_at", "field required"),
        (raw(event_id="not-a-uuid"), "event_id", "Invalid UUID"),
        (raw(user_id=42), "user_id", "Expected `str`, got `int`"),
        (raw(user_id=""), "user_id", "length >= 1"),
        (raw(item_id="x" * 129), "item_id", "length <= 128"),
        (raw(user_id="a\nb"), "user_id", "control characters"),
        (raw(item_id="tab\there"), "item_id", "control characters"),
        (raw(session_id="s\u007f"), "session_id", "control characters"),
        (raw(type="teleport"), "type", "Invalid enum value 'teleport'; expected one of view, click"),
        (raw(type=3), "type", "Expected `str`, got `int`"),
        (raw(source="fax"), "source", "expected one of web, mobile, email, push"),
        (raw(type="rate"), "rating", "required when type is 'rate'"),
        (raw(type="rate", rating=0.5), "rating", ">= 1.0"),
        (raw(type="rate", rating=5.5), "rating", "<= 5.0"),
        (raw(type="rate", rating=3.3), "rating", "multiple of 0.5"),
        (raw(type="rate", rating="4"), "rating", "Expected `float | null`, got `str`"),
        (raw(type="click", rating=4), "rating", "only allowed when type is 'rate' (type is 'click')"),
        (raw(rec_id="r1"), "rec_id", "must be set together"),
        (raw(position=2), "rec_id", "must be set together"),
        (raw(rec_id="r1", position=-1), "position", ">= 0"),
        (raw(watch_duration_sec=-1), "watch_duration_sec", ">= 0"),
        (b'{"value": 1e999, ' + raw()[1:], "value", "out of range"),
        (raw(occurred_at="2024-05-01T12:00:00"), "occurred_at", "timezone"),
        (raw(occurred_at="yesterday"), "occurred_at", "Invalid RFC3339"),
        (raw(occurred_at="2999-01-01T00:00:00Z"), "occurred_at", "in the future"),
        (raw(context=[1]), "context", "Expected `object | null`, got `array`"),
        (raw(context={f"k{i}": i for i in range(33)}), "context", "33 keys; at most 32"),
        (raw(context={"blob": "x" * 3000}), "context", "bytes serialized; at most 2048"),
        (raw(schema_version=2), "schema_version", "v1 reader cannot read other versions"),
        (raw(context={"pad": "x" * 9000}), None, "bytes; at most 8192"),
    ],
)
def test_bad_input_names_the_field(payload: bytes, field: str | None, message: str) -> None:
    with pytest.raises(ev.EventValidationError) as info:
        ev.decode(payload)
    assert info.value.field == field, str(info.value)
    assert message in info.value.message, str(info.value)
    if field:
        assert str(info.value).startswith(f"{field}: ")


def test_error_kinds() -> None:
    def kind(payload: bytes) -> ev.ErrorKind:
        with pytest.raises(ev.EventValidationError) as info:
            ev.decode(payload)
        return info.value.kind

    assert kind(b"{") is ev.ErrorKind.MALFORMED_JSON
    assert kind(b"7") is ev.ErrorKind.NOT_AN_OBJECT
    assert kind(b" " * 9000) is ev.ErrorKind.OVERSIZED
    assert kind(raw(schema_version=2)) is ev.ErrorKind.UNSUPPORTED_VERSION
    assert kind(raw(type="nope")) is ev.ErrorKind.INVALID_FIELD


def test_future_tolerance_comes_from_settings() -> None:
    soon = (datetime.now(UTC) + timedelta(seconds=60)).isoformat()
    ev.decode(raw(occurred_at=soon))  # within the default 300 s
    ev.configure(EventSettings(future_tolerance_sec=10))
    with pytest.raises(ev.EventValidationError, match="more than 10s in the future"):
        ev.decode(raw(occurred_at=soon))
    past = (datetime.now(UTC) - timedelta(days=3650)).isoformat()
    ev.decode(raw(occurred_at=past))


def test_context_limits_come_from_settings() -> None:
    ev.configure(EventSettings(max_context_keys=2))
    ev.decode(raw(context={"a": 1, "b": 2}))
    with pytest.raises(ev.EventValidationError, match="context: has 3 keys; at most 2"):
        ev.decode(raw(context={"a": 1, "b": 2, "c": 3}))


def test_newer_v1_event_with_unknown_fields_is_read_and_unknowns_dropped() -> None:
    """Evolution rule: a v1 reader reads a newer v1 event (extra optional fields) and ignores them."""
    newer = raw(type="rate", rating=4, dwell_ms=1234, device_v2={"os": "x"}, tags=["a"])
    e = ev.decode(newer)
    assert e.rating == 4.0
    reencoded = json.loads(ev.encode(e))
    assert "dwell_ms" not in reencoded and "tags" not in reencoded


def test_from_mapping_lax_converts_csv_strings() -> None:
    row = base(type="rate", rating="4.5", rec_id="r", position="3", occurred_at="2024-05-01T12:00:00+00:00")
    e = ev.from_mapping(row, strict=False)
    assert e.rating == 4.5 and e.position == 3
    with pytest.raises(ev.EventValidationError, match="rating"):
        ev.from_mapping(base(type="rate", rating="4.4"), strict=False)
    with pytest.raises(ev.EventValidationError, match="control characters"):
        ev.from_mapping(base(user_id="bad\x00id"))


def test_validate_checks_hand_built_events() -> None:
    ok = ev.InteractionEvent(
        event_id=uuid.uuid4(), user_id="u", item_id="i", type=ev.EventType.PLAY, occurred_at=datetime.now(UTC)
    )
    assert ev.decode(ev.validate(ok)) == ok
    bad = ev.InteractionEvent(
        event_id=uuid.uuid4(),
        user_id="u" * 500,
        item_id="i",
        type=ev.EventType.PLAY,
        occurred_at=datetime.now(UTC),
    )
    with pytest.raises(ev.EventValidationError, match="user_id"):
        ev.validate(bad)
    # cross-field rules already hold at construction
    with pytest.raises(ValueError, match="rating"):
        ev.InteractionEvent(
            event_id=uuid.uuid4(),
            user_id="u",
            item_id="i",
            type=ev.EventType.RATE,
            occurred_at=datetime.now(UTC),
        )


def test_with_received_at_stamps_a_copy() -> None:
    e = ev.decode(raw())
    stamped = e.with_received_at()
    assert e.received_at is None and stamped.received_at is not None
    assert stamped.received_at.tzinfo is not None


def test_stamp_received_at_in_place_for_servers() -> None:
    e = ev.decode(raw())
    when = datetime(2024, 5, 1, 12, 0, 1, tzinfo=UTC)
    assert e.stamp_received_at(when) is e and e.received_at == when
    assert ev.decode(ev.encode(e)).received_at == when


@pytest.mark.parametrize(
    ("src", "expected"), [(0.5, 1.0), (1, 1.0), (2.5, 2.5), (3.3, 3.5), (3.74, 3.5), (3.75, 4.0), (9, 5.0)]
)
def test_normalize_rating_for_importers(src: float, expected: float) -> None:
    assert ev.normalize_rating(src) == expected


# ---- JSON Schema -----------------------------------------------------------------------------


def test_committed_json_schema_is_up_to_date() -> None:
    assert ev.JSON_SCHEMA_PATH.read_text() == ev.json_schema_text(), (
        "schemas/jsonschema/interaction_event.v1.json is stale: run `lambdarec events schema`"
    )


@pytest.mark.parametrize(
    "payload",
    [
        base(),
        base(type="rate", rating=4.5),
        base(type="rate"),
        base(type="like", rating=3),
        base(type="like", rating=None),
        base(rec_id="r"),
        base(rec_id="r", position=1),
        base(user_id="a\nb"),
        base(user_id=""),
        base(type="nope"),
        base(source="web", context={"device": "ios"}),
        base(context={f"k{i}": i for i in range(40)}),
        base(schema_version=2),
        base(extra_field=1),
        base(event_id=...),
    ],
)
def test_json_schema_agrees_with_the_decoder(payload: dict[str, Any]) -> None:
    validator = jsonschema.Draft202012Validator(json.loads(ev.JSON_SCHEMA_PATH.read_text()))
    try:
        ev.decode(json.dumps(payload).encode())
        python_ok = True
    except ev.EventValidationError:
        python_ok = False
    assert validator.is_valid(payload) == python_ok


# ---- properties ------------------------------------------------------------------------------

ids = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters=[chr(c) for c in [*range(32), 127]]),
    min_size=1,
    max_size=128,
)
# context text never holds NUL: the contract rejects it (Postgres cannot store it), tested above
no_nul_text = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), max_size=20)
json_scalars = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | no_nul_text
times = st.datetimes(
    min_value=datetime(1990, 1, 1), max_value=datetime(2035, 1, 1), timezones=st.just(UTC)
).filter(lambda d: d <= datetime.now(UTC))


@st.composite
def events(draw: st.DrawFn) -> ev.InteractionEvent:
    etype = draw(st.sampled_from(list(ev.EventType)))
    with_rec = draw(st.booleans())
    finite = st.floats(allow_nan=False, allow_infinity=False)
    return ev.InteractionEvent(
        event_id=draw(st.uuids()),
        user_id=draw(ids),
        item_id=draw(ids),
        type=etype,
        occurred_at=draw(times),
        rating=draw(st.integers(2, 10)) / 2 if etype is ev.EventType.RATE else None,
        value=draw(st.none() | finite),
        watch_duration_sec=draw(st.none() | st.floats(0, 1e7)),
        session_id=draw(st.none() | ids),
        source=draw(st.none() | st.sampled_from(list(ev.Source))),
        rec_id=draw(ids) if with_rec else None,
        position=draw(st.integers(0, ev.POSITION_MAX)) if with_rec else None,
        context=draw(st.none() | st.dictionaries(no_nul_text, json_scalars, max_size=8)),
        received_at=draw(st.none() | times),
    )


@settings(max_examples=300, deadline=None)
@given(events())
def test_valid_events_round_trip(event: ev.InteractionEvent) -> None:
    encoded = ev.validate(event)
    assert ev.decode(encoded) == event
    assert ev.from_mapping(msgspec.json.decode(encoded)) == event


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_never_crash_decode_event(data: bytes) -> None:
    from schemas.dead_letters import DeadLetter, decode_event

    result = decode_event(data)
    assert isinstance(result, ev.InteractionEvent | DeadLetter)
    if isinstance(result, DeadLetter):
        assert result.payload == data and result.reason != "internal_error"


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from([*ev.InteractionEvent.__struct_fields__, "x"]), json_scalars))
def test_arbitrary_objects_never_crash_decode_event(obj: dict[str, Any]) -> None:
    from schemas.dead_letters import DeadLetter, decode_event

    result = decode_event(json.dumps(obj).encode())
    assert isinstance(result, ev.InteractionEvent | DeadLetter)
    if isinstance(result, DeadLetter):
        assert result.reason != "internal_error", result.error


@pytest.mark.parametrize(
    "context",
    [{"note": "a\u0000b"}, {"nested": {"deep": ["x", "\u0000"]}}, {"k\u0000": "v"}],
)
def test_context_with_nul_is_rejected_because_postgres_cannot_store_it(context: dict[str, Any]) -> None:
    with pytest.raises(ev.EventValidationError) as exc:
        ev.decode(raw(context=context))
    assert exc.value.field == "context" and "NUL" in exc.value.message


def test_context_with_other_escapes_is_fine() -> None:
    event = ev.decode(raw(context={"note": "tab\there \u00e9 \u2603"}))
    assert event.context == {"note": "tab\there \u00e9 \u2603"}

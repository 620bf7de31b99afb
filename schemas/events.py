"""``InteractionEvent`` v1: the contract of the ``interactions`` topic, and its codec.

One JSON object per Kafka record, key = ``user_id``. Every producer (SDK, HTTP ingest, importers,
DLQ replay) and every consumer goes through :func:`decode` / :func:`encode` here, so the rules
are written once.

Why msgspec and not pydantic: ``benchmarks/bench_event_codec.py`` decodes+validates the same
100k JSON payloads with both, enforcing the same rules: msgspec did ~400k events/s (2.5 µs each)
against pydantic v2's ~170k/s (5.9 µs) on the 2-core dev machine, and it expresses every rule
below with errors that name the field. Pydantic stays the tool for settings and HTTP bodies.

Rules (the JSON Schema in ``schemas/jsonschema/interaction_event.v1.json`` is generated from this
module by :func:`write_json_schema` / ``lambdarec events schema``):

* ``event_id`` is a UUID chosen by the producer. It is the idempotency key: a retried send has the
  same id and consumers drop duplicates by it.
* ``user_id``, ``item_id``, ``session_id``, ``rec_id``: 1..128 characters, no control characters.
* ``rating`` is 1.0..5.0 in 0.5 steps, required exactly when ``type`` is ``rate`` and forbidden
  otherwise. MovieLens also has 0.5: importers map source ratings with :func:`normalize_rating`
  (round to the nearest half, clamp to 1.0..5.0), so 0.5 becomes 1.0. The contract itself never
  carries 0.5, which keeps "1 = worst" true for every consumer.
* ``rec_id`` and ``position`` (0-based index in the served list) are set together: the action
  responds to a list the API served, or neither is set.
* ``context`` is a free-form JSON object bounded by ``events.max_context_keys`` keys and
  ``events.max_context_bytes`` serialized bytes.
* ``occurred_at`` is the event time, timezone-aware; more than ``events.future_tolerance_sec``
  ahead of the decoding machine's clock is rejected (clock skew is tolerated, bogus clocks not).
* ``received_at`` is stamped by the first server that accepts the event (HTTP ingest, processors);
  producers leave it out.

Evolution: within v1 only optional fields are added. Unknown fields are **ignored and dropped**: a
v1 reader decodes a newer v1 event (the test suite checks this), and anything that re-encodes an
event (HTTP ingest stamping ``received_at``, DLQ replay) writes the fields it knows. So when a field
is added, deploy readers and the ingest API before writers. A breaking change is v2 with a new
``schema_version`` (rejected by v1 readers, which then dead-letter it instead of misreading it).
"""

from __future__ import annotations

import json
import math
import re
import time
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import msgspec

from lambdarec.settings import EventSettings

SCHEMA_VERSION: Final = 1
JSON_SCHEMA_PATH = Path(__file__).resolve().parent / "jsonschema" / "interaction_event.v1.json"
ID_MAX_LENGTH = 128
RATING_MIN, RATING_MAX, RATING_STEP = 1.0, 5.0, 0.5
POSITION_MAX = 10_000

# "No control characters" for the JSON Schema. Python's ``$`` matches before a trailing newline,
# hence a negative lookahead (valid in ECMA-262 and Python regexes alike).
_NO_CONTROL_CHARS = r"^(?!.*[\x00-\x1f\x7f])"
# The decoder does not run that regex on every id (it halved throughput): JSON forbids raw
# control characters in strings except DEL, so an id can only hold one if the payload contains a
# backslash escape or a DEL byte. decode() checks the ids only then (see _check_ids).
_CONTROL_CHAR = re.compile(r"[\x00-\x1f\x7f]")
_ID_FIELDS = ("user_id", "item_id", "session_id", "rec_id")

Id = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=ID_MAX_LENGTH,
        description=f"1..{ID_MAX_LENGTH} characters, no control characters",
    ),
]
AwareDatetime = Annotated[datetime, msgspec.Meta(tz=True, description="RFC 3339 with a UTC offset")]
Rating = Annotated[
    float,
    msgspec.Meta(
        ge=RATING_MIN,
        le=RATING_MAX,
        multiple_of=RATING_STEP,
        description="1.0..5.0 in 0.5 steps; required when type is 'rate', forbidden otherwise",
    ),
]
NonNegative = Annotated[float, msgspec.Meta(ge=0)]
Position = Annotated[int, msgspec.Meta(ge=0, le=POSITION_MAX, description="0-based index in the served list")]


class EventType(StrEnum):
    """What the user did. ``rate`` carries a rating; the others are implicit feedback."""

    VIEW = "view"
    CLICK = "click"
    PLAY = "play"
    RATE = "rate"
    LIKE = "like"
    DISLIKE = "dislike"
    FAVORITE = "favorite"
    WATCHLIST = "watchlist"
    PURCHASE = "purchase"
    SAVE = "save"
    SHARE = "share"


class Source(StrEnum):
    """The surface the event came from."""

    WEB = "web"
    MOBILE = "mobile"
    EMAIL = "email"
    PUSH = "push"


def _schema_version() -> Literal[1]:
    # A default_factory (not a plain default) so that ``omit_defaults`` still writes
    # ``schema_version`` on the wire: non-Python readers must see it.
    return SCHEMA_VERSION


class InteractionEvent(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """One user-item interaction (v1). Construct via :func:`decode` or :func:`from_mapping`.

    Calling the constructor directly checks only the cross-field rules (``__post_init__``), not
    types and bounds: msgspec validates on decode. :func:`validate` checks a hand-built instance.

    >>> e = decode(b'{"event_id": "0b7e7f7c-4a4b-4f35-9a8a-5a0f2f3b0c11", "user_id": "u1",'
    ...            b' "item_id": "i9", "type": "rate", "rating": 4.5,'
    ...            b' "occurred_at": "2024-05-01T12:00:00Z"}')
    >>> e.rating, e.type
    (4.5, <EventType.RATE: 'rate'>)
    """

    event_id: uuid.UUID
    user_id: Id
    item_id: Id
    type: EventType
    occurred_at: AwareDatetime
    rating: Rating | None = None
    value: float | None = None
    watch_duration_sec: NonNegative | None = None
    session_id: Id | None = None
    source: Source | None = None
    rec_id: Id | None = None
    position: Position | None = None
    context: dict[str, Any] | None = None
    schema_version: Literal[1] = msgspec.field(default_factory=_schema_version)
    received_at: AwareDatetime | None = None

    def __post_init__(self) -> None:
        # The rules a type annotation cannot say. Runs on every decode, so it is written for speed
        # (this method is most of the decode cost). Errors are raised as "<field>: <message>";
        # msgspec wraps them in a ValidationError and _as_error() splits the field back out.
        if self.type == EventType.RATE:
            if self.rating is None:
                raise ValueError("rating: required when type is 'rate'")
        elif self.rating is not None:
            raise ValueError(f"rating: only allowed when type is 'rate' (type is '{self.type}')")
        if (self.rec_id is None) is not (self.position is None):
            raise ValueError("rec_id: rec_id and position must be set together (or neither)")
        if self.value is not None and not math.isfinite(self.value):
            raise ValueError("value: must be a finite number")
        if self.watch_duration_sec is not None and not math.isfinite(self.watch_duration_sec):
            raise ValueError("watch_duration_sec: must be a finite number")
        lim = _limits or limits()
        if self.context is not None:
            if len(self.context) > lim.max_context_keys:
                raise ValueError(
                    f"context: has {len(self.context)} keys; at most {lim.max_context_keys} allowed"
                )
            encoded = _encoder.encode(self.context)
            if len(encoded) > lim.max_context_bytes:
                raise ValueError(
                    f"context: is {len(encoded)} bytes serialized; at most {lim.max_context_bytes}"
                )
            # JSON allows "\u0000" but Postgres text/jsonb cannot store it: accepting it here would
            # make the speed layer's insert fail on every retry (a poison record).
            if b"\\u0000" in encoded:
                raise ValueError("context: must not contain the NUL character (\\u0000)")
        # _horizon is "now + tolerance" as of its last refresh, so it is never later than the true
        # horizon: an event at or before it is certainly fine, no clock read needed (the common
        # case, and a third of the decode cost otherwise). Only later events refresh and recheck.
        if self.occurred_at > _horizon and self.occurred_at > _refresh_horizon(lim):
            raise ValueError(
                f"occurred_at: {self.occurred_at.isoformat()} is more than "
                f"{lim.future_tolerance_sec:g}s in the future"
            )

    def with_received_at(self, when: datetime | None = None) -> InteractionEvent:
        """A copy stamped with the server receive time (now, UTC, by default)."""
        return msgspec.structs.replace(self, received_at=when or datetime.now(UTC))

    def stamp_received_at(self, when: datetime) -> InteractionEvent:
        """Set ``received_at`` **in place** and return self: for servers stamping an event they
        just decoded and nobody else holds. ``with_received_at`` copies and re-runs the checks
        (half the cost of a decode); on the ingest path that is pure overhead."""
        msgspec.structs.force_setattr(self, "received_at", when)
        return self

    @property
    def key(self) -> bytes:
        """The Kafka record key: ``user_id`` (keeps one user's events ordered on one partition)."""
        return self.user_id.encode()


_FIELDS = frozenset(InteractionEvent.__struct_fields__)


class ErrorKind(StrEnum):
    """Why an event was rejected, coarse enough to count (the dead-letter ``reason``)."""

    MALFORMED_JSON = "malformed_json"
    NOT_AN_OBJECT = "not_an_object"
    OVERSIZED = "oversized"
    UNSUPPORTED_VERSION = "unsupported_version"
    INVALID_FIELD = "invalid_field"


class EventValidationError(ValueError):
    """An event that breaks the contract. ``field`` names the offending field (None: whole event).

    ``str(err)`` is ``"<field>: <message>"`` so a log line or a CLI report says what to fix.
    """

    def __init__(self, field: str | None, message: str, kind: ErrorKind = ErrorKind.INVALID_FIELD) -> None:
        self.field = field
        self.message = message
        self.kind = kind
        super().__init__(f"{field}: {message}" if field else message)

    def as_dict(self) -> dict[str, str | None]:
        return {"field": self.field, "message": self.message}


# ------------------------------------------------------------------------------------------------
# limits (operational, from settings.events)

_limits: EventSettings | None = None
_encoder = msgspec.json.Encoder()
_horizon = datetime.min.replace(tzinfo=UTC)


def _refresh_horizon(lim: EventSettings) -> datetime:
    """Set and return the latest acceptable ``occurred_at`` (now + future tolerance)."""
    global _horizon
    _horizon = datetime.fromtimestamp(time.time() + lim.future_tolerance_sec, UTC)
    return _horizon


def limits() -> EventSettings:
    """The limits in effect: ``settings.events`` unless :func:`configure` set others."""
    global _limits
    if _limits is None:
        from lambdarec.settings import get_settings

        _limits = get_settings().events
    return _limits


def configure(events: EventSettings | None) -> None:
    """Use these limits from now on (None: re-read settings on next use). For apps and tests."""
    global _limits, _horizon
    _limits = events
    _horizon = datetime.min.replace(tzinfo=UTC)  # the tolerance may have shrunk


# ------------------------------------------------------------------------------------------------
# codec

_decoder = msgspec.json.Decoder(InteractionEvent)
_AT_PATH = re.compile(r"^(?P<msg>.*) - at `\$(?P<path>[^`]*)`$", re.S)
_MISSING = re.compile(r"^Object missing required field `(?P<field>[^`]+)`")
_ENUM_HINTS = {
    "type": ", ".join(EventType),
    "source": ", ".join(Source),
    "schema_version": f"{SCHEMA_VERSION} (a v{SCHEMA_VERSION} reader cannot read other versions)",
}
_FIELD_PREFIX = re.compile(r"^(?P<field>[a-z_]+): (?P<msg>.*)$", re.S)


def _as_error(exc: msgspec.MsgspecError) -> EventValidationError:
    """Turn msgspec's message into (field, message)."""
    text = str(exc)
    if isinstance(exc, msgspec.DecodeError) and not isinstance(exc, msgspec.ValidationError):
        return EventValidationError(None, f"malformed JSON: {text}", ErrorKind.MALFORMED_JSON)
    m = _MISSING.match(text)
    if m:
        return EventValidationError(m["field"], "field required")
    m = _AT_PATH.match(text)
    if m:
        field, msg = m["path"].lstrip(".") or None, m["msg"]
        if field in _ENUM_HINTS and msg.startswith("Invalid enum value"):
            msg = f"{msg}; expected one of {_ENUM_HINTS[field]}"
            if field == "schema_version":
                return EventValidationError(field, msg, ErrorKind.UNSUPPORTED_VERSION)
        return EventValidationError(field, msg)
    m = _FIELD_PREFIX.match(text)
    if m and m["field"] in _FIELDS:
        return EventValidationError(m["field"], m["msg"])
    if text.startswith("Expected `object`"):
        return EventValidationError(None, f"an event must be a JSON object ({text})", ErrorKind.NOT_AN_OBJECT)
    return EventValidationError(None, text)


def _check_ids(event: InteractionEvent) -> None:
    for name in _ID_FIELDS:
        v = getattr(event, name)
        if v is not None and _CONTROL_CHAR.search(v):
            raise EventValidationError(name, "must not contain control characters")


def decode(raw: bytes | bytearray | str) -> InteractionEvent:
    """Parse and validate one JSON-encoded event. Raises :class:`EventValidationError`.

    The only way in for JSON: every rule, including the size limit and the id character check,
    is applied here (a bare ``msgspec.json.Decoder(InteractionEvent)`` skips those two).
    """
    # the limit is on UTF-8 bytes (what Kafka stores); str.isascii() is O(1), so ASCII text pays nothing
    size = len(raw) if not isinstance(raw, str) or raw.isascii() else len(raw.encode())
    max_bytes = (_limits or limits()).max_event_bytes
    if size > max_bytes:
        raise EventValidationError(
            None, f"event is {size} bytes; at most {max_bytes} allowed", ErrorKind.OVERSIZED
        )
    try:
        event = _decoder.decode(raw)
    except msgspec.MsgspecError as exc:
        raise _as_error(exc) from None
    except RecursionError:  # e.g. 3,000 nested [ in an unknown field: a few KB, still an error
        raise EventValidationError(
            None, "malformed JSON: nested too deeply", ErrorKind.MALFORMED_JSON
        ) from None
    if isinstance(raw, str):
        if "\\" in raw or "\x7f" in raw:
            _check_ids(event)
    elif b"\\" in raw or b"\x7f" in raw:
        _check_ids(event)
    return event


def encode(event: InteractionEvent) -> bytes:
    """Compact JSON; optional fields that are unset are left out, ``schema_version`` is always in."""
    return _encoder.encode(event)


def validate(event: InteractionEvent) -> bytes:
    """Check a hand-built event against every rule and return its encoding (ready to send).

    The struct constructor does not check types and bounds, so this re-decodes the encoding:
    the same path a consumer will take, which is the point.
    """
    raw = encode(event)
    decode(raw)
    return raw


def from_mapping(data: Any, *, strict: bool = True) -> InteractionEvent:
    """Validate a decoded JSON value (dict). ``strict=False`` also converts strings ("4.5",
    ISO timestamps, UUID strings) as they come from CSV files."""
    try:
        event = msgspec.convert(data, InteractionEvent, strict=strict)
    except msgspec.MsgspecError as exc:
        raise _as_error(exc) from None
    _check_ids(event)
    return event


def normalize_rating(value: float) -> float:
    """Map a source rating onto the contract's 1.0..5.0 half-steps (MovieLens 0.5 -> 1.0).

    >>> [normalize_rating(x) for x in (0.5, 3.3, 3.75, 7)]
    [1.0, 3.5, 4.0, 5.0]
    """
    stepped = math.floor(value / RATING_STEP + 0.5) * RATING_STEP
    return min(RATING_MAX, max(RATING_MIN, stepped))


# ------------------------------------------------------------------------------------------------
# JSON Schema


def schema_components(
    events: EventSettings | None = None, ref_template: str = "#/$defs/{name}"
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(InteractionEvent schema, the schemas it references by ``ref_template``): the building
    blocks of :func:`json_schema` and of the OpenAPI document of the ingest API."""
    lim = events or EventSettings()
    _, defs = msgspec.json.schema_components([InteractionEvent], ref_template=ref_template)
    event = defs.pop("InteractionEvent")
    event.pop("description", None)  # the class docstring is for Python readers
    props = event["properties"]
    props["schema_version"]["default"] = SCHEMA_VERSION
    for name in _ID_FIELDS:
        s = props[name]
        (s["anyOf"][0] if "anyOf" in s else s)["pattern"] = _NO_CONTROL_CHARS
    props["event_id"]["description"] = "UUID chosen by the producer; the idempotency key"
    props["occurred_at"]["description"] = (
        f"event time, RFC 3339 with offset; at most {lim.future_tolerance_sec:g}s in the future"
    )
    props["received_at"]["description"] = "stamped by the server that accepted the event"
    ctx = props["context"]["anyOf"][0]
    ctx["maxProperties"] = lim.max_context_keys
    ctx["description"] = f"free-form; at most {lim.max_context_bytes} bytes serialized"
    event["additionalProperties"] = True  # unknown fields are ignored (forward compatibility)
    event["allOf"] = [
        {
            "if": {"properties": {"type": {"const": "rate"}}},
            "then": {"required": ["rating"], "properties": {"rating": {"type": "number"}}},
            "else": {"properties": {"rating": {"type": "null"}}},
        },
        {
            "if": {"required": ["rec_id"], "properties": {"rec_id": {"type": "string"}}},
            "then": {"required": ["position"], "properties": {"position": {"type": "integer"}}},
        },
        {
            "if": {"required": ["position"], "properties": {"position": {"type": "integer"}}},
            "then": {"required": ["rec_id"], "properties": {"rec_id": {"type": "string"}}},
        },
    ]
    return event, defs


def json_schema(events: EventSettings | None = None) -> dict[str, Any]:
    """JSON Schema (2020-12) of InteractionEvent v1 with the limits of ``events`` (default values
    when None, so the committed file does not depend on the environment)."""
    lim = events or EventSettings()
    event, defs = schema_components(lim)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://lambdarec.dev/schemas/interaction_event.v1.json",
        "title": "InteractionEvent",
        "description": (
            f"lambdarec interaction event, schema_version {SCHEMA_VERSION}. "
            f"At most {lim.max_event_bytes} bytes serialized."
        ),
        **event,
        "$defs": defs,
    }


def json_schema_text(events: EventSettings | None = None) -> str:
    """The exact text of the committed schema file."""
    return json.dumps(json_schema(events), indent=2, ensure_ascii=False) + "\n"


def write_json_schema(path: Path = JSON_SCHEMA_PATH, events: EventSettings | None = None) -> Path:
    """Regenerate the committed JSON Schema file (``lambdarec events schema`` calls this)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json_schema_text(events))
    return path

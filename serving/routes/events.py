"""``POST /v1/events``: HTTP ingest of interaction events into Kafka.

Status codes (also in the OpenAPI document, with examples):

* **202** every event was valid and the broker acknowledged every one (acks=all).
* **207** mixed batch: the valid events were acknowledged (``accepted``), the invalid ones are
  listed in ``rejected`` with their index and field errors. Nothing needs resending but those.
* **422** no event was valid; nothing was sent. Same body as 207.
* **400** the body is not JSON, or neither an event object nor a non-empty array of them.
* **413** the body exceeds ``events.max_request_bytes`` or the array exceeds ``events.max_batch_size``.
  (One event over ``events.max_event_bytes`` is a per-event rejection instead.)
* **503** the broker did not acknowledge some valid events in time (or the queue is full). The body
  lists what *was* acknowledged and what is ``unconfirmed``; resending the unconfirmed events is
  safe because consumers deduplicate on ``event_id``.

Responses are written with orjson directly (a 1000-id answer through response-model validation
costs more than the ingest itself); the pydantic models below exist to document them.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import msgspec
import orjson
from fastapi import APIRouter, HTTPException, Request, Response
from pydantic import BaseModel, Field

from lambdarec.settings import Settings
from schemas import events as ev
from serving.deps import PublisherDep, SettingsDep
from serving.publisher import PublishUnavailable

router = APIRouter(tags=["events"])

_batch_decoder = msgspec.json.Decoder(list[msgspec.Raw])
_loose_decoder = msgspec.json.Decoder()


class FieldError(BaseModel):
    field: str | None = Field(description="offending field; null when the whole event is at fault")
    message: str


class RejectedEvent(BaseModel):
    index: int = Field(description="0-based position in the request (0 for a single event)")
    event_id: str | None = Field(description="the event_id, when one could be read")
    errors: list[FieldError]


class UnconfirmedEvent(BaseModel):
    event_id: str
    error: str


class IngestResult(BaseModel):
    """Body of 202, 207 and 422."""

    accepted: list[str] = Field(description="event_ids acknowledged by the broker")
    rejected: list[RejectedEvent] = Field(description="invalid events; nothing of these was sent")


class IngestUnavailable(BaseModel):
    """Body of 503."""

    detail: str
    accepted: list[str] = Field(description="event_ids acknowledged anyway")
    unconfirmed: list[UnconfirmedEvent] = Field(description="valid events not acknowledged: resend")
    rejected: list[RejectedEvent]


class ErrorDetail(BaseModel):
    detail: str


_EID = "6f1c1a52-9d0e-4a53-8a35-2f7f1b9e3c01"
_EID2 = "1d2d3b8e-51a4-4c8e-9f43-8b1f0e6a7c22"
_EXAMPLE_EVENT = {
    "event_id": _EID,
    "user_id": "u42",
    "item_id": "movie-318",
    "type": "rate",
    "rating": 4.5,
    "occurred_at": "2025-01-31T20:15:00Z",
    "source": "web",
}
_EXAMPLE_BATCH = [
    _EXAMPLE_EVENT,
    {
        "event_id": _EID2,
        "user_id": "u42",
        "item_id": "movie-1",
        "type": "click",
        "rec_id": "r-77",
        "position": 3,
        "occurred_at": "2025-01-31T20:16:02+01:00",
        "context": {"device": "ios", "experiment": "ranker-b"},
    },
]
_REJECTED_EXAMPLE = {
    "index": 1,
    "event_id": _EID2,
    "errors": [{"field": "rating", "message": "only allowed when type is 'rate' (type is 'click')"}],
}


def _json(model: type[BaseModel], example: Any, description: str) -> dict[str, Any]:
    return {"model": model, "description": description, "content": {"application/json": {"example": example}}}


RESPONSES: dict[int | str, dict[str, Any]] = {
    202: _json(IngestResult, {"accepted": [_EID, _EID2], "rejected": []}, "All events acknowledged."),
    207: _json(
        IngestResult,
        {"accepted": [_EID], "rejected": [_REJECTED_EXAMPLE]},
        "Mixed batch: valid events acknowledged, invalid ones listed.",
    ),
    400: _json(ErrorDetail, {"detail": "malformed JSON body: Input data was truncated"}, "Not JSON."),
    413: _json(ErrorDetail, {"detail": "batch has 5000 events; at most 1000"}, "Body or batch too large."),
    422: _json(
        IngestResult,
        {"accepted": [], "rejected": [{**_REJECTED_EXAMPLE, "index": 0}]},
        "No valid event; nothing sent.",
    ),
    503: _json(
        IngestUnavailable,
        {
            "detail": "the broker did not acknowledge 1 event(s); resending them is safe",
            "accepted": [_EID],
            "unconfirmed": [{"event_id": _EID2, "error": "not acknowledged within 10s"}],
            "rejected": [],
        },
        "Broker unavailable: some valid events not acknowledged.",
    ),
}


def request_body_openapi(settings: Settings) -> dict[str, Any]:
    """The requestBody of the route: the body is parsed by hand (per-event errors, speed), so
    FastAPI cannot infer it. Refers to ``components/schemas/InteractionEvent`` (see app.py)."""
    ref = {"$ref": "#/components/schemas/InteractionEvent"}
    batch = {"type": "array", "items": ref, "minItems": 1, "maxItems": settings.events.max_batch_size}
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"oneOf": [ref, batch]},
                    "examples": {
                        "single": {"summary": "one event", "value": _EXAMPLE_EVENT},
                        "batch": {"summary": "a batch", "value": _EXAMPLE_BATCH},
                    },
                }
            },
        }
    }


def _respond(status: int, body: dict[str, Any]) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refusing (413) past ``limit`` bytes without buffering more than that."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"body is {declared} bytes; at most {limit} (events.max_request_bytes)")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"body exceeds {limit} bytes (events.max_request_bytes)")
        chunks.append(chunk)
    return b"".join(chunks)


def split_body(body: bytes, max_batch: int) -> tuple[list[bytes], bool]:
    """(raw events, was it an array). Raises HTTPException 400/413 for a body that is not one."""
    head = body.lstrip()[:1]
    if head == b"{":
        return [body], False
    if head != b"[":
        raise HTTPException(400, "the body must be an event object or a JSON array of events")
    try:
        items = _batch_decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise HTTPException(400, f"malformed JSON body: {exc}") from None
    except RecursionError:  # "[[[[..." deeper than the decoder's stack
        raise HTTPException(400, "malformed JSON body: nested too deeply") from None
    if not items:
        raise HTTPException(400, "the batch is empty")
    if len(items) > max_batch:
        raise HTTPException(
            413, f"batch has {len(items)} events; at most {max_batch} (events.max_batch_size)"
        )
    return [bytes(i) for i in items], True


def _event_id_hint(raw: bytes) -> str | None:
    """The event_id of an invalid event when it can still be read (failure path only)."""
    try:
        value = _loose_decoder.decode(raw)
    except (msgspec.DecodeError, RecursionError):
        return None
    eid = value.get("event_id") if isinstance(value, dict) else None
    return eid if isinstance(eid, str) else None


@router.post(
    "/v1/events",
    status_code=202,
    summary="Ingest one event or a batch",
    response_model=None,
    responses=RESPONSES,
)
async def ingest_events(request: Request, settings: SettingsDep, publisher: PublisherDep) -> Response:
    """Validate each event against InteractionEvent v1, stamp ``received_at``, produce the valid
    ones to Kafka (key = user_id) and answer once the broker acknowledged them. See the module
    docstring for the status codes."""
    limits = settings.events
    body = await _read_body(request, limits.max_request_bytes)
    items, is_batch = split_body(body, limits.max_batch_size)

    received_at = datetime.now(UTC)
    records: list[tuple[bytes, bytes]] = []
    ids: list[uuid.UUID] = []  # orjson writes UUIDs in C; str(uuid) is a slow Python method
    rejected: list[dict[str, Any]] = []
    for index, raw in enumerate(items):
        try:
            event = ev.decode(raw).stamp_received_at(received_at)
        except ev.EventValidationError as exc:
            if not is_batch and exc.kind is ev.ErrorKind.MALFORMED_JSON:
                detail = exc.message.removeprefix("malformed JSON: ")
                raise HTTPException(400, f"malformed JSON body: {detail}") from None
            rejected.append({"index": index, "event_id": _event_id_hint(raw), "errors": [exc.as_dict()]})
            continue
        records.append((event.key, ev.encode(event)))
        ids.append(event.event_id)

    if not records:
        return _respond(422, {"accepted": [], "rejected": rejected})
    try:
        results = await publisher.publish(records)
    except PublishUnavailable as exc:
        return _respond(
            503,
            {
                "detail": f"{exc}; nothing was sent, resending is safe",
                "accepted": [],
                "unconfirmed": [{"event_id": i, "error": str(exc)} for i in ids],
                "rejected": rejected,
            },
        )
    accepted = [i for i, r in zip(ids, results, strict=True) if r is None]
    if len(accepted) < len(ids):
        unconfirmed = [
            {"event_id": i, "error": r} for i, r in zip(ids, results, strict=True) if r is not None
        ]
        return _respond(
            503,
            {
                "detail": (
                    f"the broker did not acknowledge {len(unconfirmed)} event(s); resending them is safe "
                    "(deduplicated by event_id)"
                ),
                "accepted": accepted,
                "unconfirmed": unconfirmed,
                "rejected": rejected,
            },
        )
    return _respond(207 if rejected else 202, {"accepted": accepted, "rejected": rejected})

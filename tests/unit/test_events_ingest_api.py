"""POST /v1/events status codes and bodies, with an in-memory publisher (no Kafka)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx
import pytest

from lambdarec.settings import EventSettings, ServingSettings, Settings
from schemas import events as ev
from serving.app import create_app
from serving.publisher import PublishUnavailable


class FakePublisher:
    """Records what would be produced; ``fail`` maps record index -> error."""

    def __init__(self) -> None:
        self.records: list[tuple[bytes, bytes]] = []
        self.fail: dict[int, str] = {}
        self.unavailable = False

    def start(self) -> None:
        pass

    async def publish(self, records: Sequence[tuple[bytes, bytes]]) -> list[str | None]:
        if self.unavailable:
            raise PublishUnavailable("the ingest queue is full (broker slow or down)")
        self.records.extend(records)
        return [self.fail.get(i) for i in range(len(records))]


def event(**over: Any) -> dict[str, Any]:
    d = {
        "event_id": str(uuid.uuid4()),
        "user_id": "u1",
        "item_id": "i1",
        "type": "click",
        "occurred_at": "2024-05-01T12:00:00Z",
    }
    d.update(over)
    return d


@pytest.fixture
def publisher() -> FakePublisher:
    return FakePublisher()


@pytest.fixture
async def client(publisher: FakePublisher) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        events=EventSettings(max_batch_size=10, max_request_bytes=64 * 1024),
        serving=ServingSettings(require_api_keys=False),  # keys: tests/unit/test_serving_security.py
    )
    app = create_app(settings, publisher=publisher)  # type: ignore[arg-type]
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c,
    ):
        yield c
    ev.configure(None)


async def test_single_event_202_and_stamped(client: httpx.AsyncClient, publisher: FakePublisher) -> None:
    e = event()
    r = await client.post("/v1/events", json=e)
    assert r.status_code == 202
    assert r.json() == {"accepted": [e["event_id"]], "rejected": []}
    (key, value), *_ = publisher.records
    assert key == b"u1"
    sent = json.loads(value)
    assert sent["event_id"] == e["event_id"] and sent["received_at"] and sent["schema_version"] == 1


async def test_batch_all_valid_202(client: httpx.AsyncClient, publisher: FakePublisher) -> None:
    batch = [event(user_id=f"u{i}") for i in range(10)]
    r = await client.post("/v1/events", json=batch)
    assert r.status_code == 202
    assert r.json()["accepted"] == [e["event_id"] for e in batch]
    assert [k for k, _ in publisher.records] == [f"u{i}".encode() for i in range(10)]


async def test_mixed_batch_207_lists_rejected_with_index_and_field(
    client: httpx.AsyncClient, publisher: FakePublisher
) -> None:
    good1, good2 = event(), event(type="rate", rating=4)
    bad_rating = event(type="view", rating=5)
    bad_type = event(type="teleport")
    r = await client.post("/v1/events", json=[good1, bad_rating, good2, bad_type, 17])
    assert r.status_code == 207
    body = r.json()
    assert body["accepted"] == [good1["event_id"], good2["event_id"]]
    rejected = {x["index"]: x for x in body["rejected"]}
    assert set(rejected) == {1, 3, 4}
    assert rejected[1]["event_id"] == bad_rating["event_id"]
    assert rejected[1]["errors"][0]["field"] == "rating"
    assert rejected[3]["errors"][0]["field"] == "type"
    assert rejected[4]["errors"] == [{"field": None, "message": rejected[4]["errors"][0]["message"]}]
    assert len(publisher.records) == 2  # nothing of the invalid ones was sent


async def test_all_invalid_422_nothing_sent(client: httpx.AsyncClient, publisher: FakePublisher) -> None:
    r = await client.post("/v1/events", json=event(event_id="nope"))
    assert r.status_code == 422
    assert r.json()["rejected"][0]["errors"][0]["field"] == "event_id"
    assert publisher.records == []


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b"{not json", "malformed JSON body"),
        (b"[{]", "malformed JSON body"),
        (b"42", "must be an event object or a JSON array"),
        (b"[]", "batch is empty"),
        (b"", "must be an event object"),
    ],
)
async def test_unparseable_body_400(client: httpx.AsyncClient, body: bytes, detail: str) -> None:
    r = await client.post("/v1/events", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert detail in r.json()["detail"]


async def test_too_many_events_413(client: httpx.AsyncClient, publisher: FakePublisher) -> None:
    r = await client.post("/v1/events", json=[event() for _ in range(11)])
    assert r.status_code == 413
    assert "11 events; at most 10" in r.json()["detail"]
    assert publisher.records == []


async def test_oversized_body_413(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/events", content=b"[" + b" " * 70_000 + b"]")
    assert r.status_code == 413
    assert "max_request_bytes" in r.json()["detail"]


async def test_oversized_body_without_content_length_413(client: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(100):
            yield b" " * 1024

    r = await client.post("/v1/events", content=chunks())
    assert r.status_code == 413


async def test_oversized_single_event_is_a_rejection(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/events", json=[event(), event(context={"x": "y" * 9000})])
    assert r.status_code == 207
    assert "bytes; at most 8192" in r.json()["rejected"][0]["errors"][0]["message"]


async def test_broker_not_acknowledging_503_lists_unconfirmed(
    client: httpx.AsyncClient, publisher: FakePublisher
) -> None:
    publisher.fail = {1: "not acknowledged within 10s"}
    batch = [event(), event(), event(type="bogus")]
    r = await client.post("/v1/events", json=batch)
    assert r.status_code == 503
    body = r.json()
    assert body["accepted"] == [batch[0]["event_id"]]
    assert body["unconfirmed"] == [{"event_id": batch[1]["event_id"], "error": "not acknowledged within 10s"}]
    assert body["rejected"][0]["index"] == 2
    assert "resending them is safe" in body["detail"]


async def test_queue_full_503_nothing_sent(client: httpx.AsyncClient, publisher: FakePublisher) -> None:
    publisher.unavailable = True
    r = await client.post("/v1/events", json=event())
    assert r.status_code == 503
    assert r.json()["accepted"] == [] and len(r.json()["unconfirmed"]) == 1


async def test_openapi_documents_codes_examples_and_the_event_schema(client: httpx.AsyncClient) -> None:
    doc = (await client.get("/openapi.json")).json()
    post = doc["paths"]["/v1/events"]["post"]
    assert {"202", "207", "400", "413", "422", "503"} <= set(post["responses"])
    for code in ("202", "207", "422", "503"):
        assert post["responses"][code]["content"]["application/json"]["example"]
    body = post["requestBody"]["content"]["application/json"]
    assert set(body["examples"]) == {"single", "batch"}
    assert body["schema"]["oneOf"][1]["maxItems"] == 10
    event_schema = doc["components"]["schemas"]["InteractionEvent"]
    assert event_schema["properties"]["type"] == {"$ref": "#/components/schemas/EventType"}
    assert "EventType" in doc["components"]["schemas"]

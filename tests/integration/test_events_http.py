"""POST /v1/events on a real uvicorn server, producing to the real local Kafka."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from lambdarec.settings import EventSettings, Settings
from schemas import events as ev
from serving.app import create_app
from serving.publisher import AsyncEventPublisher
from streams.dead_letters import decode_message
from tests.integration.events_support import consume_all, end_offsets, event_dict, serve, temp_topics

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _no_api_keys(kafka: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ingest semantics only; API keys are tested in tests/integration/test_serving_api.py."""
    monkeypatch.setattr(kafka.serving, "require_api_keys", False)


@pytest.fixture(autouse=True)
def _reset_limits() -> Iterator[None]:
    yield
    ev.configure(None)  # create_app() set process-wide limits


def test_mixed_batch_accepted_ones_are_in_kafka(kafka: Settings) -> None:
    with temp_topics(kafka, 3) as (topic,):
        publisher = AsyncEventPublisher(kafka, topic=topic)
        app = create_app(kafka, publisher=publisher)
        valid = [event_dict(i) for i in range(40)]
        invalid = {
            3: event_dict(3, type="rate"),  # missing rating
            7: event_dict(7, event_id="nope"),
            11: event_dict(11, occurred_at="2999-01-01T00:00:00Z"),
            12: ["not", "an", "object"],
        }
        batch: list[object] = list(valid)
        for index in sorted(invalid):
            batch.insert(index, invalid[index])
        try:
            with serve(app) as url:
                r = httpx.post(f"{url}/v1/events", json=batch, timeout=30)
                single = httpx.post(f"{url}/v1/events", json=event_dict(99), timeout=30)
        finally:
            publisher.close()
        assert r.status_code == 207, r.text
        body = r.json()
        assert body["accepted"] == [e["event_id"] for e in valid]
        assert {x["index"]: x["errors"][0]["field"] for x in body["rejected"]} == {
            3: "rating",
            7: "event_id",
            11: "occurred_at",
            12: None,
        }
        assert single.status_code == 202

        msgs = consume_all(kafka, topic)
        events = [decode_message(m) for m in msgs]
        assert all(isinstance(e, ev.InteractionEvent) for e in events)
        assert {str(e.event_id) for e in events} == set(body["accepted"]) | set(single.json()["accepted"])  # type: ignore[union-attr]
        assert all(e.received_at is not None for e in events)  # type: ignore[union-attr]
        assert all(m.key() == e.user_id.encode() for m, e in zip(msgs, events, strict=True))  # type: ignore[union-attr]


def test_broker_unavailable_is_503_and_says_so(kafka: Settings) -> None:
    dead = kafka.model_copy(
        update={
            "kafka": kafka.kafka.model_copy(update={"bootstrap_servers": "127.0.0.1:1"}),
            "events": EventSettings(ingest_delivery_timeout_ms=1000),
        }
    )
    app = create_app(dead)  # the lifespan creates (and closes) the publisher
    with serve(app) as url:
        t0 = time.monotonic()
        r = httpx.post(f"{url}/v1/events", json=[event_dict(1), event_dict(2, type="bad")], timeout=30)
        elapsed = time.monotonic() - t0
    assert r.status_code == 503, r.text
    assert elapsed < 8
    body = r.json()
    assert body["accepted"] == []
    assert len(body["unconfirmed"]) == 1 and body["rejected"][0]["index"] == 1
    assert "resending them is safe" in body["detail"]
    assert (
        "Connection refused" in body["unconfirmed"][0]["error"]
        or "timed out" in body["unconfirmed"][0]["error"]
    )


def test_nothing_half_accepted_when_topic_missing(kafka: Settings) -> None:
    """A publisher pointed at a topic that does not exist: 503, and nothing lands anywhere."""
    with temp_topics(kafka, 1) as (topic,):
        fast = kafka.model_copy(update={"events": EventSettings(ingest_delivery_timeout_ms=1500)})
        publisher = AsyncEventPublisher(fast, topic=f"{topic}-missing")
        app = create_app(fast, publisher=publisher)
        try:
            with serve(app) as url:
                r = httpx.post(f"{url}/v1/events", json=[event_dict(1), event_dict(2)], timeout=30)
        finally:
            publisher.close(timeout=3)
        assert r.status_code == 503
        assert len(r.json()["unconfirmed"]) == 2
        assert end_offsets(kafka, topic) == {0: 0}

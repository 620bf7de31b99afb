"""EventProducer and ``lambdarec events produce`` against the real local Kafka."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections import defaultdict
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from lambdarec.cli import app as cli
from lambdarec.settings import Settings
from schemas import events as ev
from streams.dead_letters import decode_message
from streams.producer import DeliveryError, EventProducer
from tests.integration.events_support import consume_all, end_offsets, event_dict, temp_topics

pytestmark = pytest.mark.integration


def test_round_trip_keyed_by_user_and_ordered(kafka: Settings) -> None:
    with temp_topics(kafka, 3) as (topic,):
        sent = [event_dict(i) for i in range(2000)]
        with EventProducer(kafka, topic=topic) as producer:
            for d in sent[:1000]:
                producer.send(ev.from_mapping(d))
            for d in sent[1000:]:
                producer.send_json(orjson.dumps(d))
        assert producer.delivered == 2000 and producer.failed == 0

        msgs = consume_all(kafka, topic)
        assert len(msgs) == 2000
        got = [decode_message(m) for m in msgs]
        assert all(isinstance(e, ev.InteractionEvent) for e in got)
        assert {str(e.event_id) for e in got} == {d["event_id"] for d in sent}  # type: ignore[union-attr]
        partitions: dict[str, set[int]] = defaultdict(set)
        per_user: dict[str, list[float]] = defaultdict(list)
        for m, e in zip(msgs, got, strict=True):
            assert m.key() == e.user_id.encode()  # type: ignore[union-attr]
            partitions[m.key()].add(m.partition())
            per_user[e.user_id].append(e.value)  # type: ignore[union-attr]
        assert all(len(p) == 1 for p in partitions.values()), "one user -> one partition"
        assert all(v == sorted(v) for v in per_user.values()), "per-user order preserved"


def test_invalid_event_raises_and_nothing_is_sent(kafka: Settings) -> None:
    with temp_topics(kafka, 1) as (topic,):
        with EventProducer(kafka, topic=topic) as producer:
            with pytest.raises(ev.EventValidationError, match="rating"):
                producer.send_json(orjson.dumps(event_dict(1, type="rate")))
            with pytest.raises(ev.EventValidationError, match="event_id"):
                producer.send_json(orjson.dumps(event_dict(1, event_id="x")))
            assert producer.sent == 0 and len(producer) == 0
        assert end_offsets(kafka, topic) == {0: 0}


def test_delivery_failure_to_missing_topic_is_raised(kafka: Settings) -> None:
    """The broker has auto-create off: records to an unknown topic fail at the delivery timeout."""
    producer = EventProducer(kafka, topic=f"missing-{uuid.uuid4().hex}", config={"message.timeout.ms": 2000})
    producer.send(ev.from_mapping(event_dict(1)))
    t0 = time.monotonic()
    with pytest.raises(DeliveryError) as info:
        producer.flush(timeout=15)
    assert time.monotonic() - t0 < 10
    err = info.value
    assert len(err.failures) == 1 and err.failures[0].code == "_MSG_TIMED_OUT"
    assert err.failures[0].key == "user-1" and err.failures[0].event_id
    assert "Unknown topic" in str(err)


def test_delivery_failure_when_broker_refuses_is_raised(kafka: Settings) -> None:
    dead = kafka.model_copy(
        update={"kafka": kafka.kafka.model_copy(update={"bootstrap_servers": "127.0.0.1:1"})}
    )
    t0 = time.monotonic()
    with (
        pytest.raises(DeliveryError, match="Connection refused"),
        EventProducer(dead, config={"message.timeout.ms": 1500}) as producer,
    ):
        for i in range(10):
            producer.send(ev.from_mapping(event_dict(i)))
    assert time.monotonic() - t0 < 10
    assert producer.failed == 10


def test_cli_produce_jsonl_and_csv(kafka: Settings, tmp_path: Path) -> None:
    good = [event_dict(i) for i in range(50)]
    lines = [json.dumps(d) for d in good]
    lines.insert(10, '{"event_id": broken')  # line 11: malformed
    lines.insert(20, json.dumps(event_dict(0, type="rate", rating=7)))  # line 21: rating out of range
    lines.insert(30, "")  # blank lines are skipped, not counted
    jsonl = tmp_path / "events.jsonl"
    jsonl.write_text("\n".join(lines) + "\n")
    csv_file = tmp_path / "events.csv"
    csv_file.write_text(
        "event_id,user_id,item_id,type,rating,occurred_at,context\n"
        f"{uuid.uuid4()},u1,i1,rate,4.5,2024-01-01T00:00:00Z,\n"
        f'{uuid.uuid4()},u2,i2,view,,2024-01-01T00:00:00Z,"{{""device"": ""ios""}}"\n'
        f"{uuid.uuid4()},u3,i3,view,3,2024-01-01T00:00:00Z,\n"
    )
    runner = CliRunner()
    with temp_topics(kafka, 2) as (topic,):
        r = runner.invoke(cli, ["events", "produce", str(jsonl), "--topic", topic, "--no-progress"])
        assert r.exit_code == 1, r.output  # invalid lines -> non-zero exit, valid ones still sent
        assert "line 11" in r.output and "malformed JSON" in r.output
        assert "line 21: rating: Expected `float` <= 5.0" in r.output
        assert re.search(r"invalid \(not sent\)\s*│\s*2\s*│", r.output), r.output
        assert re.search(r"acknowledged\s*│\s*50\s*│", r.output), r.output

        r = runner.invoke(cli, ["events", "produce", str(csv_file), "--topic", topic, "--no-progress"])
        assert r.exit_code == 1, r.output
        assert "line 4" in r.output and "rating: only allowed" in r.output
        msgs = consume_all(kafka, topic)
    assert len(msgs) == 52
    by_user = {e.user_id: e for e in map(decode_message, msgs) if isinstance(e, ev.InteractionEvent)}
    assert by_user["u1"].rating == 4.5 and by_user["u2"].context == {"device": "ios"}

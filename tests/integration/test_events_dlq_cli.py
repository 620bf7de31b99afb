"""``lambdarec dlq inspect`` and ``lambdarec dlq replay`` through the CLI, on private topics."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime

import orjson
import pytest
from confluent_kafka import Producer
from typer.testing import CliRunner

from lambdarec.cli import app as cli
from lambdarec.settings import Settings
from schemas import events as ev
from schemas.dead_letters import DeadLetter, Reason, encode_dead_letter
from schemas.topics import producer_config
from streams.dead_letters import decode_message, publish_dead_letter
from tests.integration.events_support import consume_all, end_offsets, event_dict, temp_topics

pytestmark = pytest.mark.integration


def letter(payload: bytes, reason: Reason, offset: int) -> DeadLetter:
    return DeadLetter(
        reason=reason,
        error="occurred_at: more than 300s in the future" if reason is Reason.INVALID_FIELD else "bad",
        field="occurred_at" if reason is Reason.INVALID_FIELD else None,
        payload=payload,
        key=b"user-1",
        topic="lambdarec.interactions",
        partition=0,
        offset=offset,
        dead_lettered_at=datetime.now(UTC),
    )


def publish(settings: Settings, dlq: str, letters: list[DeadLetter], junk: list[bytes] = ()) -> None:  # type: ignore[assignment]
    p = Producer(producer_config(settings))
    for dl in letters:
        publish_dead_letter(p, dl, dlq)
    for raw in junk:
        p.produce(dlq, raw)
    assert p.flush(30) == 0


def count(output: str, label: str) -> int:
    m = re.search(rf"{re.escape(label)}\s*│\s*([\d,]+)\s*│", output)
    assert m, f"{label!r} not in:\n{output}"
    return int(m.group(1).replace(",", ""))


def test_inspect_and_replay(kafka: Settings) -> None:
    runner = CliRunner(env={"COLUMNS": "200"})
    group = f"test-replay-{uuid.uuid4().hex[:8]}"
    with temp_topics(kafka, 3, 2) as (dlq, target):
        # 30 letters whose payload is valid now (e.g. their clock has caught up), 20 still broken
        fixable = [letter(orjson.dumps(event_dict(i)), Reason.INVALID_FIELD, i) for i in range(30)]
        broken = [letter(b"{nope" + bytes([i]), Reason.MALFORMED_JSON, 100 + i) for i in range(20)]
        publish(kafka, dlq, fixable + broken, junk=[b"not a dead letter"])

        r = runner.invoke(cli, ["dlq", "inspect", "--topic", dlq, "--samples", "2"])
        assert r.exit_code == 0, r.output
        assert "51 dead letter(s)" in r.output
        assert count(r.output, "invalid_field") == 30
        assert count(r.output, "malformed_json") == 20
        assert count(r.output, "(not a DeadLetter record)") == 1
        assert count(r.output, "occurred_at") == 30  # by field
        assert "lambdarec.interactions[0]@" in r.output  # samples show the origin

        base = ["dlq", "replay", "--topic", dlq, "--target", target, "--group", group]
        r = runner.invoke(cli, [*base, "--dry-run"])
        assert r.exit_code == 0, r.output
        assert count(r.output, "would replay") == 30
        assert count(r.output, "still invalid: malformed_json") == 20
        assert sum(end_offsets(kafka, target).values()) == 0  # dry run sends nothing

        r = runner.invoke(cli, base)
        assert r.exit_code == 0, r.output
        assert count(r.output, "dead letters scanned") == 51
        assert count(r.output, "replayed") == 30
        assert count(r.output, "not a DeadLetter record") == 1
        replayed = [decode_message(m) for m in consume_all(kafka, target)]
        assert len(replayed) == 30 and all(isinstance(e, ev.InteractionEvent) for e in replayed)
        assert {str(e.event_id) for e in replayed} == {  # type: ignore[union-attr]
            orjson.loads(dl.payload)["event_id"] for dl in fixable
        }

        # offsets were committed: a second run has nothing to do ...
        r = runner.invoke(cli, base)
        assert r.exit_code == 0, r.output
        assert count(r.output, "dead letters scanned") == 0
        assert sum(end_offsets(kafka, target).values()) == 30

        # ... and a later run only replays what arrived since
        publish(
            kafka, dlq, [letter(orjson.dumps(event_dict(i)), Reason.INVALID_FIELD, 200 + i) for i in range(5)]
        )
        r = runner.invoke(cli, base)
        assert count(r.output, "dead letters scanned") == 5
        assert count(r.output, "replayed") == 5
        assert sum(end_offsets(kafka, target).values()) == 35


def test_inspect_empty_dlq(kafka: Settings) -> None:
    with temp_topics(kafka, 1) as (dlq,):
        r = CliRunner().invoke(cli, ["dlq", "inspect", "--topic", dlq])
        assert r.exit_code == 0 and "empty" in r.output


def test_dead_letter_wire_format_is_stable() -> None:
    dl = letter(b"\x00raw", Reason.MALFORMED_JSON, 7)
    doc = orjson.loads(encode_dead_letter(dl))
    assert set(doc) >= {
        "reason",
        "error",
        "payload",
        "key",
        "topic",
        "partition",
        "offset",
        "dead_lettered_at",
    }

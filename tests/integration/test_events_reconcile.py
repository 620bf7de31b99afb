"""10k mixed records through decode_event: processed + dead-lettered == produced, with origins."""

from __future__ import annotations

import random
import uuid
from functools import partial

import orjson
import pytest
from confluent_kafka import KafkaError, Message, Producer

from lambdarec.settings import Settings
from schemas import events as ev
from schemas.dead_letters import DeadLetter, decode_dead_letter
from schemas.topics import producer_config
from streams.dead_letters import decode_message, publish_dead_letter
from tests.integration.events_support import consume_all, event_dict, temp_topics

pytestmark = pytest.mark.integration

N = 10_000


def malformed(rnd: random.Random, i: int) -> bytes:
    """A bad record of one of several kinds, as a buggy or hostile producer would write it."""
    kind = i % 8
    if kind == 0:
        return rnd.randbytes(rnd.randrange(1, 200))
    if kind == 1:
        return orjson.dumps(event_dict(i))[: rnd.randrange(1, 40)]  # truncated
    if kind == 2:
        return orjson.dumps(event_dict(i, type="rate"))  # rating missing
    if kind == 3:
        return orjson.dumps(event_dict(i, rating=3))  # rating on a view
    if kind == 4:
        return orjson.dumps(event_dict(i, occurred_at="2999-01-01T00:00:00Z"))
    if kind == 5:
        return orjson.dumps(event_dict(i, context={"pad": "x" * 10_000}))  # oversized
    if kind == 6:
        return orjson.dumps([event_dict(i)])  # not an object
    return orjson.dumps({**event_dict(i), "schema_version": 2})


def test_ten_thousand_mixed_records_reconcile(kafka: Settings) -> None:
    rnd = random.Random(42)
    with temp_topics(kafka, 6, 3) as (source, dlq):
        # 1. produce 10k records straight to the topic (bypassing the SDK's validation)
        origins: dict[str, tuple[int, int]] = {}  # marker -> (partition, offset) of each bad record
        errors: list[KafkaError] = []

        def on_delivery(marker: str | None, err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                errors.append(err)
            elif marker:
                origins[marker] = (msg.partition(), msg.offset())

        raw_producer = Producer(producer_config(kafka))
        n_bad = 0
        for i in range(N):
            if rnd.random() < 0.2:
                n_bad += 1
                marker = str(uuid.uuid4())
                raw_producer.produce(
                    source,
                    malformed(rnd, i),
                    f"user-{i % 20}",
                    headers={"marker": marker},
                    on_delivery=partial(on_delivery, marker),
                )
            else:
                raw_producer.produce(
                    source,
                    orjson.dumps(event_dict(i)),
                    f"user-{i % 20}",
                    on_delivery=partial(on_delivery, None),
                )
            raw_producer.poll(0)
        assert raw_producer.flush(30) == 0 and not errors
        assert len(origins) == n_bad and 1000 < n_bad < 3000

        # 2. consume everything through decode_message; dead letters to the DLQ
        processed = dead = 0
        dlq_errors: list[KafkaError] = []
        dlq_producer = Producer(producer_config(kafka))
        seen_origin: dict[tuple[int, int], str] = {}
        for m in consume_all(kafka, source):
            result = decode_message(m)
            if isinstance(result, ev.InteractionEvent):
                processed += 1
            else:
                dead += 1
                seen_origin[(m.partition(), m.offset())] = dict(m.headers() or [])["marker"].decode()
                publish_dead_letter(
                    dlq_producer,
                    result,
                    dlq,
                    on_delivery=lambda e, _m: e is not None and dlq_errors.append(e),
                )
        assert dlq_producer.flush(30) == 0 and not dlq_errors

        assert processed + dead == N
        assert dead == n_bad and processed == N - n_bad

        # 3. the DLQ holds exactly those records, each carrying its origin and original bytes
        letters = [decode_dead_letter(m.value()) for m in consume_all(kafka, dlq)]
        assert len(letters) == n_bad
        assert all(isinstance(dl, DeadLetter) and dl.topic == source for dl in letters)
        by_origin = {(dl.partition, dl.offset): dl for dl in letters}
        assert set(by_origin) == set(origins.values())
        assert seen_origin == {origin: marker for marker, origin in origins.items()}
        reasons = {dl.reason.value for dl in letters}
        assert {
            "malformed_json",
            "invalid_field",
            "oversized",
            "not_an_object",
            "unsupported_version",
        } <= reasons
        for dl in letters:
            assert dl.key is not None and dl.key.startswith(b"user-")
            assert dl.source_timestamp_ms and dl.error

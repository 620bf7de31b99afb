"""Dead letters: what happens to a record of ``interactions`` that is not a valid InteractionEvent.

Every consumer of the interactions topic decodes through :func:`decode_event` (or
:func:`decode_message`, which adds the Kafka origin; the speed layer and the lake archiver decode
whole batches with ``schemas.dead_letters.decode_events``). It never raises: a bad record becomes a
:class:`DeadLetter` instead of crashing the consumer or being dropped silently, and
:func:`publish_dead_letter` puts it on ``interactions-dlq`` where ``lambdarec dlq inspect`` counts
it and ``lambdarec dlq replay`` re-validates it once the cause is fixed.

So the counts always reconcile: records read == events processed + dead letters published.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import msgspec
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from lambdarec.settings import Settings
from schemas import events as ev
from schemas.dead_letters import DeadLetter, decode_dead_letter, decode_event, encode_dead_letter
from schemas.topics import INTERACTIONS, INTERACTIONS_DLQ, topic_name


def decode_message(msg: Message) -> ev.InteractionEvent | DeadLetter:
    """:func:`decode_event` for a consumed Kafka message, recording its topic/partition/offset."""
    ts_type, ts = msg.timestamp()
    return decode_event(
        msg.value(),
        key=msg.key(),
        topic=msg.topic(),
        partition=msg.partition(),
        offset=msg.offset(),
        timestamp_ms=ts if ts_type else None,
    )


def dlq_topic(settings: Settings) -> str:
    """Physical name of the dead-letter topic."""
    return topic_name(settings, INTERACTIONS_DLQ)


def publish_dead_letter(
    producer: Producer,
    letter: DeadLetter,
    topic: str,
    on_delivery: Any = None,
) -> None:
    """Queue ``letter`` on the DLQ ``topic`` with the original key (so one user's dead letters keep
    their order). The caller owns the producer and flushes it (and must check delivery: a dead
    letter that is lost is a silently dropped event). Retries on a full local queue."""
    value = encode_dead_letter(letter)
    kwargs: dict[str, Any] = {"on_delivery": on_delivery} if on_delivery else {}
    while True:
        try:
            producer.produce(topic, value, letter.key, **kwargs)
            return
        except BufferError:
            producer.poll(0.05)


# ------------------------------------------------------------------------------------------------
# reading the DLQ back: inspect and replay (the CLI in lambdarec/cli/dlq.py is a thin shell)


def _consumer(settings: Settings, group: str) -> Consumer:
    return Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap_servers,
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": False,
        }
    )


def _read_to_end(
    consumer: Consumer, topic: str, start: dict[int, int], idle_timeout: float
) -> Iterator[Message]:
    """Yield the records of ``topic`` from ``start`` (partition -> offset, -1 = beginning) up to the
    end offsets as of the call. Records produced meanwhile are left for the next run."""
    ends: dict[int, int] = {}
    begin: dict[int, int] = {}
    for p, off in start.items():
        lo, hi = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
        begin[p] = off if off >= lo else lo
        if begin[p] < hi:
            ends[p] = hi
    if not ends:
        return
    consumer.assign([TopicPartition(topic, p, begin[p]) for p in ends])
    deadline = time.monotonic() + idle_timeout
    while ends:
        msgs = consumer.consume(500, timeout=0.5)
        if not msgs:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{topic}: no records for {idle_timeout:g}s with partitions {sorted(ends)} unfinished"
                )
            continue
        deadline = time.monotonic() + idle_timeout
        for m in msgs:
            if m.error():
                raise KafkaException(m.error())
            p, off = _position(m)
            if p not in ends or off >= ends[p]:
                continue
            yield m
            if off + 1 >= ends[p]:
                del ends[p]


def _position(m: Message) -> tuple[int, int]:
    """(partition, offset) of a consumed record (always set on consumed records, unlike the types say)."""
    p, off = m.partition(), m.offset()
    assert p is not None and off is not None
    return p, off


def _partitions(consumer: Consumer, topic: str) -> list[int]:
    md = consumer.list_topics(topic, timeout=10).topics.get(topic)
    if md is None or md.error is not None:
        raise KafkaException(md.error if md is not None else KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART))
    return sorted(md.partitions)


@dataclass
class DlqSummary:
    """What ``lambdarec dlq inspect`` shows."""

    topic: str
    total: int = 0
    by_reason: Counter[str] = field(default_factory=Counter)
    by_field: Counter[str] = field(default_factory=Counter)
    unreadable: int = 0  # records on the DLQ that are not DeadLetter JSON
    samples: list[tuple[int, int, DeadLetter]] = field(default_factory=list)  # (partition, offset, letter)


def inspect_dlq(
    settings: Settings,
    *,
    topic: str | None = None,
    samples: int = 5,
    max_records: int = 0,
    idle_timeout: float = 15.0,
) -> DlqSummary:
    """Read the whole DLQ (no consumer group, nothing committed) and count dead letters by reason
    and field, keeping the first ``samples`` of each reason."""
    topic = topic or dlq_topic(settings)
    summary = DlqSummary(topic)
    per_reason: Counter[str] = Counter()
    consumer = _consumer(settings, f"lambdarec-dlq-inspect-{uuid.uuid4()}")
    try:
        start = dict.fromkeys(_partitions(consumer, topic), -1)
        for m in _read_to_end(consumer, topic, start, idle_timeout):
            summary.total += 1
            try:
                letter = decode_dead_letter(m.value() or b"")
            except msgspec.MsgspecError:
                summary.unreadable += 1
                continue
            summary.by_reason[letter.reason] += 1
            if letter.field:
                summary.by_field[letter.field] += 1
            if per_reason[letter.reason] < samples:
                per_reason[letter.reason] += 1
                summary.samples.append((*_position(m), letter))
            if max_records and summary.total >= max_records:
                break
    finally:
        consumer.close()
    return summary


@dataclass
class ReplayReport:
    """What ``lambdarec dlq replay`` did (or, with dry_run, would do)."""

    topic: str
    target: str
    group: str
    dry_run: bool
    scanned: int = 0
    replayed: int = 0
    still_invalid: Counter[str] = field(default_factory=Counter)
    unreadable: int = 0
    committed: dict[int, int] = field(default_factory=dict)  # partition -> next offset


def replay_dlq(
    settings: Settings,
    *,
    topic: str | None = None,
    target: str | None = None,
    group: str = "lambdarec-dlq-replay",
    dry_run: bool = False,
    commit_every: int = 10_000,
    idle_timeout: float = 15.0,
) -> ReplayReport:
    """Re-validate the dead letters this consumer ``group`` has not replayed yet and re-produce
    the ones that are now valid (a fixed bug, a relaxed limit, a clock that caught up) to
    ``target`` (the interactions topic by default).

    Offsets are committed for ``group`` only after the re-produced records are acknowledged, in
    chunks of ``commit_every``: a crash replays at most one chunk again, which is harmless because
    consumers deduplicate on event_id. Still-invalid letters are counted and skipped (they stay on
    the DLQ for inspection). ``dry_run`` produces and commits nothing.
    """
    from streams.producer import EventProducer

    topic = topic or dlq_topic(settings)
    target = target or topic_name(settings, INTERACTIONS)
    report = ReplayReport(topic, target, group, dry_run)
    consumer = _consumer(settings, group)
    producer = None if dry_run else EventProducer(settings, topic=target)
    pending: dict[int, int] = {}

    def checkpoint() -> None:
        if dry_run or not pending:
            return
        assert producer is not None
        producer.flush()  # raises DeliveryError: then nothing is committed
        consumer.commit(
            offsets=[TopicPartition(topic, p, off) for p, off in pending.items()], asynchronous=False
        )
        report.committed.update(pending)
        pending.clear()

    try:
        parts = _partitions(consumer, topic)
        committed = consumer.committed([TopicPartition(topic, p) for p in parts], timeout=10)
        start = {tp.partition: tp.offset for tp in committed}  # OFFSET_INVALID (<0): beginning
        for m in _read_to_end(consumer, topic, start, idle_timeout):
            report.scanned += 1
            p, off = _position(m)
            pending[p] = off + 1
            try:
                letter = decode_dead_letter(m.value() or b"")
            except msgspec.MsgspecError:
                report.unreadable += 1
                continue
            result = decode_event(letter.payload)
            if isinstance(result, DeadLetter):
                report.still_invalid[result.reason] += 1
            else:
                report.replayed += 1
                if producer is not None:
                    producer.send(result)
            if report.scanned % commit_every == 0:
                checkpoint()
        checkpoint()
    finally:
        consumer.close()
        if producer is not None:
            producer.close()
    return report

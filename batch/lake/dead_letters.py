"""Dead letters in the lake: every record that could not be decoded, kept for analysis.

Two paths lead here and may see the same bad record: the DLQ topic (letters published by the speed
layer and other consumers, ``streams/dead_letters.py``) and the archiver's own decoding of the
interactions and served topics. ``letter_id`` is the *original* record's
``topic/partition/offset``, so both copies collapse into one row (insert-if-absent). A DLQ record
that is not even a DeadLetter is kept too, keyed by its own position on the DLQ topic.

Partitioned by the original record's date (its Kafka timestamp), which both paths agree on.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import Any

import msgspec
import pyarrow as pa
from deltalake import CommitProperties, DeltaTable, write_deltalake

from batch.lake.storage import Lake
from batch.lake.txn import SOURCE_TOPIC, DedupIndex, KafkaRecord, Writer, without_source
from schemas.dead_letters import DeadLetter, Reason, decode_dead_letter
from schemas.lake import DEAD_LETTERS

#: reason for a DLQ record that is not a DeadLetter at all
UNREADABLE = "unreadable_dead_letter"


def letter_id(letter: DeadLetter, observed: KafkaRecord) -> str:
    """``origin_topic/partition/offset`` when known, else where we read it."""
    if letter.topic is not None and letter.partition is not None and letter.offset is not None:
        return f"{letter.topic}/{letter.partition}/{letter.offset}"
    return f"{observed.topic}/{observed.partition}/{observed.offset}"


def decode_dlq_record(r: KafkaRecord) -> DeadLetter:
    """A DLQ record as a DeadLetter; one that is not becomes an ``unreadable_dead_letter``."""
    try:
        return decode_dead_letter(r.value or b"")
    except msgspec.MsgspecError as exc:
        return DeadLetter(
            reason=Reason.INTERNAL_ERROR,
            error=f"{UNREADABLE}: {exc}",
            payload=bytes(r.value or b""),
            key=r.key,
            dead_lettered_at=datetime.now(UTC),
        )


def _user_of(letter: DeadLetter) -> str | None:
    if letter.payload:
        try:
            obj = msgspec.json.decode(letter.payload)
        except msgspec.DecodeError:
            obj = None
        if isinstance(obj, dict) and isinstance(obj.get("user_id"), str) and obj["user_id"]:
            return str(obj["user_id"])
    if letter.key:
        try:
            return letter.key.decode("utf-8") or None
        except UnicodeDecodeError:
            return None
    return None


def dead_letter_rows(letters: Sequence[tuple[KafkaRecord, DeadLetter]], archived_at: datetime) -> pa.Table:
    """One row per dead letter (duplicates are removed at write time), plus ``_source_topic``."""
    cols: dict[str, list[Any]] = {name: [] for name in DEAD_LETTERS.column_names}
    for r, d in letters:
        origin_ms = d.source_timestamp_ms
        cols["letter_id"].append(letter_id(d, r))
        reason = UNREADABLE if d.error.startswith(UNREADABLE) else str(d.reason)
        cols["reason"].append(reason)
        cols["error"].append(d.error)
        cols["field"].append(d.field)
        cols["payload"].append(d.payload)
        cols["key"].append(d.key)
        cols["user_id"].append(_user_of(d))
        cols["origin_topic"].append(d.topic)
        cols["origin_partition"].append(d.partition)
        cols["origin_offset"].append(d.offset)
        cols["origin_timestamp"].append(
            None if origin_ms is None else datetime.fromtimestamp(origin_ms / 1000, UTC)
        )
        cols["dead_lettered_at"].append(d.dead_lettered_at)
        cols["observed_topic"].append(r.topic)
        cols["kafka_partition"].append(r.partition)
        cols["kafka_offset"].append(r.offset)
        cols["archived_at"].append(archived_at)
        if origin_ms is not None:
            when = datetime.fromtimestamp(origin_ms / 1000, UTC)
        elif r.timestamp_ms is not None:
            when = datetime.fromtimestamp(r.timestamp_ms / 1000, UTC)
        else:
            when = d.dead_lettered_at
        cols["dead_letter_date"].append(when.astimezone(UTC).date())
    table = pa.Table.from_pydict(cols, schema=DEAD_LETTERS.schema)
    return table.append_column(SOURCE_TOPIC, pa.array([r.topic for r, _ in letters], pa.string()))


def dead_letter_writer(index: DedupIndex) -> Writer:
    """Insert-if-absent by ``letter_id``."""

    def write(dt: DeltaTable, rows: pa.Table, props: CommitProperties) -> int:
        fresh = index.filter_new(dt, rows)
        write_deltalake(
            dt, without_source(fresh).cast(DEAD_LETTERS.schema), mode="append", commit_properties=props
        )
        index.add(fresh, dt.version())
        return fresh.num_rows

    return write


def read_dead_letters(lake: Lake, start: date | None = None, end: date | None = None) -> pa.Table:
    """Dead letters with ``start <= dead_letter_date <= end``."""
    import pyarrow.dataset as ds

    data = lake.dataset(DEAD_LETTERS)
    if data is None:
        return DEAD_LETTERS.schema.empty_table()
    flt = None
    if start is not None:
        flt = ds.field("dead_letter_date") >= start
    if end is not None:
        e = ds.field("dead_letter_date") <= end
        flt = e if flt is None else flt & e
    return data.to_table(filter=flt)

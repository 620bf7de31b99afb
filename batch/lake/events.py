"""Interactions in the lake: **bronze** (every record as received) and **silver** (valid events,
one row per ``event_id``). Schemas: ``schemas/lake.py``.

Decoding goes through ``streams.dead_letters.decode_event`` like every other consumer of the
interactions topic, so the lake, the speed layer and the DLQ agree on what is valid. Bronze keeps
the bytes regardless: if a rule changes, silver can be rebuilt from bronze.

Schema evolution: v1 readers drop unknown fields, but the lake should not lose a field a newer
producer already sends. :func:`silver_rows` therefore also reads the payload as a plain JSON object
and turns unknown top-level fields into extra columns (bool/int/float/string; objects and arrays as
JSON text), which :func:`write_silver` adds to the table with ``schema_mode="merge"``. Names must
look like ``snake_case`` and at most ``settings.lake.max_extra_columns`` are added; anything else
stays in bronze only.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.compute as pc
from deltalake import CommitProperties, DeltaTable, write_deltalake

from batch.lake.storage import Lake
from batch.lake.txn import SOURCE_TOPIC, DedupIndex, KafkaRecord, Writer, without_source
from schemas import events as ev
from schemas.dead_letters import DeadLetter, decode_events
from schemas.lake import BRONZE_INTERACTIONS, SILVER_INTERACTIONS, TS

log = logging.getLogger(__name__)

_EXTRA_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_RESERVED = frozenset(SILVER_INTERACTIONS.column_names) | frozenset(ev.InteractionEvent.__struct_fields__)
_json = msgspec.json.Encoder()


def _timestamps_ms(values: list[int | None]) -> pa.Array:
    """Kafka timestamps (ms since epoch) as ``timestamp[us, UTC]``, vectorized."""
    return pa.array(values, pa.int64()).cast(pa.timestamp("ms", tz="UTC")).cast(TS)


@dataclass
class DecodedInteractions:
    """One micro-batch of interactions records, decoded once for every table that needs it."""

    records: list[KafkaRecord] = field(default_factory=list)
    results: list[ev.InteractionEvent | DeadLetter] = field(default_factory=list)
    #: ``str(event_id)`` per record (None for dead letters): computed once, used by both tables
    event_ids: list[str | None] = field(default_factory=list)

    @property
    def events(self) -> list[tuple[KafkaRecord, ev.InteractionEvent]]:
        return [
            (r, e)
            for r, e in zip(self.records, self.results, strict=True)
            if isinstance(e, ev.InteractionEvent)
        ]

    @property
    def dead_letters(self) -> list[tuple[KafkaRecord, DeadLetter]]:
        return [(r, e) for r, e in zip(self.records, self.results, strict=True) if isinstance(e, DeadLetter)]


def decode_interactions(records: Sequence[KafkaRecord]) -> DecodedInteractions:
    """Decode every record (never raises: bad ones become DeadLetters with their origin)."""
    origins = [(r.value, r.key, r.topic, r.partition, r.offset, r.timestamp_ms) for r in records]
    results = decode_events(origins)
    ids = [str(e.event_id) if isinstance(e, ev.InteractionEvent) else None for e in results]
    return DecodedInteractions(list(records), results, ids)


def _key_text(key: bytes | None) -> str | None:
    if not key:
        return None
    try:
        return key.decode("utf-8")
    except UnicodeDecodeError:
        return None


def bronze_rows(batch: DecodedInteractions, archived_at: datetime) -> pa.Table:
    """One bronze row per record, in Kafka order (plus ``_source_topic``).

    Built column by column (list comprehensions and Arrow casts): this runs for every record
    the archiver reads, and row-wise dict appends cost twice as much.
    """
    recs, res = batch.records, batch.results
    n = len(recs)
    valid = [isinstance(x, ev.InteractionEvent) for x in res]
    kafka_ts = _timestamps_ms([r.timestamp_ms for r in recs])
    occurred = pa.array([x.occurred_at if isinstance(x, ev.InteractionEvent) else None for x in res], TS)
    fallback = pc.fill_null(kafka_ts, pa.scalar(archived_at, TS))
    event_date = pc.cast(pc.if_else(pa.array(valid, pa.bool_()), occurred, fallback), pa.date32())
    user_ids = [
        x.user_id if isinstance(x, ev.InteractionEvent) else (_user_of_payload(r.value) or _key_text(r.key))
        for r, x in zip(recs, res, strict=True)
    ]
    cols: dict[str, Any] = {
        "topic": [r.topic for r in recs],
        "kafka_partition": [r.partition for r in recs],
        "kafka_offset": [r.offset for r in recs],
        "kafka_timestamp": kafka_ts,
        "key": [r.key for r in recs],
        "payload": [r.value for r in recs],
        "payload_size": [len(r.value) if r.value else 0 for r in recs],
        "valid": valid,
        "error_reason": [None if isinstance(x, ev.InteractionEvent) else str(x.reason) for x in res],
        "event_id": batch.event_ids,
        "user_id": user_ids,
        "archived_at": pa.array([archived_at] * n, TS),
        "event_date": event_date,
    }
    table = pa.Table.from_pydict(cols, schema=BRONZE_INTERACTIONS.schema)
    return table.append_column(SOURCE_TOPIC, pa.array(cols["topic"], pa.string()))


def _user_of_payload(payload: bytes | None) -> str | None:
    """Best-effort ``user_id`` of an invalid payload (for GDPR: the row is about someone)."""
    if not payload:
        return None
    try:
        obj = msgspec.json.decode(payload)
    except msgspec.DecodeError:
        return None
    if isinstance(obj, dict):
        u = obj.get("user_id")
        if isinstance(u, str) and u:
            return u
    return None


class _KnownFieldsOnly(msgspec.Struct, forbid_unknown_fields=True):
    """Decodes only when the payload has no field beyond v1's: a cheap test (the values are
    skipped as raw JSON) that spares the full dict decode for almost every event."""

    event_id: msgspec.Raw
    user_id: msgspec.Raw
    item_id: msgspec.Raw
    type: msgspec.Raw
    occurred_at: msgspec.Raw
    rating: msgspec.Raw | None = None
    value: msgspec.Raw | None = None
    watch_duration_sec: msgspec.Raw | None = None
    session_id: msgspec.Raw | None = None
    source: msgspec.Raw | None = None
    rec_id: msgspec.Raw | None = None
    position: msgspec.Raw | None = None
    context: msgspec.Raw | None = None
    schema_version: msgspec.Raw | None = None
    received_at: msgspec.Raw | None = None


_known_only = msgspec.json.Decoder(_KnownFieldsOnly)


def _extra_fields(payload: bytes | None) -> dict[str, Any]:
    """Top-level fields of a valid event that v1 does not know (usually none)."""
    if not payload:
        return {}
    try:
        _known_only.decode(payload)
        return {}
    except msgspec.MsgspecError:
        pass
    try:
        obj = msgspec.json.decode(payload)
    except msgspec.DecodeError:
        return {}
    if not isinstance(obj, dict):
        return {}
    return {k: v for k, v in obj.items() if k not in _RESERVED}


def _extra_array(values: list[Any]) -> pa.Array | None:
    """An Arrow array for one extra field's values (None when no value is usable)."""
    kinds = {type(v) for v in values if v is not None}
    if not kinds:
        return None
    if kinds == {bool}:
        return pa.array(values, pa.bool_())
    if kinds <= {int}:
        return pa.array(values, pa.int64())
    if kinds <= {int, float}:
        return pa.array([None if v is None else float(v) for v in values], pa.float64())
    if kinds == {str}:
        return pa.array(values, pa.string())
    return pa.array(
        [None if v is None else v if isinstance(v, str) else _json.encode(v).decode() for v in values],
        pa.string(),
    )


def silver_rows(batch: DecodedInteractions, archived_at: datetime) -> pa.Table:
    """One silver row per valid event (duplicates are removed at write time), plus any extra
    fields of newer producers as additional columns. Built column by column, like bronze."""
    idx = [i for i, x in enumerate(batch.results) if isinstance(x, ev.InteractionEvent)]
    evs: list[ev.InteractionEvent] = [batch.results[i] for i in idx]  # type: ignore[misc]
    recs = [batch.records[i] for i in idx]
    n = len(evs)
    occurred = pa.array([e.occurred_at for e in evs], TS)
    cols: dict[str, Any] = {
        "event_id": [batch.event_ids[i] for i in idx],
        "user_id": [e.user_id for e in evs],
        "item_id": [e.item_id for e in evs],
        "type": [e.type.value for e in evs],
        "occurred_at": occurred,
        "rating": [e.rating for e in evs],
        "value": [e.value for e in evs],
        "watch_duration_sec": [e.watch_duration_sec for e in evs],
        "session_id": [e.session_id for e in evs],
        "source": [None if e.source is None else e.source.value for e in evs],
        "rec_id": [e.rec_id for e in evs],
        "position": [e.position for e in evs],
        "context": [None if e.context is None else _json.encode(e.context).decode() for e in evs],
        "schema_version": [e.schema_version for e in evs],
        "received_at": pa.array([e.received_at for e in evs], TS),
        "kafka_partition": [r.partition for r in recs],
        "kafka_offset": [r.offset for r in recs],
        "kafka_timestamp": _timestamps_ms([r.timestamp_ms for r in recs]),
        "archived_at": pa.array([archived_at] * n, TS),
        "event_date": pc.cast(occurred, pa.date32()),
    }
    table = pa.Table.from_pydict(cols, schema=SILVER_INTERACTIONS.schema)
    extras = [_extra_fields(r.value) for r in recs]
    names = sorted({k for x in extras for k in x if _EXTRA_NAME.match(k)})
    for name in names:
        arr = _extra_array([x.get(name) for x in extras])
        if arr is not None:
            table = table.append_column(pa.field(name, arr.type, nullable=True), arr)
    return table.append_column(SOURCE_TOPIC, pa.array([r.topic for r in recs], pa.string()))


def _conform(rows: pa.Table, dt: DeltaTable, max_extra: int) -> tuple[pa.Table, bool]:
    """Cast ``rows`` to the table's schema; keep new extra columns (up to ``max_extra``).
    Returns the rows and whether the table schema must be merged."""
    target = pa.schema(dt.schema().to_arrow())
    known = set(target.names)
    spec_names = set(SILVER_INTERACTIONS.column_names)
    extra_now = len(known - spec_names)
    arrays, fields = [], []
    for f in target:
        if f.name in rows.column_names:
            col = rows.column(f.name)
            try:
                col = col.cast(f.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                log.warning(
                    "silver: field %r does not fit column type %s; nulls written (bronze keeps it)",
                    f.name,
                    f.type,
                )
                col = pa.nulls(rows.num_rows, f.type)
        else:
            col = pa.nulls(rows.num_rows, f.type)
        arrays.append(col)
        fields.append(pa.field(f.name, f.type, nullable=f.nullable))
    merge = False
    for name in rows.column_names:
        if name in known:
            continue
        if extra_now >= max_extra:
            log.warning("silver: not adding column %r: max_extra_columns=%d reached", name, max_extra)
            continue
        log.info("silver: schema evolution, adding column %r (%s)", name, rows.column(name).type)
        arrays.append(rows.column(name))
        fields.append(pa.field(name, rows.column(name).type, nullable=True))
        extra_now += 1
        merge = True
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields)), merge


def write_bronze(dt: DeltaTable, rows: pa.Table, props: CommitProperties) -> int:
    """Append bronze rows (no dedup: bronze is one row per Kafka offset, guaranteed by the
    offsets committed with the rows)."""
    write_deltalake(
        dt, without_source(rows).cast(BRONZE_INTERACTIONS.schema), mode="append", commit_properties=props
    )
    return rows.num_rows


def silver_writer(index: DedupIndex, max_extra_columns: int) -> Writer:
    """A ``write`` for :func:`batch.lake.txn.commit_exactly_once`: insert-if-absent by event_id."""

    def write(dt: DeltaTable, rows: pa.Table, props: CommitProperties) -> int:
        fresh = index.filter_new(dt, rows)
        conformed, merge = _conform(without_source(fresh), dt, max_extra_columns)
        write_deltalake(
            dt,
            conformed,
            mode="append",
            schema_mode="merge" if merge else None,
            commit_properties=props,
        )
        index.add(fresh, dt.version())
        return fresh.num_rows

    return write


# ---- reading -------------------------------------------------------------------------------------


def read_silver(
    lake: Lake, start: date | None = None, end: date | None = None, columns: list[str] | None = None
) -> pa.Table:
    """Silver interactions with ``start <= event_date <= end`` (partition-pruned)."""
    return _read(lake, SILVER_INTERACTIONS.name, "event_date", start, end, columns)


def read_bronze(
    lake: Lake, start: date | None = None, end: date | None = None, columns: list[str] | None = None
) -> pa.Table:
    """Bronze records with ``start <= event_date <= end``."""
    return _read(lake, BRONZE_INTERACTIONS.name, "event_date", start, end, columns)


def _read(
    lake: Lake, name: str, date_col: str, start: date | None, end: date | None, columns: list[str] | None
) -> pa.Table:
    import pyarrow.dataset as ds

    data = lake.dataset(name)
    if data is None:
        from schemas.lake import BY_NAME

        schema = BY_NAME[name].schema
        return schema.empty_table() if columns is None else schema.empty_table().select(columns)
    flt = None
    if start is not None:
        flt = ds.field(date_col) >= start
    if end is not None:
        e = ds.field(date_col) <= end
        flt = e if flt is None else flt & e
    return data.to_table(columns=columns, filter=flt)


__all__ = [
    "DecodedInteractions",
    "bronze_rows",
    "decode_interactions",
    "read_bronze",
    "read_silver",
    "silver_rows",
    "silver_writer",
    "write_bronze",
]

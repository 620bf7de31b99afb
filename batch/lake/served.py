"""Served recommendation lists in the lake: one row per item shown (an impression).

Why one row per item and not per list: CTR by position and by item are the questions asked of
this table, and both are plain GROUP BYs on impressions; a list-per-row table would need an
UNNEST in every query. Lists with no items produce no rows.

The ``served-recommendations`` topic carries one JSON object per served list with the columns of
Postgres ``recommendation_logs`` (``schemas/migrations/006_recommendations.sql``)::

    {"rec_id": "r-1", "user_id": "u1", "algorithm_source": "hybrid", "served_at": "2025-01-01T10:00:00Z",
     "items": [{"item_id": "i9", "score": 0.93, "source": "realtime"}, ...],
     "session_id": null, "model_version": "als-v3", "experiment_id": null, "variant": null,
     "context": {}, "computation_time_ms": 12.5, "cache_hit": false}

:class:`ServedList` is that shape as the lake reads it (unknown fields ignored). A record that does
not decode becomes a dead letter (``dead_letters`` table) instead of stopping the archiver.
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
from schemas.dead_letters import DeadLetter, Reason
from schemas.lake import SERVED_RECOMMENDATIONS
from schemas.served import ServedList, decode_served_list


def decode_served(r: KafkaRecord) -> ServedList | DeadLetter:
    """The served list, or a DeadLetter saying why not (never raises)."""

    def dead(reason: Reason, error: str) -> DeadLetter:
        return DeadLetter(
            reason=reason,
            error=error,
            payload=bytes(r.value or b""),
            key=r.key,
            topic=r.topic,
            partition=r.partition,
            offset=r.offset,
            source_timestamp_ms=r.timestamp_ms,
            dead_lettered_at=datetime.now(UTC),
        )

    if not r.value:
        return dead(Reason.EMPTY, "empty record (null or zero-length value)")
    try:
        return decode_served_list(r.value)
    except msgspec.ValidationError as exc:
        return dead(Reason.INVALID_FIELD, str(exc))
    except msgspec.DecodeError as exc:
        return dead(Reason.MALFORMED_JSON, f"malformed JSON: {exc}")


def served_rows(lists: Sequence[tuple[KafkaRecord, ServedList]], archived_at: datetime) -> pa.Table:
    """Impressions (one row per served item) plus ``_source_topic``."""
    cols: dict[str, list[Any]] = {name: [] for name in SERVED_RECOMMENDATIONS.column_names}
    topics: list[str] = []
    for r, s in lists:
        ctx = None if s.context is None else msgspec.json.encode(s.context).decode()
        day = s.served_at.astimezone(UTC).date()
        ts = None if r.timestamp_ms is None else datetime.fromtimestamp(r.timestamp_ms / 1000, UTC)
        for pos, item in enumerate(s.items):
            cols["rec_id"].append(s.rec_id)
            cols["position"].append(pos)
            cols["item_id"].append(item.item_id)
            cols["score"].append(item.score)
            cols["item_source"].append(item.source)
            cols["user_id"].append(s.user_id)
            cols["session_id"].append(s.session_id)
            cols["algorithm_source"].append(s.algorithm_source)
            cols["model_version"].append(s.model_version)
            cols["experiment_id"].append(s.experiment_id)
            cols["variant"].append(s.variant)
            cols["list_size"].append(len(s.items))
            cols["cache_hit"].append(s.cache_hit)
            cols["computation_time_ms"].append(s.computation_time_ms)
            cols["context"].append(ctx)
            cols["served_at"].append(s.served_at)
            cols["kafka_partition"].append(r.partition)
            cols["kafka_offset"].append(r.offset)
            cols["kafka_timestamp"].append(ts)
            cols["archived_at"].append(archived_at)
            cols["served_date"].append(day)
            topics.append(r.topic)
    table = pa.Table.from_pydict(cols, schema=SERVED_RECOMMENDATIONS.schema)
    return table.append_column(SOURCE_TOPIC, pa.array(topics, pa.string()))


def served_writer(index: DedupIndex) -> Writer:
    """Insert-if-absent by ``rec_id`` (a re-sent list is the same list)."""

    def write(dt: DeltaTable, rows: pa.Table, props: CommitProperties) -> int:
        fresh = index.filter_new(dt, rows)
        write_deltalake(
            dt,
            without_source(fresh).cast(SERVED_RECOMMENDATIONS.schema),
            mode="append",
            commit_properties=props,
        )
        index.add(fresh, dt.version())
        return fresh.num_rows

    return write


def read_served(lake: Lake, start: date | None = None, end: date | None = None) -> pa.Table:
    """Impressions with ``start <= served_date <= end``."""
    import pyarrow.dataset as ds

    data = lake.dataset(SERVED_RECOMMENDATIONS)
    if data is None:
        return SERVED_RECOMMENDATIONS.schema.empty_table()
    flt = None
    if start is not None:
        flt = ds.field("served_date") >= start
    if end is not None:
        e = ds.field("served_date") <= end
        flt = e if flt is None else flt & e
    return data.to_table(filter=flt)

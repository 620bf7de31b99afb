"""Feedback: interactions that answer a served list (``rec_id`` set), as a view over silver.

Why a view and not a third copy of the events: feedback is exactly ``silver_interactions WHERE
rec_id IS NOT NULL``; a separate table would have to be kept consistent through dedup, retention
and GDPR erasure for no gain (``rec_id`` has statistics, so the filter skips files without any).

For DuckDB, :func:`duckdb_connect` registers every lake table (through deltalake -> Arrow dataset,
no duckdb extension needed) plus the ``feedback`` and ``impressions_with_clicks`` views::

    con = duckdb_connect(Lake(settings))
    con.sql("SELECT type, count(*) FROM feedback GROUP BY 1").fetchall()
"""

from __future__ import annotations

from datetime import date

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds

from batch.lake.storage import Lake
from schemas.lake import SILVER_INTERACTIONS, TABLES

FEEDBACK_COLUMNS = [
    "event_id",
    "rec_id",
    "position",
    "user_id",
    "item_id",
    "type",
    "rating",
    "watch_duration_sec",
    "session_id",
    "occurred_at",
    "event_date",
]


def read_feedback(lake: Lake, start: date | None = None, end: date | None = None) -> pa.Table:
    """Feedback events with ``start <= event_date <= end``."""
    data = lake.dataset(SILVER_INTERACTIONS)
    if data is None:
        return SILVER_INTERACTIONS.schema.empty_table().select(FEEDBACK_COLUMNS)
    flt = ds.field("rec_id").is_valid()
    if start is not None:
        flt = flt & (ds.field("event_date") >= start)
    if end is not None:
        flt = flt & (ds.field("event_date") <= end)
    return data.to_table(columns=FEEDBACK_COLUMNS, filter=flt)


def feedback_view_sql(click_types: list[str]) -> str:
    """SQL of the two views (DuckDB dialect, also valid Spark SQL)."""
    clicks = ", ".join("'" + t.replace("'", "''") + "'" for t in click_types)
    return f"""
CREATE OR REPLACE VIEW feedback AS
    SELECT {", ".join(FEEDBACK_COLUMNS)} FROM silver_interactions WHERE rec_id IS NOT NULL;
CREATE OR REPLACE VIEW impressions_with_clicks AS
    SELECT s.*, c.rec_id IS NOT NULL AS clicked
    FROM served_recommendations s
    LEFT JOIN (SELECT DISTINCT rec_id, position FROM feedback WHERE type IN ({clicks})) c
      ON c.rec_id = s.rec_id AND c.position = s.position;
"""


def duckdb_connect(lake: Lake, con: duckdb.DuckDBPyConnection | None = None) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with every existing lake table registered by name, plus the views.

    Tables are Arrow datasets of the current Delta snapshot: filters and projections are pushed
    down to the Parquet scan, and a table that does not exist yet is registered empty.
    """
    con = con or duckdb.connect()
    for spec in TABLES:
        data = lake.dataset(spec)
        con.register(spec.name, data if data is not None else spec.schema.empty_table())
    con.execute(feedback_view_sql(lake.settings.lake.click_event_types))
    return con

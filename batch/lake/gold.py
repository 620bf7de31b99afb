"""Gold tables: daily aggregates computed from silver with DuckDB over the Delta tables.

Why DuckDB and not Spark here: the inputs of one run are a few days of partitions, which DuckDB
scans through the Arrow datasets delta-rs exposes in seconds on one core, with no JVM start-up;
Spark remains the tool for the full-history training jobs (and reads the same tables).

* ``gold_popularity_daily``: per item and day, engagement counts, ratings, impressions, clicks on
  impressions and CTR, and a popularity score (the batch layer's event weights). Also upserted
  into Postgres ``popularity_metrics`` (its ``ctr`` column is generated there).
* ``gold_ctr_daily``: CTR by day, ``algorithm_source`` and position. A click is a feedback event
  whose type is in ``settings.lake.click_event_types`` on that ``(rec_id, position)``; it counts
  for the day the list was *served*, so a late click updates that day on the next run.
* ``gold_model_metrics``: Postgres ``model_performance_logs`` x ``models``, the history of every
  evaluation (a full snapshot each run: it is small).

Each run recomputes the last ``gold_lookback_days`` days (late events and clicks land in them)
and replaces exactly those partitions (``overwrite`` with a ``date`` predicate): re-running is
idempotent.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import duckdb
import pyarrow as pa
from deltalake import write_deltalake

from batch.lake.feedback import duckdb_connect
from batch.lake.storage import Lake
from lambdarec.settings import Settings
from schemas.lake import GOLD_CTR_DAILY, GOLD_MODEL_METRICS, GOLD_POPULARITY_DAILY, TableSpec

log = logging.getLogger(__name__)


def _sql_list(values: list[str]) -> str:
    return ", ".join("'" + v.replace("'", "''") + "'" for v in values) or "NULL"


def popularity_sql(settings: Settings) -> str:
    """Per item and day, ``$start <= date <= $end`` (DuckDB)."""
    b = settings.batch
    weights = ", ".join(f"('{t}', {float(w)!r})" for t, w in sorted(b.event_weights.items())) or "('', 0.0)"
    clicks = _sql_list(settings.lake.click_event_types)
    return f"""
WITH w(type, weight) AS (VALUES {weights}),
eng AS (
    SELECT e.item_id, e.event_date AS date,
        count(*) FILTER (WHERE e.type = 'view') AS view_count,
        count(*) FILTER (WHERE e.type = 'click') AS click_count,
        count(*) FILTER (WHERE e.type = 'play') AS play_count,
        count(*) FILTER (WHERE e.type = 'like') AS like_count,
        count(*) FILTER (WHERE e.type = 'rate') AS rating_count,
        avg(e.rating) FILTER (WHERE e.type = 'rate') AS average_rating,
        sum(CASE WHEN e.type = 'rate' THEN {float(b.rate_weight)!r} * (e.rating - 3) / 2
                 ELSE coalesce(w.weight, 0) END) AS popularity_score
    FROM silver_interactions e LEFT JOIN w ON w.type = e.type
    WHERE e.event_date BETWEEN $start AND $end
    GROUP BY ALL
),
clicked AS (
    SELECT DISTINCT rec_id, position FROM silver_interactions
    WHERE rec_id IS NOT NULL AND event_date >= $start AND type IN ({clicks})
),
imp AS (
    SELECT s.item_id, s.served_date AS date, count(*) AS recommendation_count,
           count(c.rec_id) AS recommendation_click_count
    FROM served_recommendations s
    LEFT JOIN clicked c ON c.rec_id = s.rec_id AND c.position = s.position
    WHERE s.served_date BETWEEN $start AND $end
    GROUP BY ALL
)
SELECT coalesce(e.item_id, i.item_id) AS item_id,
       coalesce(e.date, i.date) AS date,
       coalesce(e.view_count, 0) AS view_count,
       coalesce(e.click_count, 0) AS click_count,
       coalesce(e.play_count, 0) AS play_count,
       coalesce(e.like_count, 0) AS like_count,
       coalesce(e.rating_count, 0) AS rating_count,
       e.average_rating,
       coalesce(i.recommendation_count, 0) AS recommendation_count,
       coalesce(i.recommendation_click_count, 0) AS recommendation_click_count,
       CASE WHEN i.recommendation_count > 0
            THEN i.recommendation_click_count / i.recommendation_count END AS ctr,
       coalesce(e.popularity_score, 0.0) AS popularity_score,
       $now AS computed_at
FROM eng e FULL OUTER JOIN imp i ON e.item_id = i.item_id AND e.date = i.date
ORDER BY date, item_id
"""


def ctr_sql(settings: Settings) -> str:
    """CTR by day, algorithm_source and position, ``$start <= date <= $end`` (DuckDB)."""
    clicks = _sql_list(settings.lake.click_event_types)
    return f"""
WITH clicked AS (
    SELECT DISTINCT rec_id, position FROM silver_interactions
    WHERE rec_id IS NOT NULL AND event_date >= $start AND type IN ({clicks})
)
SELECT s.served_date AS date, s.algorithm_source, s.position,
       count(*) AS impressions, count(c.rec_id) AS clicks,
       count(c.rec_id) / count(*) AS ctr, $now AS computed_at
FROM served_recommendations s
LEFT JOIN clicked c ON c.rec_id = s.rec_id AND c.position = s.position
WHERE s.served_date BETWEEN $start AND $end
GROUP BY ALL
ORDER BY date, algorithm_source, position
"""


MODEL_METRICS_SQL = """
SELECT l.log_id, l.model_id, m.algorithm, m.version, m.status, l.phase, l.k, l.rmse, l.mae,
       l.precision_at_k, l.recall_at_k, l.ndcg_at_k, l.map_at_k, l.coverage, l.catalog_coverage,
       l.total_users_trained, l.total_items_trained, l.training_duration_sec, l.metrics, l.logged_at
FROM model_performance_logs l JOIN models m USING (model_id)
ORDER BY l.log_id
"""


@dataclass
class GoldReport:
    start: date
    end: date
    rows: dict[str, int] = field(default_factory=dict)
    postgres_rows: int = 0
    problems: list[str] = field(default_factory=list)


def _query(con: duckdb.DuckDBPyConnection, sql: str, start: date, end: date, spec: TableSpec) -> pa.Table:
    now = datetime.now(UTC)
    got = con.sql(sql, params={"start": start, "end": end, "now": now}).to_arrow_table()
    return got.cast(spec.schema)


def _replace_days(lake: Lake, spec: TableSpec, rows: pa.Table, start: date, end: date) -> None:
    lake.ensure(spec)
    col = spec.date_column
    write_deltalake(
        lake.uri(spec),
        rows,
        mode="overwrite",
        predicate=f"\"{col}\" >= '{start.isoformat()}' AND \"{col}\" <= '{end.isoformat()}'",
        storage_options=lake.delta_options,
    )


def compute_popularity(settings: Settings, start: date, end: date) -> pa.Table:
    """``gold_popularity_daily`` rows for ``start..end`` (not written)."""
    con = duckdb_connect(Lake(settings))
    return _query(con, popularity_sql(settings), start, end, GOLD_POPULARITY_DAILY)


def compute_ctr(settings: Settings, start: date, end: date) -> pa.Table:
    """``gold_ctr_daily`` rows for ``start..end`` (not written)."""
    con = duckdb_connect(Lake(settings))
    return _query(con, ctr_sql(settings), start, end, GOLD_CTR_DAILY)


def model_metrics(settings: Settings) -> pa.Table:
    """``gold_model_metrics`` from Postgres."""
    import psycopg

    with psycopg.connect(settings.postgres.url, connect_timeout=5) as conn:
        cur = conn.execute(MODEL_METRICS_SQL)
        names = [d.name for d in cur.description or []]
        rows = cur.fetchall()
    cols = {n: [r[i] for r in rows] for i, n in enumerate(names)}
    cols["metrics"] = [json.dumps(m, sort_keys=True) if m is not None else None for m in cols["metrics"]]
    cols["date"] = [t.astimezone(UTC).date() for t in cols["logged_at"]]
    return pa.Table.from_pydict(
        {c: cols[c] for c in GOLD_MODEL_METRICS.column_names}, schema=GOLD_MODEL_METRICS.schema
    )


def upsert_popularity(settings: Settings, rows: pa.Table) -> int:
    """Insert or update Postgres ``popularity_metrics`` (``ctr`` is generated there)."""
    import psycopg

    cols = [
        "item_id",
        "date",
        "view_count",
        "click_count",
        "play_count",
        "like_count",
        "rating_count",
        "average_rating",
        "recommendation_count",
        "recommendation_click_count",
        "popularity_score",
        "computed_at",
    ]
    data = rows.select(cols).to_pylist()
    if not data:
        return 0
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in cols[2:])
    with psycopg.connect(settings.postgres.url, connect_timeout=5) as conn, conn.cursor() as cur:
        cur.execute("CREATE TEMP TABLE pm_in (LIKE popularity_metrics INCLUDING DEFAULTS) ON COMMIT DROP")
        with cur.copy(f"COPY pm_in ({', '.join(cols)}) FROM STDIN") as copy:
            for r in data:
                copy.write_row([r[c] for c in cols])
        cur.execute(
            f"INSERT INTO popularity_metrics ({', '.join(cols)}) SELECT {', '.join(cols)} FROM pm_in "
            f"ON CONFLICT (item_id, date) DO UPDATE SET {updates}"
        )
        n = cur.rowcount
    return n


def run_gold(
    settings: Settings,
    start: date | None = None,
    end: date | None = None,
    *,
    postgres: bool = True,
) -> GoldReport:
    """Recompute the gold tables for ``start..end`` (default: the last ``gold_lookback_days``)."""
    end = end or datetime.now(UTC).date()
    start = start or end - timedelta(days=settings.lake.gold_lookback_days - 1)
    lake = Lake(settings)
    report = GoldReport(start, end)
    con = duckdb_connect(lake)
    pop = _query(con, popularity_sql(settings), start, end, GOLD_POPULARITY_DAILY)
    _replace_days(lake, GOLD_POPULARITY_DAILY, pop, start, end)
    report.rows[GOLD_POPULARITY_DAILY.name] = pop.num_rows
    ctr = _query(con, ctr_sql(settings), start, end, GOLD_CTR_DAILY)
    _replace_days(lake, GOLD_CTR_DAILY, ctr, start, end)
    report.rows[GOLD_CTR_DAILY.name] = ctr.num_rows
    if postgres:
        try:
            report.postgres_rows = upsert_popularity(settings, pop)
            metrics = model_metrics(settings)
            lake.ensure(GOLD_MODEL_METRICS)
            write_deltalake(
                lake.uri(GOLD_MODEL_METRICS), metrics, mode="overwrite", storage_options=lake.delta_options
            )
            report.rows[GOLD_MODEL_METRICS.name] = metrics.num_rows
        except Exception as exc:  # Postgres down: the lake's gold tables are still done
            log.warning("gold: Postgres part skipped (%s)", exc)
            report.problems.append(f"postgres: {str(exc).strip()[:300]}")
    return report

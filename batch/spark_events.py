"""Task 3's front end: read the training events, count them, find the holdout's split point,
validate (``batch/quality.py``) and aggregate them to user-item pairs — in Spark or on the driver.

Why: the first version collected every raw event to the driver and built the matrix there, which
cannot scale out. With ``batch.front_end=spark`` the events are read once (Delta lake + the rt
rows not yet archived, through JDBC), cached in Spark, validated there and reduced by one
``groupBy(user_id, item_id)`` to what the models need: per pair the confidence of the whole
window, of the part before the holdout, and whether the holdout holds a positive event for it.
Only those pairs (about a third of the events on the synthetic world) reach the driver. On a
local master the same steps run in pandas on the collected events (``*_pandas``; ``auto`` picks
them there), because on one machine that is faster (50 s vs 69 s at 2 M events, docs/batch.md)
and memory is the only cost. Both produce identical pairs (``tests/integration/test_als_spark.py``).

The confidence formula is the one of ``batch/interactions.py`` (event weight, ``rate`` events
``rate_weight * (rating - 3) / 2``, decay ``0.5 ** (age_days / half_life_days)`` from the
cut-off, sum capped at ``max_confidence``, non-positive sums dropped), written as Spark columns.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from lambdarec.settings import BatchSettings, Settings

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

EVENT_COLUMNS = ["event_id", "user_id", "item_id", "type", "occurred_at", "rating"]
SOURCE = "_source"


def jdbc_of(url: str) -> tuple[str, dict[str, str]]:
    """``postgresql://u:p@h:port/db`` -> (``jdbc:postgresql://h:port/db``, {user, password, driver})."""
    from urllib.parse import unquote, urlparse

    p = urlparse(url)
    props = {
        "user": unquote(p.username or ""),
        "password": unquote(p.password or ""),
        "driver": "org.postgresql.Driver",
    }
    return f"jdbc:postgresql://{p.hostname}:{p.port or 5432}{p.path}", props


def read_events(
    settings: Settings,
    spark: SparkSession,
    start: datetime | None,
    cutoff: datetime,
    recent_since: datetime | None,
    *,
    cache: bool = True,
) -> DataFrame | None:
    """Silver Delta interactions in ``[start, cutoff)`` plus the rt rows in ``[recent_since, cutoff)``
    whose event_id the lake does not have yet, with a ``_source`` column (lake/postgres), cached.

    None when there is neither a lake table nor a Postgres read configured."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    from batch.lake.storage import Lake
    from schemas.lake import SILVER_INTERACTIONS

    spark.conf.set("spark.sql.session.timeZone", "UTC")
    spark.conf.set("spark.sql.execution.arrow.pyspark.enabled", "true")
    lake = Lake(settings)
    cols = [F.col(c) for c in EVENT_COLUMNS]
    out: DataFrame | None = None
    lake_df = None
    if lake.open(SILVER_INTERACTIONS) is not None:
        lake_df = spark.read.format("delta").load(lake.spark_path(SILVER_INTERACTIONS))
        cond = F.col("occurred_at") < F.lit(cutoff)
        if start is not None:
            cond = (
                cond & (F.col("occurred_at") >= F.lit(start)) & (F.col("event_date") >= F.lit(start.date()))
            )
        lake_df = lake_df.where(cond).select(*cols)
        out = lake_df.withColumn(SOURCE, F.lit("lake"))
    if settings.batch.read_recent_from_postgres:
        lo = recent_since or start
        url, props = jdbc_of(settings.postgres.url)
        where = f"occurred_at < '{cutoff.isoformat()}'" + (
            f" AND occurred_at >= '{lo.isoformat()}'" if lo else ""
        )
        query = (
            "(SELECT event_id::text AS event_id, user_id, item_id, event_type AS type, occurred_at, "
            f"rating::double precision AS rating FROM rt_user_interactions WHERE {where}) AS rt"
        )
        rt = spark.read.jdbc(url, query, properties=props).select(*cols)
        if lake_df is not None:
            rt = rt.join(lake_df.select("event_id"), on="event_id", how="left_anti")
        rt = rt.withColumn(SOURCE, F.lit("postgres"))
        out = rt if out is None else out.unionByName(rt)
    if out is None:
        return None
    out = out.withColumn("rating", F.col("rating").cast("double"))
    return out.persist(StorageLevel.MEMORY_AND_DISK) if cache else out


@dataclass(frozen=True)
class WindowStats:
    """One pass over the cached events: counts per source, the newest event, the holdout size."""

    counts: dict[str, int]
    newest: pd.Timestamp | None
    in_last_hours: int

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def window_stats(events: DataFrame, since: datetime) -> WindowStats:
    """Counts per source, newest ``occurred_at`` and the number of events at or after ``since``."""
    from pyspark.sql import functions as F

    rows = (
        events.groupBy(SOURCE)
        .agg(
            F.count(F.lit(1)).alias("n"),
            F.max(F.col("occurred_at").cast("double")).alias("newest"),
            F.sum(F.when(F.col("occurred_at") >= F.lit(since), 1).otherwise(0)).alias("recent"),
        )
        .collect()
    )
    counts = {"lake": 0, "postgres": 0} | {r[SOURCE]: int(r["n"]) for r in rows}
    newest = max((float(r["newest"]) for r in rows if r["newest"] is not None), default=None)
    return WindowStats(
        counts=counts,
        newest=None if newest is None else pd.Timestamp(newest, unit="s", tz=UTC),
        in_last_hours=int(sum(int(r["recent"] or 0) for r in rows)),
    )


def split_point(
    events: DataFrame, stats: WindowStats, cutoff: datetime, hours: float, min_events: int, test_ratio: float
) -> tuple[datetime, str]:
    """The holdout's start: ``cutoff - hours`` if that leaves ``min_events`` to test and something to
    train on, else the ``1 - test_ratio`` time quantile (exact; same rule as ``holdout_split``)."""
    split_at = cutoff - timedelta(hours=hours)
    if min_events <= stats.in_last_hours < stats.total:
        return split_at, f"events after {split_at:%Y-%m-%d %H:%M} UTC"
    from pyspark.sql import functions as F

    epoch = events.select(F.col("occurred_at").cast("double").alias("t"))
    q = epoch.approxQuantile("t", [1 - test_ratio], 0.0)[0]
    at = datetime.fromtimestamp(q, UTC)
    return at, f"last {test_ratio:.0%} of events by time (after {at:%Y-%m-%d %H:%M} UTC)"


def weight_column(b: BatchSettings, cutoff: datetime) -> Column:
    """Spark form of ``interactions.event_weights`` with ages measured from ``cutoff``."""
    from itertools import chain

    from pyspark.sql import functions as F

    wmap = F.create_map(*chain.from_iterable((F.lit(k), F.lit(float(v))) for k, v in b.event_weights.items()))
    type_w = F.coalesce(wmap[F.col("type")], F.lit(0.0))
    rating = F.col("rating")
    rated = (F.col("type") == "rate") & rating.isNotNull() & ~F.isnan(rating)
    w = F.when(rated, F.lit(b.rate_weight) * (rating - 3.0) / 2.0).otherwise(type_w)
    age_days = F.greatest(
        (F.lit(cutoff.timestamp()) - F.col("occurred_at").cast("double")) / 86400.0, F.lit(0.0)
    )
    return w * F.pow(F.lit(0.5), age_days / F.lit(b.half_life_days))


def aggregate_pairs(
    events: DataFrame, b: BatchSettings, cutoff: datetime, split_at: datetime
) -> pd.DataFrame:
    """One row per (user, item) that matters: ``w_all`` (the window), ``w_train`` (before
    ``split_at``, null if none) and ``test_pos`` (a positive event at or after ``split_at``)."""
    from pyspark.sql import functions as F

    w = weight_column(b, cutoff)
    before = F.col("occurred_at") < F.lit(split_at)
    agg = (
        events.select("user_id", "item_id", "occurred_at", w.alias("w"))
        .groupBy("user_id", "item_id")
        .agg(
            F.sum("w").alias("w_all"),
            F.sum(F.when(before, F.col("w"))).alias("w_train"),
            F.max(F.when(~before, F.col("w"))).alias("w_test_max"),
        )
        .where((F.col("w_all") > 0) | (F.col("w_train") > 0) | (F.col("w_test_max") > 0))
        .select(
            "user_id",
            "item_id",
            "w_all",
            "w_train",
            F.coalesce(F.col("w_test_max") > 0, F.lit(False)).alias("test_pos"),
        )
    )
    pdf: pd.DataFrame = agg.toPandas()
    pdf["w_all"] = pdf["w_all"].astype(np.float64)
    pdf["w_train"] = pd.to_numeric(pdf["w_train"]).astype(np.float64)
    return pdf


def rated_events(events: DataFrame, split_at: datetime) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``rate`` events for the explicit-ALS RMSE: the latest rating per pair before ``split_at``
    and every rating at or after it (``user_id, item_id, rating``)."""
    from pyspark.sql import functions as F

    r = events.where((F.col("type") == "rate") & F.col("rating").isNotNull() & ~F.isnan("rating"))
    before = F.col("occurred_at") < F.lit(split_at)
    train = (
        r.where(before)
        .groupBy("user_id", "item_id")
        .agg(F.max_by("rating", "occurred_at").alias("rating"))
        .toPandas()
    )
    test = r.where(~before).select("user_id", "item_id", "rating").toPandas()
    return train, test


def release(events: Any) -> None:
    """Drop the cached events (the next run reads fresh data)."""
    if events is not None:
        events.unpersist()


# ------------------------------------------------------------------ the same steps on the driver
def use_pandas(settings: Settings) -> bool:
    """``batch.front_end``: ``auto`` = pandas on a local master, Spark on a cluster (before the
    window's size is known; :func:`choose_front_end` then sends a window too big for the driver to
    Spark).

    Why not Spark everywhere: on one machine the driver *is* the executor, so collecting the raw
    events costs no parallelism, and pandas did read + validate + aggregate in 50 s where the Spark
    path took 69 s at 2 M events on this 2-core box (docs/batch.md, ``bench_batch``). On a
    cluster the Spark path keeps raw events off the driver and runs on the executors."""
    mode = settings.batch.front_end
    return mode == "pandas" or (mode == "auto" and settings.spark.master.startswith("local"))


#: Arrow bytes of one raw event collected to the driver (uuid event id, user and item ids, type,
#: timestamp, rating, source): 87 on the demo lake; rounded up for longer ids.
EVENT_BYTES = 100


@dataclass(frozen=True)
class FrontEnd:
    """Where task 3 validates and aggregates the window, and why (a line for the run log)."""

    local: bool
    reason: str

    @property
    def name(self) -> str:
        return "pandas" if self.local else "spark"


def choose_front_end(settings: Settings, max_rows: int, max_result_bytes: int | None) -> FrontEnd:
    """The front end for a window of at most ``max_rows`` raw events, decided *before* anything is
    collected. ``max_result_bytes``: the session's ``spark.driver.maxResultSize`` (None or 0: no
    limit).

    ``auto`` on a local master collects only if the window fits ``batch.pandas_max_events`` (when
    set) and ``max_rows * EVENT_BYTES`` fits half of ``maxResultSize`` (ids longer than the
    demo's must still fit); otherwise Spark aggregates and only the pairs reach the driver. Why
    not try and fall back: a failed collect costs the whole read, and recognising the failure
    meant matching Spark's error message. An explicit ``front_end`` is obeyed.

    >>> [choose_front_end(Settings(), n, 1 << 30).local for n in (2_000_000, 25_000_000)]
    [True, False]
    """
    mode = settings.batch.front_end
    if not use_pandas(settings):
        return FrontEnd(False, f"batch.front_end={mode} on master {settings.spark.master}")
    if mode == "pandas":
        return FrontEnd(True, "batch.front_end=pandas")
    cap = settings.batch.pandas_max_events
    if cap and max_rows > cap:
        return FrontEnd(False, f"the window's {max_rows:,} events exceed batch.pandas_max_events={cap:,}")
    if max_result_bytes and max_rows * EVENT_BYTES > max_result_bytes // 2:
        return FrontEnd(
            False,
            f"the window's {max_rows:,} events (~{max_rows * EVENT_BYTES / 2**20:,.0f} MiB) exceed half of"
            f" spark.driver.maxResultSize ({max_result_bytes / 2**20:,.0f} MiB)",
        )
    return FrontEnd(True, f"the window's {max_rows:,} events fit the driver")


def max_result_bytes(spark: SparkSession) -> int | None:
    """``spark.driver.maxResultSize`` of the running session in bytes (Spark's own parser and
    default, 1g); None when it is 0 (unlimited)."""
    conf = spark.sparkContext.getConf().get("spark.driver.maxResultSize", "1g")
    n = int(spark.sparkContext._jvm.org.apache.spark.network.util.JavaUtils.byteStringAsBytes(conf))  # type: ignore[union-attr]
    return n or None


def window_rows(
    settings: Settings, start: datetime | None, cutoff: datetime, recent_since: datetime | None
) -> int:
    """An upper bound of the events :func:`read_events` returns, without reading them: the
    ``num_records`` of the Delta files whose ``occurred_at`` range meets ``[start, cutoff)`` (from
    the transaction log's statistics; a file without them counts whole) plus the rt rows of
    ``[recent_since or start, cutoff)`` (an index count in Postgres; those already in the lake
    counted twice)."""
    import psycopg
    import pyarrow as pa
    import pyarrow.compute as pc

    from batch.lake.storage import Lake
    from schemas.lake import SILVER_INTERACTIONS

    rows = 0
    dt = Lake(settings).open(SILVER_INTERACTIONS)
    if dt is not None:
        files = pa.table(dt.get_add_actions(flatten=True))
        # a file without a record count: assume >= 1 row per 8 bytes of parquet (an upper bound)
        size_rows = pc.divide(files.column("size_bytes"), 8)
        n = (
            pc.coalesce(files.column("num_records"), size_rows)
            if "num_records" in files.column_names
            else size_rows
        )
        if "min.occurred_at" in files.column_names:
            lo, hi = files.column("min.occurred_at"), files.column("max.occurred_at")
            keep = pc.fill_null(pc.less(lo, pa.scalar(cutoff, lo.type)), True)
            if start is not None:
                keep = pc.and_(keep, pc.fill_null(pc.greater_equal(hi, pa.scalar(start, hi.type)), True))
            n = pc.filter(n, keep)
        rows += int(pc.sum(n).as_py() or 0)
    if settings.batch.read_recent_from_postgres:
        lo_t = recent_since or start
        with psycopg.connect(settings.postgres.url, autocommit=True, connect_timeout=10) as conn:
            r = conn.execute(
                "SELECT count(*) FROM rt_user_interactions WHERE occurred_at < %s"
                + (" AND occurred_at >= %s" if lo_t else ""),
                (cutoff, lo_t) if lo_t else (cutoff,),
            ).fetchone()
        rows += int(r[0]) if r else 0
    return rows


def collect(events: DataFrame) -> pd.DataFrame:
    """Raw events to pandas through Arrow (``occurred_at`` UTC, ``rating`` float)."""
    pdf: pd.DataFrame = events.toPandas()
    pdf["occurred_at"] = pd.to_datetime(pdf["occurred_at"], utc=True)
    pdf["rating"] = pd.to_numeric(pdf["rating"], errors="coerce")
    return pdf


def window_stats_pandas(pdf: pd.DataFrame, since: datetime) -> WindowStats:
    """:func:`window_stats` of a collected frame."""
    counts = {"lake": 0, "postgres": 0} | {str(k): int(v) for k, v in pdf[SOURCE].value_counts().items()}
    newest = pdf["occurred_at"].max() if len(pdf) else None
    recent = int((pdf["occurred_at"] >= pd.Timestamp(since)).sum())
    return WindowStats(counts, None if newest is None or pd.isna(newest) else pd.Timestamp(newest), recent)


def split_point_pandas(
    pdf: pd.DataFrame, stats: WindowStats, cutoff: datetime, hours: float, min_events: int, test_ratio: float
) -> tuple[datetime, str]:
    """:func:`split_point` of a collected frame (same rule, exact ``lower`` quantile)."""
    split_at = cutoff - timedelta(hours=hours)
    if min_events <= stats.in_last_hours < stats.total:
        return split_at, f"events after {split_at:%Y-%m-%d %H:%M} UTC"
    at = pd.Timestamp(pdf["occurred_at"].quantile(1 - test_ratio, interpolation="lower")).to_pydatetime()
    return at, f"last {test_ratio:.0%} of events by time (after {at:%Y-%m-%d %H:%M} UTC)"


def aggregate_pairs_pandas(
    pdf: pd.DataFrame, b: BatchSettings, cutoff: datetime, split_at: datetime
) -> pd.DataFrame:
    """:func:`aggregate_pairs` of a collected frame: the same columns and rows."""
    from batch.interactions import event_weights

    w = event_weights(pdf, b, now=pd.Timestamp(cutoff))
    before = (pdf["occurred_at"] < pd.Timestamp(split_at)).to_numpy()
    df = pd.DataFrame(
        {
            "user_id": pdf["user_id"].to_numpy(),
            "item_id": pdf["item_id"].to_numpy(),
            "w_all": w,
            "w_train": np.where(before, w, np.nan),
            "w_test": np.where(before, np.nan, w),
        }
    )
    g = df.groupby(["user_id", "item_id"], sort=False).agg(
        w_all=("w_all", "sum"), w_train=("w_train", "sum"), w_test_max=("w_test", "max")
    )
    g = g[(g["w_all"] > 0) | (g["w_train"] > 0) | (g["w_test_max"] > 0)].reset_index()
    g["test_pos"] = (g["w_test_max"] > 0).to_numpy()
    return g[["user_id", "item_id", "w_all", "w_train", "test_pos"]]


def rated_events_pandas(pdf: pd.DataFrame, split_at: datetime) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`rated_events` of a collected frame."""
    r = pdf[(pdf["type"] == "rate") & pdf["rating"].notna()]
    before = r["occurred_at"] < pd.Timestamp(split_at)
    train = (
        r[before]
        .sort_values("occurred_at", kind="stable")
        .drop_duplicates(["user_id", "item_id"], keep="last")[["user_id", "item_id", "rating"]]
    )
    return train.reset_index(drop=True), r.loc[~before, ["user_id", "item_id", "rating"]].reset_index(
        drop=True
    )

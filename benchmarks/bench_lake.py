"""Lake figures on this machine: archive throughput into Delta on MinIO, and an analyst query.

Prints figures, it is not a timed test. Needs Kafka and MinIO (``lambdarec infra up kafka minio``);
uses private ``bench.lake-*`` topics and a fresh prefix in the archive bucket, deleted afterwards
unless ``--keep``. Run::

    .venv/bin/python -m benchmarks.bench_lake [--events 200000] [--impressions 10000000] [--spark]

1. **Archive**: ``--events`` interaction events (about 3 % feedback with served lists, 1 % corrupt,
   2 % re-sent duplicates) are produced to Kafka first, then ``Archiver.run(once=True)`` moves them
   into bronze + silver + served + dead letters on MinIO with the default micro-batch size. The
   figure is records/s end to end (decode, four Delta commits per batch with their offsets,
   dedup), measured from the first poll to the last commit.
2. **Analyst query**: daily CTR by algorithm over ``--impressions`` served impressions (served
   lists of 10 items over 30 days, 3 algorithms) joined with ``impressions / 10`` feedback events.
   Producing 10 M records through Kafka and the archiver would take longer than this shared
   2-core box should be busy, so these rows are generated directly as Arrow and written with the
   same schemas (``schemas/lake.py``) and the same delta-rs writer; the query is what an analyst
   runs: DuckDB over the Arrow datasets (``batch.lake.feedback.duckdb_connect``), polars
   ``scan_delta``, and with ``--spark`` Spark SQL (``infra.spark.get_spark``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from deltalake import write_deltalake
from rich.console import Console
from rich.table import Table

from batch.lake.archiver import Archiver
from batch.lake.feedback import duckdb_connect
from batch.lake.storage import Lake
from infra.s3 import s3_client
from lambdarec.settings import Settings, get_settings
from schemas.lake import SERVED_RECOMMENDATIONS, SILVER_INTERACTIONS
from schemas.topics import INTERACTIONS, SERVED, producer_config, topic_configs, topic_name

console = Console()
ALGOS = ["realtime", "batch", "popular"]
CTR_SQL = """
SELECT served_date AS day, algorithm_source, count(*) AS impressions,
       count(*) FILTER (WHERE clicked) AS clicks, count(*) FILTER (WHERE clicked) / count(*) AS ctr
FROM impressions_with_clicks GROUP BY ALL ORDER BY day, algorithm_source
"""


def _settings(base: Settings, prefix: str, root: str) -> Settings:
    return base.model_copy(
        update={
            "kafka": base.kafka.model_copy(update={"topic_prefix": prefix}),
            "lake": base.lake.model_copy(
                update={"root": root, "advance_watermark": False, "maintenance_interval_minutes": 0}
            ),
        }
    )


def _admin_conf(s: Settings) -> dict[str, Any]:
    return {"bootstrap.servers": s.kafka.bootstrap_servers, "logger": logging.getLogger("lambdarec.kafka")}


def _create_topics(s: Settings) -> list[str]:
    admin = AdminClient(_admin_conf(s))
    specs = [NewTopic(n, num_partitions=p, replication_factor=1, config=c) for n, p, c in topic_configs(s)]
    for f in admin.create_topics(specs).values():
        f.result(30)
    return [t.topic for t in specs]


def _delete_topics(s: Settings, names: list[str]) -> None:
    admin = AdminClient(_admin_conf(s))
    for f in admin.delete_topics(names).values():
        with contextlib.suppress(Exception):
            f.result(30)


def produce_events(s: Settings, n: int, seed: int = 1) -> tuple[int, float]:
    """Produce ``n`` interaction records (+ served lists); returns (records, seconds)."""
    rng = np.random.default_rng(seed)
    enc = msgspec.json.Encoder()
    now = datetime.now(UTC)
    p = Producer(producer_config(s, **{"linger.ms": 20}))
    inter, served = topic_name(s, INTERACTIONS), topic_name(s, SERVED)
    users = rng.integers(0, 20_000, n)
    items = rng.integers(0, 5_000, n)
    kinds = rng.choice(["view", "click", "play", "like"], n, p=[0.6, 0.2, 0.15, 0.05])
    t0 = time.monotonic()
    sent: list[bytes] = []
    count = 0

    def send(topic: str, key: bytes, value: bytes) -> None:
        while True:
            try:
                p.produce(topic, value, key)
                return
            except BufferError:
                p.poll(0.05)

    for i in range(n):
        u = f"user-{users[i]}"
        if i % 100 == 1 and sent:
            send(inter, u.encode(), sent[int(rng.integers(len(sent)))])
        elif i % 100 == 2:
            send(inter, u.encode(), b'{"event_id": "x", broken')
        else:
            ev: dict[str, Any] = {
                "event_id": str(uuid.uuid4()),
                "user_id": u,
                "item_id": f"item-{items[i]}",
                "type": str(kinds[i]),
                "occurred_at": (now - timedelta(seconds=int(rng.integers(0, 86_400)))).isoformat(),
            }
            if i % 33 == 0:
                rec = f"rec-{i}"
                lst = {
                    "rec_id": rec,
                    "user_id": u,
                    "algorithm_source": ALGOS[i % 3],
                    "served_at": now.isoformat(),
                    "items": [
                        {"item_id": f"item-{items[(i + k) % n]}", "score": 1 - k / 10} for k in range(10)
                    ],
                }
                send(served, u.encode(), enc.encode(lst))
                count += 1
                ev.update(rec_id=rec, position=int(rng.integers(0, 10)), type="click")
            raw = enc.encode(ev)
            if len(sent) < 10_000:
                sent.append(raw)
            send(inter, u.encode(), raw)
        count += 1
    assert p.flush(120) == 0
    return count, time.monotonic() - t0


def bench_archive(base: Settings, n: int, root: str) -> dict[str, Any]:
    prefix = f"bench.lake-{uuid.uuid4().hex[:8]}."
    s = _settings(base, prefix, root)
    names = _create_topics(s)
    try:
        records, produce_s = produce_events(s, n)
        console.print(f"produced {records:,} records in {produce_s:.1f}s ({records / produce_s:,.0f}/s)")
        rep = Archiver(s).run(once=True)
        assert rep.caught_up and rep.records == records, (rep.records, records)
        return {
            "records": rep.records,
            "seconds": rep.seconds,
            "rate": rep.rows_per_second,
            "batches": rep.batches,
            "rows": dict(rep.rows),
        }
    finally:
        _delete_topics(s, names)


# ---- the analyst query over generated rows -------------------------------------------------------


def _ids(prefix: str, values: np.ndarray) -> pa.Array:
    return pc.binary_join_element_wise(prefix, pa.array(values).cast(pa.string()), "")


def generate(
    s: Settings, impressions: int, days: int = 30, chunk_lists: int = 200_000, seed: int = 2
) -> float:
    """Write ``impressions`` served rows and ``impressions / 10`` feedback events; returns seconds."""
    rng = np.random.default_rng(seed)
    lake = Lake(s)
    served_dt = lake.ensure(SERVED_RECOMMENDATIONS)
    silver_dt = lake.ensure(SILVER_INTERACTIONS)
    lists = impressions // 10
    start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=days)
    t0 = time.monotonic()
    for lo in range(0, lists, chunk_lists):
        m = min(chunk_lists, lists - lo)
        list_no = np.arange(lo, lo + m)
        offsets = rng.integers(0, days * 86_400, m)
        served_at = pa.array(
            (np.datetime64(start.replace(tzinfo=None), "us") + offsets.astype("timedelta64[s]")).astype(
                "datetime64[us]"
            )
        ).cast(pa.timestamp("us", tz="UTC"))
        algo = pa.array(np.array(ALGOS)[list_no % 3])
        users = _ids("user-", rng.integers(0, 200_000, m))
        rec = _ids("rec-", list_no)
        rep = np.repeat(np.arange(m), 10)
        pos = np.tile(np.arange(10, dtype=np.int32), m)
        n = m * 10
        served = {
            "rec_id": rec.take(rep),
            "position": pa.array(pos),
            "item_id": _ids("item-", rng.integers(0, 50_000, n)),
            "score": pa.array(1 - pos / 10),
            "item_source": pa.nulls(n, pa.string()),
            "user_id": users.take(rep),
            "session_id": pa.nulls(n, pa.string()),
            "algorithm_source": algo.take(rep),
            "model_version": pa.array(["v1"] * n),
            "experiment_id": pa.nulls(n, pa.int64()),
            "variant": pa.nulls(n, pa.string()),
            "list_size": pa.array(np.full(n, 10, np.int32)),
            "cache_hit": pa.array(rng.random(n) < 0.3),
            "computation_time_ms": pa.array(rng.random(n) * 20),
            "context": pa.nulls(n, pa.string()),
            "served_at": served_at.take(rep),
            "kafka_partition": pa.array(np.zeros(n, np.int32)),
            "kafka_offset": pa.array(np.repeat(list_no, 10)),
            "kafka_timestamp": served_at.take(rep),
            "archived_at": served_at.take(rep),
            "served_date": served_at.take(rep).cast(pa.date32()),
        }
        write_deltalake(served_dt, pa.table(served, schema=SERVED_RECOMMENDATIONS.schema), mode="append")
        # one feedback event per list on average: clicks for realtime lists more often
        k = m
        which = rng.integers(0, m, k)
        p = rng.integers(0, 10, k).astype(np.int32)
        click_p = np.array([0.5, 0.35, 0.2])[list_no[which] % 3]
        types = np.where(rng.random(k) < click_p, "click", "view")
        occurred = served_at.take(pa.array(which)).cast(pa.int64()).to_numpy() + 30_000_000
        occ = pa.array(occurred).cast(pa.timestamp("us", tz="UTC"))
        fb = {
            "event_id": pa.array([str(uuid.UUID(int=int(x))) for x in rng.integers(0, 2**63, k)]),
            "user_id": users.take(pa.array(which)),
            "item_id": _ids("item-", rng.integers(0, 50_000, k)),
            "type": pa.array(types),
            "occurred_at": occ,
            "rating": pa.nulls(k, pa.float64()),
            "value": pa.nulls(k, pa.float64()),
            "watch_duration_sec": pa.nulls(k, pa.float64()),
            "session_id": pa.nulls(k, pa.string()),
            "source": pa.nulls(k, pa.string()),
            "rec_id": rec.take(pa.array(which)),
            "position": pa.array(p),
            "context": pa.nulls(k, pa.string()),
            "schema_version": pa.array(np.ones(k, np.int32)),
            "received_at": occ,
            "kafka_partition": pa.array(np.zeros(k, np.int32)),
            "kafka_offset": pa.array(np.arange(lo, lo + k)),
            "kafka_timestamp": occ,
            "archived_at": occ,
            "event_date": occ.cast(pa.date32()),
        }
        write_deltalake(silver_dt, pa.table(fb, schema=SILVER_INTERACTIONS.schema), mode="append")
        console.print(f"  generated {lo + m:,}/{lists:,} lists", end="\r")
    console.print()
    return time.monotonic() - t0


def _timed(fn: Any, repeat: int = 3) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.monotonic()
        out = fn()
        best = min(best, time.monotonic() - t)
    return best, out


def bench_query(s: Settings, spark: bool) -> dict[str, float]:
    import polars as pl

    lake = Lake(s)
    out: dict[str, float] = {}

    def duck() -> pa.Table:
        return duckdb_connect(lake).sql(CTR_SQL).to_arrow_table()

    out["duckdb"], rows = _timed(duck)
    console.print(f"  duckdb: {rows.num_rows} (day, algorithm) rows")

    def polars_q() -> pl.DataFrame:
        served = pl.scan_delta(lake.uri("served_recommendations"), storage_options=lake.storage_options)
        silver = pl.scan_delta(lake.uri("silver_interactions"), storage_options=lake.storage_options)
        clicked = (
            silver.filter(pl.col("rec_id").is_not_null() & pl.col("type").is_in(["click", "play"]))
            .select("rec_id", "position")
            .unique()
            .with_columns(pl.lit(True).alias("clicked"))
        )
        return (
            served.select("rec_id", "position", "served_date", "algorithm_source")
            .join(clicked, on=["rec_id", "position"], how="left")
            .group_by("served_date", "algorithm_source")
            .agg(pl.len().alias("impressions"), pl.col("clicked").sum().alias("clicks"))
            .with_columns((pl.col("clicks") / pl.col("impressions")).alias("ctr"))
            .sort("served_date", "algorithm_source")
            .collect()
        )

    out["polars"], df = _timed(polars_q)
    assert df.height == rows.num_rows
    if spark:
        from infra.spark import get_spark

        session = get_spark(s)
        for t in ("served_recommendations", "silver_interactions"):
            session.read.format("delta").load(lake.spark_path(t)).createOrReplaceTempView(t)
        q = """
        WITH clicked AS (SELECT DISTINCT rec_id, position FROM silver_interactions
                         WHERE rec_id IS NOT NULL AND type IN ('click', 'play'))
        SELECT s.served_date, s.algorithm_source, count(*) AS impressions, count(c.rec_id) AS clicks
        FROM served_recommendations s LEFT JOIN clicked c ON c.rec_id = s.rec_id AND c.position = s.position
        GROUP BY 1, 2 ORDER BY 1, 2"""
        out["spark"], got = _timed(lambda: session.sql(q).collect(), repeat=2)
        assert len(got) == rows.num_rows
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--impressions", type=int, default=10_000_000)
    ap.add_argument("--spark", action="store_true", help="also time the query in Spark SQL")
    ap.add_argument("--skip-archive", action="store_true")
    ap.add_argument("--skip-query", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the generated lake prefix")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    base = get_settings()
    bucket = base.s3.archive_bucket
    prefix = f"bench-lake/{uuid.uuid4().hex[:10]}"
    results = Table(title="lake benchmarks (MinIO on loopback, this machine)")
    results.add_column("what")
    results.add_column("figure", justify="right")
    figures: dict[str, object] = {"bench": "lake"}
    try:
        if not args.skip_archive:
            console.print(f"[bold]archive[/] {args.events:,} events -> s3://{bucket}/{prefix}/archive")
            a = bench_archive(base, args.events, f"s3://{bucket}/{prefix}/archive")
            figures["archive_records_per_s"] = a["rate"]
            results.add_row(
                f"archive {a['records']:,} records ({a['batches']} batches)",
                f"{a['rate']:,.0f} records/s ({a['seconds']:.1f}s)",
            )
            results.add_row(
                "  rows written", ", ".join(f"{k.split('_')[0]} {v:,}" for k, v in a["rows"].items())
            )
        if not args.skip_query:
            s = _settings(base, "bench.unused.", f"s3://{bucket}/{prefix}/query")
            console.print(
                f"[bold]generate[/] {args.impressions:,} impressions + {args.impressions // 10:,} feedback"
            )
            gen = generate(s, args.impressions)
            results.add_row(
                f"write {args.impressions:,} impressions + {args.impressions // 10:,} events "
                "(Arrow -> Delta)",
                f"{(args.impressions * 1.1) / gen:,.0f} rows/s ({gen:.1f}s)",
            )
            q = bench_query(s, args.spark)
            figures["query_s"] = q
            for engine, secs in q.items():
                results.add_row(f"daily CTR by algorithm, {engine} (best of runs)", f"{secs:.2f}s")
    finally:
        if not args.keep:
            client = s3_client(base)
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
                keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
                if keys:
                    client.delete_objects(Bucket=bucket, Delete={"Objects": keys})
    console.print(results)
    print("BENCH_RESULT " + json.dumps(figures, default=str), flush=True)


if __name__ == "__main__":
    main()

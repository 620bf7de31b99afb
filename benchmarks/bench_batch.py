"""The full daily batch cycle (``batch/pipeline.py``) split by task, on a synthetic world.

    .venv/bin/python -m benchmarks.bench_batch                        # 1M events (shared 2-core box)
    .venv/bin/python -m benchmarks.bench_batch --events 2000000 --users 40000 --items 8000 --baseline
    .venv/bin/python -m benchmarks.bench_batch --events 2000000 --users 40000 --rank 64 --no-ease

Setup (not timed): ``generate_world`` writes the events, they are loaded into a silver Delta table
under a temp lake root, and a scratch Postgres database is migrated. Then one ``run_pipeline``
call is timed task by task, with the sub-steps the tasks record (Spark read + cache, GX
validation, aggregation to pairs, ALS and EASE on the holdout, RMSE, the full ALS fit, top-K,
COPY). ``--baseline`` then times the previous front end (raw events to pandas, GX on pandas,
pandas matrices) on the same table in the same process: a ratio the shared box's load does not
distort the way absolute seconds are. The extrapolation to ``--target`` events is linear in the
event count for everything except Spark's fixed start-up (measured separately as the first
``get_spark``), an upper bound: EASE's fit depends on the catalog, not on events, and GX has a
fixed part; see docs/batch.md. Needs the services: ``lambdarec infra up``.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from lambdarec.settings import Settings


def _silver(events: pa.Table) -> pa.Table:
    from schemas.lake import SILVER_INTERACTIONS

    n = events.num_rows
    now = pa.scalar(datetime.now(UTC), type=pa.timestamp("us", tz="UTC"))
    extra = {
        "schema_version": pa.array([1] * n, pa.int32()),
        "kafka_partition": pa.array([0] * n, pa.int32()),
        "kafka_offset": pa.array(range(n), pa.int64()),
        "archived_at": pa.array([now.as_py()] * n, pa.timestamp("us", tz="UTC")),
        "event_date": pc.cast(events["occurred_at"], pa.date32()),
    }
    schema = SILVER_INTERACTIONS.schema
    cols = []
    for f in schema:
        if f.name in extra:
            cols.append(extra[f.name])
        elif f.name in events.column_names:
            cols.append(events[f.name].cast(f.type))
        else:
            cols.append(pa.nulls(n, f.type))
    return pa.Table.from_arrays(cols, schema=schema)


def _old_front_end(s: Settings, cutoff: datetime) -> dict[str, float]:
    """The front end of task 3 as it was before the Spark aggregation: every raw event collected
    to pandas (Arrow), great-expectations on pandas, the holdout split and both matrices in pandas.
    Timed on the same Delta table right after the pipeline, so both sides see the same box."""
    import pandas as pd

    from batch import spark_events
    from batch.interactions import event_weights, implicit_matrix
    from batch.pipeline import holdout_split
    from batch.quality import validate_events
    from infra.spark import get_spark

    b = s.batch
    spark = get_spark(s, "lambdarec-batch")
    start = cutoff - timedelta(days=b.train_window_days)
    t0 = time.perf_counter()
    ev = spark_events.read_events(s, spark, start, cutoff, None)
    assert ev is not None
    pdf: pd.DataFrame = ev.drop(spark_events.SOURCE).toPandas()
    spark_events.release(ev)
    pdf["occurred_at"] = pd.to_datetime(pdf["occurred_at"], utc=True)
    read_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    validate_events(pdf, catalog_items=None, future_tolerance_sec=s.events.future_tolerance_sec)
    validate_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    now = pd.Timestamp(cutoff)
    implicit_matrix(pdf, b, now=now)
    train, test = holdout_split(pdf, cutoff, b.holdout_hours, b.holdout_min_events, b.eval_test_ratio)[:2]
    implicit_matrix(train, b, now=now)
    test.loc[event_weights(test, b, now=now) > 0, ["user_id", "item_id"]]
    matrix_s = time.perf_counter() - t0
    return {"read": read_s, "validate": validate_s, "matrix": matrix_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--users", type=int, default=20_000)
    ap.add_argument("--items", type=int, default=8_000)
    ap.add_argument("--days", type=float, default=30.0)
    ap.add_argument("--target", type=int, default=25_000_000, help="extrapolate to this many events")
    ap.add_argument(
        "--no-ease", dest="ease", action="store_false", help="ALS only (EASE competes by default: n_items^3)"
    )
    ap.add_argument(
        "--baseline",
        action="store_true",
        help="also time the previous front end (raw events to pandas, GX on pandas, pandas matrix) on the"
        " same data in the same run, for a ratio that the box's load does not distort",
    )
    ap.add_argument(
        "--front-end", choices=["auto", "spark", "pandas"], default="auto", help="batch.front_end"
    )
    ap.add_argument("--rank", type=int, default=None, help="override batch.als.rank (default: settings)")
    ap.add_argument("--json", type=Path, default=None, help="write the figures here")
    ap.add_argument("--keep", action="store_true", help="keep the temp world, lake and run logs")
    args = ap.parse_args()

    from deltalake import write_deltalake

    from batch import pipeline
    from batch.lake.storage import Lake
    from batch.world import WorldConfig, generate_world
    from infra import services
    from infra.postgres import scratch_database
    from infra.spark import get_spark
    from lambdarec.settings import get_settings
    from schemas.lake import SILVER_INTERACTIONS
    from schemas.migrate import migrate
    from tests.integration.batch_support import delete_prefix, model_updates_topic

    base = get_settings()
    services.up(base, ["postgres", "minio", "kafka", "spark"])
    tmp = Path(tempfile.mkdtemp(prefix="bench_batch_"))
    start = (datetime.now(UTC) - timedelta(days=args.days + 1)).replace(
        hour=0, minute=0, second=0, microsecond=0
    )
    cfg = WorldConfig(users=args.users, items=args.items, events=args.events, days=args.days, start=start)
    t = time.perf_counter()
    generate_world(cfg, tmp / "world")
    print(
        f"world: {args.events:,} events, {args.users:,} users, {args.items:,} items"
        f" ({time.perf_counter() - t:.0f}s)"
    )
    events = ds.dataset(tmp / "world" / "events").to_table()
    cutoff = datetime.fromtimestamp(pc.max(events["occurred_at"]).as_py().timestamp() + 60, UTC).replace(
        microsecond=0
    )

    prefix = f"bench{uuid.uuid4().hex[:8]}."
    with scratch_database(base) as db:
        migrate(db)
        s = db.model_copy(
            update={
                "lake": db.lake.model_copy(update={"root": str(tmp / "lake")}),
                "kafka": db.kafka.model_copy(update={"topic_prefix": prefix}),
                "batch": db.batch.model_copy(
                    update={
                        "runs_dir": tmp / "runs",
                        "models_uri": f"s3://{db.s3.models_bucket}/{prefix}models",
                        "archive_before_training": False,
                        "ease_candidate": args.ease,
                        "front_end": args.front_end,
                        **({"als": db.batch.als.model_copy(update={"rank": args.rank})} if args.rank else {}),
                        "train_window_days": args.days + 2,
                    }
                ),
            }
        )
        t = time.perf_counter()
        lake = Lake(s)
        lake.ensure(SILVER_INTERACTIONS)
        write_deltalake(lake.uri(SILVER_INTERACTIONS), _silver(events), mode="append")
        print(f"silver Delta table written ({time.perf_counter() - t:.0f}s, not part of the cycle)")
        del events
        t = time.perf_counter()
        get_spark(s, "lambdarec-batch")
        spark_start = time.perf_counter() - t
        marks: dict[str, float] = {}

        def on_event(task: str, kind: str, message: str) -> None:
            now = time.perf_counter()
            if kind == "start":
                marks[task] = now
            elif kind == "done":
                marks[task] = now - marks[task]
            if kind != "start":
                print(f"  {task:14s} {kind:5s} {message}")

        with model_updates_topic(s):
            t = time.perf_counter()
            run = pipeline.run_pipeline(s, cutoff=cutoff, on_event=on_event)
            total = time.perf_counter() - t
        baseline = _old_front_end(s, cutoff) if args.baseline else None
        delete_prefix(s, f"{prefix}models/")
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)

    tr, pub = run.output("train"), run.output("publish")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    scale = args.target / args.events
    rows = [(name, marks.get(name, 0.0)) for name in pipeline.TASKS]
    print(
        f"\nrun {run.run_id}: {run.status}; {tr['users']:,} users x {tr['items']:,} items,"
        f" {tr['pairs']:,} pairs"
    )
    print(f"Spark session start (fixed): {spark_start:.1f}s; peak RSS of this process {rss:,.0f} MiB\n")
    print(f"| task | seconds @ {args.events / 1e6:.1f}M | extrapolated @ {args.target / 1e6:.0f}M |")
    print("|---|---:|---:|")
    for name, sec in rows:
        print(f"| {name} | {sec:.1f} | {sec * scale:.0f} |")
    print(f"| **total** | {total:.1f} | {total * scale:.0f} |")
    if "seconds" not in pub:  # the gate rejected the candidate: nothing was published
        print(f"\npublish skipped: {pub or 'no output'} (the gate's verdict is in the run log)")
        return
    ts, ps = tr["seconds"], pub["seconds"]
    sub = {
        f"read: Delta + JDBC into {tr['front_end']}, counts": ts["read"],
        f"validate: great-expectations ({tr['front_end']})": ts["validate"],
        f"aggregate to user-item pairs ({tr['front_end']})": ts["aggregate"],
        f"ALS (rank {s.batch.als.rank}) fit + metrics on the holdout": ts["als_holdout"],
        "EASE fit + metrics on the holdout": ts.get("ease_holdout", 0.0),
        "popularity + explicit-ALS RMSE": ts["reference_rmse"],
        "ALS refit on the full window (snapshot factors)": ts["fit_full"],
        f"top-{s.batch.top_n} for every user ({pub.get('list_model', 'als')}"
        + (", incl. EASE refit)" if pub.get("list_model") == "ease" else ")"): ps["topk"],
        "COPY into batch_recommendations + swap": ps["write"],
    }
    print("\nwhere the time goes:")
    for k, v in sub.items():
        print(f"  {k:40s} {v:7.1f}s")
    print(
        f"\nholdout metrics ({tr['list_model']} lists): "
        f"{json.dumps({k: round(v, 4) for k, v in tr['metrics'].items() if '@' in k})}"
    )
    for name, m in tr["candidates"].items():
        print(f"  candidate {name}: nDCG@10 {m['ndcg@10']:.4f}")
    if baseline is not None:
        new = ts["read"] + ts["validate"] + ts["aggregate"]
        old = sum(baseline.values())
        print(
            "\nfront end of task 3, same data, same run:"
            f"\n  before (raw events -> pandas {baseline['read']:.1f}s,"
            f" GX pandas {baseline['validate']:.1f}s,"
            f" pandas matrices {baseline['matrix']:.1f}s): {old:.1f}s"
            f"\n  now, front end {tr['front_end']} (read {ts['read']:.1f}s, GX {ts['validate']:.1f}s,"
            f" aggregation {ts['aggregate']:.1f}s): {new:.1f}s"
            f"\n  ratio before/now: {old / new:.2f}x"
        )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "events": args.events,
                    "tasks": dict(rows),
                    "sub": sub,
                    "pairs": tr["pairs"],
                    "users": tr["users"],
                    "items": tr["items"],
                    "list_model": tr["list_model"],
                    "candidates": tr["candidates"],
                    "total": total,
                    "spark_start": spark_start,
                    "baseline_front_end": baseline,
                },
                indent=2,
            )
        )
    result = {
        "bench": "batch",
        "events": args.events,
        "total_s": total,
        "tasks": dict(rows),
        "spark_start_s": spark_start,
        "target_events": args.target,
        "extrapolated_total_s": total * scale,
    }
    print("BENCH_RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()

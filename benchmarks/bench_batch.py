"""The full daily batch cycle (``batch/pipeline.py``) split by task, on a synthetic world.

    .venv/bin/python -m benchmarks.bench_batch                        # 1M events (shared 2-core box)
    .venv/bin/python -m benchmarks.bench_batch --events 2500000 --users 40000 --items 15000

Setup (not timed): ``generate_world`` writes the events, they are loaded into a silver Delta table
under a temp lake root, and a scratch Postgres database is migrated. Then one ``run_pipeline``
call is timed task by task, with the sub-steps the tasks record (read, validate, evaluate on the
holdout, full ALS fit, top-K, COPY). The extrapolation to ``--target`` events is linear in the
event count for everything except Spark's fixed start-up (measured separately as the first
``get_spark``): reading, validation, the matrix build, ALS (``O(nnz * rank^2)`` per iteration plus
``O((users + items) * rank^3)``) and top-K scale with events or with users; see docs/batch.md.
Needs the services: ``lambdarec infra up``.
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--users", type=int, default=20_000)
    ap.add_argument("--items", type=int, default=8_000)
    ap.add_argument("--days", type=float, default=30.0)
    ap.add_argument("--target", type=int, default=25_000_000, help="extrapolate to this many events")
    ap.add_argument("--ease", action="store_true", help="also fit the EASE reference (n_items^3)")
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
    sub = {
        "read (Spark Delta + JDBC -> pandas)": tr["seconds"]["read"],
        "validate (great-expectations)": run.task("train")["validation"]["seconds"],
        "holdout fits + evaluation": tr["seconds"]["evaluate"],
        "ALS fit on the full window": tr["seconds"]["fit_full"],
        "top-50 for every user": pub["seconds"]["topk"],
        "COPY into batch_recommendations": pub["seconds"]["write"],
    }
    print("\nwhere the time goes:")
    for k, v in sub.items():
        print(f"  {k:40s} {v:7.1f}s")
    print(f"\nholdout metrics: {json.dumps({k: round(v, 4) for k, v in tr['metrics'].items() if '@' in k})}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "events": args.events,
                    "tasks": dict(rows),
                    "sub": sub,
                    "total": total,
                    "spark_start": spark_start,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()

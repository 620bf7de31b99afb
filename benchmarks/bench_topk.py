"""Top-50 for every user: ``batch/topk.py`` vs Spark's ``ALSModel.recommendForAllUsers``.

Same model for both: synthetic rank-10 factors (100k users x 60k items by default) are written as
the factor tables of a saved Spark ``ALSModel`` (trained once on a toy matrix for its metadata,
then its ``userFactors``/``itemFactors`` replaced), so Spark scores exactly our vectors.
Spark runs on the first ``--spark-users`` users (it is the slow side; time is linear in the
number of users, so it is also reported scaled to all users); its lists are checked against ours
on those users: identical item sets, allowing swaps only between items whose scores differ by
less than 1e-5 (float32 summation order differs between the JVM and OpenBLAS).

Spark's time is a ``noop`` write of ``recommendForAllUsers(k)`` (the whole computation, no
collection to Python) after a warm-up job on a few users (JIT, code generation), which favours
Spark; ours includes everything up to numpy arrays.

    .venv/bin/python -m benchmarks.bench_topk [--users 100000 --items 60000 --spark-users 20000]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd


def synthetic_factors(n_users: int, n_items: int, rank: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """ALS-like factors: item vectors with a popularity-scaled norm, users around a few tastes."""
    rng = np.random.default_rng(seed)
    tastes = rng.standard_normal((32, rank))
    users = tastes[rng.integers(0, 32, n_users)] + 0.5 * rng.standard_normal((n_users, rank))
    items = (
        rng.standard_normal((n_items, rank))
        * (1.0 / np.arange(1, n_items + 1) ** 0.3)[rng.permutation(n_items), None]
    )
    return (0.3 * users).astype(np.float32), items.astype(np.float32)


def spark_model_with_factors(spark, user_f: np.ndarray, item_f: np.ndarray, workdir: Path):
    """An ``ALSModel`` whose factors are exactly ``user_f``/``item_f`` (ids = row numbers)."""
    from pyspark.ml.recommendation import ALS, ALSModel

    rank = user_f.shape[1]
    toy = spark.createDataFrame(
        pd.DataFrame({"user": [0, 0, 1], "item": [0, 1, 1], "rating": [1.0, 1.0, 1.0]})
    )
    path = workdir / "als_model"
    ALS(rank=rank, maxIter=1, implicitPrefs=True, userCol="user", itemCol="item").fit(toy).save(str(path))
    for name, f in (("userFactors", user_f), ("itemFactors", item_f)):
        shutil.rmtree(path / name)
        pdf = pd.DataFrame({"id": np.arange(len(f), dtype=np.int32), "features": list(f)})
        spark.createDataFrame(pdf, "id int, features array<float>").write.parquet(str(path / name))
    return ALSModel.load(str(path))


def same_up_to_ties(
    a: np.ndarray, b: np.ndarray, scores_of: Callable[[int, np.ndarray], np.ndarray]
) -> tuple[int, int, int]:
    """(users with identical lists, identical sets, sets differing beyond float ties)."""
    same_list = same_set = bad = 0
    for u in range(a.shape[0]):
        if (a[u] == b[u]).all():
            same_list += 1
            same_set += 1
            continue
        if set(a[u]) == set(b[u]):
            same_set += 1
            continue
        sa, sb = np.sort(scores_of(u, a[u])), np.sort(scores_of(u, b[u]))
        if np.allclose(sa, sb, atol=1e-5):
            same_set += 1  # only near-tied items at the cut swapped
        else:
            bad += 1
    return same_list, same_set, bad


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--items", type=int, default=60_000)
    ap.add_argument("--rank", type=int, default=10)
    ap.add_argument("--k", type=int, default=50)
    ap.add_argument("--spark-users", type=int, default=20_000, help="0: skip Spark")
    ap.add_argument("--memory-mb", type=float, default=64)
    args = ap.parse_args()

    from threadpoolctl import threadpool_info

    from batch.topk import topk_factors

    user_f, item_f = synthetic_factors(args.users, args.items, args.rank)
    blas = [(i["internal_api"], i.get("architecture"), i["num_threads"]) for i in threadpool_info()]
    print(f"{args.users:,} users x {args.items:,} items, rank {args.rank}, top-{args.k}; BLAS {blas}")

    rows: list[tuple[str, int, float]] = []
    ours: dict[int, np.ndarray] = {}
    for threads in (1, 2):
        t0 = time.perf_counter()
        idx, _ = topk_factors(user_f, item_f, args.k, memory_mb=args.memory_mb, n_threads=threads)
        dt = time.perf_counter() - t0
        ours[threads] = idx
        rows.append((f"batch/topk ({threads} thread{'s' if threads > 1 else ''})", args.users, dt))
        print(f"  topk n_threads={threads}: {dt:.1f} s", flush=True)
    assert (ours[1] == ours[2]).all(), "thread count changed the result"

    check = ""
    if args.spark_users:
        from lambdarec.cli.evaluate import spark_session
        from lambdarec.settings import get_settings

        spark = spark_session(get_settings())
        n_sp = min(args.spark_users, args.users)
        with tempfile.TemporaryDirectory() as tmp:
            model = spark_model_with_factors(spark, user_f[:n_sp], item_f, Path(tmp))
            warm = spark.range(min(n_sp, 256)).selectExpr("cast(id as int) as user")
            model.recommendForUserSubset(warm, args.k).write.format("noop").mode("overwrite").save()
            t0 = time.perf_counter()
            model.recommendForAllUsers(args.k).write.format("noop").mode("overwrite").save()
            dt = time.perf_counter() - t0
            rows.append(("Spark recommendForAllUsers", n_sp, dt))
            print(f"  spark on {n_sp:,} users: {dt:.1f} s", flush=True)
            from batch.models.als import spark_recommend_for_all_users

            sp_lists = spark_recommend_for_all_users(model, n_sp, args.k)
        ident, sets, bad = same_up_to_ties(
            sp_lists, ours[1][:n_sp], lambda u, items: user_f[u] @ item_f[items].T
        )
        check = (
            f"lists vs Spark on {n_sp:,} users: {ident:,} identical in order, {sets:,} identical item sets "
            f"(up to float ties), {bad} different"
        )

    base = (
        next(dt / n * args.users for name, n, dt in rows if name.startswith("Spark"))
        if args.spark_users
        else None
    )
    print()
    scaled_head = f"time scaled to {args.users:,} users (s)"
    print(f"| engine | users run | time (s) | {scaled_head} | users/s | speed-up vs Spark |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, n, dt in rows:
        scaled = dt / n * args.users
        speed = f"{base / scaled:.1f}x" if base else "-"
        print(f"| {name} | {n:,} | {dt:.1f} | {scaled:.1f} | {n / dt:,.0f} | {speed} |")
    best = min(dt / n * args.users for name, n, dt in rows if not name.startswith("Spark"))
    result = {
        "bench": "topk",
        "users": args.users,
        "items": args.items,
        "k": args.k,
        "seconds": {name: dt / n * args.users for name, n, dt in rows},
        "speedup_vs_spark": base / best if base else None,
    }
    print("BENCH_RESULT " + json.dumps(result), flush=True)
    if check:
        print()
        print(check)
        if bad:
            raise SystemExit("top-K lists differ from Spark beyond ties")


if __name__ == "__main__":
    main()

"""Offline evaluation table: our models vs Microsoft Recommenders' ml-100k benchmark.

Datasets: the real MovieLens 100k when the ``recbole`` wheel is installed (it ships
``ml-100k.inter``, the rows of ``u.data`` in file order, so the stratified split is the very split
the reference benchmark used), and always the synthetic MovieLens-shaped world of
``benchmarks/synthetic_movielens.py`` (943 x 1682 x 100k, deterministic) so the numbers exist on
any machine. Protocol and metrics: ``docs/evaluation.md``.

Implicit ALS is tuned (rank, regParam, alpha) on a validation split carved from the training
set — never on the test set — with the numpy solver, and the winner is re-trained with Spark.

    .venv/bin/python -m benchmarks.bench_offline_eval [--dataset both|ml-100k|synthetic] [--no-spark]
"""

from __future__ import annotations

import argparse
import json
import time

import pandas as pd

from batch.evaluation import offline_evaluation, pipeline_pick, split_frame, tune_ials
from batch.interactions import ml100k_path, read_interaction_file
from benchmarks.synthetic_movielens import movielens_like
from lambdarec.cli.evaluate import REFERENCE_ML100K, TUNE_GRID
from lambdarec.settings import BatchSettings, get_settings

COLS = ["precision@10", "recall@10", "ndcg@10", "map@10", "map", "rmse", "catalog_coverage", "fit_s"]


def markdown(rows: list[dict[str, object]]) -> str:
    head = "| model | P@10 | R@10 | nDCG@10 | MAP@10 | MAP (old def.) | RMSE | catalog cov. | fit s |"
    lines = [head, "|---|" + "---:|" * len(COLS)]
    for r in rows:
        cells = []
        for c in COLS:
            v = r.get(c)
            cells.append("" if v is None else f"{v:.1f}" if c == "fit_s" else f"{float(v):.4f}")  # type: ignore[arg-type]
        lines.append(f"| {r['model']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run(name: str, df: pd.DataFrame, batch: BatchSettings, spark: object | None) -> None:
    models = ["popularity", "ease", "ials"] + (["als", "als-explicit"] if spark is not None else [])
    print(
        f"\n## {name}: {len(df):,} ratings, {df['user_id'].nunique()} users, {df['item_id'].nunique()} items"
    )
    t0 = time.perf_counter()
    rows = offline_evaluation(df, models, batch, k=10, spark=spark)
    for r in rows:
        if r["model"] in ("ials", "als", "als-explicit"):
            r["model"] = (
                f"{r['model']} (rank {batch.als.rank}, reg {batch.als.reg_param}, alpha {batch.als.alpha})"
            )
    train, _ = split_frame(df, "stratified", ratio=0.75, seed=42)
    grid = tune_ials(train, TUNE_GRID, k=10, seed=42)
    best = grid[0]
    print("\ntuning grid (validation split of train; numpy implicit ALS), top 5 of", len(grid))
    for g in grid[:5]:
        print(
            f"  rank {g['rank']:>3} reg {g['reg_param']:<4} alpha {g['alpha']:<4} "
            f"val nDCG@10 {g['val_ndcg@10']:.4f}"
        )
    tuned = batch.model_copy(
        update={
            "als": batch.als.model_copy(
                update={"rank": int(best["rank"]), "reg_param": best["reg_param"], "alpha": best["alpha"]}
            )
        }
    )
    label = f"(tuned: rank {tuned.als.rank}, reg {tuned.als.reg_param}, alpha {tuned.als.alpha})"
    for r in offline_evaluation(
        df, ["ials"] + (["als"] if spark is not None else []), tuned, k=10, spark=spark
    ):
        r["model"] = f"{r['model']} {label}"
        rows.append(r)
    if spark is not None:  # the family the batch pipeline would promote, chosen on validation
        winner, val = pipeline_pick(train, batch, k=10, spark=spark)
        print(
            "pipeline choice (validation):", {n: round(m["ndcg@10"], 4) for n, m in val.items()}, "->", winner
        )
        chosen = next(r for r in rows if str(r["model"]).split(" ")[0] == winner)
        rows.append({**chosen, "model": f"**PROMOTED by the pipeline ({winner})**"})
    if name.startswith("ml-100k"):
        rows += REFERENCE_ML100K
    print()
    print(markdown(rows))
    print(f"\n({time.perf_counter() - t0:.0f} s)")
    print("BENCH_RESULT " + json.dumps({"bench": "offline_eval", "dataset": name, "rows": rows}, default=str))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", choices=["both", "ml-100k", "synthetic"], default="both")
    ap.add_argument("--no-spark", action="store_true", help="numpy models only (no JVM)")
    args = ap.parse_args()
    settings = get_settings()
    spark = None
    if not args.no_spark:
        from lambdarec.cli.evaluate import spark_session

        spark = spark_session(settings)
    if args.dataset in ("both", "ml-100k"):
        path = ml100k_path()
        if path is None:
            print("ml-100k: recbole not installed (uv pip install --no-deps recbole==1.2.1); skipped")
        else:
            run(
                "ml-100k (real, from the recbole 1.2.1 wheel)",
                read_interaction_file(path),
                settings.batch,
                spark,
            )
    if args.dataset in ("both", "synthetic"):
        run("synthetic MovieLens-shaped (seed 7)", movielens_like(), settings.batch, spark)


if __name__ == "__main__":
    main()

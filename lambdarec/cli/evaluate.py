"""``lambdarec evaluate FILE``: the offline evaluation protocol on an interaction file.

Same protocol and metric definitions as Microsoft Recommenders' MovieLens benchmark
(``docs/evaluation.md``): per-user stratified 75/25 split (seed 42), top-k of unseen items, every
test item relevant. The table ends with their published ml-100k figures so a run on ml-100k
(``u.data``, or the copy the ``recbole`` wheel ships: ``lambdarec evaluate ml-100k``) compares
line by line.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from lambdarec.settings import Settings, get_settings

console = Console(width=None if sys.stdout.isatty() else 150)  # pipes: do not wrap the table

#: Microsoft Recommenders' README, ml-100k, k = 10 (MAP there is their pre-1.2 definition = our ``map``)
REFERENCE_ML100K: list[dict[str, Any]] = [
    {"model": f"MS ref: {name}", "map": m, "ndcg@10": n, "precision@10": p, "recall@10": r}
    for name, m, n, p, r in (
        ("Spark ALS", 0.004732, 0.044239, 0.048462, 0.017796),
        ("SAR", 0.110591, 0.382461, 0.330753, 0.176385),
        ("BPR", 0.132478, 0.441997, 0.388229, 0.212522),
        ("BiVAE", 0.146126, 0.475077, 0.411771, 0.219145),
    )
]
REFERENCE_ML100K[0]["rmse"] = 0.965038  # their Spark ALS is explicit (ratings), hence the low nDCG

TUNE_GRID: dict[str, list[float]] = {"rank": [10, 32, 64], "reg_param": [0.1, 0.5, 1.0], "alpha": [1.0, 4.0]}


def spark_session(settings: Settings):
    """The project SparkSession (``infra.spark.get_spark``); ALS needs no extra jars, so when
    ``lambdarec infra up spark`` has not fetched them yet a plain local session is used instead."""
    from infra.errors import InfraError

    try:
        from infra.spark import get_spark

        return get_spark(settings, app_name="lambdarec-evaluate")
    except InfraError:
        from pyspark.sql import SparkSession

        return (
            SparkSession.builder.master(settings.spark.master)
            .appName("lambdarec-evaluate")
            .config("spark.driver.memory", settings.spark.driver_memory)
            .config("spark.sql.shuffle.partitions", str(settings.spark.shuffle_partitions))
            .config("spark.ui.enabled", "false")
            .getOrCreate()
        )


def render_table(rows: list[dict[str, Any]], k: int, title: str) -> Table:
    """One line per model: the reference columns first, then coverage and timings."""
    cols = [f"precision@{k}", f"recall@{k}", f"ndcg@{k}", f"map@{k}", "map", "rmse", "catalog_coverage",
            "user_coverage", "fit_s"]  # fmt: skip
    heads = [
        f"P@{k}",
        f"R@{k}",
        f"nDCG@{k}",
        f"MAP@{k}",
        "MAP (old)",
        "RMSE",
        "catalog cov",
        "user cov",
        "fit s",
    ]
    table = Table(title=title)
    table.add_column("model")
    for h in heads:
        table.add_column(h, justify="right")
    for row in rows:
        cells = []
        for c in cols:
            v = row.get(c)
            cells.append("" if v is None else f"{v:.1f}" if c == "fit_s" else f"{v:.4f}")
        table.add_row(str(row["model"]), *cells)
    return table


def _resolve_file(file: str) -> Path:
    if file == "ml-100k":
        from batch.interactions import ml100k_path

        path = ml100k_path()
        if path is None:
            raise typer.BadParameter(
                "ml-100k is read from the recbole wheel: `uv pip install --no-deps recbole==1.2.1`, "
                "or pass the path of u.data"
            )
        return path
    path = Path(file)
    if not path.exists():
        raise typer.BadParameter(f"{file}: no such file")
    return path


def evaluate(
    file: str = typer.Argument(..., help="ratings.csv, u.data, .inter, Parquet, or 'ml-100k'"),
    model: str = typer.Option("all", "--model", "-m", help="popularity|ease|ials|als|als-explicit|all"),
    k: int = typer.Option(10, "--k", min=1, help="list length / metric cut-off"),
    split: str = typer.Option("stratified", help="stratified (reference) | chrono | time"),
    ratio: float = typer.Option(0.75, help="train share"),
    seed: int = typer.Option(42, help="split seed"),
    tune: bool = typer.Option(
        False, help="grid-search implicit ALS (rank, regParam, alpha) on a validation split"
    ),
    json_out: Path | None = typer.Option(None, "--json", help="also write the rows as JSON here"),
    pick: bool = typer.Option(
        True,
        help="with als among the models: also show the family the batch pipeline would promote"
        " (ALS vs EASE, chosen on a validation split of train)",
    ),
) -> None:
    """Offline evaluation of the batch models on an interaction file (protocol: docs/evaluation.md)."""
    from batch.evaluation import SPLITS, offline_evaluation, pipeline_pick, split_frame, tune_ials
    from batch.interactions import read_interaction_file
    from batch.models import MODEL_NAMES

    settings = get_settings()
    names = list(MODEL_NAMES) if model == "all" else [m.strip() for m in model.split(",")]
    unknown = [n for n in names if n not in MODEL_NAMES]
    if unknown:
        raise typer.BadParameter(f"unknown model(s) {unknown}; choose from {', '.join(MODEL_NAMES)} or all")
    if split not in SPLITS:
        raise typer.BadParameter(f"--split must be one of {', '.join(SPLITS)}")
    path = _resolve_file(file)
    df = read_interaction_file(path)
    console.print(
        f"{path}: {len(df):,} rows, {df['user_id'].nunique():,} users, {df['item_id'].nunique():,} items; "
        f"split={split} ratio={ratio} seed={seed} k={k}"
    )
    batch = settings.batch
    if tune:
        train, _ = split_frame(df, split, ratio=ratio, seed=seed)
        results = tune_ials(train, TUNE_GRID, k=k, seed=seed, max_iter=batch.als.max_iter)
        best = results[0]
        console.print(f"tuning (validation split of train, numpy implicit ALS): best {best}")
        batch = batch.model_copy(
            update={
                "als": batch.als.model_copy(
                    update={"rank": int(best["rank"]), "reg_param": best["reg_param"], "alpha": best["alpha"]}
                )
            }
        )
    pick = pick and "als" in names  # the choice is between the pipeline's families: ALS is one of them
    spark = spark_session(settings) if any(n.startswith("als") for n in names) else None
    rows = offline_evaluation(df, names, batch, k=k, split=split, ratio=ratio, seed=seed, spark=spark)
    if pick:
        train, _ = split_frame(df, split, ratio=ratio, seed=seed)
        winner, val = pipeline_pick(train, batch, k=k, seed=seed, spark=spark)
        console.print(
            "pipeline choice on a validation split of train: "
            + ", ".join(f"{n} nDCG@{k} {m[f'ndcg@{k}']:.4f}" for n, m in val.items())
            + f" -> the pipeline would promote [bold]{winner}[/bold]"
        )
        chosen = next((r for r in rows if r["model"] == winner), None)
        if chosen is None:  # --model did not include it: score it on the test split now
            chosen = offline_evaluation(
                df, [winner], batch, k=k, split=split, ratio=ratio, seed=seed, spark=spark
            )[0]
        rows.append({**chosen, "model": f"PROMOTED by the pipeline ({winner})"})
    als = batch.als
    console.print(
        f"ALS: rank={als.rank} maxIter={als.max_iter} regParam={als.reg_param} alpha={als.alpha}; "
        f"EASE: lambda={batch.ease_lambda}"
    )
    shown = rows + (REFERENCE_ML100K if k == 10 and split == "stratified" else [])
    console.print(render_table(shown, k, f"offline evaluation: {path.name}"))
    if json_out:
        json_out.write_text(json.dumps(rows, indent=2))

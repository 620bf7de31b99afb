"""The daily batch pipeline (the 02:00 DAG): five idempotent, resumable tasks and their run log.

Why five separate tasks with a run log instead of one function: each task has a different failure
mode (Postgres, Kafka/lake, Spark, the registry, the publish swap) and a re-run after a failure
must not redo hours of training nor publish twice. A run is identified by its cut-off
(``run_id = 20261125T020000Z``); the run log (``<runs_dir>/<run_id>/runlog.json``) records each
task's status, timings, outputs and the data-validation summary, and artifacts passed between
tasks (holdout split, training matrix) sit next to it. Re-running the same run id skips completed
tasks; ``from_task=N`` re-runs tasks N..5. The same task functions back the CLI
(``lambdarec batch run``), the APScheduler cron (``batch/schedule.py``) and the Airflow DAG
(``infra/airflow/lambdarec_batch_dag.py``).

1. ``active_users``  who was active in the last ``active_window_hours`` (user_profiles + rt rows);
2. ``close_archive`` run the lake archiver once (catch-up) and read the archive watermark;
3. ``train``         Spark: read silver Delta + rt rows not yet archived (JDBC), validate with
                     great-expectations, build the matrix, fit ALS (and EASE as a reference) on a
                     time-based holdout, evaluate, refit ALS on everything, save the snapshot,
                     register the model;
4. ``gate``          evaluate production's config refitted on the same holdout (not its own
                     factors, which may have seen the holdout: :func:`score_production`);
                     pass -> ``staging``, fail -> ``deprecated`` (production untouched, the run
                     ends "rejected");
5. ``publish``       top-N for every user into a new batch_recommendations run, then promote +
                     publish in one transaction, log performance, announce on ``model-updates``.

Layering (docs/STYLE): this module imports ``batch/``, ``schemas/`` and settings only.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import math
import os
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psycopg
import scipy.sparse as sp

from batch import registry
from batch.evaluation import EvalSplit, evaluate_model, make_eval_split, rmse
from batch.gate import decide_with_settings, pick_winner
from batch.interactions import InteractionMatrix, event_weights, explicit_matrix, implicit_matrix
from batch.quality import validate_events
from batch.topk import topk_factors
from lambdarec.settings import AlsSettings, BatchSettings, Settings

log = logging.getLogger(__name__)

TASKS: tuple[str, ...] = ("active_users", "close_archive", "train", "gate", "publish")
ALGORITHM = "als"

# exit codes of `lambdarec batch run`
EXIT_OK, EXIT_FAILED, EXIT_REJECTED, EXIT_BAD_DATA = 0, 1, 3, 4


class PipelineError(RuntimeError):
    """A task failed for a reason worth one readable line (no traceback needed)."""

    exit_code = EXIT_FAILED


class NoDataError(PipelineError):
    """Nothing (or too little) to train on."""


class DataValidationError(PipelineError):
    """great-expectations rejected the training events (the report is in the run log)."""

    exit_code = EXIT_BAD_DATA


class NoNewData(Exception):
    """The lake holds nothing newer than what the production model was trained on."""


# ------------------------------------------------------------------------------------- run log
def runs_dir(settings: Settings) -> Path:
    return Path(settings.batch.runs_dir or settings.var_dir / "batch-runs")


def run_id_for(cutoff: datetime) -> str:
    return cutoff.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, datetime):
        return v.isoformat()
    return v


@dataclass
class RunLog:
    """The JSON run log of one run: ``status`` and, per task, ``status/started_at/seconds/output/error``.

    Run status: ``running``, ``succeeded``, ``failed``, ``rejected`` (the gate said no),
    ``skipped`` (no new data). Task status: ``pending``, ``running``, ``done``, ``failed``, ``skipped``.
    Written atomically (temp file + rename) after every change, so a crash never leaves it torn.
    """

    path: Path
    data: dict[str, Any]

    @classmethod
    def create(cls, directory: Path, run_id: str, cutoff: datetime) -> RunLog:
        directory.mkdir(parents=True, exist_ok=True)
        data = {
            "run_id": run_id,
            "cutoff": cutoff.astimezone(UTC).isoformat(),
            "created_at": _now(),
            "status": "running",
            "attempts": 0,
            "tasks": {t: {"status": "pending"} for t in TASKS},
        }
        rl = cls(directory / "runlog.json", data)
        rl.save()
        return rl

    @classmethod
    def load(cls, directory: Path) -> RunLog:
        path = directory / "runlog.json"
        return cls(path, json.loads(path.read_text()))

    @property
    def dir(self) -> Path:
        return self.path.parent

    @property
    def run_id(self) -> str:
        return str(self.data["run_id"])

    @property
    def cutoff(self) -> datetime:
        return datetime.fromisoformat(self.data["cutoff"])

    @property
    def status(self) -> str:
        return str(self.data["status"])

    def task(self, name: str) -> dict[str, Any]:
        return self.data["tasks"][name]

    def output(self, name: str) -> dict[str, Any]:
        return self.task(name).get("output") or {}

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(_jsonable(self.data), indent=2, sort_keys=False))
        os.replace(tmp, self.path)

    def set_task(self, name: str, **fields: Any) -> None:
        self.task(name).update(fields)
        self.save()

    def set_status(self, status: str, **fields: Any) -> None:
        self.data.update(status=status, **fields)
        self.save()


def list_runs(settings: Settings) -> list[RunLog]:
    """All run logs, oldest first."""
    root = runs_dir(settings)
    if not root.is_dir():
        return []
    out = []
    for d in sorted(root.iterdir()):
        if (d / "runlog.json").is_file():
            with contextlib.suppress(ValueError, OSError):
                out.append(RunLog.load(d))
    return out


@contextlib.contextmanager
def _run_lock(directory: Path, *, wait: bool = False) -> Iterator[None]:
    """One process per run (a scheduler tick and a manual re-run must not interleave). ``wait``:
    queue behind the holder instead of failing (Airflow's parallel tasks 1 and 2 of one run)."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise PipelineError(f"run {directory.name} is already running in another process") from exc
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# ------------------------------------------------------------------------------------- helpers
@dataclass
class TaskContext:
    """What every task gets: settings, the run log, and a progress callback."""

    settings: Settings
    run: RunLog
    note: Callable[[str], None]

    @property
    def cutoff(self) -> datetime:
        return self.run.cutoff

    def window_start(self) -> datetime | None:
        days = self.settings.batch.train_window_days
        return None if days <= 0 else self.cutoff - timedelta(days=days)

    def connect(self) -> psycopg.Connection:
        return psycopg.connect(self.settings.postgres.url, autocommit=True, connect_timeout=10)


def models_root(settings: Settings) -> str:
    return (settings.batch.models_uri or f"s3://{settings.s3.models_bucket}/models").rstrip("/")


def _save_csr(path: Path, m: sp.csr_matrix, **arrays: np.ndarray) -> None:
    arrays = {"data": m.data, "indices": m.indices, "indptr": m.indptr, "shape": np.array(m.shape), **arrays}
    np.savez(path, **arrays)  # type: ignore[arg-type]


def _load_csr(path: Path, prefix: str = "") -> sp.csr_matrix:
    z = np.load(path, allow_pickle=False)
    return sp.csr_matrix(
        (z[prefix + "data"], z[prefix + "indices"], z[prefix + "indptr"]), shape=tuple(z[prefix + "shape"])
    )


def _str_ids(ids: np.ndarray) -> np.ndarray:
    return np.asarray([str(x) for x in ids], dtype=str)


# ------------------------------------------------------------------------- task 1: active users
def task_active_users(ctx: TaskContext) -> dict[str, Any]:
    """Users with an interaction in ``(cutoff - active_window_hours, cutoff]``: from
    ``user_profiles.last_interaction_at`` (the speed layer's counter) and the raw rt rows."""
    since = ctx.cutoff - timedelta(hours=ctx.settings.batch.active_window_hours)
    with ctx.connect() as conn:
        rows = conn.execute(
            "SELECT user_id FROM user_profiles"
            " WHERE last_interaction_at >= %(s)s AND last_interaction_at < %(c)s "
            "UNION SELECT DISTINCT user_id FROM rt_user_interactions WHERE occurred_at >= %(s)s "
            "AND occurred_at < %(c)s",
            {"s": since, "c": ctx.cutoff},
        ).fetchall()
    users = sorted(r[0] for r in rows)
    (ctx.run.dir / "active_users.txt").write_text("\n".join(users))
    if not users:
        ctx.note(
            f"no active users since {since:%Y-%m-%d %H:%M} UTC (lists are still written for all known users)"
        )
    return {"active_users": len(users), "since": since.isoformat()}


# ----------------------------------------------------------------------- task 2: archive window
def task_close_archive(ctx: TaskContext) -> dict[str, Any]:
    """Make the lake hold everything up to the cut-off that it can: run the archiver once (catch
    up with Kafka), then read ``archive_watermarks``. Rows newer than the watermark are read from
    ``rt_user_interactions`` by task 3, so no event is lost or counted twice (dedup by event_id)."""
    out: dict[str, Any] = {}
    if ctx.settings.batch.archive_before_training:
        from batch.lake.archiver import archive_until_caught_up

        report = archive_until_caught_up(ctx.settings)
        if report.errors:
            raise PipelineError(f"lake archiver reported errors: {'; '.join(report.errors[:3])}")
        out["archived_records"] = report.records
        out["archive_seconds"] = round(report.seconds, 2)
        out["caught_up"] = report.caught_up
    else:
        ctx.note("archiver not run (batch.archive_before_training=false): checking the watermark only")
    with ctx.connect() as conn:
        r = conn.execute(
            "SELECT archived_through FROM archive_watermarks WHERE table_name = 'rt_user_interactions'"
        ).fetchone()
    mark = r[0] if r else None
    out["archived_through"] = mark.isoformat() if mark else None
    if mark is None:
        ctx.note("archive watermark is empty: recent events come from rt_user_interactions only")
    elif mark < ctx.cutoff:
        ctx.note(f"lake complete up to {mark:%Y-%m-%d %H:%M:%S} UTC; later events are read from Postgres")
    return out


# ------------------------------------------------------------------------------ task 3: train
def _catalog_items(ctx: TaskContext) -> set[str]:
    with ctx.connect() as conn:
        return {r[0] for r in conn.execute("SELECT item_id FROM items").fetchall()}


def holdout_split(
    events: pd.DataFrame, cutoff: datetime, hours: float, min_events: int, test_ratio: float
) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """Time-based holdout: events of the last ``hours`` before the cut-off (what yesterday's model
    never saw on a daily schedule); if that is smaller than ``min_events``, the last
    ``test_ratio`` share by time. Returns ``(train, test, description)``."""
    t = events["occurred_at"]
    split_at = pd.Timestamp(cutoff - timedelta(hours=hours))
    test_mask = (t >= split_at).to_numpy()
    how = f"events after {split_at:%Y-%m-%d %H:%M} UTC"
    if test_mask.sum() < min_events or test_mask.all():
        split_at = t.quantile(1 - test_ratio, interpolation="lower")
        test_mask = (t >= split_at).to_numpy()
        how = f"last {test_ratio:.0%} of events by time (after {split_at:%Y-%m-%d %H:%M} UTC)"
    return events.loc[~test_mask], events.loc[test_mask], how


def _check_factors(name: str, *arrays: np.ndarray) -> None:
    for a in arrays:
        if a.size and not np.isfinite(a).all():
            bad = (~np.isfinite(a)).any(axis=1).mean()
            raise PipelineError(
                f"{name} produced non-finite factors ({bad:.0%} of rows NaN/inf): the data or the "
                "hyperparameters (batch.als.*) are degenerate; nothing was registered"
            )
        if a.size and not np.abs(a).any():
            raise PipelineError(
                f"{name} produced all-zero factors: nothing was learned; nothing was registered"
            )


def build_eval_split(train: pd.DataFrame, test: pd.DataFrame, ctx: TaskContext) -> EvalSplit:
    """Index a holdout: the implicit confidence matrix of ``train``; test truth = test events with
    a positive weight (a dislike in the holdout is not a relevant item)."""
    b = ctx.settings.batch
    im = implicit_matrix(train, b, now=pd.Timestamp(ctx.cutoff))
    long = im.to_frame()
    pos = test.loc[event_weights(test, b, now=pd.Timestamp(ctx.cutoff)) > 0, ["user_id", "item_id"]]
    return make_eval_split(long, pos, value_col="value")


def _metrics(m: dict[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in m.items()}


def pairs_matrix(users: pd.Series, items: pd.Series, values: np.ndarray, cap: float) -> InteractionMatrix:
    """Aggregated pairs -> the implicit matrix (ids sorted, values capped at ``cap``), the same
    layout as ``interactions.implicit_matrix`` builds from raw events."""
    u_codes, u_ids = pd.factorize(users, sort=True)
    i_codes, i_ids = pd.factorize(items, sort=True)
    m = sp.csr_matrix(
        (np.minimum(values, cap).astype(np.float32), (u_codes, i_codes)),
        shape=(len(u_ids), len(i_ids)),
        dtype=np.float32,
    )
    m.sum_duplicates()
    m.sort_indices()
    return InteractionMatrix(m, np.asarray(u_ids), np.asarray(i_ids))


def split_from_pairs(pairs: pd.DataFrame, cap: float) -> EvalSplit:
    """The holdout from aggregated pairs: train = confidence before the split point (> 0, capped),
    test truth = pairs with a positive event in the holdout."""
    tr = pairs[pairs["w_train"] > 0]
    long = pd.DataFrame(
        {"user_id": tr["user_id"], "item_id": tr["item_id"], "value": np.minimum(tr["w_train"], cap)}
    )
    pos = pairs.loc[pairs["test_pos"], ["user_id", "item_id"]]
    return make_eval_split(long, pos, value_col="value")


def task_train(ctx: TaskContext) -> dict[str, Any]:
    """Read, validate, aggregate, split, fit both families, pick, refit ALS, snapshot, register."""
    from batch import spark_events
    from infra.spark import get_spark

    s = ctx.settings
    start = ctx.window_start()
    mark = ctx.run.output("close_archive").get("archived_through")
    recent_since = datetime.fromisoformat(mark) if mark else None
    if start is not None and recent_since is not None:
        recent_since = max(recent_since, start)
    spark = get_spark(s, "lambdarec-batch")
    t0 = time.perf_counter()
    local = spark_events.use_pandas(s)
    if local:  # raw events to the driver only if they fit: decided before the read
        rows = spark_events.window_rows(s, start, ctx.cutoff, recent_since)
        front = spark_events.choose_front_end(s, rows, spark_events.max_result_bytes(spark))
        if not front.local:
            ctx.note(f"{front.reason}: validating and aggregating in Spark")
        local = front.local
    events = spark_events.read_events(s, spark, start, ctx.cutoff, recent_since, cache=not local)
    try:
        return _train(ctx, spark, events, start, t0, local)
    finally:
        spark_events.release(events)


def _train(
    ctx: TaskContext, spark: Any, events: Any, start: datetime | None, t0: float, local: bool
) -> dict[str, Any]:
    from batch import spark_events
    from batch.models import build_model
    from batch.models.als import SparkALS
    from schemas.model_snapshot import read_manifest, save_snapshot

    s, b = ctx.settings, ctx.settings.batch
    k = b.eval_k
    secs: dict[str, float] = {}
    since = ctx.cutoff - timedelta(hours=b.holdout_hours)
    pdf: pd.DataFrame | None = None  # the raw events on the driver (front end "pandas")
    if events is None:
        stats = spark_events.WindowStats({"lake": 0, "postgres": 0}, None, 0)
    elif local:
        pdf = spark_events.collect(events)
        stats = spark_events.window_stats_pandas(pdf, since)
    else:
        stats = spark_events.window_stats(events, since)
    where = "pandas on the driver" if local else "Spark"
    secs["read"] = time.perf_counter() - t0
    counts = stats.counts
    window = (
        f"{start:%Y-%m-%d %H:%M} .. {ctx.cutoff:%Y-%m-%d %H:%M} UTC"
        if start
        else f"up to {ctx.cutoff:%Y-%m-%d %H:%M} UTC"
    )
    ctx.note(
        f"read {stats.total:,} events ({counts['lake']:,} lake + {counts['postgres']:,} Postgres)"
        f" in {secs['read']:.1f}s (into {where})"
    )
    if stats.total == 0 or stats.newest is None:
        raise NoDataError(
            f"no interaction events in {window} (lake {s.lake.root} and rt_user_interactions): nothing to "
            "train on. Check that the archiver runs (`lambdarec lake archive --once`) and the --cutoff"
        )

    # -- no new data since the production model?
    newest = stats.newest
    with ctx.connect() as conn:
        prod = registry.production_model(conn, ALGORITHM)
    through = prod.metrics.get("data_through") if prod is not None else None
    if prod is not None and through and newest <= pd.Timestamp(through):
        raise NoNewData(
            f"no events newer than {through} (what production model {prod.version} "
            "was trained on): nothing new to learn, production kept"
        )

    # -- validation (great-expectations, on the Spark DataFrame or the collected frame)
    t1 = time.perf_counter()
    report = validate_events(
        pdf if pdf is not None else events,
        catalog_items=_catalog_items(ctx),
        future_tolerance_sec=s.events.future_tolerance_sec,
        min_known_item_share=b.min_known_item_share,
        n_rows_hint=stats.total,
    )
    secs["validate"] = time.perf_counter() - t1
    (ctx.run.dir / "validation.json").write_text(json.dumps(_jsonable(report.as_dict()), indent=2))
    ctx.run.set_task(
        "train", validation=_jsonable(report.as_dict()) | {"seconds": round(secs["validate"], 2)}
    )
    if not report.success:
        raise DataValidationError(report.text())
    ctx.note(report.text() + f" ({secs['validate']:.1f}s)")

    # -- aggregate to user-item pairs; the matrix and the holdout from the pairs
    t1 = time.perf_counter()
    hold = (b.holdout_hours, b.holdout_min_events, b.eval_test_ratio)
    if pdf is not None:
        split_at, how = spark_events.split_point_pandas(pdf, stats, ctx.cutoff, *hold)
        pairs = spark_events.aggregate_pairs_pandas(pdf, b, ctx.cutoff, split_at)
        rated = spark_events.rated_events_pandas(pdf, split_at) if b.rmse_eval else None
        del pdf
    else:
        split_at, how = spark_events.split_point(events, stats, ctx.cutoff, *hold)
        pairs = spark_events.aggregate_pairs(events, b, ctx.cutoff, split_at)
        rated = spark_events.rated_events(events, split_at) if b.rmse_eval else None
    keep = pairs["w_all"] > 0
    full = pairs_matrix(
        pairs.loc[keep, "user_id"],
        pairs.loc[keep, "item_id"],
        pairs.loc[keep, "w_all"].to_numpy(),
        b.max_confidence,
    )
    secs["aggregate"] = time.perf_counter() - t1
    n_users, n_items = full.shape
    if n_users < 2 or n_items < 2:
        raise NoDataError(
            f"the window has {n_users} user(s) and {n_items} item(s) with a positive signal:"
            " too little to train"
        )
    per_user = np.diff(full.matrix.indptr)
    per_item = np.bincount(full.matrix.indices, minlength=n_items)
    ctx.note(
        f"{len(pairs):,} user-item pairs aggregated in {where} ({secs['aggregate']:.1f}s):"
        f" matrix {n_users:,} users x {n_items:,} items, {full.matrix.nnz:,} pairs"
        f" ({int((per_user == 1).sum()):,} users and"
        f" {int((per_item == 1).sum()):,} items with a single pair)"
    )
    if not (pairs["w_train"] > 0).any():
        raise NoDataError("the holdout would leave no training events: widen batch.train_window_days")
    split = split_from_pairs(pairs, b.max_confidence)
    del pairs
    ctx.note(f"holdout: {how}: {len(split.test_users):,} warm test users, {split.n_cold_test_users:,} cold")

    # -- both families on the same holdout; the better one makes the lists
    t1 = time.perf_counter()
    candidates: dict[str, dict[str, float]] = {}
    als = build_model("als", b, spark)
    candidates["als"] = _metrics(evaluate_model(als, split, k, memory_mb=b.topk_memory_mb))
    _check_factors("ALS (holdout fit)", als.user_factors, als.item_factors)  # type: ignore[attr-defined]
    secs["als_holdout"] = time.perf_counter() - t1
    ctx.note(
        f"ALS on the holdout: nDCG@{k} {candidates['als'][f'ndcg@{k}']:.4f}"
        f" ({secs['als_holdout']:.1f}s, rank {b.als.rank})"
    )
    if b.ease_candidate and split.train.shape[1] <= b.ease_max_items:
        t1 = time.perf_counter()
        candidates["ease"] = _metrics(
            evaluate_model(build_model("ease", b), split, k, memory_mb=b.topk_memory_mb)
        )
        secs["ease_holdout"] = time.perf_counter() - t1
        ctx.note(
            f"EASE on the holdout: nDCG@{k} {candidates['ease'][f'ndcg@{k}']:.4f}"
            f" ({secs['ease_holdout']:.1f}s)"
        )
    elif b.ease_candidate:
        ctx.note(
            f"EASE not a candidate: {split.train.shape[1]:,} items"
            f" > batch.ease_max_items={b.ease_max_items:,}"
        )
    winner, decisions = pick_winner(candidates, b)
    for name, d in decisions.items():
        if not d.passed:  # e.g. EASE with a higher nDCG but a too narrow catalog coverage
            ctx.note(f"{name.upper()} fails the gate's floors: {'; '.join(d.reasons)}")
    metrics = dict(candidates[winner])
    ctx.note(
        f"lists will come from {winner.upper()} (best nDCG@{k} among the candidates that pass the floors)"
    )
    t1 = time.perf_counter()
    reference = {"popularity": _metrics(evaluate_model(build_model("popularity", b), split, k))}
    # explicit RMSE (rate events only), when there are ratings on both sides of the holdout
    if rated is not None:
        rated_train, rated_test = rated
        if len(rated_train) >= b.holdout_min_events and len(rated_test) > 0:
            ex = explicit_matrix(rated_train)
            ex_model = build_model("als-explicit", b, spark).fit(ex.matrix)
            u = ex.user_index().get_indexer(rated_test["user_id"])
            i = ex.item_index().get_indexer(rated_test["item_id"])
            ok = (u >= 0) & (i >= 0)
            if ok.any():
                pred = ex_model.predict(u[ok], i[ok])  # type: ignore[attr-defined]
                metrics["rmse"] = rmse(rated_test["rating"].to_numpy(np.float64)[ok], pred)
                metrics["rmse_n"] = float(ok.sum())
    secs["reference_rmse"] = time.perf_counter() - t1
    secs["evaluate"] = secs["als_holdout"] + secs.get("ease_holdout", 0.0) + secs["reference_rmse"]
    _save_split(ctx.run.dir / "holdout.npz", split)

    # -- ALS refit on the whole window: the snapshot's factors (the speed layer folds in against
    # its item factors whichever family makes the lists; EASE has no factors)
    t1 = time.perf_counter()
    model = SparkALS(spark, b.als.model_copy(update={"implicit_prefs": True})).fit(full.matrix)
    secs["fit_full"] = time.perf_counter() - t1
    _check_factors("ALS", model.user_factors, model.item_factors)
    _save_csr(ctx.run.dir / "train_matrix.npz", full.matrix)
    version = ctx.run.run_id
    uri = f"{models_root(s)}/{ALGORITHM}/{version}"
    all_metrics = {
        **metrics,
        "list_model": winner,
        "candidates": candidates,
        "data_through": newest.isoformat(),
        "events": float(stats.total),
        "users": float(n_users),
        "items": float(n_items),
        "reference": reference,
    }
    list_params = {"list_model": winner, "ease_lambda": b.ease_lambda}
    snap = model.to_snapshot(
        version,
        _str_ids(full.user_ids),
        _str_ids(full.item_ids),
        metrics={k_: v for k_, v in metrics.items() if isinstance(v, float)},
        extra_params={
            "event_weights": b.event_weights,
            "rate_weight": b.rate_weight,
            "half_life_days": b.half_life_days,
            **list_params,
        },
        extra={"run_id": ctx.run.run_id, "cutoff": ctx.cutoff.isoformat(), "holdout": how, **list_params},
    )
    try:
        save_snapshot(snap, uri, s3=s.s3)
    except FileExistsError:  # a resumed task 3: snapshots are immutable, keep the one written
        read_manifest(uri, s3=s.s3)
        ctx.note(f"snapshot {uri} already written by an earlier attempt: kept")
    with ctx.connect() as conn:
        row = registry.create_candidate(
            conn,
            ALGORITHM,
            version,
            {**b.als.model_dump(), "window_days": b.train_window_days, **list_params},
        )
        row = registry.register(
            conn, row.model_id, snapshot_uri=uri, metrics=all_metrics, trained_at=datetime.now(UTC)
        )
    ctx.note(f"registered {ALGORITHM} {version} (model_id {row.model_id}, lists by {winner}), snapshot {uri}")
    return {
        "model_id": row.model_id,
        "model_version": version,
        "snapshot_uri": uri,
        "list_model": winner,
        "ease_lambda": b.ease_lambda,
        "als": b.als.model_dump(),
        "events": counts | {"total": stats.total},
        "users": n_users,
        "items": n_items,
        "pairs": int(full.matrix.nnz),
        "single_event_users": int((per_user == 1).sum()),
        "single_event_items": int((per_item == 1).sum()),
        "holdout": how,
        "metrics": metrics,
        "candidates": candidates,
        "candidate_checks": {n: d.as_dict() for n, d in decisions.items()},
        "reference": reference,
        "seconds": secs,
        "front_end": "pandas" if local else "spark",
    }


# ------------------------------------------------------------------------------- task 4: gate
def _save_split(path: Path, split: EvalSplit) -> None:
    arrays: dict[str, np.ndarray] = {}
    for side, m in (("train_", split.train), ("test_", split.test)):
        arrays |= {side + "data": m.data, side + "indices": m.indices, side + "indptr": m.indptr}
        arrays[side + "shape"] = np.array(m.shape)
    arrays |= {
        "user_ids": _str_ids(split.user_ids),
        "item_ids": _str_ids(split.item_ids),
        "n_cold": np.array([split.n_cold_test_users]),
    }
    np.savez(path, **arrays)  # type: ignore[arg-type]


def _load_split(path: Path) -> EvalSplit:
    z = np.load(path, allow_pickle=False)
    return EvalSplit(
        train=_load_csr(path, "train_"),
        test=_load_csr(path, "test_"),
        user_ids=z["user_ids"].astype(object),
        item_ids=z["item_ids"].astype(object),
        n_cold_test_users=int(z["n_cold"][0]),
    )


@dataclass(frozen=True)
class ProductionConfig:
    """What the production model was made with, as far as the gate refits it: the family of its
    lists and that family's hyperparameters (from its ``models.hyperparameters``).

    >>> row = registry.ModelRow(1, "als", "v1", "production", None, {}, {"rank": 8, "list_model": "als"})
    >>> ProductionConfig.of(row, BatchSettings()).als.rank
    8
    """

    list_model: str
    als: AlsSettings | None  # None: the row does not say (not made by this pipeline)
    ease_lambda: float

    @classmethod
    def of(cls, prod: registry.ModelRow, b: BatchSettings) -> ProductionConfig:
        hp = prod.hyperparameters
        lists = str(hp.get("list_model") or prod.metrics.get("list_model") or "als")
        known = {k: hp[k] for k in AlsSettings.model_fields if k in hp}
        als = AlsSettings.model_validate({**known, "implicit_prefs": True}) if "rank" in known else None
        return cls(lists, als, float(hp.get("ease_lambda") or b.ease_lambda))

    def describe(self) -> str:
        if self.list_model == "ease":
            return f"EASE, lambda {self.ease_lambda:g}"
        if self.als is None:
            return "ALS, hyperparameters unknown"
        a = self.als
        return f"ALS, rank {a.rank}, regParam {a.reg_param:g}, alpha {a.alpha:g}, maxIter {a.max_iter}"


def score_production(
    config: ProductionConfig,
    split: EvalSplit,
    trained: dict[str, Any],
    b: BatchSettings,
    spark: Callable[[], Any],
) -> tuple[dict[str, float] | None, str]:
    """Production's holdout metrics for the gate: production's *config* refitted on the holdout's
    training part (``split.train``, the candidate's), scored on the same test events.
    Returns ``(metrics or None, how they were obtained)``.

    Why a refit and not production's own factors: production's snapshot was trained on its whole
    window, and whenever runs are closer together than ``holdout_hours`` (a second run the same
    day, the demo, a catch-up after a failure) or the holdout falls back to the last
    ``eval_test_ratio`` of events, that window contains the holdout: production is then scored on
    events it has memorised and the candidate, which never saw them, loses (the demo's second run
    was rejected at -45 %). Scoring production only on events after its ``data_through`` was the
    other option, but that set is empty or tiny exactly in those cases (runs hours apart), and it
    still compares models that saw different data. A refit on the same training part answers the
    question the gate can answer fairly — is the candidate's family and hyperparameters at least
    as good as production's on today's data? — and needs production's config only, not its
    snapshot. What it does not compare is the data itself: bad data is stopped by the
    great-expectations validation and the gate's absolute floors. When production's config is the
    candidate's (the usual daily run) the refit is the candidate's own holdout fit, reused.
    ``spark`` is only called for an ALS refit with another config.
    """
    cached = trained.get("candidates", {})
    if config.list_model == "ease":
        same = config.ease_lambda == float(trained.get("ease_lambda", b.ease_lambda))
        if same and cached.get("ease") is not None:
            return dict(cached["ease"]), f"same config as the candidate's EASE ({config.describe()})"
        if split.train.shape[1] > b.ease_max_items:
            return None, f"production has EASE lists but {split.train.shape[1]:,} items exceed ease_max_items"
        from batch.models import EASE

        model: Any = EASE(lam=config.ease_lambda)
    else:
        if config.als is None:
            return None, "production's ALS hyperparameters are not in the registry"
        cand = trained.get("als")
        same = cand is not None and AlsSettings.model_validate({**cand, "implicit_prefs": True}) == config.als
        if same and cached.get("als") is not None:
            return dict(cached["als"]), f"same config as the candidate's ALS ({config.describe()})"
        from batch.models.als import SparkALS

        model = SparkALS(spark(), config.als)
    m = evaluate_model(model, split, b.eval_k, memory_mb=b.topk_memory_mb)
    return _metrics(m), f"production's config ({config.describe()}) refit on this holdout's training part"


def task_gate(ctx: TaskContext) -> dict[str, Any]:
    """Candidate vs production's config on the same holdout (:func:`score_production`); registry
    moves via the DB lifecycle."""
    from infra.spark import get_spark

    s, b = ctx.settings, ctx.settings.batch
    trained = ctx.run.output("train")
    model_id = int(trained["model_id"])
    split = _load_split(ctx.run.dir / "holdout.npz")
    candidate = trained["metrics"]
    prod_metrics: dict[str, float] | None = None
    scored_as: str | None = None
    notes: list[str] = []
    with ctx.connect() as conn:
        prod = registry.production_model(conn, ALGORITHM)
    config = ProductionConfig.of(prod, b) if prod is not None else None
    if prod is not None and config is not None and prod.model_id != model_id:
        prod_metrics, scored_as = score_production(
            config, split, trained, b, lambda: get_spark(s, "lambdarec-batch")
        )
        if prod_metrics is None:
            msg = f"production {prod.version}: {scored_as}"
            ctx.note(msg + ": gating on absolute thresholds only")
            notes.append(msg)
        else:
            ctx.note(
                f"production {prod.version} on the same holdout ({scored_as}):"
                f" nDCG@{b.eval_k} {prod_metrics[f'ndcg@{b.eval_k}']:.4f}"
            )
    decision = decide_with_settings(candidate, prod_metrics, b)
    with ctx.connect() as conn:
        registry.update_metrics(
            conn, model_id, {"gate": decision.as_dict(), "production_on_holdout": prod_metrics or {}}
        )
        current = registry.get_model(conn, model_id)
        assert current is not None
        if current.status != "production":
            registry.set_status(conn, model_id, "staging" if decision.passed else "deprecated")
    ctx.note(
        ("gate passed: " if decision.passed else "gate REJECTED the candidate: ")
        + "; ".join(decision.reasons)
    )
    return {
        "passed": decision.passed,
        "reasons": decision.reasons,
        "checks": decision.checks,
        "production": (
            {"model_id": prod.model_id, "version": prod.version, "list_model": config.list_model}
            if prod is not None and config is not None
            else None
        ),
        "production_scored_as": scored_as,
        "list_model": trained.get("list_model", "als"),
        "production_metrics": prod_metrics,
        "notes": notes,
    }


# ---------------------------------------------------------------------------- task 5: publish
def task_publish(ctx: TaskContext) -> dict[str, Any]:
    """Top-N for every user from the snapshot, the versioned-run swap + promotion in one
    transaction, a performance-log row, and the announcement on ``model-updates``."""
    from batch.publish import active_run, announce, load_batch_run, promote_and_publish
    from schemas.model_snapshot import SnapshotFormatError, load_snapshot
    from schemas.model_updates import ModelUpdate

    s, b = ctx.settings, ctx.settings.batch
    trained = ctx.run.output("train")
    model_id, version, uri = (
        int(trained["model_id"]),
        str(trained["model_version"]),
        str(trained["snapshot_uri"]),
    )
    try:
        snap = load_snapshot(uri, s3=s.s3)
    except (SnapshotFormatError, OSError) as exc:
        raise PipelineError(
            f"model snapshot {uri} is missing or unreadable ({exc}): re-run from task 3 (--from-task 3)"
        ) from exc
    seen = _load_csr(ctx.run.dir / "train_matrix.npz")
    if seen.shape != (len(snap.user_ids), len(snap.item_ids)):
        raise PipelineError(f"snapshot {uri} does not match this run's training matrix: re-run from task 3")
    t0 = time.perf_counter()
    list_model = str(trained.get("list_model", "als"))
    threads = min(2, os.cpu_count() or 1)
    if list_model == "ease":
        # EASE has no factors for a snapshot: its B matrix is recomputed from this run's training
        # matrix (deterministic closed form, seconds to a minute at <= ease_max_items), so a resumed
        # task 5 needs nothing but the run directory.
        from batch.models import EASE

        ease = EASE(lam=float(trained.get("ease_lambda", b.ease_lambda)), max_items=b.ease_max_items).fit(
            seen
        )
        fit_s = time.perf_counter() - t0
        idx, scores = ease.recommend(None, b.top_n, memory_mb=b.topk_memory_mb, n_threads=threads)
        ctx.note(f"EASE lists: refit on the whole window in {fit_s:.1f}s")
    else:
        idx, scores = topk_factors(
            snap.user_factors,
            snap.item_factors,
            b.top_n,
            exclude=seen,
            memory_mb=b.topk_memory_mb,
            n_threads=threads,
        )
    topk_s = time.perf_counter() - t0
    expires_at = datetime.now(UTC) + timedelta(hours=b.recommendations_ttl_hours)
    t0 = time.perf_counter()
    with psycopg.connect(s.postgres.url, connect_timeout=10, autocommit=True) as conn:
        done = active_run(conn)
        model = registry.get_model(conn, model_id)
        already = (
            done is not None and done[2] == version and model is not None and model.status == "production"
        )
    with psycopg.connect(s.postgres.url, connect_timeout=10) as conn:
        if already and done is not None:  # a resumed task 5 that failed after the commit (announce)
            ctx.note(f"batch run {done[0]} of {version} is already active: only re-announcing")
            run_id, rows = done[0], -1
        else:
            with conn.transaction():
                run_id, rows = load_batch_run(
                    conn,
                    algorithm=ALGORITHM,
                    model_version=version,
                    expires_at=expires_at,
                    user_ids=snap.user_ids,
                    item_ids=snap.item_ids,
                    top_idx=idx,
                    top_scores=scores,
                )
        write_s = time.perf_counter() - t0
        conn.autocommit = True
        previous, users = promote_and_publish(conn, model_id, run_id)
        active = (
            set(filter(None, (ctx.run.dir / "active_users.txt").read_text().split("\n")))
            if (ctx.run.dir / "active_users.txt").exists()
            else set()
        )
        covered = len(active & set(map(str, snap.user_ids))) / len(active) if active else None
        if not already:  # one performance row per promotion
            registry.log_performance(
                conn,
                model_id,
                trained["metrics"],
                k=b.eval_k,
                total_users_trained=trained["users"],
                total_items_trained=trained["items"],
                training_duration_sec=trained["seconds"]["fit_full"],
            )
        row = registry.get_model(conn, model_id)
    promoted_at = datetime.now(UTC)
    announce(
        s,
        ModelUpdate(
            algorithm=ALGORITHM,
            model_version=version,
            snapshot_uri=uri,
            promoted_at=promoted_at,
            model_id=model_id,
        ),
    )
    ctx.note(
        f"published {users:,} users' top-{b.top_n} (batch run {run_id});"
        f" {ALGORITHM} {version} is in production (lists by {list_model})"
    )
    return {
        "batch_run_id": run_id,
        "users_published": users,
        "rows_written": rows,
        "previous_production_model_id": previous,
        "status": row.status if row else None,
        "active_user_coverage": covered,
        "expires_at": expires_at.isoformat(),
        "announced_at": promoted_at.isoformat(),
        "list_model": list_model,
        "seconds": {"topk": topk_s, "write": write_s},
    }


TASK_FUNCS: dict[str, Callable[[TaskContext], dict[str, Any]]] = {
    "active_users": task_active_users,
    "close_archive": task_close_archive,
    "train": task_train,
    "gate": task_gate,
    "publish": task_publish,
}


# ------------------------------------------------------------------------------------- driver
def open_run(
    settings: Settings,
    *,
    cutoff: datetime | None = None,
    run_id: str | None = None,
    new: bool = False,
    latest: bool = False,
) -> RunLog:
    """The run to work on: an explicit run id, the run of ``cutoff`` (resumed if it exists), the
    latest unfinished run (automatic resume; ``latest``: the latest run whatever its status, for
    ``--from-task``), or a new run with ``cutoff = now``."""
    root = runs_dir(settings)
    if run_id is not None:
        if not (root / run_id / "runlog.json").is_file():
            raise PipelineError(f"no run {run_id} under {root}")
        return RunLog.load(root / run_id)
    if cutoff is None and not new:
        unfinished = [r for r in list_runs(settings) if latest or r.status in ("running", "failed")]
        if unfinished:
            return unfinished[-1]
    cutoff = (cutoff or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    rid = run_id_for(cutoff)
    if (root / rid / "runlog.json").is_file():
        return RunLog.load(root / rid)
    return RunLog.create(root / rid, rid, cutoff)


def _noter(emit: Callable[[str, str, str], None], task: str) -> Callable[[str], None]:
    def note(message: str) -> None:
        emit(task, "note", message)

    return note


def run_tasks(
    settings: Settings,
    run: RunLog,
    *,
    from_task: int | None = None,
    on_event: Callable[[str, str, str], None] | None = None,
    only: str | None = None,
) -> RunLog:
    """Run the tasks of ``run`` in order, skipping completed ones (or re-running ``from_task`` on).

    ``on_event(task, kind, message)`` with kind ``start``, ``note``, ``done``, ``skip``, ``fail``.
    ``only`` runs one task (what an Airflow operator does). Errors are recorded in the run log and
    re-raised.
    """
    emit = on_event or (lambda t, k, m: log.info("%s %s %s", t, k, m))
    if from_task is not None and not 1 <= from_task <= len(TASKS):
        raise PipelineError(f"--from-task must be 1..{len(TASKS)}")
    with _run_lock(run.dir, wait=only is not None):
        run = RunLog.load(run.dir)  # fresh copy under the lock
        run.data["attempts"] = int(run.data.get("attempts", 0)) + 1
        run.set_status("running", last_attempt_at=_now())
        names = [only] if only else list(TASKS)
        for name in names:
            n = TASKS.index(name) + 1
            st = run.task(name)["status"]
            if only is None and from_task is not None and n < from_task:
                if st not in ("done", "skipped"):
                    raise PipelineError(
                        f"cannot start from task {from_task}: task {n} ({name}) is {st} in run {run.run_id}"
                    )
                emit(name, "skip", "completed earlier")
                continue
            if st == "done" and (from_task is None or n < from_task):
                emit(name, "skip", "completed earlier")
                continue
            if name == "publish" and not run.output("gate").get("passed", False):
                run.set_task(name, status="skipped", output={"reason": "the gate rejected the candidate"})
                emit(name, "skip", "gate rejected the candidate: production and the batch view unchanged")
                run.set_status("rejected", finished_at=_now())
                return run
            ctx = TaskContext(settings, run, _noter(emit, name))
            emit(name, "start", f"task {n}/{len(TASKS)}")
            run.set_task(name, status="running", started_at=_now(), error=None)
            t0 = time.perf_counter()
            try:
                out = TASK_FUNCS[name](ctx)
            except NoNewData as exc:
                run.set_task(
                    name,
                    status="skipped",
                    seconds=round(time.perf_counter() - t0, 3),
                    output={"reason": str(exc)},
                )
                for later in TASKS[n:]:
                    run.set_task(later, status="skipped", output={"reason": "no new data"})
                emit(name, "skip", str(exc))
                run.set_status("skipped", finished_at=_now())
                return run
            except BaseException as exc:
                run.set_task(
                    name,
                    status="failed",
                    seconds=round(time.perf_counter() - t0, 3),
                    error=f"{type(exc).__name__}: {exc}",
                    traceback=None if isinstance(exc, PipelineError) else traceback.format_exc(limit=8),
                )
                run.set_status("failed", finished_at=_now())
                emit(name, "fail", f"{type(exc).__name__}: {exc}")
                raise
            run.set_task(
                name,
                status="done",
                finished_at=_now(),
                seconds=round(time.perf_counter() - t0, 3),
                output=out,
            )
            emit(name, "done", f"{time.perf_counter() - t0:.1f}s")
        if all(run.task(t)["status"] == "done" for t in TASKS):
            run.set_status("succeeded", finished_at=_now())
        return run


def run_pipeline(
    settings: Settings,
    *,
    cutoff: datetime | None = None,
    from_task: int | None = None,
    run_id: str | None = None,
    new: bool = False,
    on_event: Callable[[str, str, str], None] | None = None,
) -> RunLog:
    """Open (or resume) a run and run its tasks: the whole daily batch cycle in one call."""
    run = open_run(settings, cutoff=cutoff, run_id=run_id, new=new, latest=from_task is not None)
    return run_tasks(settings, run, from_task=from_task, on_event=on_event)


def exit_code(run: RunLog) -> int:
    return {"succeeded": EXIT_OK, "skipped": EXIT_OK, "rejected": EXIT_REJECTED}.get(run.status, EXIT_FAILED)

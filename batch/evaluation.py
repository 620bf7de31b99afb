"""Offline evaluation: splits and metrics, defined exactly as Microsoft Recommenders does.

Why copy their definitions: their published MovieLens benchmark (nDCG@10 on ml-100k: Spark ALS
0.044, SAR 0.382, BPR 0.442, BiVAE 0.475) is the yardstick the promotion gate is compared with, so
our numbers must mean the same thing. Reference: ``recommenders/evaluation/python_evaluation.py``
and ``recommenders/datasets/python_splitters.py`` (recommenders 1.2.x). Per user ``u`` with ranked
list ``L_u`` (top ``k`` of the predictions), test set ``T_u`` (binary relevance: every test item
counts) and hits ``h_u = |L_u ∩ T_u|``; averages run over the users that have both a list and a
test item (their ``merge_ranking_true_pred`` "common users"):

* ``precision@k = mean(h_u / k)`` (``k``, not ``|L_u|``: a short list is penalised, as in Spark);
* ``recall@k = mean(h_u / |T_u|)``;
* ``ndcg@k = mean(DCG_u / IDCG_u)`` with ``DCG_u = sum_{hits at rank r} 1 / ln(1 + r)`` and
  ``IDCG_u = sum_{r=1}^{min(k, |T_u|)} 1 / ln(1 + r)`` (their ``ndcg_at_k`` with
  ``relevancy_method="top_k"``, ``score_type="binary"``; the log base cancels);
* ``map_at_k = mean(sum_{hits at rank r} (hits within 1..r / r) / min(k, |T_u|))`` — their current
  ``map_at_k`` (since 1.2.0, Spark's ``meanAveragePrecisionAt``);
* ``map = the same sum / |T_u|`` — their older definition, now called ``map``, which their README
  benchmark table was computed with; reported too so both tables can be compared;
* ``rmse`` on the inner join of true and predicted ratings (explicit models only);
* ``catalog_coverage = |distinct recommended items| / |distinct items in train|``;
* ``user_coverage = |test users with a non-empty list| / |test users|`` (ours: the share of
  test users the model can serve at all; cold users lower it, not the ranking metrics).

Splits: :func:`stratified_split` reproduces ``python_stratified_split`` bit for bit (same legacy
``np.random.seed`` stream, same per-user ``rank <= round(ratio * n)`` rule), so on the same input
rows the train/test sets are identical to theirs (checked on ml-100k). :func:`chrono_split`
(per-user last share by time) and :func:`global_time_split` (one cut-off) are the time-based
holdouts for the pipeline's gate.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import scipy.sparse as sp

if TYPE_CHECKING:
    from batch.models.base import Recommender
    from lambdarec.settings import BatchSettings

USER, ITEM, RATING, TIME = "user_id", "item_id", "rating", "timestamp"


# --------------------------------------------------------------------------------------- splits
def _check_columns(df: pd.DataFrame, cols: Iterable[str]) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ValueError(f"missing column(s) {missing}; have {list(df.columns)}")


def _min_rating_filter(df: pd.DataFrame, min_rating: int, by: str) -> pd.DataFrame:
    if min_rating < 1:
        raise ValueError("min_rating must be >= 1")
    if min_rating == 1:
        return df
    return df[df.groupby(by)[by].transform("size") >= min_rating]


def _split_by_rank(df: pd.DataFrame, order: str, ratio: float, by: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    if not 0 < ratio < 1:
        raise ValueError("ratio (train share) must be in (0, 1)")
    df = df.sort_values([by, order])
    groups = df.groupby(by)
    rank = (groups.cumcount() + 1).to_numpy()
    count = groups[by].transform("count").to_numpy()
    # np.round is round-half-to-even, exactly what the reference's round(Series) does.
    in_train = rank <= np.round(ratio * count)
    cols = [c for c in df.columns if c != "_random"]
    return df.loc[in_train, cols], df.loc[~in_train, cols]


def stratified_split(
    df: pd.DataFrame,
    ratio: float = 0.75,
    *,
    seed: int = 42,
    min_rating: int = 1,
    user_col: str = USER,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-user random split, ``ratio`` of each user's rows to train (``python_stratified_split``).

    Each row gets ``np.random.RandomState(seed).rand()`` in input order; within a user rows are
    ranked by that number and the first ``round(ratio * n)`` (half to even) go to train — the
    rule of recommenders 1.2.1. So no user is lost from train (``n = 1`` or ``2`` at 0.75 stay in
    train entirely, with no test rows) and every user with ``n >= 3`` has both.
    """
    _check_columns(df, [user_col])
    df = _min_rating_filter(df, min_rating, user_col).copy()
    df["_random"] = np.random.RandomState(seed).rand(len(df))
    return _split_by_rank(df, "_random", ratio, user_col)


def chrono_split(
    df: pd.DataFrame,
    ratio: float = 0.75,
    *,
    min_rating: int = 1,
    user_col: str = USER,
    time_col: str = TIME,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-user time holdout: each user's last ``1 - ratio`` of rows (by time) are the test set.

    Same rank rule as :func:`stratified_split` (``python_chrono_split``). Ties in time keep input
    order (stable sort), so the split is deterministic.
    """
    _check_columns(df, [user_col, time_col])
    df = _min_rating_filter(df, min_rating, user_col).copy()
    df["_random"] = np.arange(len(df))  # stable tiebreak for equal timestamps
    df = df.sort_values([user_col, time_col, "_random"], kind="stable")
    df["_random"] = np.arange(len(df))
    return _split_by_rank(df, "_random", ratio, user_col)


def global_time_split(
    df: pd.DataFrame,
    *,
    cutoff: object | None = None,
    test_share: float = 0.2,
    time_col: str = TIME,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One cut-off for everybody: train = rows before ``cutoff``, test = rows at or after it.

    Without ``cutoff``, it is the ``1 - test_share`` quantile of the timestamps. This is the gate's
    holdout in the pipeline: it measures "trained on the past, serving the next days" with no
    leakage from the future, unlike per-user splits. Test users or items absent from train remain
    in the test set; they lower user coverage/recall rather than silently vanishing.
    """
    _check_columns(df, [time_col])
    if cutoff is None:
        if not 0 < test_share < 1:
            raise ValueError("test_share must be in (0, 1)")
        cutoff = df[time_col].quantile(1 - test_share, interpolation="lower")
    before = (df[time_col] < cutoff).to_numpy()
    return df.loc[before], df.loc[~before]


# ---------------------------------------------------------------------------------- index space
@dataclass(frozen=True)
class EvalSplit:
    """A split mapped to integer indices shared by train matrix, recommendations and test truth.

    ``train`` is ``(n_users, n_train_items)``; items first seen in test get indices
    ``>= n_train_items`` (no model can recommend them, but they count in ``|T_u|``, as in the
    reference). Users are the train users; ``n_cold_test_users`` test users have no train rows.
    """

    train: sp.csr_matrix
    test: sp.csr_matrix  # (n_users, n_all_items), binary: every test item is relevant
    user_ids: np.ndarray
    item_ids: np.ndarray  # all items; the first train.shape[1] are the train items
    n_cold_test_users: int

    @property
    def test_users(self) -> np.ndarray:
        """Indices of (warm) users with at least one test item."""
        return np.flatnonzero(np.diff(self.test.indptr) > 0)


def make_eval_split(
    train: pd.DataFrame,
    test: pd.DataFrame,
    *,
    value_col: str | None = None,
    user_col: str = USER,
    item_col: str = ITEM,
) -> EvalSplit:
    """Index a train/test pair. ``value_col`` (e.g. ``rating``) fills the train matrix, else 1.0.

    Duplicate user-item rows are summed (event logs) in train; the test matrix is binary.
    """
    users = pd.Index(pd.unique(train[user_col]))
    train_items = pd.Index(pd.unique(train[item_col]))
    test_only = pd.Index(pd.unique(test[item_col])).difference(train_items, sort=False)
    items = train_items.append(test_only)

    def matrix(df: pd.DataFrame, n_cols: int, values: str | None) -> sp.csr_matrix:
        r = users.get_indexer(df[user_col])
        c = items.get_indexer(df[item_col])
        v = df[values].to_numpy(np.float32) if values else np.ones(len(df), np.float32)
        keep = r >= 0
        m = sp.csr_matrix((v[keep], (r[keep], c[keep])), shape=(len(users), n_cols), dtype=np.float32)
        m.sum_duplicates()
        m.sort_indices()
        if values is None:
            m.data[:] = 1.0
        return m

    test_warm = test[users.get_indexer(test[user_col]) >= 0]
    n_cold = int(pd.unique(test[user_col]).size - pd.unique(test_warm[user_col]).size)
    return EvalSplit(
        train=matrix(train, len(train_items), value_col),
        test=matrix(test_warm, len(items), None),
        user_ids=users.to_numpy(),
        item_ids=items.to_numpy(),
        n_cold_test_users=n_cold,
    )


# -------------------------------------------------------------------------------------- metrics
@dataclass(frozen=True)
class RankingReport:
    """Metrics of one model on one split (see the module docstring for the definitions)."""

    k: int
    precision: float
    recall: float
    ndcg: float
    map_at_k: float
    map: float
    n_users: int
    extra: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, float]:
        return {
            f"precision@{self.k}": self.precision,
            f"recall@{self.k}": self.recall,
            f"ndcg@{self.k}": self.ndcg,
            f"map@{self.k}": self.map_at_k,
            "map": self.map,
            "n_users": float(self.n_users),
            **self.extra,
        }


def hit_matrix(recs: np.ndarray, truth: sp.csr_matrix) -> np.ndarray:
    """``hits[u, r] = recs[u, r]`` is a non-zero of ``truth[u]`` (``-1`` padding never hits).

    Vectorised as a sorted-key membership test on ``u * n_items + item`` (no Python loop).
    """
    truth = sp.csr_matrix(truth)
    truth.sort_indices()
    n_rows, n_cols = truth.shape
    if recs.shape[0] != n_rows:
        raise ValueError(f"recs has {recs.shape[0]} rows, truth {n_rows}")
    rows = np.repeat(np.arange(n_rows, dtype=np.int64), np.diff(truth.indptr))
    truth_keys = rows * n_cols + truth.indices  # sorted: CSR is row-major with sorted indices
    valid = recs >= 0
    rec_keys = np.arange(n_rows, dtype=np.int64)[:, None] * n_cols + np.where(valid, recs, 0)
    pos = np.searchsorted(truth_keys, rec_keys)
    pos = np.minimum(pos, max(len(truth_keys) - 1, 0))
    found = truth_keys[pos] == rec_keys if len(truth_keys) else np.zeros(recs.shape, bool)
    return found & valid


def ranking_metrics(recs: np.ndarray, truth: sp.csr_matrix, k: int) -> RankingReport:
    """Precision/recall/nDCG/MAP@k of ranked lists ``recs[u, :]`` against test matrix rows.

    ``recs`` holds item indices (``-1`` = no item), best first; only its first ``k`` columns are
    used. Rows whose test set is empty, or whose list is empty, are not evaluated ("common users").
    """
    if k < 1:
        raise ValueError("k must be >= 1")
    recs = np.asarray(recs)[:, :k]
    actual = np.diff(sp.csr_matrix(truth).indptr)
    evaluated = (actual > 0) & (recs >= 0).any(axis=1)
    n = int(evaluated.sum())
    if n == 0:
        return RankingReport(k, 0.0, 0.0, 0.0, 0.0, 0.0, 0)
    hits = hit_matrix(recs, truth)[evaluated].astype(np.float64)
    actual = actual[evaluated].astype(np.float64)
    ranks = np.arange(1, recs.shape[1] + 1, dtype=np.float64)
    n_hits = hits.sum(axis=1)
    precision = float((n_hits / k).mean())
    recall = float((n_hits / actual).mean())
    discount = 1.0 / np.log1p(np.arange(1, k + 1, dtype=np.float64))
    dcg = (hits * discount[: recs.shape[1]]).sum(axis=1)
    idcg = np.cumsum(discount)[np.minimum(actual, k).astype(np.int64) - 1]
    ndcg = float((dcg / idcg).mean())
    rr = (hits * np.cumsum(hits, axis=1) / ranks).sum(axis=1)  # sum of precision at each hit
    map_at_k = float((rr / np.minimum(actual, k)).mean())
    map_legacy = float((rr / actual).mean())
    return RankingReport(k, precision, recall, ndcg, map_at_k, map_legacy, n)


def ranking_metrics_df(
    rating_true: pd.DataFrame,
    rating_pred: pd.DataFrame,
    k: int = 10,
    *,
    user_col: str = USER,
    item_col: str = ITEM,
    pred_col: str = "prediction",
) -> RankingReport:
    """The same metrics from long DataFrames, as ``python_evaluation`` takes them.

    ``rating_pred`` rows are sorted per user by ``pred_col`` descending (stable, so equal scores
    keep input order, like the reference's ``sort_values`` + ``head(k)``), cut to ``k``, then
    scored with :func:`ranking_metrics`. Useful to cross-check against the reference library.
    """
    users = pd.Index(pd.unique(pd.concat([rating_true[user_col], rating_pred[user_col]])))
    items = pd.Index(pd.unique(pd.concat([rating_true[item_col], rating_pred[item_col]])))
    top = (
        rating_pred.sort_values([user_col, pred_col], ascending=[True, False], kind="stable")
        .groupby(user_col, sort=False)
        .head(k)
    )
    recs = np.full((len(users), k), -1, dtype=np.int64)
    r = users.get_indexer(top[user_col])
    rank = top.groupby(user_col, sort=False).cumcount().to_numpy()
    recs[r, rank] = items.get_indexer(top[item_col])
    t_r = users.get_indexer(rating_true[user_col])
    t_c = items.get_indexer(rating_true[item_col])
    truth = sp.csr_matrix(
        (np.ones(len(t_r), np.float32), (t_r, t_c)), shape=(len(users), len(items)), dtype=np.float32
    )
    truth.data[:] = 1.0  # duplicate rows count once
    return ranking_metrics(recs, truth, k)


def rmse(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Root mean squared error of aligned arrays (NaN predictions must be dropped by the caller)."""
    y_true = np.asarray(y_true, dtype=np.float64)
    y_pred = np.asarray(y_pred, dtype=np.float64)
    if y_true.shape != y_pred.shape or y_true.size == 0:
        raise ValueError("rmse needs two non-empty arrays of the same shape")
    return float(np.sqrt(np.mean((y_true - y_pred) ** 2)))


def rmse_df(
    rating_true: pd.DataFrame,
    rating_pred: pd.DataFrame,
    *,
    user_col: str = USER,
    item_col: str = ITEM,
    rating_col: str = RATING,
    pred_col: str = "prediction",
) -> float:
    """RMSE on the inner join of true and predicted ratings on (user, item), as the reference."""
    m = rating_true[[user_col, item_col, rating_col]].merge(
        rating_pred[[user_col, item_col, pred_col]], on=[user_col, item_col]
    )
    m = m[np.isfinite(m[pred_col].to_numpy(np.float64))]
    return rmse(m[rating_col].to_numpy(), m[pred_col].to_numpy())


def catalog_coverage(recs: np.ndarray, n_train_items: int) -> float:
    """Distinct recommended items / distinct items in train (Shani & Gunawardana, as the reference)."""
    if n_train_items <= 0:
        return 0.0
    r = np.asarray(recs)
    return float(np.unique(r[r >= 0]).size / n_train_items)


def user_coverage(recs: np.ndarray, test_users: np.ndarray, n_cold_test_users: int = 0) -> float:
    """Share of test users that get a non-empty list; cold test users (not in train) get none."""
    r = np.asarray(recs)
    served = int((r[test_users] >= 0).any(axis=1).sum()) if len(test_users) else 0
    total = len(test_users) + n_cold_test_users
    return served / total if total else 0.0


# ------------------------------------------------------------------------------------ protocol
def evaluate_recommendations(recs: np.ndarray, split: EvalSplit, k: int) -> dict[str, float]:
    """All ranking metrics + coverage for lists ``recs`` (rows = ``split`` users)."""
    report = ranking_metrics(recs, split.test, k)
    out = report.as_dict()
    out["catalog_coverage"] = catalog_coverage(recs[:, :k], split.train.shape[1])
    out["user_coverage"] = user_coverage(recs[:, :k], split.test_users, split.n_cold_test_users)
    return out


def evaluate_model(
    model: Recommender, split: EvalSplit, k: int = 10, **recommend_kw: object
) -> dict[str, float]:
    """The offline protocol: fit on ``split.train``, recommend top-``k`` unseen items to every test
    user, score against ``split.test`` (binary relevance). Adds ``fit_s`` and ``recommend_s``."""
    import time

    t0 = time.perf_counter()
    model.fit(split.train)
    t1 = time.perf_counter()
    users = split.test_users
    idx, _ = model.recommend(users, k, exclude_seen=True, **recommend_kw)  # type: ignore[arg-type]
    t2 = time.perf_counter()
    recs = np.full((split.train.shape[0], k), -1, dtype=np.int64)
    recs[users] = idx
    out = evaluate_recommendations(recs, split, k)
    out["fit_s"] = t1 - t0
    out["recommend_s"] = t2 - t1
    return out


SPLITS = ("stratified", "chrono", "time")


def split_frame(
    df: pd.DataFrame, split: str = "stratified", *, ratio: float = 0.75, seed: int = 42
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train/test by name: ``stratified`` (the reference protocol), ``chrono`` (per-user last
    ``1 - ratio`` by time) or ``time`` (one global cut-off at the ``ratio`` time quantile)."""
    if split == "stratified":
        return stratified_split(df, ratio, seed=seed)
    if split == "chrono":
        return chrono_split(df, ratio)
    if split == "time":
        return global_time_split(df, test_share=1 - ratio)
    raise ValueError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")


def _binary(split: EvalSplit) -> EvalSplit:
    train = split.train.copy()
    train.data[:] = 1.0
    return EvalSplit(train, split.test, split.user_ids, split.item_ids, split.n_cold_test_users)


def _explicit_rmse(model: Recommender, split: EvalSplit, test: pd.DataFrame) -> float:
    """RMSE of a factor model on the test rows whose user and item were both seen in training."""
    users = pd.Index(split.user_ids).get_indexer(test[USER])
    items = pd.Index(split.item_ids).get_indexer(test[ITEM])
    ok = (users >= 0) & (items >= 0) & (items < split.train.shape[1])
    pred = model.predict(users[ok], items[ok])  # type: ignore[attr-defined]
    return rmse(test[RATING].to_numpy(np.float64)[ok], pred)


def offline_evaluation(
    df: pd.DataFrame,
    models: Iterable[str],
    settings: BatchSettings,
    *,
    k: int = 10,
    split: str = "stratified",
    ratio: float = 0.75,
    seed: int = 42,
    spark: object | None = None,
) -> list[dict[str, object]]:
    """Split ``df`` once, then fit and score each named model on the same split.

    Implicit models (popularity, EASE, implicit ALS) see a binary train matrix (every rating is
    an interaction, as in the reference benchmark); ``als-explicit`` fits the rating values and also
    reports RMSE. Returns one row per model: ``{"model": name, metric: value, ...}``.
    """
    from batch.models import build_model

    train, test = split_frame(df, split, ratio=ratio, seed=seed)
    has_rating = RATING in df.columns
    rated = make_eval_split(train, test, value_col=RATING if has_rating else None)
    binary = _binary(rated)
    rows: list[dict[str, object]] = []
    for name in models:
        if name == "als-explicit" and not has_rating:
            continue
        model = build_model(name, settings, spark)
        metrics = evaluate_model(model, rated if name == "als-explicit" else binary, k)
        if name == "als-explicit":
            metrics["rmse"] = _explicit_rmse(model, rated, test)
        rows.append({"model": name, **metrics})
    return rows


def tune_ials(
    train: pd.DataFrame,
    grid: Mapping[str, Iterable[float]],
    *,
    k: int = 10,
    seed: int = 42,
    max_iter: int = 10,
) -> list[dict[str, float]]:
    """Grid search of numpy implicit ALS on a validation split carved out of ``train``.

    Why not on the test set: picking hyperparameters by test nDCG overstates it. ``train`` is
    split again (stratified, 75/25, ``seed + 1``); results are sorted best first by nDCG@k. The
    numpy model follows Spark's conventions, so the winner configures ``settings.batch.als``.
    """
    import itertools

    from batch.models import ImplicitALS

    fit, val = stratified_split(train, 0.75, seed=seed + 1)
    split = _binary(make_eval_split(fit, val))
    keys = list(grid)
    out: list[dict[str, float]] = []
    for values in itertools.product(*(list(grid[key]) for key in keys)):
        p = dict(zip(keys, values, strict=True))
        model = ImplicitALS(
            rank=int(p.get("rank", 10)),
            reg_param=float(p.get("reg_param", 0.1)),
            alpha=float(p.get("alpha", 1.0)),
            max_iter=max_iter,
            seed=seed,
        )
        m = evaluate_model(model, split, k)
        out.append({**p, f"val_ndcg@{k}": m[f"ndcg@{k}"], f"val_precision@{k}": m[f"precision@{k}"]})
    out.sort(key=lambda r: -r[f"val_ndcg@{k}"])
    return out


def pipeline_pick(
    train: pd.DataFrame,
    settings: BatchSettings,
    *,
    k: int = 10,
    seed: int = 42,
    spark: object | None = None,
) -> tuple[str, dict[str, dict[str, float]]]:
    """Which family the daily pipeline would promote on this data: ALS and (catalog permitting)
    EASE are fitted on a validation split carved out of ``train`` (stratified 75/25, ``seed + 1``)
    and :func:`batch.gate.pick_winner` chooses, exactly as task 3 does on its time holdout.

    Why on a validation split: choosing by test nDCG would report the maximum of two test scores,
    an optimistic number; here the test set only scores the family chosen without it.
    """
    from batch.gate import pick_winner
    from batch.models import build_model

    fit, val = stratified_split(train, 0.75, seed=seed + 1)
    split = _binary(make_eval_split(fit, val))
    names = ["als"] + (
        ["ease"] if settings.ease_candidate and split.train.shape[1] <= settings.ease_max_items else []
    )
    metrics = {name: evaluate_model(build_model(name, settings, spark), split, k) for name in names}
    winner, _ = pick_winner(metrics, settings.model_copy(update={"eval_k": k}))
    return winner, metrics

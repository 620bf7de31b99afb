"""batch/evaluation.py: metrics against hand-computed values, splits, and the protocol."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from batch.evaluation import (
    catalog_coverage,
    chrono_split,
    evaluate_model,
    global_time_split,
    hit_matrix,
    make_eval_split,
    ranking_metrics,
    ranking_metrics_df,
    rmse,
    rmse_df,
    stratified_split,
    user_coverage,
)
from batch.interactions import ml100k_path, read_interaction_file
from batch.models import EASE, Popularity
from benchmarks.synthetic_movielens import movielens_like

L = math.log  # the reference's default discount (the base cancels in nDCG)


def _truth(rows: list[list[int]], n_items: int) -> sp.csr_matrix:
    r = [u for u, items in enumerate(rows) for _ in items]
    c = [i for items in rows for i in items]
    return sp.csr_matrix((np.ones(len(c)), (r, c)), shape=(len(rows), n_items))


# Four users, k = 5:
#   A: list 1 2 3 4 5, test {2, 5, 9}: hits at ranks 2 and 5
#   B: list 7 8 9 10 11, test {7, 20..25} (7 items, more than k): hit at rank 1
#   C: empty list, test {1}: not evaluated (no recommendations)
#   D: a list but no test items: not evaluated
RECS = np.array(
    [[1, 2, 3, 4, 5], [7, 8, 9, 10, 11], [-1, -1, -1, -1, -1], [1, 2, 3, 4, 5]],
)
TRUTH = _truth([[2, 5, 9], [7, 20, 21, 22, 23, 24, 25], [1], []], 30)


def test_hit_matrix() -> None:
    hits = hit_matrix(RECS, TRUTH)
    assert hits.tolist() == [
        [False, True, False, False, True],
        [True, False, False, False, False],
        [False] * 5,
        [False] * 5,
    ]


def test_ranking_metrics_hand_computed() -> None:
    r = ranking_metrics(RECS, TRUTH, k=5)
    assert r.n_users == 2
    assert r.precision == pytest.approx((2 / 5 + 1 / 5) / 2)
    assert r.recall == pytest.approx((2 / 3 + 1 / 7) / 2)
    ndcg_a = (1 / L(3) + 1 / L(6)) / (1 / L(2) + 1 / L(3) + 1 / L(4))
    ndcg_b = (1 / L(2)) / sum(1 / L(1 + i) for i in range(1, 6))
    assert r.ndcg == pytest.approx((ndcg_a + ndcg_b) / 2)
    # average precision: A = (1/2 + 2/5) / min(3, 5); B = (1/1) / min(7, 5)
    assert r.map_at_k == pytest.approx(((1 / 2 + 2 / 5) / 3 + 1 / 5) / 2)
    # the older `map`: divided by all relevant items (B: 7)
    assert r.map == pytest.approx(((1 / 2 + 2 / 5) / 3 + 1 / 7) / 2)


def test_cutoff_uses_only_first_k_columns() -> None:
    r = ranking_metrics(RECS, TRUTH, k=2)
    assert r.precision == pytest.approx((1 / 2 + 1 / 2) / 2)
    assert r.recall == pytest.approx((1 / 3 + 1 / 7) / 2)
    ndcg_a = (1 / L(3)) / (1 / L(2) + 1 / L(3))
    ndcg_b = (1 / L(2)) / (1 / L(2) + 1 / L(3))
    assert r.ndcg == pytest.approx((ndcg_a + ndcg_b) / 2)


def test_perfect_and_empty_lists() -> None:
    truth = _truth([[0, 1], [2]], 5)
    perfect = ranking_metrics(np.array([[1, 0, 4], [2, 3, 4]]), truth, k=3)
    assert perfect.ndcg == pytest.approx(1.0) and perfect.recall == pytest.approx(1.0)
    assert perfect.map_at_k == pytest.approx(1.0) and perfect.precision == pytest.approx((2 / 3 + 1 / 3) / 2)
    nothing = ranking_metrics(np.full((2, 3), -1), truth, k=3)
    assert nothing.n_users == 0 and nothing.ndcg == 0.0


def test_short_list_is_penalised_by_k() -> None:
    """precision divides by k even when fewer than k items could be recommended (as Spark)."""
    r = ranking_metrics(np.array([[2, -1, -1]]), _truth([[2]], 4), k=3)
    assert r.precision == pytest.approx(1 / 3) and r.recall == 1.0 and r.ndcg == pytest.approx(1.0)


def test_dataframe_front_end_sorts_by_prediction() -> None:
    true = pd.DataFrame({"user_id": ["a", "a", "a", "b"], "item_id": [2, 5, 9, 7]})
    pred = pd.DataFrame(
        {
            "user_id": ["a"] * 6 + ["b"] * 2,
            "item_id": [5, 1, 2, 3, 4, 8, 8, 7],
            "prediction": [0.1, 0.9, 0.8, 0.7, 0.6, 0.6, 0.5, 0.4],  # a: 1 2 3 4 8 | 5 (cut at k=5)
        }
    )
    r = ranking_metrics_df(true, pred, k=5)
    assert r.n_users == 2
    assert r.precision == pytest.approx((1 / 5 + 1 / 5) / 2)  # a hits item 2 only; b hits 7 at rank 2
    assert r.recall == pytest.approx((1 / 3 + 1 / 1) / 2)
    assert r.ndcg == pytest.approx(
        ((1 / L(3)) / (1 / L(2) + 1 / L(3) + 1 / L(4)) + (1 / L(3)) / (1 / L(2))) / 2
    )


def test_rmse_inner_join() -> None:
    assert rmse(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 5.0])) == pytest.approx(math.sqrt(4 / 3))
    true = pd.DataFrame({"user_id": [1, 1, 2], "item_id": [1, 2, 1], "rating": [4.0, 3.0, 5.0]})
    pred = pd.DataFrame({"user_id": [1, 2, 3], "item_id": [1, 1, 1], "prediction": [3.0, 5.0, 1.0]})
    assert rmse_df(true, pred) == pytest.approx(math.sqrt(1 / 2))  # pairs (1,1) and (2,1) only
    with pytest.raises(ValueError):
        rmse(np.array([]), np.array([]))


def test_coverage() -> None:
    recs = np.array([[0, 1, -1], [1, 2, 3], [-1, -1, -1]])
    assert catalog_coverage(recs, 8) == pytest.approx(4 / 8)
    assert user_coverage(recs, np.array([0, 1, 2])) == pytest.approx(2 / 3)
    assert user_coverage(recs, np.array([0, 1]), n_cold_test_users=2) == pytest.approx(2 / 4)


# ------------------------------------------------------------------------------------ splits
def _ratings(n_users: int = 40, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        n = int(rng.integers(1, 30))
        items = rng.choice(200, size=n, replace=False)
        for j, i in enumerate(items):
            rows.append((f"u{u}", int(i), float(rng.integers(1, 6)), 1_000_000 + 100 * u + j))
    return pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])


def test_stratified_split_per_user_ratio_and_no_user_lost() -> None:
    df = _ratings()
    train, test = stratified_split(df, 0.75, seed=42)
    assert len(train) + len(test) == len(df)
    assert not set(train.index) & set(test.index)
    n = df.groupby("user_id").size()
    n_train = train.groupby("user_id").size().reindex(n.index, fill_value=0)
    np.testing.assert_array_equal(n_train.to_numpy(), np.round(0.75 * n.to_numpy()))
    assert set(train["user_id"]) == set(df["user_id"])  # every user keeps training rows
    many = n[n >= 3].index
    assert set(many) <= set(test["user_id"])


def test_stratified_split_deterministic_and_seeded() -> None:
    df = _ratings()
    a, _ = stratified_split(df, seed=1)
    b, _ = stratified_split(df, seed=1)
    c, _ = stratified_split(df, seed=2)
    assert a.index.tolist() == b.index.tolist()
    assert set(a.index) != set(c.index)


def test_chrono_split_holds_out_each_users_latest() -> None:
    df = _ratings()
    train, test = chrono_split(df, 0.75)
    last_train = train.groupby("user_id")["timestamp"].max()
    first_test = test.groupby("user_id")["timestamp"].min()
    both = first_test.index
    assert (last_train[both] < first_test[both]).all()


def test_global_time_split() -> None:
    df = _ratings()
    train, test = global_time_split(df, test_share=0.2)
    assert train["timestamp"].max() < test["timestamp"].min()
    assert len(test) / len(df) == pytest.approx(0.2, abs=0.02)
    train, test = global_time_split(df, cutoff=1_002_000)
    assert (train["timestamp"] < 1_002_000).all() and (test["timestamp"] >= 1_002_000).all()


def test_make_eval_split_keeps_test_only_items_and_counts_cold_users() -> None:
    train = pd.DataFrame({"user_id": [1, 1, 2], "item_id": ["a", "b", "a"], "rating": [5.0, 3.0, 4.0]})
    test = pd.DataFrame({"user_id": [1, 2, 3], "item_id": ["c", "b", "a"]})
    s = make_eval_split(train, test, value_col="rating")
    assert s.train.shape == (2, 2) and s.test.shape == (2, 3)
    assert s.item_ids.tolist() == ["a", "b", "c"]
    assert s.n_cold_test_users == 1
    assert s.train.toarray().tolist() == [[5.0, 3.0], [4.0, 0.0]]
    assert s.test.toarray().tolist() == [[0, 0, 1], [0, 1, 0]]


# ---------------------------------------------------------------------------------- protocol
def test_protocol_on_synthetic_movielens_ease_beats_popularity() -> None:
    df = movielens_like(n_users=300, n_items=500, n_ratings=20_000)
    split = make_eval_split(*stratified_split(df, 0.75, seed=42))
    pop = evaluate_model(Popularity(), split, k=10)
    ease = evaluate_model(EASE(lam=100.0), split, k=10)
    assert ease["ndcg@10"] > pop["ndcg@10"] + 0.03
    assert ease["catalog_coverage"] > pop["catalog_coverage"]
    assert ease["user_coverage"] == 1.0 and ease["n_users"] == 300


@pytest.mark.skipif(ml100k_path() is None, reason="recbole (ships the real ml-100k) not installed")
def test_ml100k_matches_reference_library_numbers() -> None:
    """Split sizes and EASE(500) metrics on the real ml-100k, as computed by recommenders 1.2.1's
    own python_stratified_split + python_evaluation on the same lists (run once, offline)."""
    df = read_interaction_file(ml100k_path())  # type: ignore[arg-type]
    train, test = stratified_split(df, 0.75, seed=42)
    assert (len(train), len(test)) == (74_992, 25_008)
    r = evaluate_model(EASE(lam=500.0), make_eval_split(train, test), k=10)
    assert r["precision@10"] == pytest.approx(0.42014846235418873, abs=2e-3)
    assert r["recall@10"] == pytest.approx(0.22299595301029143, abs=2e-3)
    assert r["ndcg@10"] == pytest.approx(0.4798604394005516, abs=2e-3)
    assert r["map@10"] == pytest.approx(0.33856466920062084, abs=2e-3)
    assert r["map"] == pytest.approx(0.1476266517838031, abs=2e-3)


def test_cli_evaluate_prints_the_table(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from lambdarec.cli import app

    df = movielens_like(n_users=120, n_items=200, n_ratings=4_000)
    f = tmp_path / "ratings.csv"
    df.rename(columns={"user_id": "userId", "item_id": "movieId"}).to_csv(f, index=False)
    out = tmp_path / "rows.json"
    res = CliRunner().invoke(app, ["evaluate", str(f), "--model", "popularity,ease", "--json", str(out)])
    assert res.exit_code == 0, res.output
    assert "nDCG@10" in res.output and "MS ref: BiVAE" in res.output
    rows = {r["model"]: r for r in json.loads(out.read_text())}
    assert set(rows) == {"popularity", "ease"} and 0 < rows["ease"]["ndcg@10"] <= 1
    bad = CliRunner().invoke(app, ["evaluate", str(f), "--model", "nope"])
    assert bad.exit_code != 0

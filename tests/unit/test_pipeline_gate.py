"""The quality gate's rules (batch/gate.py) and how task 4 scores production: no services."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from batch import pipeline, registry
from batch.evaluation import EvalSplit, evaluate_model, make_eval_split
from batch.gate import decide, decide_with_settings, pick_winner
from batch.models import EASE
from lambdarec.settings import AlsSettings, BatchSettings

KW = {
    "k": 10,
    "min_ndcg": 0.05,
    "max_regression": 0.05,
    "min_catalog_coverage": 0.1,
    "min_user_coverage": 0.5,
}
GOOD = {"ndcg@10": 0.30, "catalog_coverage": 0.4, "user_coverage": 0.9}


def test_first_model_passes_on_absolute_thresholds() -> None:
    d = decide(GOOD, None, **KW)
    assert d.passed and "vs_production" not in d.checks


def test_small_regression_within_tolerance_passes() -> None:
    assert decide(GOOD, {"ndcg@10": 0.31}, **KW).passed  # 3.2 % worse, 5 % allowed


def test_regression_beyond_tolerance_fails_with_reason() -> None:
    d = decide(GOOD, {"ndcg@10": 0.40}, **KW)
    assert not d.passed and not d.checks["vs_production"]
    assert "25.0% below production's 0.4000" in d.reasons[0]


def test_floors_each_fail_independently() -> None:
    d = decide({"ndcg@10": 0.01, "catalog_coverage": 0.01, "user_coverage": 0.1}, None, **KW)
    assert not d.passed and len(d.reasons) == 3


def test_nan_metrics_never_pass() -> None:
    d = decide({**GOOD, "ndcg@10": math.nan}, None, **KW)
    assert not d.passed and "not finite" in d.reasons[0]
    assert not decide({"catalog_coverage": 0.5}, None, **KW).passed


def test_production_without_metric_is_ignored() -> None:
    assert decide(GOOD, {"ndcg@10": math.nan}, **KW).passed


def test_settings_thresholds_are_used() -> None:
    s = BatchSettings(gate_min_ndcg=0.5)
    assert not decide_with_settings(GOOD, None, s).passed
    assert decide_with_settings(GOOD, None, BatchSettings()).passed


def test_winner_is_the_best_candidate_that_passes_the_floors() -> None:
    b = BatchSettings(gate_min_catalog_coverage=0.1)
    als = {"ndcg@10": 0.30, "catalog_coverage": 0.4, "user_coverage": 0.9}
    ease = {"ndcg@10": 0.32, "catalog_coverage": 0.2, "user_coverage": 0.9}
    assert pick_winner({"als": als, "ease": ease}, b)[0] == "ease"
    narrow = {**ease, "ndcg@10": 0.5, "catalog_coverage": 0.05}  # best nDCG, fails coverage
    winner, decisions = pick_winner({"als": als, "ease": narrow}, b)
    assert winner == "als" and not decisions["ease"].passed


def test_winner_ties_and_nan_go_to_als() -> None:
    b = BatchSettings()
    als = {"ndcg@10": 0.30, "catalog_coverage": 0.4, "user_coverage": 0.9}
    assert pick_winner({"als": als, "ease": dict(als)}, b)[0] == "als"
    bad = {"ndcg@10": math.nan, "catalog_coverage": 0.4, "user_coverage": 0.9}
    assert pick_winner({"als": bad, "ease": dict(bad)}, b)[0] == "als"  # the gate will reject it


# ------------------------------------------------- how task 4 scores production (batch/pipeline.py)
def _prod(**hp: object) -> registry.ModelRow:
    return registry.ModelRow(1, "als", "v1", "production", None, {}, dict(hp))


def _split() -> EvalSplit:
    rng = np.random.default_rng(0)
    users, items = rng.integers(0, 30, 400), rng.integers(0, 20, 400)
    train = pd.DataFrame({"user_id": users, "item_id": items, "value": 1.0}).drop_duplicates(
        ["user_id", "item_id"]
    )
    test = pd.DataFrame({"user_id": rng.integers(0, 30, 60), "item_id": rng.integers(0, 20, 60)})
    return make_eval_split(train, test, value_col="value")


def _no_spark() -> object:
    raise AssertionError("the gate must not start Spark for production's own config")


def test_production_config_comes_from_its_registry_row() -> None:
    b = BatchSettings()
    c = pipeline.ProductionConfig.of(_prod(rank=8, reg_param=0.3, list_model="als", ease_lambda=50.0), b)
    assert c.list_model == "als" and c.als is not None and (c.als.rank, c.als.reg_param) == (8, 0.3)
    assert c.als.implicit_prefs and c.ease_lambda == 50.0
    unknown = pipeline.ProductionConfig.of(_prod(), b)
    assert unknown.als is None and unknown.ease_lambda == b.ease_lambda
    metrics, how = pipeline.score_production(unknown, _split(), {}, b, _no_spark)
    assert metrics is None and "not in the registry" in how


def test_production_with_the_candidates_config_reuses_its_holdout_fit() -> None:
    b = BatchSettings(als=AlsSettings.seed_defaults())
    cand = {"ndcg@10": 0.123, "catalog_coverage": 0.5, "user_coverage": 1.0}
    trained = {"als": b.als.model_dump(), "ease_lambda": b.ease_lambda, "candidates": {"als": cand}}
    prod = pipeline.ProductionConfig.of(_prod(**b.als.model_dump(), list_model="als"), b)
    metrics, how = pipeline.score_production(prod, _split(), trained, b, _no_spark)
    assert metrics == cand and "same config" in how


def test_production_ease_is_refit_on_the_candidates_training_part() -> None:
    """Not production's memory: EASE with production's lambda fitted on ``split.train`` only."""
    b = BatchSettings()
    split = _split()
    trained = {"ease_lambda": 10.0, "candidates": {"ease": {"ndcg@10": 0.9}}}
    prod = pipeline.ProductionConfig.of(_prod(list_model="ease", ease_lambda=200.0), b)
    metrics, how = pipeline.score_production(prod, split, trained, b, _no_spark)
    expected = evaluate_model(EASE(lam=200.0), split, b.eval_k)
    assert metrics is not None and "refit" in how
    assert metrics["ndcg@10"] == pytest.approx(expected["ndcg@10"]) and metrics["ndcg@10"] != 0.9

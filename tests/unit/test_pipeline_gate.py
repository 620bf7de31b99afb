"""The quality gate's rules (batch/gate.py): pure logic, no services."""

from __future__ import annotations

import math

from batch.gate import decide, decide_with_settings, pick_winner
from lambdarec.settings import BatchSettings

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

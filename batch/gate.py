"""The quality gate: may this candidate replace the production model?

Why a pure function: the decision must be explainable and testable without Spark or Postgres. The
pipeline evaluates the candidate *and* the current production model's config, refitted on the same
training part of the same time-based holdout (``batch/pipeline.py``, ``score_production``: not
production's own factors, which may have been trained on the holdout and would win by memory),
then asks :func:`decide`. Rules (thresholds in ``settings.batch``):

* every metric the gate reads must be a finite number (a NaN metric is a failed model, not a pass);
* ``ndcg@k >= gate_min_ndcg``;
* ``catalog_coverage >= gate_min_catalog_coverage`` and ``user_coverage >= gate_min_user_coverage``;
* with a production model: ``ndcg@k >= production ndcg@k * (1 - gate_max_regression)``.

>>> d = decide({"ndcg@10": 0.2, "catalog_coverage": 0.3, "user_coverage": 0.9},
...            {"ndcg@10": 0.25}, k=10, min_ndcg=0.01, max_regression=0.05,
...            min_catalog_coverage=0.01, min_user_coverage=0.5)
>>> d.passed, d.reasons[0][:22]
(False, 'nDCG@10 0.2000 is 20.0')
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from lambdarec.settings import BatchSettings


@dataclass(frozen=True)
class GateDecision:
    """``passed`` plus the reasons (failures if it did not pass, the checks made if it did)."""

    passed: bool
    reasons: list[str] = field(default_factory=list)
    checks: dict[str, bool] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "reasons": self.reasons, "checks": self.checks}


def _finite(m: Mapping[str, float], key: str) -> float | None:
    v = m.get(key)
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def decide(
    candidate: Mapping[str, float],
    production: Mapping[str, float] | None,
    *,
    k: int,
    min_ndcg: float,
    max_regression: float,
    min_catalog_coverage: float,
    min_user_coverage: float,
) -> GateDecision:
    """Apply the rules above. ``production`` is None when there is no (loadable) production model."""
    key = f"ndcg@{k}"
    failures: list[str] = []
    checks: dict[str, bool] = {}
    ndcg = _finite(candidate, key)
    cat = _finite(candidate, "catalog_coverage")
    usr = _finite(candidate, "user_coverage")
    checks["finite_metrics"] = None not in (ndcg, cat, usr)
    if not checks["finite_metrics"]:
        failures.append(f"candidate metrics are missing or not finite ({key}={ndcg}, coverage={cat}/{usr})")
        return GateDecision(False, failures, checks)
    assert ndcg is not None and cat is not None and usr is not None
    checks["min_ndcg"] = ndcg >= min_ndcg
    if not checks["min_ndcg"]:
        failures.append(f"nDCG@{k} {ndcg:.4f} is below the floor {min_ndcg:.4f}")
    checks["min_catalog_coverage"] = cat >= min_catalog_coverage
    if not checks["min_catalog_coverage"]:
        failures.append(f"catalog coverage {cat:.4f} is below {min_catalog_coverage:.4f}")
    checks["min_user_coverage"] = usr >= min_user_coverage
    if not checks["min_user_coverage"]:
        failures.append(f"user coverage {usr:.4f} is below {min_user_coverage:.4f}")
    if production is not None:
        prod = _finite(production, key)
        if prod is not None:
            floor = prod * (1 - max_regression)
            checks["vs_production"] = ndcg >= floor
            if not checks["vs_production"]:
                drop = (prod - ndcg) / prod if prod > 0 else 0.0
                failures.insert(
                    0,
                    f"nDCG@{k} {ndcg:.4f} is {drop:.1%} below production's {prod:.4f} "
                    f"(allowed: {max_regression:.1%})",
                )
    passed = not failures
    reasons = failures if failures else [f"passed {sum(checks.values())} checks (nDCG@{k} {ndcg:.4f})"]
    return GateDecision(passed, reasons, checks)


def decide_with_settings(
    candidate: Mapping[str, float], production: Mapping[str, float] | None, settings: BatchSettings
) -> GateDecision:
    """:func:`decide` with the thresholds of ``settings`` (``settings.batch``)."""
    return decide(
        candidate,
        production,
        k=settings.eval_k,
        min_ndcg=settings.gate_min_ndcg,
        max_regression=settings.gate_max_regression,
        min_catalog_coverage=settings.gate_min_catalog_coverage,
        min_user_coverage=settings.gate_min_user_coverage,
    )


def pick_winner(
    candidates: Mapping[str, Mapping[str, float]], settings: BatchSettings
) -> tuple[str, dict[str, GateDecision]]:
    """The family whose lists the pipeline publishes: among the candidates evaluated on the same
    holdout (e.g. ``{"als": ..., "ease": ...}``), the best ``ndcg@eval_k`` of those that pass the
    absolute floors; if none passes, the best anyway (the gate then rejects it with its reasons).
    Ties go to the first candidate (ALS, whose factors the snapshot carries anyway).

    Why the same rules as the gate: a candidate that could never be promoted must not win the
    family choice only to be rejected while a passing one was available.
    """
    if not candidates:
        raise ValueError("no candidates to choose from")
    decisions = {name: decide_with_settings(m, None, settings) for name, m in candidates.items()}
    key = f"ndcg@{settings.eval_k}"

    def rank(name: str) -> tuple[bool, float]:
        v = _finite(candidates[name], key)
        return decisions[name].passed, -math.inf if v is None else v

    best = max(candidates, key=rank)  # max keeps the first of equals
    return best, decisions

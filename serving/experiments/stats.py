"""The statistics of an A/B test, pure (no I/O): tests, confidence intervals, sample size, decision.

Why sufficient statistics instead of raw rows: the analysis sums per-user values in Postgres
(``n``, ``Σx``, ``Σx²``, ``Σxy``) so an experiment with millions of users costs one aggregate
query, and every test below needs nothing more.

Why the *user* is the unit: assignment is per user, and one user's lists are correlated (a
clicky user clicks on many lists). Treating lists as independent (a plain two-proportion test on
lists) understates the variance and declares false winners. So

* ``ctr`` (clicked lists / served lists) is a ratio of per-user sums, tested with a z-test whose
  variance comes from the delta method over users (:func:`ratio_ztest`); with one list per user
  it is the ordinary unpooled two-proportion z-test;
* ``conversion`` (users who clicked at least once / exposed users) is a proportion of independent
  users: the pooled two-proportion z-test (:func:`two_proportion_ztest`), plus a chi-square
  omnibus over all variants (:func:`chi_square`);
* per-user means (plays, watch time, rating, per-user CTR) use Welch's t-test
  (:func:`welch_ttest`, ``scipy.stats.ttest_ind_from_stats``), which does not assume equal variances.

Several treatments against one control are Holm-adjusted (:func:`holm`), and a winner is named
only when its adjusted p-value is below ``1 - confidence_level`` *and* every variant reached the
experiment's ``minimum_sample_size`` (:func:`analyze`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
from scipy import stats as st

RATE_METRICS = ("ctr", "conversion")
MEAN_METRICS = ("ctr_per_user", "plays_per_user", "watch_time_per_user", "rating")
METRICS = RATE_METRICS + MEAN_METRICS


@dataclass(frozen=True)
class MeanStats:
    """``n`` independent values by their sum and sum of squares."""

    n: int
    total: float
    total_sq: float

    @classmethod
    def of(cls, values: Sequence[float] | np.ndarray) -> MeanStats:
        v = np.asarray(values, dtype=float)
        return cls(int(v.size), float(v.sum()), float((v * v).sum()))

    @property
    def mean(self) -> float:
        return self.total / self.n if self.n else math.nan

    @property
    def variance(self) -> float:
        """Sample variance (ddof=1), never negative (float round-off)."""
        if self.n < 2:
            return math.nan
        return max(0.0, (self.total_sq - self.total * self.total / self.n) / (self.n - 1))


@dataclass(frozen=True)
class RatioStats:
    """``Σnum / Σden`` over ``n`` independent units (users), with the sums the delta method needs."""

    n: int
    num: float
    den: float
    num_sq: float
    den_sq: float
    num_den: float

    @classmethod
    def of(cls, num: Sequence[float] | np.ndarray, den: Sequence[float] | np.ndarray) -> RatioStats:
        y, x = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
        return cls(int(y.size), float(y.sum()), float(x.sum()), float(y @ y), float(x @ x), float(y @ x))

    @property
    def ratio(self) -> float:
        return self.num / self.den if self.den else math.nan

    @property
    def ratio_variance(self) -> float:
        """Delta-method variance of the ratio: ``(s²_y − 2R·s_xy + R²·s²_x) / (n · x̄²)``."""
        n = self.n
        if n < 2 or self.den <= 0:
            return math.nan
        r = self.ratio
        mx, my = self.den / n, self.num / n
        vy = (self.num_sq - n * my * my) / (n - 1)
        vx = (self.den_sq - n * mx * mx) / (n - 1)
        cxy = (self.num_den - n * mx * my) / (n - 1)
        return max(0.0, (vy - 2 * r * cxy + r * r * vx) / (n * mx * mx))


@dataclass(frozen=True)
class Comparison:
    """Treatment vs baseline on one metric; ``difference`` = treatment − baseline (absolute)."""

    metric: str
    test: str
    baseline: float
    treatment: float
    difference: float
    ci_low: float
    ci_high: float
    p_value: float
    statistic: float
    relative_lift: float | None = None
    standardized_effect: float | None = None  # Cohen's h (rates) or Hedges' g (means)


def _z(confidence: float) -> float:
    return float(st.norm.ppf(0.5 + confidence / 2))


def _check_confidence(confidence: float) -> None:
    if not 0.5 < confidence < 1:
        raise ValueError(f"confidence must be in (0.5, 1), got {confidence}")


def _lift(base: float, diff: float) -> float | None:
    return diff / base if base else None


def two_proportion_ztest(
    x_a: int, n_a: int, x_b: int, n_b: int, *, confidence: float = 0.95, metric: str = "conversion"
) -> Comparison:
    """Pooled two-proportion z-test of ``x_b/n_b`` against ``x_a/n_a``; Wald CI (unpooled) for
    the difference; Cohen's h as the standardised effect."""
    _check_confidence(confidence)
    for x, n, side in ((x_a, n_a, "baseline"), (x_b, n_b, "treatment")):
        if n <= 0:
            raise ValueError(f"{metric}: the {side} has no units (n={n})")
        if not 0 <= x <= n:
            raise ValueError(f"{metric}: the {side} has {x} successes out of {n}")
    p_a, p_b = x_a / n_a, x_b / n_b
    pooled = (x_a + x_b) / (n_a + n_b)
    se0 = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    diff = p_b - p_a
    z = diff / se0 if se0 > 0 else 0.0
    p = float(2 * st.norm.sf(abs(z))) if se0 > 0 else 1.0
    se = math.sqrt(p_a * (1 - p_a) / n_a + p_b * (1 - p_b) / n_b)
    half = _z(confidence) * se
    h = 2 * math.asin(math.sqrt(p_b)) - 2 * math.asin(math.sqrt(p_a))
    return Comparison(
        metric, "two-proportion z", p_a, p_b, diff, diff - half, diff + half, p, z, _lift(p_a, diff), h
    )


def ratio_ztest(a: RatioStats, b: RatioStats, *, confidence: float = 0.95, metric: str = "ctr") -> Comparison:
    """z-test of a ratio metric (e.g. clicked lists / served lists) with users as the unit: the
    variance of each side's ratio comes from the delta method, so repeat lists of one user do
    not count as independent evidence."""
    _check_confidence(confidence)
    for s, side in ((a, "baseline"), (b, "treatment")):
        if s.n < 2 or s.den <= 0:
            raise ValueError(f"{metric}: the {side} needs at least 2 users with impressions (n={s.n})")
    diff = b.ratio - a.ratio
    se = math.sqrt(a.ratio_variance + b.ratio_variance)
    if se > 0:
        z = diff / se
        p = float(2 * st.norm.sf(abs(z)))
    else:  # every user of each side alike (e.g. 0 % vs 100 %): certain if the ratios differ
        z, p = (math.copysign(math.inf, diff), 0.0) if diff else (0.0, 1.0)
    half = _z(confidence) * se
    pa, pb = min(max(a.ratio, 0.0), 1.0), min(max(b.ratio, 0.0), 1.0)
    h = 2 * math.asin(math.sqrt(pb)) - 2 * math.asin(math.sqrt(pa))
    return Comparison(metric, "delta-method z", a.ratio, b.ratio, diff, diff - half, diff + half, p, z,
                      _lift(a.ratio, diff), h)  # fmt: skip


def welch_ttest(a: MeanStats, b: MeanStats, *, confidence: float = 0.95, metric: str = "mean") -> Comparison:
    """Welch's t-test (unequal variances) of ``mean_b − mean_a``; CI with Welch–Satterthwaite df;
    Hedges' g as the standardised effect."""
    _check_confidence(confidence)
    for s, side in ((a, "baseline"), (b, "treatment")):
        if s.n < 2:
            raise ValueError(f"{metric}: the {side} needs at least 2 values (n={s.n})")
    va, vb = a.variance, b.variance
    diff = b.mean - a.mean
    se2 = va / a.n + vb / b.n
    if se2 <= 0:  # both constant: no evidence either way unless the means differ
        p = 1.0 if diff == 0 else 0.0
        return Comparison(metric, "welch t", a.mean, b.mean, diff, diff, diff, p, 0.0, _lift(a.mean, diff))
    res = st.ttest_ind_from_stats(b.mean, math.sqrt(vb), b.n, a.mean, math.sqrt(va), a.n, equal_var=False)
    df = se2**2 / ((va / a.n) ** 2 / (a.n - 1) + (vb / b.n) ** 2 / (b.n - 1))
    half = float(st.t.ppf(0.5 + confidence / 2, df)) * math.sqrt(se2)
    pooled_sd = math.sqrt(((a.n - 1) * va + (b.n - 1) * vb) / (a.n + b.n - 2))
    g = None
    if pooled_sd > 0:
        g = diff / pooled_sd * (1 - 3 / (4 * (a.n + b.n) - 9))
    return Comparison(metric, "welch t", a.mean, b.mean, diff, diff - half, diff + half, float(res.pvalue),
                      float(res.statistic), _lift(a.mean, diff), g)  # fmt: skip


def chi_square(successes: Sequence[int], totals: Sequence[int]) -> tuple[float, float]:
    """Omnibus chi-square test of independence (variant × success) over all variants: ``(χ², p)``."""
    if len(successes) != len(totals) or len(totals) < 2:
        raise ValueError("chi_square needs the same number (>= 2) of successes and totals")
    table = np.array([[s, n - s] for s, n in zip(successes, totals, strict=True)], dtype=float)
    if (table < 0).any():
        raise ValueError(f"chi_square: successes must lie in [0, total], got {successes} of {totals}")
    if (table.sum(axis=0) == 0).any():  # nobody or everybody succeeded: no association to test
        return 0.0, 1.0
    res = st.chi2_contingency(table, correction=False)
    return float(res.statistic), float(res.pvalue)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values (family-wise error control over several treatments)."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    out = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        out[i] = running
    return out


def sample_size_proportions(baseline: float, mde: float, *, alpha: float = 0.05, power: float = 0.8) -> int:
    """Units per variant to detect a *relative* lift ``mde`` of a rate ``baseline`` (two-sided)."""
    if not 0 < baseline < 1:
        raise ValueError(f"baseline rate must be in (0, 1), got {baseline}")
    if mde == 0:
        raise ValueError("minimum detectable effect must not be 0")
    p1, p2 = baseline, baseline * (1 + mde)
    if not 0 < p2 < 1:
        raise ValueError(f"baseline {baseline} with a lift of {mde:+.0%} leaves (0, 1)")
    za, zb = st.norm.ppf(1 - alpha / 2), st.norm.ppf(power)
    pbar = (p1 + p2) / 2
    n = (za * math.sqrt(2 * pbar * (1 - pbar)) + zb * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))) ** 2
    return math.ceil(n / (p2 - p1) ** 2)


def sample_size_means(sd: float, delta: float, *, alpha: float = 0.05, power: float = 0.8) -> int:
    """Units per variant to detect an absolute difference ``delta`` of means with unit sd ``sd``."""
    if delta == 0 or not sd > 0:
        raise ValueError(f"need delta != 0 and sd > 0 (delta={delta}, sd={sd})")
    za, zb = st.norm.ppf(1 - alpha / 2), st.norm.ppf(power)
    return math.ceil(2 * (sd * (za + zb) / delta) ** 2)


def achieved_power(se: float, delta: float, *, alpha: float = 0.05) -> float:
    """Power of a two-sided z-test with standard error ``se`` against a true difference ``delta``."""
    if not se > 0:
        return 1.0 if delta else 0.0
    za = st.norm.ppf(1 - alpha / 2)
    shift = abs(delta) / se
    return float(st.norm.cdf(shift - za) + st.norm.cdf(-shift - za))


@dataclass(frozen=True)
class VariantData:
    """Per-variant sufficient statistics, users as the unit (what ``analysis`` reads from Postgres)."""

    name: str
    users: int
    lists: RatioStats  # num = clicked lists, den = served lists, per user
    converted: int  # users with at least one click
    means: Mapping[str, MeanStats] = field(default_factory=dict)  # ctr_per_user, plays_per_user, ...
    is_control: bool = False


Status = Literal["winner", "no_difference", "insufficient_sample", "no_data"]


def _compare(metric: str, a: VariantData, b: VariantData, confidence: float) -> Comparison:
    if metric == "ctr":
        return ratio_ztest(a.lists, b.lists, confidence=confidence, metric=metric)
    if metric == "conversion":
        return two_proportion_ztest(a.converted, a.users, b.converted, b.users, confidence=confidence)
    return welch_ttest(a.means[metric], b.means[metric], confidence=confidence, metric=metric)


def _unit_sd(metric: str, v: VariantData) -> float:
    """Standard deviation of one unit's contribution (for sample size): per-user for means and
    conversion, the delta-method linearisation for the ratio."""
    if metric == "ctr":
        return math.sqrt(v.lists.ratio_variance * v.lists.n)
    if metric == "conversion":
        p = v.converted / v.users
        return math.sqrt(p * (1 - p))
    return math.sqrt(v.means[metric].variance)


def _value(metric: str, v: VariantData) -> float:
    if metric == "ctr":
        return v.lists.ratio
    if metric == "conversion":
        return v.converted / v.users if v.users else math.nan
    return v.means[metric].mean


def _units(metric: str, v: VariantData) -> int:
    if metric in MEAN_METRICS:
        s = v.means.get(metric)
        return s.n if s is not None else 0
    return v.users


def analyze(
    variants: Sequence[VariantData],
    *,
    target_metric: str = "ctr",
    confidence_level: float = 0.95,
    minimum_sample_size: int = 1000,
    minimum_detectable_effect: float = 0.05,
    power: float = 0.8,
) -> dict[str, Any]:
    """Every treatment against the control (``is_control``, else the first variant) on every
    metric; the decision on ``target_metric``. Returns a JSON-able dict (``status``, ``winner``,
    ``p_value``, ``effect_size``, ``comparisons``, ``sample_size``, ...)."""
    if target_metric not in METRICS:
        raise ValueError(f"unknown target metric {target_metric!r}; one of {', '.join(METRICS)}")
    if len(variants) < 2:
        raise ValueError(f"an experiment needs at least 2 variants, got {len(variants)}")
    _check_confidence(confidence_level)
    alpha = 1 - confidence_level
    control = next((v for v in variants if v.is_control), variants[0])
    treatments = [v for v in variants if v is not control]
    summary = {
        v.name: {
            "users": v.users,
            "lists": int(v.lists.den),
            "clicked_lists": int(v.lists.num),
            "converted": v.converted,
            **{m: _finite(_value(m, v)) for m in METRICS if m in RATE_METRICS or m in v.means},
        }
        for v in variants
    }
    comparisons: dict[str, dict[str, Any]] = {}
    errors: dict[str, str] = {}
    for m in METRICS:
        per: dict[str, Any] = {}
        for t in treatments:
            try:
                per[t.name] = asdict(_compare(m, control, t, confidence_level))
            except (ValueError, KeyError) as exc:
                errors[f"{m}:{t.name}"] = str(exc)
        if per:
            adjusted = holm([c["p_value"] for c in per.values()])
            for c, adj in zip(per.values(), adjusted, strict=True):
                c["p_adjusted"] = adj
            comparisons[m] = {k: {kk: _finite(vv) for kk, vv in c.items()} for k, c in per.items()}
    omnibus = None
    if all(v.users > 0 for v in variants):
        chi2, p = chi_square([v.converted for v in variants], [v.users for v in variants])
        omnibus = {"test": "chi-square", "metric": "conversion", "statistic": chi2, "p_value": p}

    target = comparisons.get(target_metric, {})
    sample = _sample_size(target_metric, control, treatments, alpha, power, minimum_detectable_effect)
    small = [v.name for v in variants if _units(target_metric, v) < minimum_sample_size]
    result: dict[str, Any] = {
        "target_metric": target_metric,
        "control": control.name,
        "alpha": alpha,
        "confidence_level": confidence_level,
        "minimum_sample_size": minimum_sample_size,
        "minimum_detectable_effect": minimum_detectable_effect,
        "power": power,
        "variants": summary,
        "comparisons": comparisons,
        "omnibus": omnibus,
        "sample_size": sample,
        "errors": errors,
        "winner": None,
        "p_value": None,
        "effect_size": None,
        "significant": False,
    }
    if len(target) < len(treatments):
        result["status"] = "no_data"
        result["reason"] = f"not enough data to test {target_metric} for every variant"
        return result
    best_name, best = min(target.items(), key=lambda kv: kv[1]["p_adjusted"])
    result["p_value"] = best["p_adjusted"]
    result["effect_size"] = best["difference"]
    if small:
        result["status"] = "insufficient_sample"
        result["reason"] = (
            f"{', '.join(small)} below minimum_sample_size={minimum_sample_size} units; no winner yet"
        )
        return result
    better = {n: c for n, c in target.items() if c["p_adjusted"] < alpha and c["difference"] > 0}
    worse = {n: c for n, c in target.items() if c["p_adjusted"] < alpha and c["difference"] < 0}
    if better:
        name, c = max(better.items(), key=lambda kv: kv[1]["difference"])
        result.update(status="winner", winner=name, p_value=c["p_adjusted"], effect_size=c["difference"])
        result["significant"] = True
        result["reason"] = (
            f"{name} beats {control.name} on {target_metric} (adjusted p={c['p_adjusted']:.3g})"
        )
    elif len(worse) == len(treatments):
        c = max(worse.values(), key=lambda c: c["p_adjusted"])  # the weakest of the losses
        result.update(
            status="winner", winner=control.name, p_value=c["p_adjusted"], effect_size=-c["difference"]
        )
        result["significant"] = True
        result["reason"] = f"{control.name} (control) beats every treatment on {target_metric}"
    else:
        result["status"] = "no_difference"
        result["reason"] = (
            f"no significant difference on {target_metric} at alpha={alpha:.3g} (best: {best_name}, "
            f"adjusted p={best['p_adjusted']:.3g})"
        )
    return result


def _sample_size(
    metric: str,
    control: VariantData,
    treatments: Sequence[VariantData],
    alpha: float,
    power: float,
    mde: float,
) -> dict[str, Any]:
    """Units per variant needed for ``power`` against a relative lift ``mde`` of the control's
    value, and the power the current sample has against that lift."""
    out: dict[str, Any] = {"unit": "users", "required_per_variant": None, "achieved_power": None}
    try:
        base = _value(metric, control)
        sd = _unit_sd(metric, control)
        delta = base * mde
        if metric == "conversion":
            out["required_per_variant"] = sample_size_proportions(base, mde, alpha=alpha, power=power)
        else:
            out["required_per_variant"] = sample_size_means(sd, delta, alpha=alpha, power=power)
        n_small = min(_units(metric, v) for v in [control, *treatments])
        out["achieved_power"] = achieved_power(sd * math.sqrt(2 / n_small), delta, alpha=alpha)
    except (ValueError, KeyError, ZeroDivisionError) as exc:
        out["note"] = f"cannot size yet: {exc}"
    return out


def _finite(x: Any) -> Any:
    """JSON has no NaN/inf: such values become None."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x

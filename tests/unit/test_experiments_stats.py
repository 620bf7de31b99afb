"""The A/B statistics against simulated traffic: known effects are found, null effects are
declared significant at about the nominal rate alpha, and the intervals cover the truth.

Tolerances are binomial: over ``N`` simulated experiments the count of rejections is
Binomial(N, rate); we accept anything inside its 0.01 %..99.99 % quantiles, so a correct
implementation fails about once in 5,000 runs (never, with the fixed seeds) and a wrong one by far.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as st

from serving.experiments.stats import (
    MeanStats,
    RatioStats,
    VariantData,
    analyze,
    chi_square,
    holm,
    ratio_ztest,
    sample_size_proportions,
    two_proportion_ztest,
    welch_ttest,
)

ALPHA = 0.05


def within_binomial(hits: int, n: int, rate: float) -> bool:
    lo, hi = st.binom.ppf([0.0001, 0.9999], n, rate)
    return lo <= hits <= hi


def test_binomial_tolerance_rejects_what_it_should() -> None:
    assert within_binomial(100, 2000, 0.05)
    assert not within_binomial(160, 2000, 0.05)  # 8 %: an inflated false-positive rate is caught


def test_two_proportion_false_positive_rate_is_alpha() -> None:
    rng = np.random.default_rng(1)
    sims, n, p = 2000, 3000, 0.08
    xa, xb = rng.binomial(n, p, sims), rng.binomial(n, p, sims)
    hits = sum(
        two_proportion_ztest(int(a), n, int(b), n).p_value < ALPHA for a, b in zip(xa, xb, strict=True)
    )
    assert within_binomial(hits, sims, ALPHA), hits / sims


def test_two_proportion_detects_a_known_effect_with_the_planned_power_and_covers_it() -> None:
    rng = np.random.default_rng(2)
    base, lift, power = 0.10, 0.20, 0.8
    n = sample_size_proportions(base, lift, alpha=ALPHA, power=power)
    true_diff = base * lift
    sims = 1000
    xa, xb = rng.binomial(n, base, sims), rng.binomial(n, base * (1 + lift), sims)
    results = [two_proportion_ztest(int(a), n, int(b), n) for a, b in zip(xa, xb, strict=True)]
    detected = sum(r.p_value < ALPHA and r.difference > 0 for r in results)
    covered = sum(r.ci_low <= true_diff <= r.ci_high for r in results)
    assert within_binomial(detected, sims, power), (n, detected / sims)
    assert within_binomial(covered, sims, 1 - ALPHA), covered / sims
    assert all(r.relative_lift is not None for r in results)


def _clustered(rng: np.random.Generator, users: int, mean_ctr: float) -> RatioStats:
    """Users with 1 + Poisson(4) lists each and heterogeneous click propensities (Beta)."""
    lists = 1 + rng.poisson(4, users)
    a = 0.5
    propensity = rng.beta(a, a * (1 - mean_ctr) / mean_ctr, users)
    clicks = rng.binomial(lists, propensity)
    return RatioStats.of(clicks, lists)


def test_ctr_delta_method_keeps_alpha_with_repeat_users_where_a_list_level_test_does_not() -> None:
    rng = np.random.default_rng(3)
    sims, users = 2000, 800
    delta_hits = naive_hits = 0
    for _ in range(sims):
        a, b = _clustered(rng, users, 0.1), _clustered(rng, users, 0.1)
        delta_hits += ratio_ztest(a, b).p_value < ALPHA
        naive = two_proportion_ztest(int(a.num), int(a.den), int(b.num), int(b.den))
        naive_hits += naive.p_value < ALPHA
    assert within_binomial(delta_hits, sims, ALPHA), delta_hits / sims
    assert naive_hits / sims > 0.08  # lists are not independent: the naive test over-rejects


def test_ctr_delta_method_detects_a_known_lift() -> None:
    rng = np.random.default_rng(4)
    hits = 0
    for _ in range(200):
        hits += ratio_ztest(_clustered(rng, 5000, 0.10), _clustered(rng, 5000, 0.12)).p_value < ALPHA
    assert hits / 200 > 0.95


def test_ratio_with_one_list_per_user_is_the_two_proportion_test() -> None:
    rng = np.random.default_rng(5)
    ca, cb = rng.binomial(1, 0.1, 4000), rng.binomial(1, 0.115, 4000)
    ratio = ratio_ztest(RatioStats.of(ca, np.ones(4000)), RatioStats.of(cb, np.ones(4000)))
    plain = two_proportion_ztest(int(ca.sum()), 4000, int(cb.sum()), 4000)
    assert ratio.difference == pytest.approx(plain.difference)
    assert ratio.p_value == pytest.approx(plain.p_value, rel=0.05)


def test_welch_false_positive_rate_with_unequal_variances_and_sizes() -> None:
    rng = np.random.default_rng(6)
    sims, hits = 2000, 0
    for _ in range(sims):
        a = MeanStats.of(rng.normal(10, 1, 40))
        b = MeanStats.of(rng.normal(10, 6, 400))
        hits += welch_ttest(a, b).p_value < ALPHA
    assert within_binomial(hits, sims, ALPHA), hits / sims


def test_welch_from_sums_equals_scipy_on_the_raw_values_and_detects_an_effect() -> None:
    rng = np.random.default_rng(7)
    a, b = rng.exponential(300, 3000), rng.exponential(330, 2500)  # watch time: skewed, +10 %
    mine = welch_ttest(MeanStats.of(a), MeanStats.of(b))
    ref = st.ttest_ind(b, a, equal_var=False)
    assert mine.p_value == pytest.approx(ref.pvalue, rel=1e-6)
    assert mine.statistic == pytest.approx(ref.statistic, rel=1e-6)
    assert mine.p_value < ALPHA and mine.ci_low > 0 and mine.standardized_effect is not None


def test_chi_square_equals_the_squared_z_for_two_variants() -> None:
    z = two_proportion_ztest(120, 1000, 150, 1000)
    chi2, p = chi_square([120, 150], [1000, 1000])
    assert chi2 == pytest.approx(z.statistic**2)
    assert p == pytest.approx(z.p_value)


def test_holm_adjustment() -> None:
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5]) == [0.5]


def test_bad_inputs_are_named() -> None:
    with pytest.raises(ValueError, match="treatment has no units"):
        two_proportion_ztest(1, 10, 0, 0)
    with pytest.raises(ValueError, match="12 successes out of 10"):
        two_proportion_ztest(12, 10, 1, 10)
    with pytest.raises(ValueError, match="at least 2 values"):
        welch_ttest(MeanStats.of([1.0]), MeanStats.of([1.0, 2.0]))
    with pytest.raises(ValueError, match="confidence"):
        two_proportion_ztest(1, 10, 1, 10, confidence=1.5)
    with pytest.raises(ValueError, match="leaves"):
        sample_size_proportions(0.9, 0.5)


def _variant(
    rng: np.random.Generator, name: str, users: int, ctr: float, control: bool = False
) -> VariantData:
    lists = 1 + rng.poisson(2, users)
    clicks = rng.binomial(lists, ctr)
    plays = rng.poisson(clicks * 0.5)
    return VariantData(
        name,
        users,
        RatioStats.of(clicks, lists),
        int((clicks > 0).sum()),
        {
            "ctr_per_user": MeanStats.of(clicks / lists),
            "plays_per_user": MeanStats.of(plays),
            "watch_time_per_user": MeanStats.of(plays * rng.exponential(600, users)),
        },
        control,
    )


def test_analyze_names_a_winner_only_when_significant_and_big_enough() -> None:
    rng = np.random.default_rng(8)
    a = _variant(rng, "control", 6000, 0.10, control=True)
    b = _variant(rng, "diverse", 6000, 0.125)
    res = analyze([a, b], target_metric="ctr", minimum_sample_size=1000)
    assert res["status"] == "winner" and res["winner"] == "diverse" and res["significant"]
    assert res["p_value"] < ALPHA and res["effect_size"] > 0
    c = res["comparisons"]["ctr"]["diverse"]
    assert c["ci_low"] > 0 and c["test"] == "delta-method z"
    assert res["comparisons"]["conversion"]["diverse"]["test"] == "two-proportion z"
    assert res["comparisons"]["plays_per_user"]["diverse"]["test"] == "welch t"
    assert res["omnibus"]["test"] == "chi-square"
    assert res["sample_size"]["required_per_variant"] > 0 and 0 < res["sample_size"]["achieved_power"] <= 1

    small = analyze([a, b], target_metric="ctr", minimum_sample_size=10_000)
    assert small["status"] == "insufficient_sample" and small["winner"] is None
    assert "minimum_sample_size=10000" in small["reason"]


def test_analyze_without_an_effect_names_no_winner_at_about_alpha() -> None:
    rng = np.random.default_rng(9)
    sims = 400
    winners = 0
    for _ in range(sims):
        res = analyze(
            [_variant(rng, "a", 500, 0.1, control=True), _variant(rng, "b", 500, 0.1)],
            target_metric="conversion",
            minimum_sample_size=100,
        )
        assert res["status"] in ("winner", "no_difference")
        winners += res["winner"] is not None
    assert within_binomial(winners, sims, ALPHA), winners / sims


def test_analyze_three_variants_is_holm_adjusted_and_control_can_win() -> None:
    rng = np.random.default_rng(10)
    ctl = _variant(rng, "control", 5000, 0.15, control=True)
    worse1, worse2 = _variant(rng, "w1", 5000, 0.11), _variant(rng, "w2", 5000, 0.10)
    res = analyze([worse1, ctl, worse2], target_metric="ctr", minimum_sample_size=100)
    assert res["control"] == "control" and res["winner"] == "control"
    for name in ("w1", "w2"):
        c = res["comparisons"]["ctr"][name]
        assert c["p_adjusted"] >= c["p_value"] and c["difference"] < 0


def test_analyze_rejects_unknown_metrics_and_single_variants() -> None:
    rng = np.random.default_rng(11)
    a, b = _variant(rng, "a", 100, 0.1), _variant(rng, "b", 100, 0.1)
    with pytest.raises(ValueError, match="unknown target metric 'revenue'"):
        analyze([a, b], target_metric="revenue")
    with pytest.raises(ValueError, match="at least 2 variants"):
        analyze([a])


def test_analyze_with_an_empty_variant_reports_no_data() -> None:
    rng = np.random.default_rng(12)
    empty = VariantData("b", 0, RatioStats(0, 0, 0, 0, 0, 0), 0)
    res = analyze([_variant(rng, "a", 100, 0.1, control=True), empty], target_metric="ctr")
    assert res["status"] == "no_data" and res["winner"] is None
    assert all(v is None or math.isfinite(v) for v in res["variants"]["b"].values() if isinstance(v, float))


def test_degenerate_ratios_without_variance() -> None:
    ones, zeros = RatioStats.of([2, 2, 2], [2, 2, 2]), RatioStats.of([0, 0, 0], [2, 2, 2])
    assert ratio_ztest(zeros, ones).p_value == 0.0 and ratio_ztest(zeros, ones).difference == 1.0
    assert ratio_ztest(ones, ones).p_value == 1.0

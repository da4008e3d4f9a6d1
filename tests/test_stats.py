"""The statistics module against hand-computed values, scipy, exact enumeration and simulated coverage."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as st

from testbed import stats
from testbed.stats import (
    bootstrap_interval,
    loglog_fit,
    paired,
    paired_table,
    sign_flip_pvalue,
    summarize,
    t_interval,
)


def test_summary_of_one_to_five_by_hand():
    s = summarize([1, 2, 3, 4, 5])
    # mean 3, sample std sqrt(2.5), t_{0.975,4} = 2.7764451: half-width 2.7764451·1.5811388/√5 = 1.9632432
    assert s.mean == 3.0 and s.std == pytest.approx(math.sqrt(2.5), rel=1e-12) and s.n == 5
    assert s.half_width == pytest.approx(1.963243161, rel=1e-8)
    assert (s.lo, s.hi) == pytest.approx((3 - 1.963243161, 3 + 1.963243161), rel=1e-8)
    assert s.format() == "3 ± 2 (5)" and summarize([0.1234, 0.1236]).format().endswith("(2)")


def test_t_interval_matches_scipy_and_drops_nans():
    x = [0.3, 1.7, 2.2, 0.9, 1.1, float("nan")]
    lo, hi = t_interval(x, 0.9)
    ref = st.t.interval(0.9, 4, loc=np.mean(x[:5]), scale=st.sem(x[:5]))
    assert (lo, hi) == pytest.approx(ref, rel=1e-12)
    one = summarize([2.0, float("nan")])
    assert one.n == 1 and one.mean == 2.0 and math.isnan(one.std) and math.isnan(one.half_width)
    assert summarize([]).n == 0 and summarize([]).format() == "– (0)"


def test_t_interval_covers_the_mean_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    hits = [lo <= 1.0 <= hi for lo, hi in (t_interval(rng.normal(1.0, 2.0, 5)) for _ in range(4000))]
    assert abs(np.mean(hits) - 0.95) < 0.012  # binomial sd of the coverage ≈ 0.0034


def test_bootstrap_interval_is_seeded_and_near_the_t_interval_for_normal_data():
    rng = np.random.default_rng(1)
    x = rng.normal(0.0, 1.0, 400)
    b1, b2 = bootstrap_interval(x, seed=3), bootstrap_interval(x, seed=3)
    assert b1 == b2
    t_lo, t_hi = t_interval(x)
    assert b1[0] == pytest.approx(t_lo, abs=0.02) and b1[1] == pytest.approx(t_hi, abs=0.02)
    skewed = summarize(rng.lognormal(0.0, 1.5, 30), method="bootstrap")
    assert skewed.method == "bootstrap" and skewed.lo < skewed.mean < skewed.hi
    with pytest.raises(ValueError, match="method"):
        summarize([1, 2], method="z")


def test_sign_flip_pvalue_by_enumeration():
    # d = (1, 2, 3): |Σ ε d| ≥ 6 only for ε = ±(1, 1, 1): p = 2/8
    assert sign_flip_pvalue([1, 2, 3]) == 0.25
    # d = (1, −1): Σ d = 0, every sign vector is as extreme: p = 1
    assert sign_flip_pvalue([1, -1]) == 1.0
    # five equal positive differences: p = 2/32, the smallest a 5-seed study can reach
    assert sign_flip_pvalue([0.5] * 5) == pytest.approx(2 / 32)
    # above the exact limit the Monte Carlo estimate agrees with the exact one for the same data
    d = np.random.default_rng(2).normal(0.3, 1.0, 18)
    assert sign_flip_pvalue(d, n_perm=200_000) == pytest.approx(_exact(d), abs=0.005)


def _exact(d):
    import itertools

    total = abs(sum(d)) - 1e-12
    return np.mean([abs(sum(s * v for s, v in zip(signs, d, strict=True))) >= total
                    for signs in itertools.product((1, -1), repeat=len(d))])


def test_paired_comparison_matches_scipy_ttest_rel():
    a = [0.81, 0.79, 0.85, 0.90, 0.77]
    b = [0.78, 0.80, 0.80, 0.86, 0.75]
    c = paired(a, b)
    ref = st.ttest_rel(a, b)
    assert c.t == pytest.approx(ref.statistic, rel=1e-10) and c.p_t == pytest.approx(ref.pvalue, rel=1e-10)
    assert c.diff.mean == pytest.approx(np.mean(np.subtract(a, b)), rel=1e-12) and c.diff.n == 5
    assert c.p_sign_flip == pytest.approx(_exact(np.subtract(a, b)))
    same = paired([1.0, 2.0], [1.0, 2.0])
    assert same.t == 0.0 and same.p_t == 1.0
    with pytest.raises(ValueError, match="shared seed"):
        paired([1, 2, 3], [1, 2])


def test_loglog_fit_recovers_an_exact_power_law_and_brackets_a_noisy_one():
    x = np.array([4, 8, 16, 32, 64, 128], dtype=float)
    exact = loglog_fit(x, 3.0 * x ** -2.0)
    assert exact.slope == pytest.approx(-2.0, abs=1e-12) and exact.r2 == pytest.approx(1.0, abs=1e-12)
    assert exact.lo == pytest.approx(-2.0, abs=1e-9) and exact.hi == pytest.approx(-2.0, abs=1e-9)
    rng = np.random.default_rng(4)
    xs = np.repeat(x, 5)
    noisy = loglog_fit(xs, xs ** -1.0 * np.exp(rng.normal(0, 0.1, xs.size)))
    assert noisy.lo < -1.0 < noisy.hi and noisy.hi - noisy.lo < 0.15 and 0.95 < noisy.r2 < 1.0
    assert math.isnan(loglog_fit([1.0], [2.0]).slope)


def test_paired_table_pairs_within_groups_on_shared_seeds():
    """Rows of two groups and three arms: each arm against the baseline over the seeds both have, log10 ratios for
    the log metrics (geometric-mean ratio and its interval from the t-interval of the log differences) and plain
    differences otherwise; a seed with a missing or non-positive value drops out of that comparison only."""
    rows = []
    for g, scale in (("g1", 1.0), ("g2", 10.0)):
        for seed, base in enumerate([1.0, 2.0, 4.0, 8.0]):
            rows.append({"g": g, "arm": "base", "seed": seed, "err": scale * base, "gap": base})
            rows.append({"g": g, "arm": "half", "seed": seed, "err": scale * base / 2, "gap": base + seed})
            if seed < 3:                                    # 'b' misses seed 3; its seed 2 value is not positive
                rows.append({"g": g, "arm": "b", "seed": seed, "err": 0.0 if seed == 2 else scale * base * 3,
                             "gap": ""})
    out = {(r["g"], r["a"], r["metric"]): r for r in paired_table(rows, ["g"], "arm", "base", ["err", "gap"], ["err"])}
    half = out[("g2", "half", "err")]
    assert half["scale"] == "log10" and half["n"] == 4
    assert half["ratio"] == pytest.approx(0.5, rel=1e-12) and half["mean_diff"] == pytest.approx(math.log10(0.5))
    gap = out[("g1", "half", "gap")]
    ref = paired([1 + 0, 2 + 1, 4 + 2, 8 + 3], [1, 2, 4, 8])
    assert gap["scale"] == "linear" and gap["mean_diff"] == pytest.approx(1.5)
    assert (gap["lo"], gap["hi"], gap["p_t"]) == pytest.approx((ref.diff.lo, ref.diff.hi, ref.p_t))
    b = out[("g1", "b", "err")]
    assert b["n"] == 2 and b["ratio"] == pytest.approx(3.0)        # seeds 0 and 1 only
    assert ("g1", "b", "gap") not in out                              # no finite value at all: no row
    assert {r["b"] for r in out.values()} == {"base"}


# ------------------------------------------------------------------------------------------ verdict rules
@pytest.mark.parametrize("lo, hi, expected", [
    (-2.4, -1.7, "reproduced"),        # holds −2, excludes 0
    (-0.3, 0.2, "not reproduced"),     # excludes −2
    (-2.5, 0.1, "unresolved"),         # holds both
    (-1.9, -1.2, "not reproduced"),    # excludes both: still not −2
    (float("nan"), 1.0, "no estimate")])
def test_claim_verdict(lo, hi, expected):
    assert stats.claim_verdict(lo, hi, claim=-2.0, null=0.0) == expected


@pytest.mark.parametrize("lo, hi, expected", [
    (-0.1, 0.12, "inside ±tol"), (0.2, 0.5, "outside ±tol"), (-0.9, -0.16, "outside ±tol"),
    (-0.1, 0.3, "unresolved"), (-0.2, 0.2, "unresolved"), (float("inf"), 0.0, "no estimate")])
def test_band_verdict(lo, hi, expected):
    assert stats.band_verdict(lo, hi, 0.15) == expected


def test_sign_verdict_and_percentile_interval():
    assert [stats.sign_verdict(*ci) for ci in ((0.1, 2), (-2, -0.1), (-1, 1))] == ["positive", "negative",
                                                                                  "unresolved"]
    lo, hi = stats.percentile_interval([*range(1, 1001), float("nan")])
    assert (lo, hi) == (pytest.approx(25.975), pytest.approx(975.025))   # numpy's linear quantiles of 1…1000
    assert all(math.isnan(v) for v in stats.percentile_interval([float("nan")]))

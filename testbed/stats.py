"""One statistics module for every table, sweep and figure: means with 95% confidence intervals, paired
comparisons over shared seeds, and log-log slope fits with bootstrap intervals.

Conventions (used everywhere a number is reported over seeds):

* the standard deviation is the **sample** standard deviation (``ddof = 1``);
* a confidence interval for a mean is the Student-t interval ``x̄ ± t_{1−α/2, n−1} · s/√n`` (default), or a
  percentile bootstrap of the mean (``method="bootstrap"``, for skewed metrics; seeded, so reproducible);
* a paired comparison of methods A and B over the same seeds works on the differences ``d_i = a_i − b_i``: mean,
  t-interval, the paired t-test p-value and the exact two-sided sign-flip permutation p-value
  ``P(|Σ ε_i d_i| ≥ |Σ d_i|)`` over all ``2^n`` sign vectors ``ε`` (Monte Carlo with ``n_perm`` draws above
  ``MAX_EXACT_FLIPS`` pairs);
* a power law ``y ∝ x^s`` is fitted by least squares on ``(log x, log y)``; its interval is a percentile
  bootstrap over the points, and ``R²`` is that of the log-log fit;
* a table cell reads ``mean ± half-width (n)``; a figure's error bar is the 95% CI's half-width.

NaNs are dropped before anything is computed (``n`` counts the finite values); with ``n = 1`` the spread and the
interval are NaN, never 0.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from testbed.fitting import loglog_slope


def _student_t():
    """scipy's Student-t distribution, imported on first use (scipy.stats costs ~0.5 s to import)."""
    from scipy import stats

    return stats.t

LEVEL = 0.95
#: above this many pairs the sign-flip test samples sign vectors instead of enumerating 2^n of them
MAX_EXACT_FLIPS = 16


def _finite(values: Sequence[float]) -> np.ndarray:
    arr = np.asarray([float(v) for v in values], dtype=float)
    return arr[np.isfinite(arr)]


@dataclass(frozen=True)
class Summary:
    """Mean, sample std (ddof = 1), n and a confidence interval ``[lo, hi]`` at ``level``."""

    mean: float
    std: float
    n: int
    lo: float
    hi: float
    level: float = LEVEL
    method: str = "t"

    @property
    def half_width(self) -> float:
        """Half the interval's width (for a t-interval, exactly ``t·s/√n``)."""
        return 0.5 * (self.hi - self.lo)

    def format(self, digits: int = 3) -> str:
        """``mean ± half-width (n)``, e.g. ``0.137 ± 0.021 (5)``."""
        if self.n == 0:
            return "– (0)"
        if not math.isfinite(self.half_width):
            return f"{self.mean:.{digits}g} (n={self.n})"
        return f"{self.mean:.{digits}g} ± {self.half_width:.2g} ({self.n})"

    def __str__(self) -> str:
        return self.format()


def t_interval(values: Sequence[float], level: float = LEVEL) -> tuple[float, float]:
    """Student-t confidence interval for the mean of ``values``."""
    x = _finite(values)
    if x.size < 2:
        return (float("nan"), float("nan"))
    hw = float(_student_t().ppf(0.5 + level / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return (float(x.mean()) - hw, float(x.mean()) + hw)


def bootstrap_interval(values: Sequence[float], level: float = LEVEL, n_boot: int = 10_000,
                       seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval for the mean (``n_boot`` resamples drawn with ``seed``)."""
    x = _finite(values)
    if x.size < 2:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
    return (float(np.quantile(means, 0.5 - level / 2)), float(np.quantile(means, 0.5 + level / 2)))


def summarize(values: Sequence[float], level: float = LEVEL, method: str = "t", seed: int = 0) -> Summary:
    """:class:`Summary` of the finite ``values`` with a ``method`` (``"t"`` or ``"bootstrap"``) interval."""
    if method not in ("t", "bootstrap"):
        raise ValueError(f"method must be 't' or 'bootstrap', got {method!r}")
    x = _finite(values)
    if x.size == 0:
        nan = float("nan")
        return Summary(nan, nan, 0, nan, nan, level, method)
    lo, hi = t_interval(x, level) if method == "t" else bootstrap_interval(x, level, seed=seed)
    std = float(x.std(ddof=1)) if x.size > 1 else float("nan")
    return Summary(float(x.mean()), std, int(x.size), lo, hi, level, method)


def sign_flip_pvalue(diffs: Sequence[float], n_perm: int = 100_000, seed: int = 0) -> float:
    """Two-sided sign-flip permutation p-value of ``mean(d) = 0``: the share of sign vectors ``ε`` with
    ``|Σ ε_i d_i| ≥ |Σ d_i|`` (exact for up to :data:`MAX_EXACT_FLIPS` pairs; the observed vector counts)."""
    d = _finite(diffs)
    if d.size == 0:
        return float("nan")
    observed = abs(d.sum()) - 1e-12 * (1 + abs(d).sum())  # tolerance: ties count as "as extreme"
    if d.size <= MAX_EXACT_FLIPS:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=d.size)))
        return float((np.abs(signs @ d) >= observed).mean())
    rng = np.random.default_rng(seed)
    signs = rng.choice((1.0, -1.0), size=(n_perm, d.size))
    return float(((np.abs(signs @ d) >= observed).sum() + 1) / (n_perm + 1))


@dataclass(frozen=True)
class PairedComparison:
    """A − B over shared seeds: the differences' :class:`Summary`, paired t statistic and p-values."""

    diff: Summary
    t: float
    p_t: float
    p_sign_flip: float

    def format(self, digits: int = 3) -> str:
        return f"{self.diff.format(digits)}, paired t p = {self.p_t:.2g}, sign-flip p = {self.p_sign_flip:.2g}"


def paired(a: Sequence[float], b: Sequence[float], level: float = LEVEL) -> PairedComparison:
    """Compare ``a`` and ``b`` measured on the same seeds (same order); pairs with a NaN are dropped."""
    a_arr = np.asarray([float(v) for v in a], dtype=float)
    b_arr = np.asarray([float(v) for v in b], dtype=float)
    if a_arr.shape != b_arr.shape:
        raise ValueError(f"paired comparison needs one value per shared seed on both sides, got {a_arr.size} "
                         f"and {b_arr.size}")
    d = a_arr - b_arr
    d = d[np.isfinite(d)]
    s = summarize(d, level)
    if d.size < 2:
        t = p = float("nan")
    elif s.std == 0.0:
        t, p = (0.0, 1.0) if s.mean == 0.0 else (math.copysign(math.inf, s.mean), 0.0)
    else:
        t = s.mean / (s.std / math.sqrt(d.size))
        p = float(2 * _student_t().sf(abs(t), d.size - 1))
    return PairedComparison(s, float(t), float(p), sign_flip_pvalue(d))


@dataclass(frozen=True)
class SlopeFit:
    """``y ∝ x^slope``: least-squares slope on log-log axes, its bootstrap interval, ``R²`` and ``n`` points."""

    slope: float
    lo: float
    hi: float
    r2: float
    n: int
    level: float = LEVEL

    def format(self, digits: int = 3) -> str:
        ci = f"[{self.lo:.{digits}g}, {self.hi:.{digits}g}]"
        return f"{self.slope:.{digits}g} {ci} (R² = {self.r2:.3f}, n = {self.n})"


def loglog_fit(xs: Sequence[float], ys: Sequence[float], level: float = LEVEL, n_boot: int = 2000,
               seed: int = 0) -> SlopeFit:
    """Fit ``log y = c + s log x`` over the points with finite positive ``x`` and ``y``; the interval resamples
    the points (pairs bootstrap, ``n_boot`` draws with ``seed``; resamples with a single distinct ``x`` are
    skipped)."""
    pts = np.array([(float(x), float(y)) for x, y in zip(xs, ys, strict=True)
                    if math.isfinite(float(x)) and float(x) > 0 and math.isfinite(float(y)) and float(y) > 0])
    nan = float("nan")
    if pts.shape[0] < 2:
        return SlopeFit(nan, nan, nan, nan, int(pts.shape[0]), level)
    slope = loglog_slope(pts[:, 0], pts[:, 1])
    lx, ly = np.log(pts[:, 0]), np.log(pts[:, 1])
    resid = ly - (ly.mean() + slope * (lx - lx.mean()))
    ss_tot = float(((ly - ly.mean()) ** 2).sum())
    r2 = 1.0 - float((resid ** 2).sum()) / ss_tot if ss_tot > 0 else 1.0
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        idx = rng.integers(0, pts.shape[0], pts.shape[0])
        if np.unique(pts[idx, 0]).size > 1:
            boots.append(loglog_slope(pts[idx, 0], pts[idx, 1]))
    lo, hi = ((float(np.quantile(boots, 0.5 - level / 2)), float(np.quantile(boots, 0.5 + level / 2)))
              if boots else (nan, nan))
    return SlopeFit(float(slope), lo, hi, float(r2), int(pts.shape[0]), level)


def loglog_fit_clustered(xs: Sequence[float], ys: Sequence[float], units: Sequence[Any], level: float = LEVEL,
                         n_boot: int = 2000, seed: int = 0) -> SlopeFit:
    """:func:`loglog_fit` whose interval resamples whole ``units`` (e.g. seeds: the points of one seed share its
    initialisation and move together) — the cluster bootstrap; with fewer than two units it resamples the points,
    as :func:`loglog_fit`. The slope, R² and ``n`` are those of the pooled fit."""
    keep = [(float(x), float(y), u) for x, y, u in zip(xs, ys, units, strict=True)
            if math.isfinite(float(x)) and float(x) > 0 and math.isfinite(float(y)) and float(y) > 0]
    groups: dict[Any, list[tuple[float, float]]] = {}
    for x, y, u in keep:
        groups.setdefault(u, []).append((x, y))
    xs_kept, ys_kept = [k[0] for k in keep], [k[1] for k in keep]
    if len(groups) < 2:
        return loglog_fit(xs_kept, ys_kept, level, n_boot, seed)
    base = loglog_fit(xs_kept, ys_kept, level, 0, seed)   # slope, R², n only: the interval is the cluster one below
    if base.n < 2:
        return base
    names = list(groups)
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        pts = np.array([p for i in rng.integers(0, len(names), len(names)) for p in groups[names[i]]])
        if np.unique(pts[:, 0]).size > 1:
            boots.append(loglog_slope(pts[:, 0], pts[:, 1]))
    lo, hi = (float(np.quantile(boots, 0.5 - level / 2)), float(np.quantile(boots, 0.5 + level / 2)))
    return SlopeFit(base.slope, lo, hi, base.r2, base.n, level)


def paired_table(rows: Sequence[dict], by: Sequence[str], arm: str, baseline: str, metrics: Sequence[str],
                 log_metrics: Sequence[str] = (), seed_key: str = "seed") -> list[dict]:
    """Paired comparisons ``arm − baseline`` over shared seeds, one row per group of ``by``, arm value and metric.

    ``rows`` are result rows (one per seed); within a group of the ``by`` columns every value of the ``arm``
    column other than ``baseline`` is compared with ``baseline`` on the seeds both have (:func:`paired`). For a
    metric in ``log_metrics`` the differences are of ``log10`` values (a geometric-mean *ratio*
    ``10^mean_diff`` with interval ``[10^lo, 10^hi]``, written as ``ratio``/``ratio_lo``/``ratio_hi``); rows whose
    value is missing, non-finite (or ≤ 0 for a log metric) drop that seed from that comparison.
    Columns: the ``by`` columns, ``a``, ``b``, ``metric``, ``scale`` (``log10`` or ``linear``), ``mean_diff``,
    ``lo``, ``hi``, ``n``, ``p_t``, ``p_sign_flip`` and, for log metrics, the ratio columns.
    """
    def value(r: dict, m: str) -> float:
        v = r.get(m)
        try:
            x = float(v) if not isinstance(v, bool) and v not in (None, "") else math.nan
        except (TypeError, ValueError):
            x = math.nan
        if m in log_metrics:
            return math.log10(x) if math.isfinite(x) and x > 0 else math.nan
        return x

    groups: dict[tuple, dict[str, dict[int, dict]]] = {}
    for r in rows:
        per_seed = groups.setdefault(tuple(r.get(k, "") for k in by), {}).setdefault(str(r[arm]), {})
        seed = int(r[seed_key])
        if seed in per_seed:
            raise ValueError(f"paired_table: two rows for {arm} = {r[arm]!r}, seed {seed} in the group "
                             f"{dict(zip(by, (r.get(k, '') for k in by), strict=True))}; add the column that "
                             "tells them apart to `by`")
        per_seed[seed] = r
    out: list[dict] = []
    for gkey, arms in groups.items():
        base = arms.get(baseline)
        if not base:
            continue
        for a, ra in arms.items():
            if a == baseline:
                continue
            seeds = sorted(set(ra) & set(base))
            for m in metrics:
                va, vb = [value(ra[s], m) for s in seeds], [value(base[s], m) for s in seeds]
                keep = [i for i in range(len(seeds)) if math.isfinite(va[i]) and math.isfinite(vb[i])]
                if not keep:
                    continue
                pc = paired([va[i] for i in keep], [vb[i] for i in keep])
                row = {**dict(zip(by, gkey, strict=True)), "a": a, "b": baseline, "metric": m,
                       "scale": "log10" if m in log_metrics else "linear", "mean_diff": pc.diff.mean,
                       "lo": pc.diff.lo, "hi": pc.diff.hi, "n": pc.diff.n, "p_t": pc.p_t,
                       "p_sign_flip": pc.p_sign_flip}
                if m in log_metrics:
                    row.update(ratio=10 ** pc.diff.mean, ratio_lo=10 ** pc.diff.lo, ratio_hi=10 ** pc.diff.hi)
                out.append(row)
    return out


# ------------------------------------------------------------------------------------------ verdict rules
# Declared rules that turn a 95% interval into a verdict; a study names its rule before it runs. "Holds" means
# lo ≤ value ≤ hi.
def claim_verdict(lo: float, hi: float, claim: float, null: float) -> str:
    """Does the interval ``[lo, hi]`` of an estimate support ``claim`` against ``null`` (e.g. a fitted exponent:
    claim −2, null 0)? ``"reproduced"`` if it holds ``claim`` and excludes ``null``; ``"not reproduced"`` if it
    excludes ``claim``; ``"unresolved"`` if it holds both; ``"no estimate"`` if an end is not finite."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "no estimate"
    has_claim, has_null = lo <= claim <= hi, lo <= null <= hi
    if has_claim and not has_null:
        return "reproduced"
    if not has_claim:
        return "not reproduced"
    return "unresolved"


def band_verdict(lo: float, hi: float, tol: float) -> str:
    """Equivalence rule for "about zero": ``"inside ±tol"`` if ``[lo, hi] ⊂ [−tol, tol]``, ``"outside ±tol"`` if
    the interval lies wholly above ``tol`` or below ``−tol``, ``"unresolved"`` otherwise (it straddles a bound);
    ``"no estimate"`` if an end is not finite."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "no estimate"
    if -tol <= lo and hi <= tol:
        return "inside ±tol"
    if lo > tol or hi < -tol:
        return "outside ±tol"
    return "unresolved"


def sign_verdict(lo: float, hi: float) -> str:
    """``"positive"`` if the interval lies above 0, ``"negative"`` if below, ``"unresolved"`` if it holds 0."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "no estimate"
    return "positive" if lo > 0 else "negative" if hi < 0 else "unresolved"


def percentile_interval(samples: Sequence[float], level: float = LEVEL) -> tuple[float, float]:
    """The central ``level`` percentile interval of bootstrap ``samples`` (non-finite samples dropped; NaNs if
    none is left)."""
    a = _finite(samples)
    if a.size == 0:
        return float("nan"), float("nan")
    return float(np.quantile(a, 0.5 - level / 2)), float(np.quantile(a, 0.5 + level / 2))


__all__ = ["LEVEL", "PairedComparison", "SlopeFit", "Summary", "band_verdict", "bootstrap_interval", "claim_verdict",
           "loglog_fit", "loglog_fit_clustered", "paired", "paired_table", "percentile_interval", "sign_flip_pvalue",
           "sign_verdict", "summarize", "t_interval"]

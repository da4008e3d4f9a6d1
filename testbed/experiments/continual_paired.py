"""Field preservation against its host, paired over seeds: verdicts and a forest plot (continual study).

``paired.csv`` of :mod:`testbed.experiments.continual` holds, per benchmark × FP variant × buffer × metric, the mean
FP − host difference over the seeds both ran and its 95% t-interval (:func:`testbed.stats.paired`). The *verdict*
of one comparison is :func:`testbed.stats.sign_verdict` of that interval: ``positive`` (FP higher: the interval lies
above 0), ``negative`` (FP lower) or ``unresolved`` (the interval holds 0). With 5 seeds the exact sign-flip test
cannot go below p = 2/32 ≈ 0.062, so the verdict rests on the t-interval; both are in the table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from testbed.plotting import PALETTE, save_figure, use_style
from testbed.report import is_finite_number
from testbed.stats import sign_verdict

#: (metric, axis label) of the verdict table and the forest plot
VERDICT_METRICS: tuple[tuple[str, str], ...] = (
    ("avg_acc_class_il", "final accuracy (pts)"),
    ("bwt", "backward transfer (pts)"),
    ("fwt", "forward transfer (pts)"),
    ("trajectory_retention", "state retention"),
    ("jacobian_retention", "JVP retention, training probes"),
    ("jacobian_retention_fresh", "JVP retention, fresh probes"),
    ("jacobian_retention_exact", "exact-Jacobian retention"),
)
VERDICTS = ("positive", "negative", "unresolved")


def verdict(p: dict[str, Any]) -> str:
    """:func:`~testbed.stats.sign_verdict` of one paired row's 95% interval (``no estimate`` without one)."""
    lo, hi = p.get("lo"), p.get("hi")
    if not (is_finite_number(lo) and is_finite_number(hi)):
        return "no estimate"
    return sign_verdict(float(lo), float(hi))


def verdict_table(pairs: Sequence[dict[str, Any]]) -> list[str]:
    """Markdown: per metric, how many FP − host comparisons are positive / negative / unresolved (of n)."""
    lines = ["| metric | FP higher (CI > 0) | FP lower (CI < 0) | unresolved (CI ∋ 0) | comparisons |",
             "|---|---|---|---|---|"]
    for metric, label in VERDICT_METRICS:
        rows = [p for p in pairs if p["metric"] == metric and verdict(p) in VERDICTS]
        if not rows:
            continue
        counts = {v: sum(verdict(p) == v for p in rows) for v in VERDICTS}
        lines.append(f"| {label} | " + " | ".join(str(counts[v]) for v in VERDICTS) + f" | {len(rows)} |")
    return lines


def _comparison(p: dict[str, Any]) -> tuple[str, str, int]:
    return str(p["benchmark"]), str(p["method"]), int(p["buffer_size"])


def plot_paired(pairs: Sequence[dict[str, Any]], stem: str | Path, labels: Mapping[str, str]) -> list[Path]:
    """Forest plot: one panel per metric of :data:`VERDICT_METRICS`, one row per benchmark × FP variant × buffer
    (variants named by ``labels``), the mean FP − host difference with its 95% t-interval (filled marker: the
    interval excludes 0)."""
    import matplotlib.pyplot as plt

    use_style()
    metrics = [(m, label) for m, label in VERDICT_METRICS
               if any(p["metric"] == m and is_finite_number(p.get("mean_diff")) for p in pairs)]
    comps = list(dict.fromkeys(_comparison(p) for p in pairs))
    benches = list(dict.fromkeys(c[0] for c in comps))
    by = {(_comparison(p), p["metric"]): p for p in pairs}
    n_cols = min(4, len(metrics))
    n_rows = -(-len(metrics) // n_cols)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(2.1 * n_cols + 1.2, 0.22 * len(comps) * n_rows + 1.6),
                             layout="constrained", sharey=True, squeeze=False)
    ys = list(range(len(comps)))[::-1]
    row_labels = [f"{c[0]}  {labels.get(c[1], c[1])}  buf {c[2]}" for c in comps]
    for k, ax in enumerate(axes.flat):
        if k >= len(metrics):
            ax.set_visible(False)
            continue
        metric, label = metrics[k]
        for y, comp in zip(ys, comps, strict=True):
            p = by.get((comp, metric))
            if p is None or not is_finite_number(p.get("mean_diff")):
                continue
            color = PALETTE[benches.index(comp[0]) % len(PALETTE)]
            lo, hi, mean = float(p["lo"]), float(p["hi"]), float(p["mean_diff"])
            ax.plot([lo, hi], [y, y], color=color, lw=1.0)
            resolved = verdict(p) in ("positive", "negative")
            ax.plot([mean], [y], marker="o", ms=3.5, color=color, mfc=color if resolved else "white", mew=0.9)
        ax.axvline(0.0, color="0.3", lw=0.6, ls="--")
        ax.set_title(label, fontsize=7.5)
        ax.set_xlabel("FP − host")
        ax.set_yticks(ys, row_labels, fontsize=6)
    n = max((int(p["n"]) for p in pairs if is_finite_number(p.get("n"))), default=0)
    fig.suptitle(f"Field preservation minus its host, paired over {n} seeds at the γ chosen on validation data "
                 "(mean, 95% t-interval; filled: the interval excludes 0)", fontsize=8)
    return save_figure(fig, stem)

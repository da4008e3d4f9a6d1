"""One style for every figure: colour-blind-safe palette, readable at single-column width, PNG + PDF.

Importing this module chooses no matplotlib backend (a notebook keeps its inline backend); commands that save
figures headless call :func:`headless` first.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

from testbed.results import atomic_path

logging.getLogger("fontTools").setLevel(logging.ERROR)  # font-subsetting chatter when embedding PDF fonts

# Okabe–Ito palette (colour-blind safe)
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]
OBJECTIVE_COLORS = {"endpoint": "#D55E00", "field": "#0072B2", "teacher": "#000000", "trajectory": "#009E73",
                    "field+jacobian": "#CC79A7"}

STYLE = {
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "legend.fontsize": 7,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.prop_cycle": matplotlib.cycler(color=PALETTE),
    "figure.dpi": 150,
    "savefig.dpi": 200,
    "savefig.bbox": "tight",
    "pdf.fonttype": 42,
}


def headless() -> None:
    """Draw off-screen (the Agg backend): for the CLI, sweep workers and anything without a display."""
    matplotlib.use("Agg")


def use_style() -> None:
    matplotlib.rcParams.update(STYLE)


def color_for(name: str, i: int = 0) -> str:
    return OBJECTIVE_COLORS.get(name, PALETTE[i % len(PALETTE)])


def save_figure(fig, stem: str | Path) -> list[Path]:
    """Save ``fig`` as ``stem.png`` and ``stem.pdf``; return both paths."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in ("png", "pdf"):
        p = stem.with_suffix(f".{ext}")
        with atomic_path(p) as tmp:
            fig.savefig(tmp, format=ext)
        paths.append(p)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return paths


def _is_reference_row(r: dict) -> bool:
    return r.get("is_reference") in (True, "True", 1)


def consistency_panel(ax, curves: list[dict], series: list[str], key: str, ylabel: str, title: str,
                      legend: bool = False, series_key: str = "objective", method: str = "euler",
                      labels: dict[str, str] | None = None, colors: dict[str, str] | None = None) -> None:
    """A solver-consistency curve per series: mean (± 95% CI over seeds, :mod:`testbed.stats`) of ``key`` vs step
    count ``L'``.

    ``curves`` are :class:`~testbed.field.consistency.ConsistencyResult` rows tagged with ``series_key`` and
    ``seed`` (already filtered to one system). Fixed-step rows of ``method`` give the curve; the first
    adaptive row's value is drawn as a dotted horizontal line; a grey vertical line marks the reference
    (trained) depth ``L``. The reference row is left out of ``endpoint_change`` curves (it is 0 by definition).
    """
    import numpy as np

    colors = colors or {}
    for k, name in enumerate(series):
        color = colors.get(name) or color_for(name, k)
        pts = [r for r in curves if r[series_key] == name and r["method"] == method
               and (key != "endpoint_change" or not _is_reference_row(r))]
        if not pts:
            continue
        seeds = sorted({r["seed"] for r in pts})
        ns = sorted({int(r["n_steps"]) for r in pts})
        vals = np.array([[next((float(r[key]) for r in pts if r["seed"] == sd and int(r["n_steps"]) == n), np.nan)
                          for n in ns] for sd in seeds])
        from testbed.stats import summarize

        half = [summarize(vals[:, j]).half_width for j in range(len(ns))]
        ax.errorbar(ns, np.nanmean(vals, 0), yerr=half if len(seeds) > 1 else None, marker="o", ms=3,
                    lw=1, color=color, label=(labels or {}).get(name, name),
                    ls="--" if name == "teacher" else "-")
        adaptive = [float(r[key]) for r in curves if r[series_key] == name and r["n_steps"] in (None, "", "None")
                    and key in r]
        if adaptive and not (name == "teacher" and key == "target_error"):  # the teacher's is just the tolerance
            ax.axhline(float(np.mean(adaptive)), color=color, lw=0.8, ls=":")
    ref = [int(r["n_steps"]) for r in curves if _is_reference_row(r)]
    if ref:
        ax.axvline(ref[0], color="0.6", lw=0.6, zorder=0)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel(f"{method} steps $L'$")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if legend:
        ax.legend(frameon=False)


# --------------------------------------------------------------------------------------------- log–log panels
def plain_log_label(y: float, _pos: Any = None) -> str:
    """Tick label ``f"{y:g}"`` on a log axis for mantissas 1, 2, 3, 5 only (others blank): no mathtext, no clutter
    when matplotlib falls back to linear-style ticks on a short log range."""
    if y <= 0:
        return ""
    mant = y / 10 ** math.floor(math.log10(y) + 1e-9)
    return f"{y:g}" if any(abs(mant - m) < 1e-6 for m in (1.0, 2.0, 3.0, 5.0)) else ""


def log_axes(ax, xticks: Sequence[float] | None = None, log_y: bool = True) -> None:
    """Log₂ x-axis (with plain integer ticks at ``xticks`` when given, e.g. the depths or widths drawn) and a log
    y-axis whose ticks are labelled by :func:`plain_log_label` (mathtext-light: every minor ``6×10⁻³`` label would
    cost a mathtext parse)."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullLocator

    ax.set_xscale("log", base=2)
    if xticks is not None:
        ax.xaxis.set_major_locator(FixedLocator([float(v) for v in xticks]))
        ax.set_xticklabels([f"{int(v)}" for v in xticks])
        ax.xaxis.set_minor_locator(NullLocator())
    if log_y:
        ax.set_yscale("log")
        ax.yaxis.set_minor_locator(LogLocator(base=10, subs=(2.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(plain_log_label))
        ax.yaxis.set_minor_formatter(FuncFormatter(plain_log_label))


def loglog_line(ax, xs: Sequence[float], ys: Sequence[float], err: Sequence[float] | None = None, *, color: str,
                label: str, ls: str = "-", marker: str | None = "o", lw: float = 1.0) -> float:
    """One series on log–log axes with its fitted slope in the legend (``"label: slope +0.50"``); returns the slope.

    The slope is :func:`testbed.fitting.loglog_slope` of ``(xs, ys)`` (points with ``y ≤ 0`` or non-finite are left
    out, of the fit and of the drawing). ``err`` (one value per point, e.g. the std or standard error over seeds)
    draws error bars when any is positive; the lower whisker is cut at 95 % of the value so it stays on the log
    axis. Nothing is drawn (NaN returned) when no point is positive.
    """
    import numpy as np

    from testbed.fitting import loglog_slope

    x, y = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
    ok = np.isfinite(y) & (y > 0)
    if not ok.any():
        return float("nan")
    slope = loglog_slope(x, y)
    yerr = None
    if err is not None:
        e = np.asarray(err, dtype=float)[ok]
        if (e > 0).any():
            yerr = [np.minimum(e, 0.95 * y[ok]), e]
    ax.errorbar(x[ok], y[ok], yerr=yerr, color=color, ls=ls, marker=marker, ms=3, lw=lw, capsize=2,
                label=f"{label}: slope {slope:+.2f}")
    return slope


def power_guide(ax, xs: Sequence[float], y0: float, power: float, label: str) -> None:
    """A dotted grey guide ``y0·(x/x_min)^power`` over ``[min xs, max xs]`` (a claimed exponent, for the eye);
    nothing when ``xs`` is empty or ``y0`` is not positive."""
    import numpy as np

    if not len(xs) or not (y0 > 0):
        return
    x = np.asarray([min(xs), max(xs)], dtype=float)
    ax.plot(x, y0 * (x / x[0]) ** power, color="0.6", lw=0.8, ls=":", label=label)

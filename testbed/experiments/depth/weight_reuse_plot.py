"""The figure of the ``weight_reuse`` sub-study, drawn from its ``results.csv`` rows only: (a) coupling at
initialisation vs width, (b) vs depth, (c) true vs decoupled training vs depth; log–log with fitted slopes in the
legends and dotted guides for the claimed exponents."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from testbed.experiments.depth.weight_reuse import (
    DEPTH_CLAIM,
    WIDTH_CLAIM,
    coupling_width_depths,
    dynamics_widths_of,
    final_loss_gap,
    fixed_axes,
    series,
)
from testbed.plotting import color_for, log_axes, loglog_line, power_guide, save_figure, use_style
from testbed.stats import summarize


def _band(rows: list[dict[str, Any]], quantity: str, axis: str, **fixed: Any) -> tuple[list[int], np.ndarray,
                                                                                          np.ndarray]:
    """``(xs, mean, err)``: seed means along ``axis``; ``err`` the 95% CI half-width over seeds
    (:mod:`testbed.stats`), or (one seed) 1.96 × the recorded ``<quantity>_se`` over random draws (a normal 95%
    interval) when there is one, else 0."""
    xs, m = series(rows, quantity, axis, **fixed)
    err = []
    for x in xs:
        vals = [float(r["value"]) for r in rows if r["quantity"] == quantity and int(r[axis]) == x
                and all(int(r[k]) == int(v) for k, v in fixed.items())]
        ses = [float(r["value"]) for r in rows if r["quantity"] == f"{quantity}_se" and int(r[axis]) == x
               and all(int(r[k]) == int(v) for k, v in fixed.items())]
        if len(vals) > 1:
            err.append(summarize(vals).half_width)
        elif ses and math.isfinite(ses[0]):
            err.append(1.96 * ses[0])
        else:
            err.append(0.0)
    return xs, np.asarray(m), np.asarray(err)


def _ticks(ax) -> list[int]:
    """The x values of every series drawn on ``ax`` (for :func:`~testbed.plotting.log_axes`)."""
    return sorted({int(x) for ln in ax.lines for x in ln.get_xdata() if x > 0})



def _coupling_lines(ax, rows, axis: str, fluctuation: bool = True, color_index: int = 0, label_suffix: str = "",
                    **fixed):
    """The excess coupling κ − κ̃ (and, if ``fluctuation``, the one-draw fluctuation ρ̃) against ``axis`` (width
    or depth), log–log; returns the excess curve's ``(x, mean)``."""
    xs, m, e = _band(rows, "coupling_excess", axis, **fixed)
    loglog_line(ax, xs, m, e, color=color_for(f"excess{color_index}", color_index),
                label=f"excess κ − κ̃ (mirror est.){label_suffix}")
    if fluctuation:
        xf, mf, ef = _band(rows, "coupling_fluctuation", axis, **fixed)
        loglog_line(ax, xf, mf, ef, color=color_for("endpoint", 1), label="one-draw fluctuation RMS ρ̃", ls="--",
                    marker="s")
    return xs, m


def draw(rows: list[dict[str, Any]], out: Path) -> list[Path]:
    """The three-panel figure ``weight_reuse.{png,pdf}`` from the rows of ``results.csv``; returns both paths.
    (a) one excess-coupling line per depth of the width sweep; (c) per dynamics width the decoupled twin's
    distance (solid) beside the other-initialisation floor (dotted, same colour)."""
    import matplotlib.pyplot as plt

    use_style()
    L_w, n_L = fixed_axes(rows)
    wdepths = coupling_width_depths(rows) or [L_w]
    dwidths = dynamics_widths_of(rows)
    fig, axes = plt.subplots(1, 3, figsize=(10.5, 4.2))
    ax = axes[0]
    first_excess = None
    for i, L in enumerate(wdepths):
        xs, m = _coupling_lines(ax, rows, "width", fluctuation=(i == 0), color_index=2 * i,
                                label_suffix=f", L = {L}" if len(wdepths) > 1 else "", depth=L)
        if first_excess is None and len(m) and m[0] > 0:
            first_excess = (xs, float(m[0]))
    if first_excess is not None:
        power_guide(ax, first_excess[0], first_excess[1], WIDTH_CLAIM, "claim ∝ 1/n")
    ax.set(xlabel="width n", ylabel="forward/backward coupling at init",
           title="(a) coupling vs width" + (f", L = {L_w}" if len(wdepths) == 1 else ""))
    log_axes(ax, _ticks(ax))
    ax.legend(frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.16), fontsize="small")
    ax = axes[1]
    _coupling_lines(ax, rows, "depth", width=n_L)
    xo, mo, eo = _band(rows, "backward_overlap", "depth", width=n_L)
    loglog_line(ax, xo, mo, eo, color=color_for("trajectory", 2), label="cos(g₀, g̃₀) true vs decoupled", ls="-.",
                marker="^")
    ax.set(xlabel="depth L", title=f"(b) coupling vs depth, n = {n_L}")
    log_axes(ax, _ticks(ax))
    ax.legend(frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.16), fontsize="small")
    ax = axes[2]
    first = None
    for i, n in enumerate(dwidths):
        c = color_for(f"width{n}", 2 * i)
        xs, m, e = _band(rows, "func_dist_tracking", "depth", width=n)
        loglog_line(ax, xs, m, e, color=c, label=f"decoupled twin, n = {n}", marker="o")
        xr, mr, er = _band(rows, "func_dist_reinit", "depth", width=n)
        if xr:
            loglog_line(ax, xr, mr, er, color=c, label=f"other init (floor), n = {n}", ls=":", marker="D")
        if first is None and len(m) and m[0] > 0:
            first = (xs, float(m[0]))
    if dwidths:
        xg, gap = final_loss_gap(rows, "tracking", dwidths[-1])
        if xg:
            loglog_line(ax, xg, gap, color=color_for("gap", 4), label=f"test-loss gap (decoupled), n = {dwidths[-1]}",
                        ls="-.", marker="x")
    if first is not None:
        power_guide(ax, first[0], first[1], DEPTH_CLAIM, "claim ∝ L⁻²")
    ax.set(xlabel="depth L", ylabel="‖f_twin − f‖ / ‖f − f₀‖ after training", title="(c) effect on the dynamics")
    log_axes(ax, _ticks(ax))
    ax.legend(frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.16), fontsize="small")
    fig.subplots_adjust(wspace=0.3, bottom=0.36)
    return save_figure(fig, Path(out) / "weight_reuse")


__all__ = ["draw"]

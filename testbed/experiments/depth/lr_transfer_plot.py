"""Figures of the ``lr_transfer`` sub-study, drawn from its ``results.csv`` rows only: ``lr_curves`` (validation loss vs
``η``, one curve per depth, a panel per task × variant) and ``optimal_lr`` (``η*`` vs ``L``, log–log, one line per
variant, drift exponent in the legend)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from testbed.experiments.depth.lr_transfer import (
    SELECT_ON,
    aggregate_loss,
    family_key,
    optima,
    transfer,
    variant_label,
)
from testbed.experiments.depth.lr_transfer_lanes import LOSS_NAMES
from testbed.results import is_true

CLIP_DECADES = 1e4  # lr_curves panels show losses up to this factor above the panel's best (the rest is clipped)


def draw(rows: list[dict[str, Any]], out: Path) -> list[Path]:
    """Both figures from the per-run rows (typed: see ``lr_transfer._normalise``); returns the PNG + PDF paths."""
    import matplotlib.pyplot as plt
    from matplotlib.transforms import blended_transform_factory

    from testbed.plotting import color_for, save_figure, use_style

    use_style()
    opt_rows = optima(rows)
    tr = {family_key(r): r for r in transfer(rows, opt_rows)}
    tasks = list(dict.fromkeys(str(r["task"]) for r in rows))
    keys = list(dict.fromkeys((str(r["variant"]), int(r["block_depth"])) for r in rows))
    depths = sorted({int(r["n_layers"]) for r in rows})
    colors = {L: color_for(f"L={L}", i) for i, L in enumerate(depths)}
    lr_lo, lr_hi = min(float(r["lr"]) for r in rows), max(float(r["lr"]) for r in rows)
    paths: list[Path] = []

    # ---- loss vs lr, one panel per task × variant
    nr, nc = len(tasks), len(keys)
    fig, axes = plt.subplots(nr, nc, figsize=(2.1 * nc + 0.4, 2.0 * nr + 0.3), squeeze=False, sharex=True)
    for i, task in enumerate(tasks):
        for j, (v, b) in enumerate(keys):
            ax = axes[i][j]
            sel = [r for r in rows if str(r["task"]) == task and str(r["variant"]) == v and int(r["block_depth"]) == b]
            if not sel:
                ax.set_visible(False)
                continue
            corr = float(sel[0]["correction"])
            top = blended_transform_factory(ax.transData, ax.transAxes)
            for L in depths:
                at_L = [r for r in sel if int(r["n_layers"]) == L]
                lrs = sorted({float(r["lr"]) for r in at_L})
                agg = np.array([aggregate_loss([float(r[SELECT_ON]) for r in at_L if float(r["lr"]) == lr])
                                for lr in lrs])
                ok = np.isfinite(agg)
                ax.plot(np.array(lrs)[ok], agg[ok], marker="o", ms=2.5, lw=1, color=colors[L], label=f"L={L}")
                bad = [lr for lr, a in zip(lrs, agg, strict=True) if not np.isfinite(a)]
                if bad:
                    ax.scatter(bad, [0.97] * len(bad), marker="x", s=14, color=colors[L], transform=top,
                               clip_on=False)
                o = next((r for r in opt_rows if family_key(r) == (task, v, b) and int(r["n_layers"]) == L), None)
                if o is not None and math.isfinite(o["optimal_loss"]):
                    ax.plot([o["optimal_lr"]], [o["optimal_loss"]], marker="*", ms=7, color=colors[L],
                            mec="k", mew=0.4, ls="none")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlim(lr_lo / 1.5, lr_hi * 1.5)  # every grid lr, diverged ones (× at the top) included
            finite = [float(r[SELECT_ON]) for r in sel if math.isfinite(float(r[SELECT_ON]))]
            if finite and max(finite) > CLIP_DECADES * min(finite):  # a blown-up (finite) loss would flatten the rest
                ax.set_ylim(top=CLIP_DECADES * min(finite))
            t = tr.get((task, v, b))
            sub = "" if t is None else f"\nspread {t['spread_octaves']:.1f} oct, α={t['drift_exponent']:+.2f}"
            ax.set_title(f"{task}: {variant_label(v, b, corr)}{sub}")
            if i == nr - 1:
                ax.set_xlabel("base learning rate η")
            if j == 0:
                ax.set_ylabel(f"validation {LOSS_NAMES[task]}")
    axes[0][0].legend(frameon=False, fontsize=6, handlelength=1.2)
    fig.text(0.995, 0.001, "★ parabola-refined optimum, × diverged", ha="right", va="bottom", fontsize=6)
    fig.tight_layout()
    paths += save_figure(fig, out / "lr_curves")

    # ---- optimal lr vs L, one panel per task
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.6 * len(tasks), 3.4), squeeze=False)
    grid = sorted({float(r["lr"]) for r in rows})
    for i, task in enumerate(tasks):
        ax = axes[0][i]
        for j, (v, b) in enumerate(keys):
            sel = sorted((r for r in opt_rows if family_key(r) == (task, v, b)), key=lambda r: int(r["n_layers"]))
            if not sel:
                continue
            c = color_for(f"{v}-{b}", j)
            ls = "-" if b == 1 else "--"
            Ls = [int(r["n_layers"]) for r in sel]
            eta = [float(r["optimal_lr"]) for r in sel]
            t = tr[(task, v, b)]
            ax.plot(Ls, eta, color=c, ls=ls, lw=1.2,
                    label=f"{variant_label(v, b, float(sel[0]['correction']))} (α={t['drift_exponent']:+.2f})")
            for L, e, r in zip(Ls, eta, sel, strict=True):
                edge = is_true(r["at_edge"])
                ax.plot([L], [e], marker="o", ms=4, color=c, mfc="white" if edge else c, ls="none")
        for g in (grid[0], grid[-1]):
            ax.axhline(g, color="0.7", lw=0.6, ls=":", zorder=0)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log", base=2)
        ax.set_xticks(depths, [str(L) for L in depths])
        ax.set_xlabel("depth L")
        ax.set_ylabel("optimal base learning rate η*")
        ax.set_title(f"{task}: η*(L)\n(hollow: optimum on the grid edge; dotted: grid range)")
        ax.legend(frameon=False, fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)
    fig.tight_layout()
    paths += save_figure(fig, out / "optimal_lr")
    return paths


__all__ = ["CLIP_DECADES", "draw"]

"""Figures of the law-recovery study, drawn from a results folder only (tables, curves, checkpoints).

* :func:`portraits` — phase portraits of f* and of each objective's student, consistency curves (``law_recovery``);
* :func:`error_panels` — endpoint / law / interior errors per system, objective and student in both regimes
  (``law_error``);
* :func:`consistency_vs_depth` — consistency excess over the true law's floor vs the trained depth L;
* :func:`aliasing` — the linear spiral's aliased law: states between 0 and T, and the learned rotation rate.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

import systems
from testbed.plotting import color_for, consistency_panel, save_figure, use_style
from testbed.report import is_finite_number
from testbed.results import read_csv

#: the student drawn in the portraits and the aliasing example
MAIN_STUDENT = "residual"
STUDENT_MARKERS = {"residual": "o", "residual_untied": "s", "neural_ode": "^"}


def main_student(rows: list[dict[str, Any]]) -> str:
    """The student the portraits and the aliasing example show: the tied residual one if the rows have it, else the
    first one named."""
    names = list(dict.fromkeys(r["student"] for r in rows))
    return MAIN_STUDENT if MAIN_STUDENT in names or not names else names[0]


def load_models(out: Path, L: int, student: str = MAIN_STUDENT) -> dict[tuple[str, str], list[tuple[int, Any]]]:
    """``(system, objective) → [(seed, model), …]`` (sorted by seed): the equal-budget students of ``out/checkpoints``
    at depth ``L``."""
    from testbed.train import load_student

    found: dict[tuple[str, str], list[tuple[int, Any]]] = {}
    for p in sorted((out / "checkpoints").glob("*/checkpoint.pt")):
        model, ck = load_student(p)
        ex = ck["extra"]
        if ex.get("student", MAIN_STUDENT) != student or int(ex.get("n_layers", model.n_layers)) != L:
            continue
        found.setdefault((ex["system"], ex["objective"]), []).append((int(ex["seed"]), model.double()))
    return {k: sorted(v, key=lambda sv: sv[0]) for k, v in found.items()}


# ----------------------------------------------------------------------------------------------- portraits
def _grid(system, n: int = 21) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
    lo = np.array(system.ood_low[:2], dtype=float)
    hi = np.array(system.ood_high[:2], dtype=float)
    xs, ys = np.linspace(lo[0], hi[0], n), np.linspace(lo[1], hi[1], n)
    gx, gy = np.meshgrid(xs, ys)
    pts = np.zeros((n * n, system.dim))
    if system.dim > 2:  # slice through the middle of the ID box in the other coordinates
        pts[:] = 0.5 * (np.array(system.id_low) + np.array(system.id_high))
    pts[:, 0], pts[:, 1] = gx.ravel(), gy.ravel()
    return gx, gy, torch.from_numpy(pts)


def _portrait(ax, system, f, title: str, norm=None):
    """Streamlines of ``f(0, x)`` over the OOD box, coloured by ``log10 |f|`` (shared ``norm`` per system)."""
    from matplotlib.colors import Normalize
    from matplotlib.patches import Rectangle

    gx, gy, pts = _grid(system)
    with torch.no_grad():
        v = f(0.0, pts.to(torch.float64)).double().numpy()
    u, w = v[:, 0].reshape(gx.shape), v[:, 1].reshape(gx.shape)
    logspeed = np.log10(np.hypot(u, w) + 1e-12)
    if norm is None:
        norm = Normalize(float(np.percentile(logspeed, 2)), float(logspeed.max()))
    ax.streamplot(gx, gy, u, w, color=logspeed, cmap="viridis", norm=norm, density=0.7, linewidth=0.6,
                  arrowsize=0.6)
    lo, hi = system.id_low, system.id_high
    ax.add_patch(Rectangle((lo[0], lo[1]), hi[0] - lo[0], hi[1] - lo[1], fill=False, ls="--", lw=0.8, ec="0.3"))
    ax.set_title(title, fontsize=8)
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    ax.set_xlim(gx.min(), gx.max())
    ax.set_ylim(gy.min(), gy.max())
    return norm


def portraits(out: Path, L: int, who: str = MAIN_STUDENT) -> list[Path]:
    """Teacher and student portraits plus the consistency curves, one row per system (tied residual, budget)."""
    import matplotlib.pyplot as plt

    use_style()
    models = load_models(out, L, who)
    curves = [r for r in read_csv(out / "consistency.csv") if int(r.get("n_layers") or L) == L
              and r.get("student", MAIN_STUDENT) in ("teacher", who)
              and r.get("regime") in ("", "budget", None)]
    sys_names = list(dict.fromkeys(r["system"] for r in curves))
    objectives = [o for o in dict.fromkeys(r["objective"] for r in curves) if o != "teacher"]
    n_cols = 3 + len(objectives)
    fig, axes = plt.subplots(len(sys_names), n_cols, figsize=(1.9 * n_cols, 1.9 * len(sys_names) + 0.8),
                             layout="constrained", squeeze=False)
    for i, sname in enumerate(sys_names):
        system = systems.get_system(sname)
        norm = _portrait(axes[i, 0], system, system.vector_field, f"{sname}: $f^*$")
        for j, obj in enumerate(objectives):
            got = models.get((sname, obj))
            if got:
                _portrait(axes[i, 1 + j], system, got[0][1].vector_field, f"{obj} $f_\\theta$", norm)
            else:
                axes[i, 1 + j].set_axis_off()
        sys_curves = [r for r in curves if r["system"] == sname]
        series = ["teacher"] + objectives
        consistency_panel(axes[i, -2], sys_curves, series, "endpoint_change", "rel. change vs $L$-step net",
                          "solver consistency", legend=(i == 0))
        consistency_panel(axes[i, -1], sys_curves, series, "target_error", "rel. error vs $\\varphi_T$",
                          "re-integrated endpoint")
    fig.suptitle(f"Law recovery ({who} student, L = {L}, equal budget). Portraits: streamlines coloured by "
                 "$\\log_{10}|f|$, dashed box = training region; curves: grey line = trained depth, dotted = dopri5.")
    return save_figure(fig, out / "law_recovery")


# ----------------------------------------------------------------------------------------------- error panels
ERROR_METRICS = [("endpoint_error", "endpoint error"), ("law_error_id", "law error (ID)"),
                 ("law_error_ood", "law error (OOD)"), ("interior_error", "interior-state error")]


def error_panels(out: Path, rows: list[dict[str, Any]], L: int) -> list[Path]:
    """Rows = regimes, columns = metrics; x = system, colour = objective, marker = student (summary.csv)."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    use_style()
    summary = [s for s in read_csv(out / "summary.csv") if int(s["n_layers"]) == L]
    regimes = [g for g in ("budget", "matched") if any(s["regime"] == g for s in summary)]
    if not regimes:
        return []
    sys_names = list(dict.fromkeys(s["system"] for s in summary))
    objectives = list(dict.fromkeys(s["objective"] for s in summary))
    students = list(dict.fromkeys(s["student"] for s in summary))
    n_slots = len(objectives) * len(students)
    fig, axes = plt.subplots(len(regimes), len(ERROR_METRICS), figsize=(3.2 * len(ERROR_METRICS),
                             2.6 * len(regimes) + 0.6), layout="constrained", squeeze=False)
    for i, regime in enumerate(regimes):
        for j, (metric, label) in enumerate(ERROR_METRICS):
            ax = axes[i, j]
            for si, sname in enumerate(sys_names):
                for oi, obj in enumerate(objectives):
                    for ti, st in enumerate(students):
                        s = next((r for r in summary if (r["system"], r["regime"], r["objective"], r["student"])
                                  == (sname, regime, obj, st)), None)
                        if s is None or not is_finite_number(s.get(f"{metric}_mean")):
                            continue
                        x = si + 0.8 * ((oi * len(students) + ti + 0.5) / n_slots - 0.5)
                        ci = s.get(f"{metric}_ci95")
                        ax.errorbar(x, s[f"{metric}_mean"], yerr=ci if is_finite_number(ci) else None,
                                    marker=STUDENT_MARKERS.get(st, "o"), ms=3.5, lw=0.8, ls="none",
                                    color=color_for(obj, oi))
                if regime == "matched" and j == 0:
                    got = [r for r in summary if r["system"] == sname and r["regime"] == "matched"]
                    n_in = sum(int(r["n_reached"] or 0) for r in got)
                    n_all = sum(int(r["n_trained"] or 0) for r in got)
                    ax.annotate(f"{n_in}/{n_all}", (si, 0.0), xycoords=("data", "axes fraction"),
                                xytext=(0, 2), textcoords="offset points", ha="center", va="bottom", fontsize=6)
            ax.set_yscale("log")
            ax.set_xticks(range(len(sys_names)), sys_names, rotation=35, ha="right", fontsize=7)
            ax.set_ylabel(f"{label} (rel. L2)")
            ax.set_title(f"{'equal budget' if regime == 'budget' else 'matched endpoint'}: {label}", fontsize=8)
            ax.grid(axis="y", lw=0.3, alpha=0.5)
    handles = [Line2D([], [], color=color_for(o, k), marker="o", ls="none", label=o) for k, o in enumerate(objectives)]
    handles += [Line2D([], [], color="0.3", marker=STUDENT_MARKERS.get(s, "o"), ls="none", label=s) for s in students]
    fig.legend(handles=handles, loc="outside upper center", ncols=len(handles), frameon=False, fontsize=7)
    return save_figure(fig, out / "law_error")


# ----------------------------------------------------------------------------------------------- depth
def consistency_vs_depth(out: Path, rows: list[dict[str, Any]]) -> list[Path]:
    """Consistency excess vs trained depth L, one panel per system (tied residual, equal budget)."""
    import matplotlib.pyplot as plt

    from testbed.stats import summarize

    use_style()
    sel = [r for r in rows if r["regime"] == "budget" and r["student"] == MAIN_STUDENT]
    sys_names = [s for s in dict.fromkeys(r["system"] for r in sel)
                 if len({int(r["n_layers"]) for r in sel if r["system"] == s}) > 1]
    objectives = list(dict.fromkeys(r["objective"] for r in sel))
    if not sys_names:
        return []
    fig, axes = plt.subplots(1, len(sys_names), figsize=(3.4 * len(sys_names), 3.0), layout="constrained",
                             squeeze=False)
    for ax, sname in zip(axes[0], sys_names, strict=True):
        for k, obj in enumerate(objectives):
            pts = [r for r in sel if r["system"] == sname and r["objective"] == obj]
            Ls = sorted({int(r["n_layers"]) for r in pts})
            stats = [summarize([float(r["consistency_excess"]) for r in pts if int(r["n_layers"]) == L]) for L in Ls]
            ax.errorbar(Ls, [s.mean for s in stats], yerr=[s.half_width if s.n > 1 else 0 for s in stats],
                        marker="o", ms=3, lw=1, color=color_for(obj, k), label=obj)
        ax.axhline(0.0, color="0.3", lw=0.8, ls="--", label="true law $f^*$")
        ax.set_xscale("log", base=2)
        ax.set_yscale("symlog", linthresh=1e-3)
        ax.set_xlabel("trained depth $L$ (Euler steps on $[0, T]$)")
        ax.set_ylabel("consistency excess over $f^*$")
        ax.set_title(sname)
    axes[0, 0].legend(frameon=False, fontsize=7)
    return save_figure(fig, out / "consistency_vs_depth")


# ----------------------------------------------------------------------------------------------- aliasing
def rotation_rate(f, system, n: int = 400, seed: int = 0) -> float:
    """The rotation rate ``(M₂₁ − M₁₂)/2`` of the least-squares linear fit ``f(0, x) ≈ M x`` over ``n`` uniform
    points of the in-distribution box (for ``f* = A x`` with ``A = [[−a, −w], [w, −a]]`` this is exactly ``w``)."""
    gen = torch.Generator().manual_seed(seed)
    x = system.sample_id(n, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        y = f(0.0, x).double()
    M = torch.linalg.lstsq(x, y).solution.T          # y ≈ x Mᵀ
    return float(0.5 * (M[1, 0] - M[0, 1]))


def aliasing(out: Path, L: int, who: str = MAIN_STUDENT, x0: tuple[float, float] = (1.5, 0.0)) -> list[Path]:
    """The linear spiral's aliased law: states between 0 and T and each student's rotation rate."""
    import matplotlib.pyplot as plt

    use_style()
    system = systems.get_system("linear_spiral")
    from testbed.experiments.law_recovery import OBJECTIVES

    models = {obj: v for (s, obj), v in load_models(out, L, who).items() if s == "linear_spiral"}
    objectives = sorted(models, key=lambda o: (OBJECTIVES.index(o) if o in OBJECTIVES else len(OBJECTIVES), o))
    T, w = float(system.horizon), float(system.w)
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.3), layout="constrained")
    t = torch.linspace(0, T, 400, dtype=torch.float64)
    x = torch.tensor([x0], dtype=torch.float64)
    ref = system.flow(x, t)[:, 0].numpy()
    axes[0].plot(t.numpy(), ref[:, 0], color="0.2", lw=1.2, label="teacher $\\varphi_t$")
    axes[1].plot(ref[:, 0], ref[:, 1], color="0.2", lw=1.2, label="teacher")
    for k, obj in enumerate(objectives):
        model = models[obj][0][1]
        with torch.no_grad():
            states = model.trajectory(x)[:, 0].numpy()
        times = np.linspace(0, T, states.shape[0])
        c = color_for(obj, k)
        axes[0].plot(times, states[:, 0], marker="o", ms=2.5, lw=0.6, color=c, label=obj)
        axes[1].plot(states[:, 0], states[:, 1], marker="o", ms=2, lw=0.6, color=c, label=obj)
        rates = [rotation_rate(m.vector_field, system) for _, m in models[obj]]
        axes[2].plot([k] * len(rates), rates, "o", color=c, ms=4, alpha=0.8)
    axes[0].set_xlabel("time $t$")
    axes[0].set_ylabel("$x_1(t)$")
    axes[0].set_title(f"one test trajectory, $x_0$ = {x0}")
    axes[0].legend(frameon=False, fontsize=7)
    axes[1].set_xlabel("$x_1$")
    axes[1].set_ylabel("$x_2$")
    axes[1].set_title("phase plane (markers: layer states)")
    alias = w - 2 * math.pi / T
    axes[2].axhline(w, color="0.2", lw=1, label=f"true rate $w$ = {w:g}")
    axes[2].axhline(alias, color="0.5", lw=1, ls="--", label=f"alias $w - 2\\pi/T$ = {alias:.3g}")
    axes[2].set_xticks(range(len(objectives)), objectives, rotation=20)
    axes[2].set_ylabel("learned rotation rate (1/time)")
    axes[2].set_title("rotation rate of $f_\\theta$ (one dot per seed)")
    axes[2].legend(frameon=False, fontsize=7)
    fig.suptitle(f"Aliasing on the linear spiral (T = {T:g}, {who} student, L = {L}): the same flow map at T, "
                 "a different law")
    return save_figure(fig, out / "aliasing")


__all__ = ["aliasing", "consistency_vs_depth", "error_panels", "load_models", "main_student", "portraits",
           "rotation_rate"]

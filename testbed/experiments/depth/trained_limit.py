"""Trained networks across depth: does training converge to a depth limit, and at what order? (paper B)

The ``convergence`` sub-study shows ``O(1/L)`` only for a fixed, smooth weight function — order 1 is guaranteed
there (forward Euler). This sub-study asks it of *trained* networks. Settings: ``cfg.trained_limit``
(:class:`Config`: ``depths``, ``parameterizations``) and the shared ``cfg.width``, ``cfg.steps``,
``cfg.batch_size``, ``cfg.lr``, ``cfg.flow_system``, ``cfg.n_train``, ``cfg.n_test``.

**One network per depth, everything else shared.** For every seed and parameterization ``p`` and every
``L ∈ depths`` a :class:`~testbed.students.classifier.ResidualNet` ``x ∈ R² → h_0 = embed(x) → h_L → head(h_L)``
with one-matrix blocks ``h_{l+1} = h_l + m_p(L)·(W_l tanh(h_l) + b_l)`` (width ``n``, untied, float32) is trained
on the flow map ``x ↦ φ_T(x)`` of ``cfg.flow_system`` (objective ``endpoint``, Adam with
:func:`testbed.parameterization.param_groups` of ``p``, cosine schedule, ``cfg.steps`` steps, the *same*
minibatch order at every depth). Shared across depths: the data, the embedding and read-out initialisation
(copied), and the branch weights through the **Brownian coupling** of the ``convergence`` sub-study — the finest
network's ``L_max`` i.i.d. ``N(0, 1/n)`` draws, summed in consecutive blocks of ``k = L_max/L`` and divided by
``√k`` (:func:`~testbed.experiments.depth.convergence.brownian_coarsen`), so every depth's initialisation is in law
an i.i.d. one and all are discretisations of one Brownian weight path. Under Depth-μP (``m = 1/√L``) the networks
at initialisation then converge pathwise with order ½ (Euler–Maruyama); under SP (``m = 1``) no limit exists.
``init = "smooth"`` instead samples one smooth weight function — ``W(t)`` piecewise linear between ``n_anchors``
i.i.d. ``N(0, 1/n)`` anchors — at ``t_l = l/L`` (:func:`smooth_path`); with ODE scaling (``parameterizations =
("ode",)``, ``m = 1/L``) every depth is then forward Euler for one ODE and converges at order 1 at initialisation:
the regime in which the claim ``O(1/L)`` can hold after training.

**Measured** on the ``N`` test inputs, after training (``stage = "trained"``) and, as the baseline the coupling
alone gives, at initialisation (``stage = "init"``):

* ``fn_step``   ``‖f_L − f_{2L}‖ / ‖f_{2L}‖`` — the successive difference (RMS over inputs and outputs); its
  log-log slope against ``L`` is ``−order`` with no bias from a finite reference (the primary fit);
* ``fn_dist``   ``‖f_L − f_{L_max}‖ / ‖f_{L_max}‖`` — distance to the deepest network (``L < L_max``);
* ``fn_rich``   the distance to the Richardson-extrapolated limit
  ``f_∞ ≈ f_{L_max} + (f_{L_max} − f_{L_max/2}) / (2^q − 1)``, ``q`` the fitted order of ``fn_step`` (all ``L``);
* ``feat_step`` the successive difference of the residual stream on the coarse layer-time grid
  ``s_k = k/K`` (``K = min(depths)``), as ``fn_step``;
* ``test_loss`` relative MSE of ``f_L`` against ``φ_T`` (per depth), and ``diverged`` (1: the loss became non-finite).

**Fits and verdicts** (declared here, before any run): the order of ``fn_step`` and ``feat_step`` per
parameterization and stage, ``order = −slope`` of ``log value`` on ``log L``, its 95% interval by bootstrap over
seeds (over points with one seed), R² and the number of points (:func:`testbed.stats.loglog_fit_clustered`). Verdict
(:func:`verdict`) for Depth-μP against paper B's ``O(1/L)``: *reproduced* if the interval contains 1 and lies
above 0 and excludes ½; *converges at order ½ (Euler–Maruyama), not 1/L* if it holds ½ but not 1 (the order the
coupled initialisation alone has); *undecided* if it holds both; *slower* / *faster than 1/L* otherwise above 0;
*no convergence shown* if it reaches 0. For SP (the control, no limit expected): *no limit (as expected)* if the
interval reaches 0 or lies below it, else *converges (unexpected)*.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

import systems
from testbed.config import ConfigError, check_choice, check_positive_ints
from testbed.experiments.common import make_splits
from testbed.experiments.depth.convergence import brownian_coarsen, grid_states, relative_distance, set_block_weights
from testbed.experiments.depth.features import DTYPE, train_one
from testbed.objectives import relative_mse
from testbed.plotting import PALETTE, log_axes, power_guide, save_figure, use_style
from testbed.results import read_csv, write_csv
from testbed.seeding import generator
from testbed.stats import SlopeFit, loglog_fit_clustered, summarize
from testbed.students.classifier import ResidualNet

Tensor = torch.Tensor
COLUMNS = ["parameterization", "stage", "L", "L_ref", "seed", "quantity", "value"]
FITTED = ("fn_step", "feat_step", "fn_dist", "fn_rich")
#: the claim each parameterization is judged against (order of convergence in L)
CLAIMED_ORDER = {"depth_mup": 1.0, "ode": 1.0}
#: the strong order of Euler–Maruyama: what the Brownian-coupled initialisation alone converges at
EM_ORDER = 0.5
PARAMETERIZATIONS = ("depth_mup", "standard", "ode")
#: how the depths' initialisations are coupled: one Brownian weight path, or one smooth weight function W(t)
INITS = ("brownian", "smooth")


@dataclasses.dataclass
class Config:
    """Settings of the ``trained_limit`` sub-study (``--set trained_limit.depths=4,8,16,32``)."""

    depths: tuple[int, ...] = (4, 8, 16, 32, 64, 128, 256)
    parameterizations: tuple[str, ...] = ("depth_mup", "standard")
    init: str = "brownian"   # "smooth": W_l = W(l/L), W(t) piecewise linear between n_anchors i.i.d. anchors
    n_anchors: int = 4

    def __post_init__(self) -> None:
        self.depths = tuple(sorted(set(check_positive_ints("trained_limit.depths", self.depths))))
        if len(self.depths) < 3:
            raise ConfigError(f"trained_limit.depths needs at least three depths, got {self.depths}")
        if any(b != 2 * a for a, b in zip(self.depths, self.depths[1:], strict=False)):
            raise ConfigError(f"trained_limit.depths must double from one to the next (4, 8, 16, …), got "
                              f"{self.depths}")
        if not self.parameterizations:
            raise ConfigError("trained_limit.parameterizations must name at least one")
        for p in self.parameterizations:
            check_choice("trained_limit.parameterizations", p, PARAMETERIZATIONS)
        check_choice("trained_limit.init", self.init, INITS)
        if self.n_anchors < 2:
            raise ConfigError(f"trained_limit.n_anchors must be ≥ 2, got {self.n_anchors}")


# ---------------------------------------------------------------------------------------------- networks
def smooth_path(anchors: Tensor, L: int) -> Tensor:
    """``W(l/L)``, ``l = 0..L−1``, of the piecewise-linear function through ``K`` anchors at ``t_j = j/(K−1)``."""
    K = anchors.shape[0]
    pos = torch.arange(L, dtype=torch.float64) / L * (K - 1)
    i = pos.floor().long().clamp(max=K - 2)
    frac = (pos - i).reshape(-1, *([1] * (anchors.dim() - 1)))
    return anchors[i] * (1 - frac) + anchors[i + 1] * frac


def coupled_networks(cfg, parameterization: str, seed: int) -> dict[int, ResidualNet]:
    """One untied one-matrix-block ResidualNet per depth, initialised as one Brownian weight path (``init =
    "brownian"``, see module doc) or as one smooth weight function sampled at ``t_l = l/L`` (``"smooth"``: every
    depth is a forward-Euler discretisation of one ODE under ODE scaling); embedding and read-out identical across
    depths."""
    c = cfg.trained_limit
    depths, n = c.depths, cfg.width
    gen = generator(seed, 31)
    rows = depths[-1] if c.init == "brownian" else c.n_anchors
    W = torch.randn(rows, n, n, generator=gen, dtype=torch.float64) / math.sqrt(n)
    b = torch.randn(rows, n, generator=gen, dtype=torch.float64) / math.sqrt(n)
    coarsen = brownian_coarsen if c.init == "brownian" else smooth_path
    torch.manual_seed(seed)
    ends = ResidualNet(2, 2, dim=n, n_layers=1, width=n, hidden_layers=0, branch_scaling=parameterization)
    nets = {}
    for L in depths:
        net = ResidualNet(2, 2, dim=n, n_layers=L, horizon=1.0, width=n, hidden_layers=0, tied=False,
                          branch_scaling=parameterization)
        net.embed.load_state_dict(ends.embed.state_dict())
        net.head.load_state_dict(ends.head.state_dict())
        set_block_weights(net.flow, coarsen(W, L), coarsen(b, L))
        nets[L] = net.to(DTYPE)
    return nets


@torch.no_grad()
def outputs(net: ResidualNet, x: Tensor, n_grid: int) -> tuple[Tensor, Tensor]:
    """``(f(x), residual stream on the coarse grid s_k = k/n_grid)``."""
    return net(x), grid_states(net.flow, net.initial_state(x), n_grid)


def measure(outs: dict[int, tuple[Tensor, Tensor]]) -> list[dict[str, Any]]:
    """``fn_step``, ``feat_step`` and ``fn_dist`` rows from every depth's outputs."""
    depths = sorted(outs)
    top = depths[-1]
    rows = []
    for L in depths[:-1]:
        rows.append({"L": L, "L_ref": 2 * L, "quantity": "fn_step", "value": relative_distance(outs[L][0],
                                                                                               outs[2 * L][0])})
        rows.append({"L": L, "L_ref": 2 * L, "quantity": "feat_step", "value": relative_distance(outs[L][1],
                                                                                                 outs[2 * L][1])})
        rows.append({"L": L, "L_ref": top, "quantity": "fn_dist", "value": relative_distance(outs[L][0],
                                                                                             outs[top][0])})
    return rows


def richardson(fs: dict[int, Tensor], order: float) -> list[dict[str, Any]]:
    """``fn_rich`` rows: distance of every ``f_L`` to ``f_∞ ≈ f_top + (f_top − f_{top/2}) / (2^order − 1)``
    (none unless ``order > 0``)."""
    if not (math.isfinite(order) and order > 0):
        return []
    top = max(fs)
    f_top, f_half = fs[top].double(), fs[top // 2].double()
    limit = f_top + (f_top - f_half) / (2.0 ** order - 1.0)
    return [{"L": L, "L_ref": "richardson", "quantity": "fn_rich", "value": relative_distance(fs[L], limit)}
            for L in sorted(fs)]


# ---------------------------------------------------------------------------------------------- run
def run(cfg, out: Path) -> list[dict[str, Any]]:
    """Train the coupled networks of every parameterization × seed; write ``fits.csv`` and ``results.csv``
    (last) and the figure. Returns the rows of ``results.csv``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    c = cfg.trained_limit
    system = systems.get_system(cfg.flow_system)
    train_data, test_data, _ = make_splits(system, cfg.n_train, cfg.n_test, 1)
    x, y = test_data.x0.to(DTYPE), test_data.endpoints.to(DTYPE)
    K = c.depths[0]
    rows: list[dict[str, Any]] = []
    for p in c.parameterizations:
        fns: dict[tuple[str, int], dict[int, Tensor]] = {}  # (stage, seed) → L → f_L(x): for the Richardson limit
        for seed in cfg.seeds:
            nets = coupled_networks(cfg, p, int(seed))
            common = {"parameterization": p, "seed": int(seed)}
            init = {L: outputs(net, x, K) for L, net in nets.items()}
            rows += [{**common, "stage": "init", **r} for r in measure(init)]
            fns[("init", int(seed))] = {L: o[0] for L, o in init.items()}
            trained, ok = {}, True
            for L, net in nets.items():
                ok = train_one(cfg, net, p, None, train_data, int(seed))
                rows.append({**common, "stage": "trained", "L": L, "L_ref": "", "quantity": "diverged",
                             "value": float(not ok)})
                if not ok:  # no comparison across depth for this seed (the other depths are not trained)
                    break
                trained[L] = outputs(net, x, K)
                rows.append({**common, "stage": "trained", "L": L, "L_ref": "", "quantity": "test_loss",
                             "value": float(relative_mse(trained[L][0], y))})
            if ok:
                rows += [{**common, "stage": "trained", **r} for r in measure(trained)]
                fns[("trained", int(seed))] = {L: o[0] for L, o in trained.items()}
        for stage in ("init", "trained"):
            order = -fit(rows, p, stage, "fn_step").slope
            for (st, seed), fs in fns.items():
                if st == stage:
                    rows += [{"parameterization": p, "seed": seed, "stage": stage, **r}
                             for r in richardson(fs, order)]
    write_csv(out / "fits.csv", fit_table(rows))
    write_csv(out / "results.csv", rows, COLUMNS)
    return rows


def fit(rows: list[dict[str, Any]], parameterization: str, stage: str, quantity: str) -> SlopeFit:
    """Log-log fit of ``quantity`` against ``L`` over seeds, clustered bootstrap over seeds."""
    pts = [(float(r["L"]), float(r["value"]), r["seed"]) for r in rows
           if r["parameterization"] == parameterization and r["stage"] == stage and r["quantity"] == quantity]
    if not pts:
        return SlopeFit(math.nan, math.nan, math.nan, math.nan, 0)
    xs, ys, units = zip(*pts, strict=True)
    return loglog_fit_clustered(xs, ys, units)


def verdict(parameterization: str, order_lo: float, order_hi: float) -> str:
    """The declared verdict rule (module docstring) on the 95% interval ``[order_lo, order_hi]`` of the order."""
    if not (math.isfinite(order_lo) and math.isfinite(order_hi)):
        return "no fit"
    if parameterization in CLAIMED_ORDER:
        claimed = CLAIMED_ORDER[parameterization]
        if order_lo <= 0:
            return "no convergence shown"
        has_claim, has_em = order_lo <= claimed <= order_hi, order_lo <= EM_ORDER <= order_hi
        if has_claim and has_em:
            return "converges; CI holds both order 1/2 and 1 (undecided)"
        if has_claim:
            return "reproduced"
        if has_em:
            return "converges at order 1/2 (Euler-Maruyama), not 1/L"
        return f"converges, {'slower' if order_hi < claimed else 'faster'} than 1/L"
    return "no limit (as expected)" if order_lo <= 0 else "converges (unexpected)"


def fit_table(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Order of every fitted quantity per parameterization × stage, with its interval, R², points and verdict."""
    out = []
    for p in dict.fromkeys(r["parameterization"] for r in rows):
        for stage in ("init", "trained"):
            for q in FITTED:
                f = fit(rows, p, stage, q)
                if f.n == 0:
                    continue
                order, lo, hi = -f.slope, -f.hi, -f.lo
                out.append({"parameterization": p, "stage": stage, "quantity": q, "order": order,
                            "order_lo": lo, "order_hi": hi, "r2": f.r2, "n_points": f.n,
                            "verdict": verdict(p, lo, hi) if q == "fn_step" else ""})
    return out


def summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The fitted orders (``fn_step``, ``feat_step``; init and trained) with interval and verdict, per
    parameterization."""
    out = []
    for f in fit_table(rows):
        if f["quantity"] not in ("fn_step", "feat_step"):
            continue
        claim = (f"order of convergence in L of the {'function' if f['quantity'] == 'fn_step' else 'features'} "
                 f"({f['stage']}): {f['order']:.3g} [{f['order_lo']:.3g}, {f['order_hi']:.3g}], R² = {f['r2']:.3f}, "
                 f"n = {f['n_points']}")
        if f["verdict"]:
            claim += f"; verdict: {f['verdict']}"
        out.append({"key": f"order_{f['quantity']}_{f['parameterization']}_{f['stage']}", "value": f["order"],
                    "lo": f["order_lo"], "hi": f["order_hi"], "n": f["n_points"], "verdict": f["verdict"],
                    "claim": claim})
    return out


# ---------------------------------------------------------------------------------------------- figure
def plot(out: Path) -> list[Path]:
    """``trained_limit.png/.pdf``: successive differences of the function and of the features vs L (log–log, init
    dashed, trained solid, mean ± 95% CI over seeds, fitted order in the legend) and the test loss vs L."""
    import matplotlib.pyplot as plt

    out = Path(out)
    rows = read_csv(out / "results.csv")
    use_style()
    params = list(dict.fromkeys(r["parameterization"] for r in rows))
    Ls = sorted({int(r["L"]) for r in rows})
    fig, axes = plt.subplots(1, 3, figsize=(9.6, 3.4), layout="constrained")
    fits = {(f["parameterization"], f["stage"], f["quantity"]): f for f in read_csv(out / "fits.csv")}
    for ax, q, ylabel in ((axes[0], "fn_step", "‖f_L − f_2L‖ / ‖f_2L‖"),
                          (axes[1], "feat_step", "‖h_L − h_2L‖ / ‖h_2L‖ (grid)"),
                          (axes[2], "test_loss", "test loss (relative MSE)")):
        for i, p in enumerate(params):
            for stage, ls in (("init", "--"), ("trained", "-")):
                sel = [r for r in rows if r["parameterization"] == p and r["stage"] == stage and r["quantity"] == q]
                if not sel:
                    continue
                xs = sorted({int(r["L"]) for r in sel})
                sums = [summarize([r["value"] for r in sel if int(r["L"]) == L]) for L in xs]
                keep = [(L, s) for L, s in zip(xs, sums, strict=True) if s.n and s.mean > 0]
                if not keep:
                    continue
                f = fits.get((p, stage, q))
                tag = f" (order {f['order']:.2f})" if f else ""
                ax.errorbar([L for L, _ in keep], [s.mean for _, s in keep],
                            yerr=[[min(s.mean - s.lo, 0.95 * s.mean) if np.isfinite(s.lo) else 0 for _, s in keep],
                                  [s.hi - s.mean if np.isfinite(s.hi) else 0 for _, s in keep]],
                            color=PALETTE[i % len(PALETTE)], ls=ls, marker="o", ms=3, lw=1, capsize=2,
                            label=f"{p}, {stage}{tag}")
        log_axes(ax, Ls)
        ax.set_xlabel("depth L")
        ax.set_ylabel(ylabel)
        if q != "test_loss":  # guides from the first parameterization's trained curve at the smallest depth
            first = [float(r["value"]) for r in rows if r["quantity"] == q and int(r["L"]) == Ls[0]
                     and r["stage"] == "trained" and r["parameterization"] == params[0]]
            y0 = float(np.mean(first)) if first else 0.0
            power_guide(ax, Ls[:-1], y0, -1.0, "slope −1 (1/L)")
            power_guide(ax, Ls[:-1], 0.7 * y0, -0.5, "slope −½ (0.7× start)")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncol=3, fontsize=6)
    fig.suptitle("Trained networks across depth (initialisations coupled across L as one weight path; shared data "
                 "order)", fontsize=9)
    paths = save_figure(fig, out / "trained_limit")
    plt.close(fig)
    return paths

"""Trajectory convergence of residual networks as depth ``L → ∞`` (paper B; Tensor Programs VI).

Two cases, both on the residual stream ``h_{l+1} = h_l + m·g_l(h_l)``, ``l = 0..L−1``, layer time ``t_l = l·T/L``
(``T = 1``), inputs ``x_i ~ N(0, I_n)`` (``i = 1..N``, ``N = n_inputs``, ``n = width``; the settings are the
fields of :class:`Config`, ``cfg.convergence`` of the depth-scaling config, set with ``--set convergence.FIELD=…``):

**(a) smooth weights** (``case = "smooth"``). One :class:`~testbed.students.smooth.SmoothResidualStudent` per
seed and block depth (``g = W(t)·tanh(h) + b(t)`` for block depth 1, ``W₂(t) tanh(W₁(t) h + b₁(t)) + b₂(t)``
for block depth 2; hidden width ``hidden``, ``anchors`` anchors, ODE scaling ``m = T/L``, float64), discretised at
every ``L ∈ depths`` and at the reference depth ``L_ref = REF_FACTOR · max(depths)`` (the "finest network").
All of them are forward Euler for one ODE ``dh/dt = g(t, h; W(t))``, so

    ``dist_traj(L) = sqrt( Σ_{k=1..K} Σ_i ‖h^L(s_k; x_i) − h^ref(s_k; x_i)‖² / Σ_{k,i} ‖h^ref(s_k; x_i)‖² )``

on the common coarse grid ``s_k = k·T/K``, ``K = min(depths)``, and its endpoint-only version ``dist_end``
(``k = K`` only) should fall like ``C·(1/L − 1/L_ref)``: observed order 1 (:func:`loglog_slope`).

**(b) diffusive limit** (``case = "iid"``, block depth 1). An untied
:class:`~testbed.students.residual.ResidualStudent` with ``branch_scaling="depth_mup"`` (``m = 1/√L``) whose branch
parameters are i.i.d. Gaussian, ``W_l, b_l ~ N(0, 1/n)`` entrywise (unit gain: ``init_scale = 1``), so that
``h_{l+1} = h_l + (W_l tanh(h_l) + b_l)/√L`` is an Euler–Maruyama step of an SDE driven by matrix-valued
Brownian motion. For each seed, ``D = n_draws`` independent draws of the finest network
(``L_max = max(depths)``) are made and every coarser network is obtained from it by the **Brownian
coupling** ``W^{(L)}_l = Σ_{j∈block l} W^{(L_max)}_j / √(L_max/L)`` (same for ``b``): each coarse network is then
itself an exact i.i.d. ``N(0, 1/n)`` draw (in law), and the depth-``L`` weights of draw ``d`` are
``(W_{2l} + W_{2l+1})/√2`` of its depth-``2L`` weights. Quantities (``L_ref`` column says what is compared):

* ``stat_mean``  ``E_d[q_d(L)]`` with ``q_d = (1/N) Σ_i ‖h_T(x_i)‖²/n`` (mean over draws ``d``);
* ``stat_std``   the spread ``std_d q_d(L)`` over draws (population std);
* ``stat_mean_err``, ``stat_std_err``  ``|stat(L) − stat(L_max)|`` (``L < L_max``): weak convergence;
* ``path_dist_independent``  mean over draws of the relative L2 distance (inputs × coarse grid, as
  ``dist_traj``) between draw ``d`` at depth ``L`` and draw ``(d+1) mod D`` at the next depth ``L'``: two
  *independent* networks. Stays ``O(1)``: individual paths have no limit;
* ``path_dist_coupled``  the same between draw ``d`` at ``L`` and the *same* draw at ``L'`` (Brownian coupling):
  strong convergence, order ≈ 1/2.

Outputs: ``results.csv`` (tidy: ``case, block_depth, L, L_ref, seed, quantity, value``; written last), figure
``convergence.png/.pdf``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from testbed.config import ConfigError, check_positive_int, check_positive_ints
from testbed.fitting import loglog_slope
from testbed.plotting import color_for, log_axes, loglog_line, power_guide, save_figure, use_style
from testbed.results import read_csv, write_csv
from testbed.seeding import generator
from testbed.students.residual import ResidualStudent
from testbed.students.smooth import SmoothResidualStudent

REF_FACTOR = 8          # the finest smooth-weights network has REF_FACTOR · max(depths) layers
HORIZON = 1.0
COLUMNS = ["case", "block_depth", "L", "L_ref", "seed", "quantity", "value"]
Tensor = torch.Tensor


@dataclasses.dataclass
class Config:
    """Settings of the ``convergence`` sub-study (``--set convergence.depths=4,8,16``); validated on construction."""

    depths: tuple[int, ...] = (4, 8, 16, 32, 64, 128, 256, 512)
    width: int = 64         # residual-stream width n
    hidden: int = 64        # hidden width inside a two-matrix branch
    anchors: int = 4        # anchors of the continuous weight function W(t)
    n_inputs: int = 256     # inputs x_i ~ N(0, I_n)
    n_draws: int = 64       # i.i.d. weight draws for the diffusive (SDE) limit

    def __post_init__(self) -> None:
        self.depths = check_positive_ints("convergence.depths", self.depths)
        _check_depths(self.depths)
        for name in ("width", "hidden", "anchors", "n_inputs", "n_draws"):
            check_positive_int(f"convergence.{name}", getattr(self, name))


# ------------------------------------------------------------------------------------------------ helpers


def grid_states(student, x0: Tensor, n_grid: int) -> Tensor:
    """States ``h(s_k)`` at ``s_k = k·T/n_grid``, ``k = 1..n_grid`` (shape ``(n_grid, *x0.shape)``).

    Steps the network layer by layer and keeps only the grid states (memory ``O(n_grid)``, not ``O(L)``);
    ``student.n_layers`` must be a multiple of ``n_grid``.
    """
    L = student.n_layers
    if L % n_grid:
        raise ConfigError(f"depth {L} is not a multiple of the coarse grid size {n_grid}")
    stride = L // n_grid
    out = []
    h = x0
    with torch.no_grad():
        for l in range(L):
            h = student.step(l, h)
            if (l + 1) % stride == 0:
                out.append(h)
    return torch.stack(out)


def relative_distance(a: Tensor, b: Tensor) -> float:
    """``sqrt(Σ‖a − b‖² / Σ‖b‖²)`` over every element (grid times × inputs × coordinates)."""
    return float(torch.sqrt((a - b).double().pow(2).sum() / b.double().pow(2).sum().clamp_min(1e-300)))


def _check_depths(depths: Sequence[int]) -> list[int]:
    ds = sorted(set(int(d) for d in depths))
    if len(ds) < 2:
        raise ConfigError(f"convergence.depths needs at least two depths, got {tuple(depths)}")
    if any(d % ds[0] for d in ds):
        raise ConfigError(f"convergence.depths must all be multiples of the smallest ({ds[0]}): {tuple(ds)}")
    if any(ds[-1] % d for d in ds):
        raise ConfigError(f"the largest of convergence.depths ({ds[-1]}) must be a multiple of every other: "
                          f"{tuple(ds)}")
    return ds


def _inputs(n_inputs: int, dim: int, seed: int, salt: int) -> Tensor:
    gen = generator(seed, salt)
    return torch.randn(n_inputs, dim, generator=gen, dtype=torch.float64)


# ----------------------------------------------------------------------------------------- (a) smooth weights
def smooth_case(cfg, seed: int, block_depth: int, depths: Sequence[int]) -> list[dict[str, Any]]:
    """Distance of each depth-``L`` discretisation of one smooth weight function to the finest (see module doc);
    ``cfg`` is the depth-scaling config (its ``convergence`` settings and ``device``)."""
    c, dev = cfg.convergence, torch.device(cfg.device)
    torch.manual_seed(seed)
    base = SmoothResidualStudent(c.width, n_layers=max(depths), horizon=HORIZON, width=c.hidden,
                                 hidden_layers=block_depth - 1, n_anchors=c.anchors,
                                 branch_scaling="ode").double().to(dev)
    x0 = _inputs(c.n_inputs, c.width, seed, 10 + block_depth).to(dev)
    K = min(depths)
    l_ref = REF_FACTOR * max(depths)
    ref = grid_states(base.with_depth(l_ref), x0, K)
    rows = []
    for L in depths:
        hs = grid_states(base.with_depth(L), x0, K)
        common = dict(case="smooth", block_depth=block_depth, L=L, L_ref=l_ref, seed=seed)
        rows.append({**common, "quantity": "dist_traj", "value": relative_distance(hs, ref)})
        rows.append({**common, "quantity": "dist_end", "value": relative_distance(hs[-1], ref[-1])})
    return rows


# ----------------------------------------------------------------------------------------- (b) diffusive limit
def iid_student(dim: int, L: int, device: torch.device) -> ResidualStudent:
    """Untied depth-μP ResidualStudent with one-matrix blocks ``W_l tanh(h) + b_l`` (weights set later)."""
    return ResidualStudent(dim, n_layers=L, horizon=HORIZON, width=dim, hidden_layers=0, tied=False,
                           branch_scaling="depth_mup", init_scale=1.0).double().to(device)


def set_block_weights(student: ResidualStudent, W: Tensor, b: Tensor) -> None:
    """Load ``W`` (shape ``(L, n, n)``) and ``b`` (``(L, n)``) into the last Linear of every block."""
    with torch.no_grad():
        for l, block in enumerate(student.blocks):
            lin = block.get_submodule(block.linear_names()[-1])
            lin.weight.copy_(W[l])
            lin.bias.copy_(b[l])


def brownian_coarsen(W: Tensor, L: int) -> Tensor:
    """``W^{(L)}_l = Σ_{j=l·k}^{(l+1)·k−1} W_j / √k`` with ``k = len(W)/L`` (sums of consecutive increments)."""
    k = W.shape[0] // L
    return W.reshape(L, k, *W.shape[1:]).sum(1) / math.sqrt(k)


def iid_case(cfg, seed: int, depths: Sequence[int]) -> list[dict[str, Any]]:
    """Statistics and path distances of i.i.d.-weight depth-μP networks across depth (see module doc)."""
    c, dev = cfg.convergence, torch.device(cfg.device)
    n, D, K = c.width, c.n_draws, min(depths)
    l_max = max(depths)
    x0 = _inputs(c.n_inputs, n, seed, 20).to(dev)
    gen = generator(seed, 21)
    nets = {L: iid_student(n, L, dev) for L in depths}
    paths: dict[int, list[Tensor]] = {L: [] for L in depths}
    q: dict[int, list[float]] = {L: [] for L in depths}
    for _ in range(D):
        W = torch.randn(l_max, n, n, generator=gen, dtype=torch.float64) / math.sqrt(n)
        b = torch.randn(l_max, n, generator=gen, dtype=torch.float64) / math.sqrt(n)
        for L in depths:
            set_block_weights(nets[L], brownian_coarsen(W, L).to(dev), brownian_coarsen(b, L).to(dev))
            hs = grid_states(nets[L], x0, K)
            paths[L].append(hs.cpu())
            q[L].append(float(hs[-1].pow(2).sum(-1).mean() / n))
    rows = []
    stats = {L: (float(np.mean(q[L])), float(np.std(q[L], ddof=1))) for L in depths}   # sample std over draws
    for i, L in enumerate(depths):
        common = dict(case="iid", block_depth=1, L=L, seed=seed)
        rows.append({**common, "L_ref": L, "quantity": "stat_mean", "value": stats[L][0]})
        rows.append({**common, "L_ref": L, "quantity": "stat_std", "value": stats[L][1]})
        if L < l_max:
            rows.append({**common, "L_ref": l_max, "quantity": "stat_mean_err",
                         "value": abs(stats[L][0] - stats[l_max][0])})
            rows.append({**common, "L_ref": l_max, "quantity": "stat_std_err",
                         "value": abs(stats[L][1] - stats[l_max][1])})
        if i + 1 < len(depths):
            nxt = depths[i + 1]
            indep = [relative_distance(paths[L][d], paths[nxt][(d + 1) % D]) for d in range(D)] if D > 1 else []
            coupled = [relative_distance(paths[L][d], paths[nxt][d]) for d in range(D)]
            if indep:
                rows.append({**common, "L_ref": nxt, "quantity": "path_dist_independent",
                             "value": float(np.mean(indep))})
            rows.append({**common, "L_ref": nxt, "quantity": "path_dist_coupled", "value": float(np.mean(coupled))})
    return rows


# ------------------------------------------------------------------------------------------------ contract
def run(cfg, out: Path) -> list[dict[str, Any]]:
    """Run both cases for every seed of the depth-scaling config ``cfg`` (settings ``cfg.convergence``); write
    ``out/results.csv``. Returns the rows."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    depths = _check_depths(cfg.convergence.depths)
    rows: list[dict[str, Any]] = []
    for seed in cfg.seeds:
        for bd in (1, 2):
            rows += smooth_case(cfg, int(seed), bd, depths)
        rows += iid_case(cfg, int(seed), depths)
    write_csv(out / "results.csv", rows, COLUMNS)
    return rows


def _series(rows: list[dict[str, Any]], case: str, quantity: str, block_depth: int = 1
            ) -> tuple[list[int], list[float], list[float]]:
    """Depths, mean over seeds and the 95% CI half-width over seeds (:mod:`testbed.stats`; 0 for one seed) of
    ``quantity``."""
    from testbed.stats import summarize

    sel = [r for r in rows if r["case"] == case and r["quantity"] == quantity and int(r["block_depth"]) == block_depth]
    Ls = sorted({int(r["L"]) for r in sel})
    vals = [[float(r["value"]) for r in sel if int(r["L"]) == L] for L in Ls]
    return Ls, [float(np.mean(v)) for v in vals], [summarize(v).half_width if len(v) > 1 else 0.0 for v in vals]


def fitted(rows: list[dict[str, Any]], case: str, quantity: str, block_depth: int = 1) -> float:
    """Log-log slope of the seed-mean of ``quantity`` vs ``L``."""
    Ls, m, _ = _series(rows, case, quantity, block_depth)
    return loglog_slope(Ls, m)


def summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Fitted orders (``−slope``) and the path-distance plateau."""
    out = []
    for bd in (1, 2):
        if any(r["case"] == "smooth" and int(r["block_depth"]) == bd for r in rows):
            out.append({"key": f"order_smooth_weights_bd{bd}", "value": -fitted(rows, "smooth", "dist_traj", bd),
                        "claim": f"O(1/L): order 1 (trajectory, block depth {bd})"})
            out.append({"key": f"order_smooth_weights_bd{bd}_endpoint",
                        "value": -fitted(rows, "smooth", "dist_end", bd),
                        "claim": f"O(1/L): order 1 (endpoint, block depth {bd})"})
    if any(r["case"] == "iid" for r in rows):
        out.append({"key": "order_iid_stat_mean", "value": -fitted(rows, "iid", "stat_mean_err"),
                    "claim": "statistics of h_T converge: |E‖h_T‖²/n (L) − (L_max)| decays (order > 0, weak ≈ 1)"})
        out.append({"key": "order_iid_stat_std", "value": -fitted(rows, "iid", "stat_std_err"),
                    "claim": "spread over draws of ‖h_T‖²/n converges (order > 0)"})
        Ls, m, _ = _series(rows, "iid", "path_dist_independent")
        if Ls:
            out.append({"key": "slope_iid_path_independent", "value": loglog_slope(Ls, m),
                        "claim": "independent draws at L and L': paths do not converge (slope ≈ 0)"})
            out.append({"key": "iid_path_independent_at_max_depth", "value": m[-1],
                        "claim": "relative path distance between independent draws stays O(1)"})
        out.append({"key": "order_iid_path_coupled", "value": -fitted(rows, "iid", "path_dist_coupled"),
                    "claim": "Brownian coupling (W_2l+W_2l+1)/√2: strong order ≈ 1/2"})
    return out


# ------------------------------------------------------------------------------------------------ figures
def plot(out: Path) -> list[Path]:
    """Redraw the figure from ``out/results.csv``."""
    out = Path(out)
    return _plot_rows(read_csv(out / "results.csv"), out)


def _plot_rows(rows: list[dict[str, Any]], out: Path) -> list[Path]:
    import matplotlib.pyplot as plt

    use_style()
    fig, axes = plt.subplots(2, 2, figsize=(7.0, 5.4), layout="constrained")
    # (a) smooth weights
    ax = axes[0, 0]
    ax.set_yscale("log")
    first = None
    for i, bd in enumerate((1, 2)):
        for q, ls, marker, name in (("dist_traj", "-", "o", "trajectory"), ("dist_end", "--", "s", "endpoint")):
            Ls, m, s = _series(rows, "smooth", q, bd)
            if not Ls:
                continue
            first = first or (Ls, m[0])
            loglog_line(ax, Ls, m, s, color=color_for("", i), label=f"block depth {bd}, {name}", ls=ls,
                        marker=marker)
    if first:
        power_guide(ax, first[0], first[1], -1.0, "∝ 1/L")
    lo, hi = ax.get_ylim()
    if 0 < lo < hi:
        ax.set_ylim(lo / 5, hi)  # room for the legend below the lines
    ref = next((int(r["L_ref"]) for r in rows if r["case"] == "smooth"), None)
    ax.set_title(f"(a) smooth W(t), ODE scaling: distance to L_ref = {ref}", loc="left")
    ax.set_ylabel("relative L² distance to finest")
    # (b) statistics vs L
    ax = axes[0, 1]
    Ls, m, _ = _series(rows, "iid", "stat_mean")
    if Ls:
        _, sd, _ = _series(rows, "iid", "stat_std")
        lo, hi = np.array(m) - np.array(sd), np.array(m) + np.array(sd)
        ax.fill_between(Ls, lo, hi, color=color_for("", 0), alpha=0.15, lw=0, label="± spread over draws (std)")
        ax.plot(Ls, m, color=color_for("", 0), marker="o", ms=3, lw=1, label="mean over draws")
        ax.axhline(m[-1], color="0.6", lw=0.8, ls=":", label=f"value at L = {Ls[-1]}")
        span = float(hi.max() - lo.min()) or 1.0
        ax.set_ylim(float(lo.min()) - 0.45 * span, float(hi.max()) + 0.05 * span)
    ax.set_title("(b) i.i.d. weights, 1/√L: statistic of h_T", loc="left")
    ax.set_ylabel("‖h_T‖²/n (mean over inputs)")
    # (c) statistic convergence
    ax = axes[1, 0]
    for i, (q, name) in enumerate((("stat_mean_err", "mean over draws"), ("stat_std_err", "spread over draws"))):
        Ls, m, s = _series(rows, "iid", q)
        if Ls:
            loglog_line(ax, Ls, m, s, color=color_for("", i), label=name)
    ax.set_title("(c) i.i.d.: |stat(L) − stat(L_max)|", loc="left")
    ax.set_ylabel("|difference| in ‖h_T‖²/n")
    # (d) path distances
    ax = axes[1, 1]
    first = None
    for i, (q, name) in enumerate((("path_dist_independent", "independent draws"),
                                   ("path_dist_coupled", "Brownian coupling"))):
        Ls, m, s = _series(rows, "iid", q)
        if Ls:
            first = (Ls, m[0]) if q == "path_dist_coupled" else first
            loglog_line(ax, Ls, m, s, color=color_for("", i + 2), label=name)
    if first:
        power_guide(ax, first[0], first[1], -0.5, "∝ 1/√L")
    ax.set_title("(d) i.i.d.: path distance, depth L vs next depth L'", loc="left")
    ax.set_ylabel("relative L² path distance")
    all_depths = sorted({int(r["L"]) for r in rows})
    for ax in axes.flat:
        ax.set_xlabel("depth L (layers)")
        log_axes(ax, all_depths, log_y=ax is not axes[0, 1])
        ax.legend(frameon=False, loc={0: "lower left", 1: "lower center"}.get(list(axes.flat).index(ax), "best"))
    fig.suptitle("Depth convergence: smooth weights converge at O(1/L); i.i.d. weights under 1/√L "
                 "converge in law, not pathwise\n(error bars: std over seeds)")
    return save_figure(fig, out / "convergence")


__all__ = ["Config", "brownian_coarsen", "grid_states", "iid_case", "loglog_slope", "plot", "relative_distance", "run",
           "smooth_case", "summary"]

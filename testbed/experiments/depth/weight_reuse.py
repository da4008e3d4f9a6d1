"""Weight reuse in backpropagation: forward/backward coupling through ``W_lᵀ`` vs width and depth (paper B).

Backpropagation sends the backward signal through the transpose of the very matrix the forward pass used, so
forward features and backward signals are not independent. The *gradient-independence* picture (Tensor
Programs) replaces ``W_lᵀ`` in the backward pass by an independent copy ``W̃_lᵀ``; paper B (arXiv 2512.21075)
claims the resulting error is ``O(1/n)`` in width at initialisation and that its effect on the training dynamics
decays like ``O(1/L²)`` in depth under Depth-μP. This module measures both against such a *decoupled* control.

**Network** (:class:`ReuseNet`, float64). Residual stream of width ``n``, depth ``L``, one-matrix blocks::

    h_0 = W_in x,    h_l = h_{l−1} + ε·(W_l σ(h_{l−1}) + b_l)  (l = 1..L),    y = W_out h_L + b_out,

with ``σ = tanh``, ``ε = a/√L`` (Depth-μP, ``a = BRANCH_MULTIPLIER``) and the μP initialisation
``W_in ~ N(0, 1/d_in)``, ``W_l ~ N(0, 1/n)``, ``W_out ~ N(0, 1/n²)`` (μP read-out: the output is ``O(n^{-1/2})``
at initialisation, so the loss derivative does not depend on the features to leading order — the regime in
which gradient independence holds as ``n → ∞``), all biases 0. Every branch matrix goes through
:class:`DecoupledLinear`: forward ``σ(h) W_lᵀ + b_l``, backward ``grad_s = grad_u · W_back,l`` with

* ``decoupled=False``: ``W_back,l = W_l`` — exactly autograd (true backpropagation);
* ``decoupled=True``: ``W_back,l = W_l + (W̃_l − W_l(0))``, ``W̃_l`` an independent ``N(0, 1/n)`` copy drawn
  once per layer. At initialisation ``W_back = W̃`` (the gradient-independence control); during training the
  copy follows the same updates as ``W_l``, so only the *initial* randomness is decoupled
  (``frozen_copy=True`` keeps ``W_back = W̃_l`` fixed instead: feedback alignment with a Gaussian copy).

Weight gradients are always ``grad_uᵀ σ(h)``, so both networks are trained on the same rule, only the backward
signal ``g_l = ∂loss/∂h_l`` differs.

**(1) Coupling at initialisation.** Inputs ``x_i``, ``i = 1..B``: the first ``B = COUPLING_INPUTS`` test initial
states of the teacher flow ``cfg.flow_system``, targets ``y*_i`` their flow endpoints, loss
``½ Σ_i ‖y(x_i) − y*_i‖² / B``. For layer ``l`` let ``s_{l−1} = σ(h_{l−1})`` be the forward input of ``W_l`` and
``m_l = W_back,lᵀ g_l`` the backward message it sends (``∂loss/∂s_{l−1} = ε m_l``). The *coupling* is the
normalised mean inner product between forward feature and backward message (Euclidean inner products over the
``n`` coordinates, sums over inputs ``i``, expectations ``E`` over the weight draws, then a mean over layers)::

    κ = mean_l  E[Σ_i ⟨m_l(x_i), s_{l−1}(x_i)⟩] / E[ sqrt(Σ_i ‖m_l(x_i)‖² · Σ_i ‖s_{l−1}(x_i)‖²) ],

``κ`` for the true network, ``κ̃`` for the control. In the control ``W̃_l`` is independent of ``g_l`` and
``s_{l−1}`` (``g_l`` only involves layers above ``l``), so ``κ̃ = 0`` exactly. In the true network ``g_l``
depends on ``W_l`` through ``h_l``, and Stein's lemma gives ``E⟨g_l, W_l s⟩ = (ε/n)·‖s‖²·E tr(∂g_l/∂h_l)``: with
the μP read-out ``tr ∂g/∂h = O(1/n)`` and ``‖g‖ = O(n^{-1/2})``, so ``κ − κ̃ = O(1/n)`` — the coupling the
gradient-independence picture neglects (with a standard ``N(0, 1/n)`` read-out it would be ``O(n^{-1/2})``).

*Estimator.* One draw fluctuates by ``O(n^{-1/2})`` around this mean (the gradient-independent part
``⟨g_l^{(0)}, W_l s⟩``, ``g_l^{(0)}`` the backward signal without layer ``l``'s branch). We use the **mirror
(antithetic) estimator** of the numerator: negating layer ``l``'s forward *and* backward matrix leaves the law
of the network unchanged, and ``½(Σ_i⟨m_l, s_{l−1}⟩[W_l] + Σ_i⟨m_l, s_{l−1}⟩[−W_l]) ≈ ε⟨u, (∂g_l/∂h_l) u⟩``
(``u = W_l s``) has the same expectation with that ``O(n^{-1/2})`` part cancelled exactly (the control's
``≈ ε⟨ũ, (∂g̃_l/∂h_l) u⟩`` still has mean 0). What remains (mostly the ``σ''`` terms of ``∂g/∂h``) still has a
single-draw noise-to-signal ratio ``∝ √n``, so :func:`n_draws_for` uses ``max(MIN_DRAWS, n)`` draws per seed;
``min(L, MIRROR_LAYERS)`` evenly spaced layers are mirrored. Computed in closed form, float32, batched over draws
(:func:`coupling_from_weights`; equal to the autograd :class:`ReuseNet` in the tests). Quantities per (width,
depth, seed):

* ``coupling_true`` (``κ``), ``coupling_control`` (``κ̃``), ``coupling_excess`` (``κ − κ̃``; claim ``∝ 1/n``) and
  ``coupling_excess_se`` (its standard error over draws); ``coupling_raw_true`` (``κ`` without mirroring);
* ``coupling_fluctuation``: the RMS over draws and layers of the un-mirrored control cosine
  ``ρ̃_l = Σ_i⟨m̃_l, s_{l−1}⟩ / sqrt(Σ_i‖m̃_l‖² Σ_i‖s_{l−1}‖²)`` — the size of one draw's gradient-independent
  noise (``∝ n^{-1/2}``; not a paper claim);
* ``backward_overlap``: ``Σ_i⟨g_0, g̃_0⟩ / sqrt(Σ_i‖g_0‖² Σ_i‖g̃_0‖²)``, the cosine between the true and the
  decoupled input-layer backward signals of the same forward pass (mean over draws). It does not tend to 1
  (each layer adds an independent ``ε·W̃ᵀg̃`` vs ``ε·Wᵀg``; summed over ``L`` layers an ``O(a²)`` mismatch), so it
  is *not* a measure of the ``O(1/n)`` coupling — but it sets how differently the two twins of (2) learn.

Width sweep: ``n ∈ cfg.weight_reuse.widths`` at the fixed depth ``L_w`` = lower median of
``cfg.weight_reuse.depths``; depth sweep: ``L ∈ cfg.weight_reuse.depths`` at the fixed width ``n = cfg.width``.
The paper's statement is ``O(1/n)`` uniformly over depth (the coupling must not grow with ``L``); per layer we
expect ``∝ ε = a/√L``.

**(2) Effect on the dynamics** (``n = cfg.width``, ``L ∈ cfg.weight_reuse.depths``). Regression of the teacher
flow map ``x_0 ↦ φ_T(x_0)`` (``cfg.n_train`` / ``cfg.n_test`` trajectories, ``d = 2 → n → 2``): the true network and its
decoupled twin start from the *same* weights (same seed; the copy ``W̃`` from a separate stream) and see the same
minibatches (``cfg.batch_size``): ``cfg.weight_reuse.steps`` Adam steps at a constant learning rate under the
Depth-μP rule (:func:`testbed.parameterization.param_groups`: ``η = cfg.lr`` for ``W_in, W_out, b_out``, ``η/√L``
for the branches), loss ``½·mean_i ‖y_i − y*_i‖²``. Variants ``v``: ``tracking`` (the decoupled twin above),
``frozen`` (``frozen_copy=True``) and ``reinit`` (a *true* network from another initialisation: the
finite-width spread of the learned function, a floor for pathwise comparisons). Quantities:

* ``func_dist_<v>``  ``‖f_v − f_true‖ / ‖f_true − f_0‖`` after training, Frobenius norms over test inputs ×
  outputs (``f_0`` the common initial function): the difference relative to what was learned;
* ``loss_dist_<v>``  ``Σ_t |ℓ_v(t) − ℓ_true(t)| / Σ_t ℓ_true(t)`` over the training-loss curves
  (``t = 1..steps``, each on the shared minibatch);
* ``test_loss_true``, ``test_loss_<v>``  final test loss; the summary also fits the relative gap of the
  seed-mean test losses ``|E ℓ_tracking − E ℓ_true| / E ℓ_true`` (a comparison in law, not pathwise).

The claim is ``∝ L^{-2}``; :func:`loglog_slope` fits the exponent on seed means. Note that the paper's
statement is about the reuse-induced coupling term in the limit dynamics (which converge to a decoupled
forward–backward SDE); a finite network and its decoupled twin also differ through the ``O(1)`` pathwise mismatch
of their backward signals (``backward_overlap``) and through finite-width randomness (``reinit``), so a pathwise
distance need not fall like ``L^{-2}``; the summary reports what is measured.

Outputs: ``results.csv`` (tidy: ``quantity, width, depth, seed, value``; written last), figure
``weight_reuse.{png,pdf}``: (a) coupling vs ``n``, (b) coupling vs ``L``, (c) dynamics difference vs ``L``;
log–log with fitted slopes in the legends and dotted guides for the claimed exponents.

Settings: ``cfg`` is the depth-scaling config; this sub-study's own settings are :class:`Config`
(``cfg.weight_reuse``: ``widths``, ``depths``, ``steps``; ``--set weight_reuse.depths=4,8,16``), the others are
shared fields (``width``, ``flow_system``, ``n_train``, ``n_test``, ``batch_size``, ``lr``, ``seeds``, ``device``).
Both parts run on ``cfg.device`` (weights are drawn on the CPU from seeded generators, then moved). Layout: this
module holds the protocol, the aggregates and the summary, :mod:`~testbed.experiments.depth.reuse_net` the autograd
Function, the network and the estimators, :mod:`~testbed.experiments.depth.weight_reuse_plot` the figure.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from testbed.config import check_positive_int, check_positive_ints
from testbed.experiments.depth.reuse_net import (
    BRANCH_MULTIPLIER,
    MIN_DRAWS,
    VARIANTS,
    DecoupledLinear,
    ReuseNet,
    coupling_draws,
    coupling_from_weights,
    coupling_rows,
    coupling_stats,
    decoupled_linear,
    dynamics_rows,
    n_draws_for,
)
from testbed.fitting import loglog_slope
from testbed.results import read_csv, write_csv

Tensor = torch.Tensor

COLUMNS = ["quantity", "width", "depth", "seed", "value"]
COUPLING_INPUTS = 8         # inputs per draw (test initial states of the teacher flow)
WIDTH_CLAIM, DEPTH_CLAIM = -1.0, -2.0
CLAIM_TOLERANCE = 0.5       # |measured − claimed slope| above this is reported as "not reproduced"


@dataclasses.dataclass
class Config:
    """Settings of the ``weight_reuse`` sub-study (``--set weight_reuse.widths=16,32,64``); validated on
    construction. The width of the depth sweeps, the data, batch size and learning rate are shared fields of the
    depth-scaling config (``width``, ``flow_system``, ``n_train``, ``n_test``, ``batch_size``, ``lr``)."""

    widths: tuple[int, ...] = (16, 32, 64, 128, 256)   # width sweep of the coupling at initialisation
    depths: tuple[int, ...] = (4, 8, 16, 32, 64)       # depth sweeps (coupling and dynamics)
    steps: int = 200                                    # Adam steps of each true / decoupled training run

    def __post_init__(self) -> None:
        self.widths = check_positive_ints("weight_reuse.widths", self.widths)
        self.depths = check_positive_ints("weight_reuse.depths", self.depths)
        check_positive_int("weight_reuse.steps", self.steps)


# -------------------------------------------------------------------------------------------------- helpers
def width_depth(cfg) -> tuple[int, int]:
    """``(L_w, n_L)``: the fixed depth of the width sweep (lower median of ``cfg.weight_reuse.depths``) and the
    fixed width of the depth sweeps (``cfg.width``)."""
    ds = sorted(int(d) for d in cfg.weight_reuse.depths)
    return ds[(len(ds) - 1) // 2], int(cfg.width)


def flow_data(cfg) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(x_train, y_train, x_test, y_test)``: initial states and flow endpoints of ``cfg.flow_system`` (float64,
    generated on the CPU, returned on ``cfg.device``)."""
    import systems
    from testbed.experiments.common import make_splits

    tr, te, _ = make_splits(systems.get_system(cfg.flow_system), cfg.n_train, cfg.n_test, 1, dtype=torch.float64)
    dev = torch.device(cfg.device)
    return tr.states[0].to(dev), tr.states[-1].to(dev), te.states[0].to(dev), te.states[-1].to(dev)


def series(rows: list[dict[str, Any]], quantity: str, axis: str, **fixed: Any) -> tuple[list[int], list[float]]:
    """Seed means of ``quantity`` along ``axis`` (``"width"`` or ``"depth"``), other columns fixed."""
    pts: dict[int, list[float]] = {}
    for r in rows:
        if r["quantity"] == quantity and all(int(r[k]) == int(v) for k, v in fixed.items()):
            pts.setdefault(int(r[axis]), []).append(float(r["value"]))
    xs = sorted(pts)
    return xs, [float(np.mean(pts[k])) for k in xs]


def fixed_axes(rows: list[dict[str, Any]]) -> tuple[int, int]:
    """``(L_w, n_L)`` recovered from coupling rows: the depth shared by the width sweep and the width shared by
    the depth sweep (the most frequent depth / width)."""
    cr = [r for r in rows if r["quantity"] == "coupling_excess"]
    return mode([int(r["depth"]) for r in cr]), mode([int(r["width"]) for r in cr])


def fitted_slopes(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Log–log slopes: coupling quantities vs width (at ``L_w``) and vs depth (at ``n_L``), dynamics distances
    vs depth."""
    L_w, n_L = fixed_axes(rows)
    dyn = [int(r["width"]) for r in rows if r["quantity"] == "test_loss_true"]
    n_dyn = mode(dyn) if dyn else n_L
    out: dict[str, float] = {}
    for q in ("coupling_excess", "coupling_fluctuation", "coupling_true", "backward_overlap"):
        out[f"{q}_vs_width"] = loglog_slope(*series(rows, q, "width", depth=L_w))
        out[f"{q}_vs_depth"] = loglog_slope(*series(rows, q, "depth", width=n_L))
    for v in VARIANTS:
        for q in ("func_dist", "loss_dist"):
            out[f"{q}_{v}_vs_depth"] = loglog_slope(*series(rows, f"{q}_{v}", "depth", width=n_dyn))
    out["test_loss_gap_tracking_vs_depth"] = loglog_slope(*final_loss_gap(rows, "tracking", n_dyn))
    return out


def final_loss_gap(rows: list[dict[str, Any]], variant: str, width: int) -> tuple[list[int], list[float]]:
    """``(depths, |E ℓ_variant − E ℓ_true| / E ℓ_true)`` with ``E`` the mean of the final test loss over seeds."""
    xs, lt = series(rows, "test_loss_true", "depth", width=width)
    xv, lv = series(rows, f"test_loss_{variant}", "depth", width=width)
    common = [x for x in xs if x in xv]
    return common, [abs(lv[xv.index(x)] - lt[xs.index(x)]) / lt[xs.index(x)] for x in common]


def mode(vals: list[int]) -> int:
    """Most frequent value (the smallest among ties); 0 for an empty list."""
    return max(sorted(set(vals)), key=vals.count) if vals else 0


# -------------------------------------------------------------------------------------------- run / plot / summary
def run(cfg, out: Path) -> list[dict[str, Any]]:
    """Both parts (module docstring) for every seed of the depth-scaling config ``cfg``, on ``cfg.device``; writes
    ``out/results.csv`` and returns its rows."""
    from testbed.progress import progress

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = flow_data(cfg)
    x_c, y_c = data[2][:COUPLING_INPUTS], data[3][:COUPLING_INPUTS]
    L_w, n_L = width_depth(cfg)
    c = cfg.weight_reuse
    pairs = sorted({(int(n), L_w) for n in c.widths} | {(n_L, int(L)) for L in c.depths})
    depths = sorted(int(L) for L in c.depths)
    jobs = [("coupling", n, L, sd) for sd in cfg.seeds for n, L in pairs]
    jobs += [("dynamics", n_L, L, sd) for sd in cfg.seeds for L in depths]
    rows: list[dict[str, Any]] = []
    for kind, n, L, sd in progress(jobs, desc="weight_reuse", enabled=cfg.progress):
        if kind == "coupling":
            rows += coupling_rows(n, L, x_c, y_c, int(sd))
        else:
            rows += dynamics_rows(n, L, data, int(sd), c.steps, cfg.lr, cfg.batch_size)
    write_csv(out / "results.csv", rows, COLUMNS)
    return rows


def plot(out: Path) -> list[Path]:
    """Redraw ``weight_reuse.{png,pdf}`` from ``out/results.csv``."""
    out = Path(out)
    return _draw(read_csv(out / "results.csv"), out)


def _draw(rows: list[dict[str, Any]], out: Path) -> list[Path]:
    from testbed.experiments.depth.weight_reuse_plot import draw

    return draw(rows, out)


def _verdict(measured: float, claimed: float) -> str:
    if not math.isfinite(measured):
        return "; not measurable (fewer than two positive points)"
    if abs(measured - claimed) <= CLAIM_TOLERANCE:
        return f"; consistent (|measured − claim| ≤ {CLAIM_TOLERANCE})"
    return f"; NOT reproduced: measured {measured:+.2f}"


def _verdict_bounded(measured: float) -> str:
    if not math.isfinite(measured):
        return "; not measurable (fewer than two positive points)"
    if measured <= CLAIM_TOLERANCE:
        return "; consistent (does not grow with L)"
    return f"; NOT reproduced: grows like L^{measured:+.2f}"


def summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Fitted slopes (``value``) against the paper's exponents (``claim``), plus two diagnostics."""
    sl = fitted_slopes(rows)
    out = [
        {"key": "coupling_width_slope", "value": sl["coupling_excess_vs_width"],
         "claim": f"{WIDTH_CLAIM:g} (coupling at init O(1/n))" + _verdict(sl["coupling_excess_vs_width"],
                                                                          WIDTH_CLAIM)},
        {"key": "coupling_depth_slope", "value": sl["coupling_excess_vs_depth"],
         "claim": "≤ 0 (O(1/n) uniformly over depth: must not grow with L)"
                  + _verdict_bounded(sl["coupling_excess_vs_depth"])},
        {"key": "fluctuation_width_slope", "value": sl["coupling_fluctuation_vs_width"],
         "claim": "-0.5 (not a paper claim: one-draw gradient-independent noise, CLT)"},
        {"key": "dynamics_func_depth_slope", "value": sl["func_dist_tracking_vs_depth"],
         "claim": f"{DEPTH_CLAIM:g} (reuse effect on the dynamics O(1/L²))"
                  + _verdict(sl["func_dist_tracking_vs_depth"], DEPTH_CLAIM)},
        {"key": "dynamics_loss_depth_slope", "value": sl["loss_dist_tracking_vs_depth"],
         "claim": f"{DEPTH_CLAIM:g} (reuse effect on the dynamics O(1/L²))"
                  + _verdict(sl["loss_dist_tracking_vs_depth"], DEPTH_CLAIM)},
        {"key": "dynamics_test_loss_gap_depth_slope", "value": sl["test_loss_gap_tracking_vs_depth"],
         "claim": f"{DEPTH_CLAIM:g} (reuse effect on the dynamics O(1/L²))"
                  + _verdict(sl["test_loss_gap_tracking_vs_depth"], DEPTH_CLAIM)},
        {"key": "dynamics_func_depth_slope_frozen_copy", "value": sl["func_dist_frozen_vs_depth"],
         "claim": "no paper claim (feedback alignment with a frozen Gaussian copy)"},
        {"key": "dynamics_func_depth_slope_other_init", "value": sl["func_dist_reinit_vs_depth"],
         "claim": "reference: two independent initialisations (finite-width floor)"},
    ]
    L_w, n_L = fixed_axes(rows)
    dyn = [int(r["width"]) for r in rows if r["quantity"] == "test_loss_true"]
    if dyn:
        n_dyn = mode(dyn)
        xs, tr = series(rows, "func_dist_tracking", "depth", width=n_dyn)
        _, ri = series(rows, "func_dist_reinit", "depth", width=n_dyn)
        if xs and ri and ri[-1] > 0:
            out.append({"key": f"dynamics_decoupled_over_other_init_at_L{xs[-1]}", "value": tr[-1] / ri[-1],
                        "claim": "≪ 1 if the reuse effect were resolved above the finite-width floor"})
    xo, ov = series(rows, "backward_overlap", "depth", width=n_L)
    if ov:
        out.append({"key": "backward_overlap_mean", "value": float(np.mean(ov)),
                    "claim": "1 if the true and decoupled backward signals agreed pathwise (they need not)"})
    return out


__all__ = ["BRANCH_MULTIPLIER", "COLUMNS", "Config", "DecoupledLinear", "MIN_DRAWS", "ReuseNet", "coupling_draws",
           "coupling_from_weights", "coupling_rows", "coupling_stats", "decoupled_linear", "dynamics_rows",
           "final_loss_gap", "fitted_slopes", "fixed_axes", "flow_data", "loglog_slope", "mode", "n_draws_for",
           "plot", "run", "series", "summary", "width_depth"]

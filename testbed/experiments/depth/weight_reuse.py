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

Width sweep: ``n ∈ cfg.weight_reuse.widths`` at every depth of ``cfg.weight_reuse.coupling_depths`` (default: the
lower median ``L_w`` of ``cfg.weight_reuse.depths``); depth sweep: ``L ∈ cfg.weight_reuse.depths`` at the fixed
width ``n = cfg.width``.
The paper's statement is ``O(1/n)`` uniformly over depth (the coupling must not grow with ``L``); per layer we
expect ``∝ ε = a/√L``.

**(2) Effect on the dynamics** (``n ∈ cfg.weight_reuse.dynamics_widths``, default ``cfg.width``;
``L ∈ cfg.weight_reuse.depths``; twins ``cfg.weight_reuse.dynamics_variants``). Regression of the teacher
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

The claim is ``∝ L^{-2}``. Every exponent is fitted on all (``L`` or ``n``, seed) points with a 95% interval
that resamples whole seeds (:func:`fit_table`, ``fits.csv``), and judged by the rules declared at
:data:`GROWTH_TOL` before any run: the ``1/L²`` claim is *reproduced* if the interval holds −2 and excludes 0, *not
reproduced* if it excludes −2, *unresolved* if it holds both. :func:`floor_comparisons` adds, per width, the paired
ratio of the twin's distance to the other-initialisation distance at the largest depth. Note that the paper's
statement is about the reuse-induced coupling term in the limit dynamics (which converge to a decoupled
forward–backward SDE); a finite network and its decoupled twin also differ through the ``O(1)`` pathwise mismatch
of their backward signals (``backward_overlap``) and through finite-width randomness (``reinit``), so a pathwise
distance need not fall like ``L^{-2}``; the summary reports what is measured.

Outputs: ``results.csv`` (tidy: ``quantity, width, depth, seed, value``; written last), ``fits.csv``, figure
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

from testbed.config import ConfigError, check_choice, check_positive_int, check_positive_ints
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


@dataclasses.dataclass
class Config:
    """Settings of the ``weight_reuse`` sub-study (``--set weight_reuse.widths=16,32,64``); validated on
    construction. The width of the depth sweeps, the data, batch size and learning rate are shared fields of the
    depth-scaling config (``width``, ``flow_system``, ``n_train``, ``n_test``, ``batch_size``, ``lr``)."""

    widths: tuple[int, ...] = (16, 32, 64, 128, 256)   # width sweep of the coupling at initialisation
    depths: tuple[int, ...] = (4, 8, 16, 32, 64)       # depth sweeps (coupling and dynamics)
    steps: int = 200                                    # Adam steps of each true / decoupled training run
    coupling_depths: tuple[int, ...] = ()   # depths of the width sweep (empty: the lower median of `depths`)
    dynamics_widths: tuple[int, ...] = ()   # widths of the dynamics depth sweep (empty: the shared `width`)
    dynamics_variants: tuple[str, ...] = VARIANTS  # twins trained beside the true network

    def __post_init__(self) -> None:
        self.widths = check_positive_ints("weight_reuse.widths", self.widths)
        self.depths = check_positive_ints("weight_reuse.depths", self.depths)
        check_positive_int("weight_reuse.steps", self.steps)
        self.coupling_depths = (check_positive_ints("weight_reuse.coupling_depths", self.coupling_depths)
                                if self.coupling_depths else ())
        self.dynamics_widths = (check_positive_ints("weight_reuse.dynamics_widths", self.dynamics_widths)
                                if self.dynamics_widths else ())
        self.dynamics_variants = tuple(self.dynamics_variants)
        if not self.dynamics_variants:
            raise ConfigError("weight_reuse.dynamics_variants must name at least one of " + ", ".join(VARIANTS))
        for v in self.dynamics_variants:
            check_choice("weight_reuse.dynamics_variants", v, VARIANTS)
        if "tracking" not in self.dynamics_variants:
            raise ConfigError("weight_reuse.dynamics_variants must include 'tracking' (the decoupled twin the "
                              "1/L² claim is about)")


# -------------------------------------------------------------------------------------------------- helpers
def width_depth(cfg) -> tuple[int, int]:
    """``(L_w, n_L)``: the (first) fixed depth of the width sweep (``cfg.weight_reuse.coupling_depths[0]``, else
    the lower median of ``cfg.weight_reuse.depths``) and the fixed width of the coupling depth sweep
    (``cfg.width``)."""
    c = cfg.weight_reuse
    if c.coupling_depths:
        return int(c.coupling_depths[0]), int(cfg.width)
    ds = sorted(int(d) for d in c.depths)
    return ds[(len(ds) - 1) // 2], int(cfg.width)


def coupling_depths(cfg) -> list[int]:
    """Depths at which the coupling's width sweep runs (``coupling_depths``, else ``[L_w]``)."""
    c = cfg.weight_reuse
    return [int(L) for L in c.coupling_depths] if c.coupling_depths else [width_depth(cfg)[0]]


def dynamics_widths(cfg) -> list[int]:
    """Widths of the dynamics depth sweep (``dynamics_widths``, else ``[cfg.width]``)."""
    c = cfg.weight_reuse
    return [int(n) for n in c.dynamics_widths] if c.dynamics_widths else [int(cfg.width)]


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


def coupling_width_depths(rows: list[dict[str, Any]]) -> list[int]:
    """Depths of the coupling's width sweeps: those with at least two widths in the ``coupling_excess`` rows."""
    by: dict[int, set[int]] = {}
    for r in rows:
        if r["quantity"] == "coupling_excess":
            by.setdefault(int(r["depth"]), set()).add(int(r["width"]))
    return sorted(L for L, ws in by.items() if len(ws) >= 2)


def dynamics_widths_of(rows: list[dict[str, Any]]) -> list[int]:
    """Widths with dynamics rows (``test_loss_true``), ascending."""
    return sorted({int(r["width"]) for r in rows if r["quantity"] == "test_loss_true"})


def fixed_axes(rows: list[dict[str, Any]]) -> tuple[int, int]:
    """``(L_w, n_L)`` recovered from coupling rows: the (first) depth of the width sweep and the width shared by
    the depth sweep (the most frequent width)."""
    cr = [r for r in rows if r["quantity"] == "coupling_excess"]
    wd = coupling_width_depths(rows)
    return (wd[0] if wd else mode([int(r["depth"]) for r in cr])), mode([int(r["width"]) for r in cr])


def points(rows: list[dict[str, Any]], quantity: str, axis: str, **fixed: Any
           ) -> tuple[list[float], list[float], list[int]]:
    """``(x, value, seed)`` of every row of ``quantity`` along ``axis`` with the other columns ``fixed``."""
    sel = [r for r in rows if r["quantity"] == quantity and all(int(r[k]) == int(v) for k, v in fixed.items())]
    return [float(r[axis]) for r in sel], [float(r["value"]) for r in sel], [int(r["seed"]) for r in sel]


#: Declared verdict rules (fixed before any run) on the 95% interval of a fitted exponent, bootstrap over seeds
#: (:func:`testbed.stats.loglog_fit_clustered`: a seed's points share its weights and move together):
#: * coupling vs width, at every depth of the width sweep — claim −1 against null 0 (:func:`~testbed.stats.
#:   claim_verdict`: reproduced if the interval holds −1 and excludes 0, not reproduced if it excludes −1);
#: * coupling vs depth — "O(1/n) uniformly in depth": reproduced if the interval lies below
#:   :data:`GROWTH_TOL` (no growth faster than ``L^0.25``), not reproduced if it lies above 0, else unresolved;
#: * reuse effect on the dynamics (``func_dist_tracking``) vs depth, at every dynamics width — claim −2 against
#:   null 0, the same rule as the width claim.
GROWTH_TOL = 0.25


def _depth_bounded_verdict(lo: float, hi: float) -> str:
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "no estimate"
    return "reproduced" if hi <= GROWTH_TOL else "not reproduced" if lo > 0 else "unresolved"


def fit_table(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every fitted exponent with its seed-bootstrap 95% interval, R², number of points and seeds, and — for the
    quantities paper B makes a claim about — the claimed exponent and the declared verdict (rules above).

    Columns: ``quantity``, ``axis`` (``width``/``depth``), ``fixed`` (``depth=8`` / ``width=64``), ``slope``,
    ``lo``, ``hi``, ``r2``, ``n_points``, ``n_seeds``, ``claim`` (the exponent, or empty), ``verdict``."""
    from testbed.stats import claim_verdict, loglog_fit_clustered

    out: list[dict[str, Any]] = []

    def add(q: str, axis: str, fixed: dict[str, int], claim: float | None, rule) -> None:
        xs, ys, seeds = points(rows, q, axis, **fixed)
        if len(set(xs)) < 2:
            return
        f = loglog_fit_clustered(xs, ys, seeds)
        out.append({"quantity": q, "axis": axis, "fixed": " ".join(f"{k}={v}" for k, v in fixed.items()),
                    "slope": f.slope, "lo": f.lo, "hi": f.hi, "r2": f.r2, "n_points": f.n,
                    "n_seeds": len(set(seeds)), "claim": "" if claim is None else claim,
                    "verdict": rule(f.lo, f.hi) if rule is not None else ""})

    widths_rule = lambda lo, hi: claim_verdict(lo, hi, WIDTH_CLAIM, 0.0)  # noqa: E731
    depth_rule = lambda lo, hi: claim_verdict(lo, hi, DEPTH_CLAIM, 0.0)  # noqa: E731
    for L in coupling_width_depths(rows):
        add("coupling_excess", "width", {"depth": L}, WIDTH_CLAIM, widths_rule)
        add("coupling_fluctuation", "width", {"depth": L}, None, None)
    _, n_L = fixed_axes(rows)
    add("coupling_excess", "depth", {"width": n_L}, None, _depth_bounded_verdict)
    add("backward_overlap", "depth", {"width": n_L}, None, None)
    for n in dynamics_widths_of(rows):
        add("func_dist_tracking", "depth", {"width": n}, DEPTH_CLAIM, depth_rule)
        add("loss_dist_tracking", "depth", {"width": n}, DEPTH_CLAIM, depth_rule)
        for v in VARIANTS:
            if v != "tracking":
                add(f"func_dist_{v}", "depth", {"width": n}, None, None)
    return out


def floor_comparisons(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per dynamics width, at the largest depth: the paired (same seed) ratio of the decoupled twin's distance to
    the other-initialisation distance, ``10^mean log10(func_dist_tracking / func_dist_reinit)`` with its 95%
    t-interval — below 1 (interval below 1) means the reuse effect is resolved above the finite-width floor."""
    from testbed.stats import paired

    out = []
    for n in dynamics_widths_of(rows):
        sel = [r for r in rows if int(r["width"]) == n and r["quantity"] in ("func_dist_tracking", "func_dist_reinit")]
        if not sel:
            continue
        L = max(int(r["depth"]) for r in sel)
        val = {(r["quantity"], int(r["seed"])): float(r["value"]) for r in sel if int(r["depth"]) == L}
        seeds = sorted(sd for q, sd in val if q == "func_dist_tracking" and ("func_dist_reinit", sd) in val)
        seeds = [sd for sd in seeds if val[("func_dist_tracking", sd)] > 0 and val[("func_dist_reinit", sd)] > 0]
        if not seeds:
            continue
        pc = paired([math.log10(val[("func_dist_tracking", sd)]) for sd in seeds],
                    [math.log10(val[("func_dist_reinit", sd)]) for sd in seeds])
        out.append({"width": n, "depth": L, "ratio": 10 ** pc.diff.mean, "lo": 10 ** pc.diff.lo,
                    "hi": 10 ** pc.diff.hi, "n": pc.diff.n, "p_t": pc.p_t})
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
    _, n_L = width_depth(cfg)
    c = cfg.weight_reuse
    pairs = sorted({(int(n), L_w) for n in c.widths for L_w in coupling_depths(cfg)}
                   | {(n_L, int(L)) for L in c.depths})
    depths = sorted(int(L) for L in c.depths)
    jobs = [("coupling", n, L, sd) for sd in cfg.seeds for n, L in pairs]
    jobs += [("dynamics", n, L, sd) for sd in cfg.seeds for n in dynamics_widths(cfg) for L in depths]
    rows: list[dict[str, Any]] = []
    for kind, n, L, sd in progress(jobs, desc="weight_reuse", enabled=cfg.progress):
        if kind == "coupling":
            rows += coupling_rows(n, L, x_c, y_c, int(sd))
        else:
            rows += dynamics_rows(n, L, data, int(sd), c.steps, cfg.lr, cfg.batch_size, c.dynamics_variants)
    write_csv(out / "fits.csv", fit_table(rows))
    write_csv(out / "results.csv", rows, COLUMNS)
    return rows


def plot(out: Path) -> list[Path]:
    """Redraw ``weight_reuse.{png,pdf}`` from ``out/results.csv``."""
    out = Path(out)
    return _draw(read_csv(out / "results.csv"), out)


def _draw(rows: list[dict[str, Any]], out: Path) -> list[Path]:
    from testbed.experiments.depth.weight_reuse_plot import draw

    return draw(rows, out)


_CLAIM_TEXT = {
    ("coupling_excess", "width"): "coupling at initialisation is O(1/n) (exponent −1 in width)",
    ("coupling_excess", "depth"): "the O(1/n) coupling is uniform in depth (does not grow with L)",
    ("func_dist_tracking", "depth"): "the effect of Wᵀ reuse on training decays like 1/L² (function distance of "
                                     "the decoupled twin)",
    ("loss_dist_tracking", "depth"): "the effect of Wᵀ reuse on training decays like 1/L² (loss-curve distance)",
    ("coupling_fluctuation", "width"): "not a paper claim: one draw's gradient-independent noise (CLT: −1/2)",
    ("backward_overlap", "depth"): "not a paper claim: cosine of true and decoupled input-layer backward signals",
    ("func_dist_frozen", "depth"): "not a paper claim: feedback alignment with a frozen Gaussian copy",
    ("func_dist_reinit", "depth"): "reference: two independent initialisations (the finite-width floor)",
}


def summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every fitted exponent (:func:`fit_table`: value, 95% interval, points, declared verdict, the claim it tests)
    and, per dynamics width, the paired decoupled/other-initialisation distance ratio (:func:`floor_comparisons`).
    """
    out = []
    for f in fit_table(rows):
        claim = _CLAIM_TEXT.get((f["quantity"], f["axis"]), f["quantity"])
        if f["claim"] != "":
            claim += f" [claim {float(f['claim']):g}]"
        out.append({"key": f"slope_{f['quantity']}_vs_{f['axis']}_{f['fixed'].replace('=', '')}",
                    "value": f["slope"], "lo": f["lo"], "hi": f["hi"], "n": f["n_points"], "verdict": f["verdict"],
                    "claim": f"{claim}; R² = {f['r2']:.2f}, {f['n_seeds']} seed(s)"})
    for c in floor_comparisons(rows):
        out.append({"key": f"decoupled_over_other_init_width{c['width']}_L{c['depth']}", "value": c["ratio"],
                    "lo": c["lo"], "hi": c["hi"], "n": c["n"],
                    "verdict": ("no estimate" if not (math.isfinite(c["lo"]) and math.isfinite(c["hi"]))
                                else "below the floor" if c["hi"] < 1 else "above the floor" if c["lo"] > 1
                                else "within the floor"),
                    "claim": "paired ratio ‖f_dec − f‖ / ‖f' − f‖ (f' another initialisation) at the largest depth: "
                             "< 1 if the reuse effect is resolved above the finite-width floor"})
    return out


__all__ = ["BRANCH_MULTIPLIER", "COLUMNS", "Config", "DecoupledLinear", "GROWTH_TOL", "MIN_DRAWS", "ReuseNet",
           "coupling_depths", "coupling_draws", "coupling_from_weights", "coupling_rows", "coupling_stats",
           "coupling_width_depths", "decoupled_linear", "dynamics_rows", "dynamics_widths", "dynamics_widths_of",
           "final_loss_gap", "fit_table", "fixed_axes", "floor_comparisons", "flow_data",
           "loglog_slope", "mode", "n_draws_for", "plot", "points", "run", "series", "summary", "width_depth"]

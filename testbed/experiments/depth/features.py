"""Feature learning across depth: which layers still move after training, as ``L`` grows (paper B; TP VI).

Settings: ``cfg`` is the depth-scaling config; this sub-study's own setting is ``cfg.features.depths``
(:class:`Config`, ``--set features.depths=4,16``), the rest are shared with the other training sub-studies
(``cfg.parameterizations``, ``cfg.block_depths``, ``cfg.correction_exponent``, ``cfg.width``, ``cfg.steps``,
``cfg.batch_size``, ``cfg.lr``, ``cfg.flow_system``, ``cfg.n_train``, ``cfg.n_test``).

For every parameterization ``p ∈ cfg.parameterizations``, block depth ``b ∈ cfg.block_depths`` and depth
``L ∈ cfg.features.depths`` (plus Depth-μP with block depth 2 *and* the first-layer learning-rate correction
``L^γ``, ``γ = cfg.correction_exponent``: variant ``depth_mup+corr``) a
:class:`~testbed.students.classifier.ResidualNet` ``x ∈ R² → h_0 = embed(x) ∈ R^n → h_L → head(h_L) ∈ R²``
(``n = cfg.width``, untied blocks, ``branch_scaling = p``, ``hidden_layers = b − 1``) is trained on the teacher
flow map ``x ↦ φ_T(x)`` of ``cfg.flow_system`` (objective ``endpoint``, each optimizer of ``cfg.optimizers`` — Adam
at base rate ``cfg.lr``, SGD at ``cfg.sgd_lr``, variant names ``…+sgd`` —, ``cfg.steps`` steps of
``cfg.batch_size``, learning-rate groups from :func:`testbed.parameterization.param_groups`). With ``θ_0`` the
initial and ``θ_T`` the trained parameters, on the ``N`` test inputs:

* ``feature_change``     (layer ``l = 0..L``)
  ``sqrt(Σ_i ‖h_l(x_i; θ_T) − h_l(x_i; θ_0)‖²) / sqrt(Σ_i ‖h_l(x_i; θ_0)‖²)`` — RMS over inputs of the change
  of the residual stream after block ``l`` (``l = 0``: the embedding);
* ``weight_change_last``  (block ``l = 1..L``)  ``‖W_l(θ_T) − W_l(θ_0)‖_F / ‖W_l(θ_0)‖_F`` of the block's last
  matrix (``W`` of ``W·tanh(h) + b`` for block depth 1, ``W₂`` of ``W₂ tanh(W₁h + b₁) + b₂`` for block depth 2);
* ``weight_change_first`` (block depth 2) the same for the first internal matrix ``W₁``;
* ``preact_change``      (block depth 2) the RMS relative change of the first internal layer's pre-activations
  ``z_l = W₁ h_{l−1} + b₁``: ``‖z_l(θ_T) − z_l(θ_0)‖ / ‖z_l(θ_0)‖`` (inputs and weights both trained);
* ``preact_own_change``  (block depth 2) the part due to the layer's own update at fixed input:
  ``‖(W₁(θ_T) − W₁(θ_0)) h_{l−1}(θ_0) + Δb₁‖ / ‖z_l(θ_0)‖`` — "does the first internal layer learn features".
* per run: ``test_loss`` (relative MSE of the read-out against ``φ_T`` on the test set), ``diverged`` (1 when the
  loss became non-finite; no per-layer rows then).

Derived (mean over seeds of the mean over blocks ``l ≥ 1``):

* ``vanishing.csv``  for each variant, block depth and feature quantity (``feature_change``, ``preact_change``,
  ``preact_own_change``): the value at the smallest and the largest depth, overall (``l_over_L = "all"``) and at
  each relative position ``l/L = k/L_min``; ``vanishing = value(L_min)/value(L_max) > VANISH_FACTOR``. The
  overall flag is repeated in ``results.csv`` (column ``vanishing``) on that quantity's rows.
* ``exponents.csv``  the log-log slope of the layer-mean of every per-layer quantity vs ``L``, fitted on every
  (``L``, seed) network with a 95% interval that resamples whole seeds, R², points, seeds and the declared verdict
  (:data:`_CLAIMS`, :func:`verdict_of`) (Adam under Depth-μP
  gives branch weights ``η/√L``, so expect ``≈ −1/2`` for weight changes, and for the first internal layer's own
  feature change without correction; ``≈ 0`` for ``W₁`` with the ``L^{1/2}`` correction).

Figures: ``feature_change_per_layer`` (per-layer change vs ``l/L``, one line per ``L``, a panel per variant and
block depth) and ``update_vs_depth`` (layer-mean changes vs ``L``, log-log, fitted slopes in the legend).
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import systems
from testbed.config import check_positive_ints
from testbed.experiments.common import make_splits
from testbed.experiments.depth.variant_names import base_variant, optimizer_of, variant_name
from testbed.objectives import relative_mse
from testbed.parameterization import param_groups
from testbed.plotting import PALETTE, log_axes, loglog_line, plain_log_label, power_guide, save_figure, use_style
from testbed.progress import progress
from testbed.results import read_csv, write_csv
from testbed.students.classifier import ResidualNet
from testbed.train import NonFiniteLossError, TrainConfig, train

Tensor = torch.Tensor
COLUMNS = ["variant", "parameterization", "correction", "optimizer", "block_depth", "L", "seed", "layer", "l_over_L",
           "quantity", "value", "vanishing"]
FEATURE_QUANTITIES = ("feature_change", "preact_change", "preact_own_change")
LAYER_QUANTITIES = ("feature_change", "weight_change_last", "weight_change_first", "preact_change",
                    "preact_own_change")
VANISH_FACTOR = 2.0
DTYPE = torch.float32  # training is overhead-bound at these widths; float32 is ample for relative changes ≥ 1e-4


@dataclasses.dataclass
class Config:
    """Settings of the ``features`` sub-study (``--set features.depths=4,16,64``); validated on construction."""

    depths: tuple[int, ...] = (4, 8, 16, 32, 64)

    def __post_init__(self) -> None:
        self.depths = check_positive_ints("features.depths", self.depths)


# ---------------------------------------------------------------------------------------------- measurements
def rms_relative_change(new: Tensor, old: Tensor) -> Tensor:
    """``sqrt(Σ_i ‖new_i − old_i‖²) / sqrt(Σ_i ‖old_i‖²)`` over the last two axes (inputs ``i`` × coordinates);
    leading axes (e.g. layers) are kept."""
    num = (new - old).double().pow(2).sum((-2, -1)).sqrt()
    den = old.double().pow(2).sum((-2, -1)).sqrt().clamp_min(1e-300)
    return num / den


def weight_change(new: Tensor, old: Tensor) -> float:
    """``‖new − old‖_F / ‖old‖_F``."""
    return float((new - old).double().norm() / old.double().norm().clamp_min(1e-300))


def linears(block: nn.Module) -> list[nn.Linear]:
    """The Linear layers of a branch, input to output."""
    return [m for m in block.modules() if isinstance(m, nn.Linear)]


@torch.no_grad()
def hidden_states(model: ResidualNet, x: Tensor) -> Tensor:
    """``h_l(x)`` for ``l = 0..L`` (shape ``(L+1, N, n)``)."""
    return model.flow.trajectory(model.initial_state(x))


@torch.no_grad()
def layer_changes(model: ResidualNet, model0: ResidualNet, x: Tensor) -> list[dict[str, Any]]:
    """Per-layer rows (``layer``, ``l_over_L``, ``quantity``, ``value``) comparing ``model`` with ``model0`` on
    inputs ``x`` (see the module docstring for the definitions). Zero for a model against itself."""
    L = model.flow.n_layers
    h, h0 = hidden_states(model, x), hidden_states(model0, x)
    rows = []
    fc = rms_relative_change(h, h0)
    for l in range(L + 1):
        rows.append({"layer": l, "l_over_L": l / L, "quantity": "feature_change", "value": float(fc[l])})
    for l in range(1, L + 1):
        lin, lin0 = linears(model.flow.blocks[l - 1]), linears(model0.flow.blocks[l - 1])
        common = {"layer": l, "l_over_L": l / L}
        rows.append({**common, "quantity": "weight_change_last", "value": weight_change(lin[-1].weight,
                                                                                          lin0[-1].weight)})
        if len(lin) >= 2:
            rows.append({**common, "quantity": "weight_change_first", "value": weight_change(lin[0].weight,
                                                                                               lin0[0].weight)})
            z0 = lin0[0](h0[l - 1])
            rows.append({**common, "quantity": "preact_change",
                         "value": float(rms_relative_change(lin[0](h[l - 1]), z0))})
            rows.append({**common, "quantity": "preact_own_change",
                         "value": float(rms_relative_change(lin[0](h0[l - 1]), z0))})
    return rows


# ---------------------------------------------------------------------------------------------- runs
def variants(cfg) -> list[tuple[str, str, int, float | None, str]]:
    """``(variant, parameterization, block_depth, correction exponent or None, optimizer)`` for every trained family,
    per optimizer in ``cfg.optimizers``; an SGD variant's name ends in ``+sgd`` (``depth_mup+corr+sgd``)."""
    out = []
    for opt in cfg.optimizers:
        out += [(variant_name(p, opt), p, b, None, opt) for p in cfg.parameterizations for b in cfg.block_depths]
        if "depth_mup" in cfg.parameterizations and 2 in cfg.block_depths:
            out.append((variant_name("depth_mup+corr", opt), "depth_mup", 2, float(cfg.correction_exponent), opt))
    return out


def build_model(cfg, parameterization: str, block_depth: int, L: int, seed: int) -> ResidualNet:
    """The untied ResidualNet of one run, built under ``torch.manual_seed(seed)``."""
    torch.manual_seed(seed)
    return ResidualNet(2, 2, dim=cfg.width, n_layers=L, horizon=1.0, width=cfg.width, hidden_layers=block_depth - 1,
                       tied=False, branch_scaling=parameterization).to(DTYPE)


def train_one(cfg, model: ResidualNet, parameterization: str, correction: float | None, train_data, seed: int,
              optimizer: str = "adam") -> bool:
    """Train in place (``optimizer`` at base rate ``cfg.lr`` for Adam, ``cfg.sgd_lr`` for SGD; ``param_groups`` of
    ``parameterization``); False when the loss became non-finite."""
    lr = cfg.lr if optimizer == "adam" else cfg.sgd_lr
    groups = param_groups(model, lr, parameterization, optimizer, correction)
    for g in groups:
        g["fused"] = True  # one fused update per group (the per-tensor loop dominates at large L on CPU)
    tcfg = TrainConfig(steps=cfg.steps, batch_size=cfg.batch_size, lr=lr, seed=seed, progress=False,
                       checkpoint_every=0, log_every=max(cfg.steps, 1), optimizer=optimizer)
    try:
        train(model, "endpoint", train_data, tcfg, None, device=cfg.device, param_groups=groups)
    except NonFiniteLossError:
        return False
    finally:
        model.to("cpu")
    return True


def run(cfg, out: Path) -> list[dict[str, Any]]:
    """Train every variant × depth × seed, measure the per-layer changes; write CSVs (``results.csv`` last) and
    figures. Returns the rows of ``results.csv``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    system = systems.get_system(cfg.flow_system)
    train_data, test_data, _ = make_splits(system, cfg.n_train, cfg.n_test, 1)
    x_test = test_data.x0.to(DTYPE)
    y_test = test_data.endpoints.to(DTYPE)
    jobs = [(v, seed, L) for seed in cfg.seeds for v in variants(cfg) for L in cfg.features.depths]
    rows: list[dict[str, Any]] = []
    for (variant, param, bd, corr, opt), seed, L in progress(jobs, enabled=cfg.progress, desc="features"):
        model = build_model(cfg, param, bd, L, int(seed))
        model0 = copy.deepcopy(model)
        ok = train_one(cfg, model, param, corr, train_data, int(seed), opt)
        common = {"variant": variant, "parameterization": param, "correction": "" if corr is None else corr,
                  "optimizer": opt, "block_depth": bd, "L": L, "seed": int(seed)}
        rows.append({**common, "layer": "", "l_over_L": "", "quantity": "diverged", "value": float(not ok)})
        if not ok:
            rows.append({**common, "layer": "", "l_over_L": "", "quantity": "test_loss", "value": float("nan")})
            continue
        with torch.no_grad():
            loss = float(relative_mse(model(x_test), y_test))
        rows.append({**common, "layer": "", "l_over_L": "", "quantity": "test_loss", "value": loss})
        rows += [{**common, **r} for r in layer_changes(model, model0, x_test)]
    van = vanishing_table(rows)
    flags = {(r["variant"], r["block_depth"], r["quantity"]): r["vanishing"] for r in van if r["l_over_L"] == "all"}
    for r in rows:
        r["vanishing"] = flags.get((r["variant"], r["block_depth"], r["quantity"]), "")
    write_csv(out / "vanishing.csv", van)
    write_csv(out / "exponents.csv", exponent_table(rows))
    write_csv(out / "results.csv", rows, COLUMNS)
    return rows


# ---------------------------------------------------------------------------------------------- aggregates
def _families(rows: list[dict[str, Any]]) -> list[tuple[str, int]]:
    return list(dict.fromkeys((r["variant"], int(r["block_depth"])) for r in rows))


def _layer_values(rows, variant: str, bd: int, quantity: str) -> dict[int, dict[int, float]]:
    """``{L: {layer: mean over seeds}}`` of a per-layer quantity."""
    acc: dict[int, dict[int, list[float]]] = {}
    for r in rows:
        if r["variant"] == variant and int(r["block_depth"]) == bd and r["quantity"] == quantity:
            acc.setdefault(int(r["L"]), {}).setdefault(int(r["layer"]), []).append(float(r["value"]))
    return {L: {l: float(np.mean(v)) for l, v in sorted(d.items())} for L, d in sorted(acc.items())}


def layer_mean(rows, variant: str, bd: int, quantity: str) -> tuple[list[int], list[float]]:
    """Depths and the mean over seeds of the mean over blocks ``l ≥ 1`` of ``quantity``."""
    vals = _layer_values(rows, variant, bd, quantity)
    Ls = [L for L in vals if any(l >= 1 for l in vals[L])]
    return Ls, [float(np.mean([v for l, v in vals[L].items() if l >= 1])) for L in Ls]


def vanishing_table(rows: list[dict[str, Any]], factor: float = VANISH_FACTOR) -> list[dict[str, Any]]:
    """Feature-update magnitude at the smallest vs the largest depth (overall and per relative layer position)."""
    out = []
    for variant, bd in _families(rows):
        for q in FEATURE_QUANTITIES:
            vals = _layer_values(rows, variant, bd, q)
            if len(vals) < 2:
                continue
            l_min, l_max = min(vals), max(vals)
            pairs = [("all", float(np.mean([v for l, v in vals[l_min].items() if l >= 1])),
                      float(np.mean([v for l, v in vals[l_max].items() if l >= 1])))]
            for k in range(1, l_min + 1):
                lk = round(k * l_max / l_min)
                if lk in vals[l_max] and k in vals[l_min]:
                    pairs.append((k / l_min, vals[l_min][k], vals[l_max][lk]))
            for pos, a, b in pairs:
                ratio = a / b if b > 0 else float("inf")
                out.append({"variant": variant, "block_depth": bd, "quantity": q, "l_over_L": pos, "L_min": l_min,
                            "L_max": l_max, "value_L_min": a, "value_L_max": b, "ratio": ratio,
                            "vanishing": bool(ratio > factor)})
    return out


def seed_layer_means(rows, variant: str, bd: int, quantity: str) -> tuple[list[int], list[float], list[int]]:
    """``(L, mean over blocks l ≥ 1 of quantity, seed)`` per trained network of one family."""
    acc: dict[tuple[int, int], list[float]] = {}
    for r in rows:
        if (r["variant"] == variant and int(r["block_depth"]) == bd and r["quantity"] == quantity
                and r["layer"] != "" and int(r["layer"]) >= 1):
            acc.setdefault((int(r["L"]), int(r["seed"])), []).append(float(r["value"]))
    keys = sorted(acc)
    return [L for L, _ in keys], [float(np.mean(acc[k])) for k in keys], [sd for _, sd in keys]


#: Declared claims and verdict rules (fixed before any run), on the 95% seed-bootstrap interval ``[lo, hi]`` of the
#: fitted exponent of the layer-mean change vs ``L`` (:func:`testbed.stats.loglog_fit_clustered`). ``"decays"``:
#: paper B's "the first internal layer stops learning" — reproduced if the interval holds −½ and excludes 0
#: (:func:`~testbed.stats.claim_verdict`); ``"flat"``: Θ(1) in depth — reproduced if the interval lies inside
#: ``±FLAT_TOL`` (:func:`~testbed.stats.band_verdict`), not reproduced if it lies wholly outside; ``"grows"``:
#: reproduced if the interval lies above 0. The optimizer suffix (``+sgd``) does not change the claim: with SGD
#: Depth-μP keeps η on the branches and the first layer's gradient carries the ``a/√L`` multiplier, so its update
#: shrinks like ``L^{-1/2}`` as with Adam's ``η/√L``.
FLAT_TOL = 0.15
_CLAIMS = {
    ("weight_change_first", "depth_mup", 2): ("decays", "the first internal layer's weights move like L^−½ "
                                                        "(it stops learning as L grows)"),
    ("preact_own_change", "depth_mup", 2): ("decays", "the first internal layer stops learning features (its own "
                                                      "update ∝ L^−½)"),
    ("weight_change_first", "depth_mup+corr", 2): ("flat", "the L^γ correction restores the first layer's updates "
                                                           "(exponent ≈ 0)"),
    ("preact_own_change", "depth_mup+corr", 2): ("flat", "with the correction the first layer keeps learning "
                                                         "features (exponent ≈ 0)"),
    ("feature_change", "depth_mup", 1): ("flat", "Depth-μP keeps feature learning Θ(1) in depth (block depth 1)"),
    ("feature_change", "standard", 1): ("grows", "under SP (fixed lr) feature updates grow with depth"),
}


def claim_of(quantity: str, variant: str, bd: int) -> tuple[str, str] | None:
    """``(rule, text)`` of the declared claim on this exponent, or None."""
    return _CLAIMS.get((quantity, base_variant(variant), bd))


def verdict_of(rule: str, lo: float, hi: float) -> str:
    """Apply a declared rule (``decays`` / ``flat`` / ``grows``) to an interval; see :data:`_CLAIMS`."""
    from testbed.stats import band_verdict, claim_verdict, sign_verdict

    if rule == "decays":
        return claim_verdict(lo, hi, -0.5, 0.0)
    if rule == "flat":
        v = band_verdict(lo, hi, FLAT_TOL)
        return {"inside ±tol": "reproduced", "outside ±tol": "not reproduced"}.get(v, v)
    v = sign_verdict(lo, hi)
    return {"positive": "reproduced", "negative": "not reproduced"}.get(v, v)


def exponent_table(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per variant/block depth and per-layer quantity: the log–log slope vs ``L`` of the layer-mean (``l ≥ 1``)
    over every (``L``, seed) network, its 95% seed-bootstrap interval, R², number of points and seeds, and the
    declared verdict where paper B makes a claim."""
    from testbed.stats import loglog_fit_clustered

    out = []
    for variant, bd in _families(rows):
        for q in LAYER_QUANTITIES:
            Ls, m, seeds = seed_layer_means(rows, variant, bd, q)
            if len(set(Ls)) < 2:
                continue
            f = loglog_fit_clustered(Ls, m, seeds)
            c = claim_of(q, variant, bd)
            out.append({"variant": variant, "block_depth": bd, "quantity": q, "exponent": f.slope, "lo": f.lo,
                        "hi": f.hi, "r2": f.r2, "n_points": f.n, "n_seeds": len(set(seeds)), "L_min": min(Ls),
                        "L_max": max(Ls), "rule": c[0] if c else "",
                        "verdict": verdict_of(c[0], f.lo, f.hi) if c else ""})
    return out


def summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Fitted exponents with interval and verdict (layer-mean change ∝ L^exponent) and vanishing flags (1.0 =
    flagged)."""
    out = []
    for r in exponent_table(rows):
        if r["quantity"] == "preact_change":
            continue
        v, bd, q = r["variant"], int(r["block_depth"]), r["quantity"]
        c = claim_of(q, v, bd)
        claim = c[1] if c else f"fitted exponent of the layer-mean {q} vs L"
        out.append({"key": f"exponent_{q}_{v}_bd{bd}", "value": r["exponent"], "lo": r["lo"], "hi": r["hi"],
                    "n": r["n_points"], "verdict": r["verdict"],
                    "claim": f"{claim}; R² = {r['r2']:.2f}, {r['n_seeds']} seed(s)"})
    for r in vanishing_table(rows):
        if r["l_over_L"] != "all":
            continue
        v, bd, q = r["variant"], int(r["block_depth"]), r["quantity"]
        out.append({"key": f"vanishing_{q}_{v}_bd{bd}", "value": float(r["vanishing"]),
                    "claim": f"1 = {q} falls > {VANISH_FACTOR:g}× from L={r['L_min']} to L={r['L_max']} "
                             f"(ratio {r['ratio']:.2f}); expected only for depth_mup block depth 2 first layer"})
    return out


# ---------------------------------------------------------------------------------------------- figures
def plot(out: Path) -> list[Path]:
    """Redraw both figures from ``out/results.csv``."""
    out = Path(out)
    return _plot_rows(read_csv(out / "results.csv"), out)


_ROWS = [(1, "feature_change", "‖Δh_l‖ / ‖h_l‖"), (2, "feature_change", "‖Δh_l‖ / ‖h_l‖"),
         (2, "preact_own_change", "‖ΔW₁ h_(l−1)‖ / ‖W₁ h_(l−1)‖")]


def _plot_rows(rows: list[dict[str, Any]], out: Path) -> list[Path]:
    """``feature_change_per_layer`` (one figure per optimizer; ``_sgd`` suffix for SGD) and ``update_vs_depth``
    (one row of panels per optimizer)."""
    paths: list[Path] = []
    for opt in dict.fromkeys(optimizer_of(str(r["variant"])) for r in rows):
        sel = [r for r in rows if optimizer_of(str(r["variant"])) == opt]
        paths += _plot_per_layer(sel, out, "" if opt == "adam" else f"_{opt}", opt)
    return paths + _plot_vs_depth(rows, out)


def _depth_colors(Ls: list[int]) -> dict[int, Any]:
    import matplotlib

    cmap = matplotlib.colormaps["viridis"]
    return {L: cmap(0.85 * i / max(len(Ls) - 1, 1)) for i, L in enumerate(Ls)}


def _plot_per_layer(rows: list[dict[str, Any]], out: Path, suffix: str = "", optimizer: str = "adam") -> list[Path]:
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator

    use_style()
    fams = _families(rows)
    cols = list(dict.fromkeys(v for v, _ in fams))
    panels = [(bd, q, lab) for bd, q, lab in _ROWS if any(b == bd for _, b in fams)]
    Ls = sorted({int(r["L"]) for r in rows})
    colors = _depth_colors(Ls)
    flags = {(r["variant"], int(r["block_depth"]), r["quantity"]): r for r in vanishing_table(rows)
             if r["l_over_L"] == "all"}
    fig, axes = plt.subplots(len(panels), len(cols), figsize=(2.35 * len(cols), 1.9 * len(panels) + 0.5),
                             layout="constrained", squeeze=False)
    spare = None
    for i, (bd, q, ylabel) in enumerate(panels):
        for j, variant in enumerate(cols):
            ax = axes[i, j]
            vals = _layer_values(rows, variant, bd, q)
            if not vals:
                ax.axis("off")
                spare = spare or ax
                continue
            for L, d in vals.items():
                ls = [l for l in d if l >= (0 if q == "feature_change" else 1)]
                ax.plot([l / L for l in ls], [max(d[l], 1e-12) for l in ls], color=colors[L], lw=1,
                        marker="o" if L <= 8 else None, ms=2.5, label=f"L = {L}")
            ax.set_yscale("log")
            ax.yaxis.set_minor_locator(LogLocator(base=10, subs=(2.0, 5.0)))
            ax.yaxis.set_major_formatter(FuncFormatter(plain_log_label))
            ax.yaxis.set_minor_formatter(FuncFormatter(plain_log_label))
            ax.set_xlim(-0.03, 1.03)
            ax.set_xlabel("relative depth l/L")
            ax.set_ylabel(ylabel)
            f = flags.get((variant, bd, q))
            tag = f" — vanishing (÷{f['ratio']:.1f})" if f and f["vanishing"] else ""
            what = "stream h_l" if q == "feature_change" else "1st internal layer"
            ax.set_title(f"{variant}, block depth {bd}\n{what}{tag}", loc="left",
                         color="#D55E00" if tag else "black")
    handles = [plt.Line2D([], [], color=colors[L], lw=1, label=f"L = {L}") for L in Ls]
    if spare is not None:
        spare.legend(handles=handles, loc="center", frameon=False, title="depth")
    else:
        fig.legend(handles=handles, loc="outside lower center", ncols=len(Ls), frameon=False)
    fig.suptitle(f"Feature change per layer after training ({'SGD' if optimizer == 'sgd' else 'Adam'}; RMS over "
                 "test inputs, mean over seeds)\n"
                 "rows: residual stream h_l (block depth 1, 2) and the first internal layer's own update")
    return save_figure(fig, out / f"feature_change_per_layer{suffix}")


def _plot_vs_depth(rows: list[dict[str, Any]], out: Path) -> list[Path]:
    """Layer-mean updates vs ``L`` (log–log): four panels (stream, first layer's own update, last matrix, ``W₁``),
    one row per optimizer; colour = parameterization (+ correction), solid/circle = block depth 1, dashed/square =
    block depth 2; the fitted slope in each legend entry."""
    import matplotlib.pyplot as plt

    use_style()
    fams = _families(rows)
    opts = list(dict.fromkeys(optimizer_of(v) for v, _ in fams))
    Ls = sorted({int(r["L"]) for r in rows})
    vcolor = {v: PALETTE[i % len(PALETTE)] for i, v in enumerate(dict.fromkeys(base_variant(v) for v, _ in fams))}
    panels = [("feature_change", "(a) residual stream h_l", "mean over l of ‖Δh_l‖/‖h_l‖"),
              ("preact_own_change", "(b) first internal layer, own update", "mean over l of ‖ΔW₁ h‖/‖W₁ h‖"),
              ("weight_change_last", "(c) last matrix of each block", "mean over l of ‖ΔW‖_F / ‖W‖_F"),
              ("weight_change_first", "(d) first matrix W₁ (block depth 2)", "mean over l of ‖ΔW₁‖_F / ‖W₁‖_F")]
    fig, axes = plt.subplots(len(opts), 4, figsize=(13.0, 4.3 * len(opts)), layout="constrained", squeeze=False)
    for row, opt in enumerate(opts):
        for ax, (q, title, ylabel) in zip(axes[row], panels, strict=True):
            starts = []
            for variant, bd in fams:
                if optimizer_of(variant) != opt:
                    continue
                xs, m = layer_mean(rows, variant, bd, q)
                if not xs:
                    continue
                loglog_line(ax, xs, m, color=vcolor[base_variant(variant)], label=f"{base_variant(variant)}, bd {bd}",
                            ls="-" if bd == 1 else "--", marker="o" if bd == 1 else "s")
                starts += [v for v in m[:1] if v > 0]
            log_axes(ax, Ls)
            ax.set_title(f"{title} — {'SGD' if opt == 'sgd' else 'Adam'}", loc="left", fontsize="medium")
            ax.set_xlabel("depth L (layers)")
            ax.set_ylabel(ylabel)
            if starts:
                power_guide(ax, Ls, float(np.median(starts)), -0.5, "∝ 1/√L")
                ax.legend(frameon=False, fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncols=1,
                          handlelength=2.2)
    fig.suptitle("Layer-mean updates vs depth (mean over seeds; bd = block depth; slope = fitted exponent)")
    return save_figure(fig, out / "update_vs_depth")


__all__ = ["Config", "FLAT_TOL", "base_variant", "build_model", "claim_of", "exponent_table", "hidden_states",
           "layer_changes", "layer_mean", "optimizer_of", "plot", "rms_relative_change", "run", "seed_layer_means",
           "summary", "train_one", "vanishing_table", "variants", "verdict_of", "weight_change"]

"""Learning-rate transfer across depth: SP vs Depth-μP, block depth 1 vs 2, with and without the correction.

Claims under test (Tensor Programs VI, arXiv 2310.02244; arXiv 2512.21075): with the Depth-μP rule (branch
multiplier ``a/√L``, Adam learning rate ``η/√L`` on branch weights) and one-matrix blocks ``W·σ(h)`` the
optimal base learning rate ``η*`` does not move with depth ``L``; under SP (multiplier 1, one ``η``) it drifts;
with two-matrix blocks ``W₂σ(W₁h)`` Depth-μP loses transfer, and multiplying the first internal layer's learning
rate by ``L^γ`` (``cfg.correction_exponent``) restores it.

Protocol. For every task in ``cfg.lr_transfer.tasks`` (``flow``: regression of the teacher flow map
``x₀ ↦ φ_T(x₀)`` of ``cfg.flow_system`` with a :class:`~testbed.students.ResidualNet` ``d → n → d``; ``digits``: a
:class:`~testbed.students.ResidualClassifier` ``64 → n → 10`` on scikit-learn's 8×8 digits, full stratified
train/test split), every variant (each parameterization × block depth, plus Depth-μP + block depth 2 + the
first-layer correction), depth ``L ∈ cfg.lr_transfer.depths``, base learning rate ``η ∈ cfg.lr_transfer.lr_grid``
and seed: build the untied network (residual stream and hidden width ``cfg.width``, tanh) under
``torch.manual_seed(seed)`` (so every ``η`` starts from the same weights), train ``cfg.steps`` Adam steps
(learning rates per parameter group from :func:`testbed.parameterization.param_groups`) of batch
``cfg.batch_size`` with a **cosine** schedule (``η_t = η·½(1 + cos(πt/T))``; the peak rate is ``η`` at the
start, where instabilities show, and the annealed end makes the final loss a property of ``η`` rather than of
the last minibatch's noise) and **no gradient clipping** (so a too-large ``η`` is not rescued). Then evaluate,
in float32, the final loss on the whole training set and on the test set — flow: relative MSE
``Σ‖ŷ − φ_T(x₀)‖²/Σ‖φ_T(x₀)‖²``; digits: cross entropy (and accuracy). A run whose loss turns NaN/inf
(:class:`~testbed.train.NonFiniteLossError`, or a non-finite evaluation) is recorded with loss ``inf`` and
``diverged = True``; it can never be an optimum.

Implementation: all (seed, ``η``) runs of one (task, variant, ``L``) are trained together as stacked "lanes"
(:class:`Lanes`, :func:`train_lanes`) — one batched matmul per layer for all of them, several times faster than
separate runs on a CPU and far better use of a GPU. Each lane reproduces :func:`testbed.train.train` with
the same settings to rounding error (:func:`train_reference` is that library path; the tests compare them).

Transfer metrics, per (task, variant), from the seed-aggregated loss ``ℓ(L, η) = exp(mean_seeds ln loss)``
(``inf`` if any seed diverged). The optimum is located on the *validation* loss (20% of the training data held
out, :data:`~testbed.experiments.depth.lr_transfer_lanes.VAL_FRACTION`); test losses are only read at the
validation-chosen learning rates:

* optimal learning rate per ``L``: the grid argmin ``η_i``, refined by the vertex of the parabola through
  ``(log₂η_j, ln ℓ_j)``, ``j = i−1, i, i+1`` (:func:`refine_optimum`; an argmin on the grid edge, or next to a
  diverged neighbour, stays on the grid and is flagged ``at_edge``);
* spread ``max_L log₂η*(L) − min_L log₂η*(L)`` in octaves (:func:`octave_spread`);
* drift exponent ``α``, the least-squares slope of ``log₂η*`` against ``log₂L`` (``η* ∝ L^α``;
  :func:`drift_exponent`): ``α ≈ 0`` is transfer;
* transfer regret ``ℓ_test(L_max, η̂(L_min)) / ℓ_test(L_max, η̂(L_max))``: the test cost of using the validation
  optimum of the smallest depth at the largest depth instead of retuning there (1 = free, ``inf`` = it diverges).

Outputs in ``out/``: ``results.csv`` (one row per run, :data:`RESULT_COLUMNS`, written last), ``optima.csv``
(one row per task × variant × ``L``, :data:`OPTIMA_COLUMNS`), ``transfer.csv`` (one row per task × variant,
:data:`TRANSFER_COLUMNS`), figures ``lr_curves.{png,pdf}`` (test loss vs ``η``, one curve per ``L``, a panel per
task × variant) and ``optimal_lr.{png,pdf}`` (``η*`` vs ``L``, log–log, one line per variant).

Settings: ``cfg`` is the depth-scaling config. This sub-study's own settings are :class:`Config`
(``cfg.lr_transfer``: ``depths``, ``lr_grid``, ``tasks``; ``--set lr_transfer.depths=4,16,64``); the network and
training settings above (``cfg.width``, ``cfg.steps``, ``cfg.batch_size``, ``cfg.parameterizations``,
``cfg.block_depths``, ``cfg.correction_exponent``, ``cfg.flow_system``, ``cfg.n_train``, ``cfg.n_test``) are shared
with ``features`` (and partly ``weight_reuse``). Layout: this module holds the protocol, metrics and summary,
:mod:`~testbed.experiments.depth.lr_transfer_lanes` the batched trainer and
:mod:`~testbed.experiments.depth.lr_transfer_plot` the figures.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from testbed.config import ConfigError, check_choice, check_positive, check_positive_ints
from testbed.experiments.depth.lr_transfer_lanes import LOSS_NAMES, Lanes, task_data, train_lanes, train_reference
from testbed.results import is_true, read_csv, write_csv

RESULT_COLUMNS = ["task", "variant", "parameterization", "block_depth", "correction", "n_layers", "lr", "seed",
                  "diverged", "diverged_step", "train_loss", "val_loss", "test_loss", "test_accuracy", "loss_name",
                  "steps",
                  "wall_s"]
OPTIMA_COLUMNS = ["task", "variant", "parameterization", "block_depth", "correction", "n_layers", "grid_lr",
                  "grid_loss", "optimal_lr", "optimal_loss", "log2_optimal_lr", "at_edge", "n_diverged"]
TRANSFER_COLUMNS = ["task", "variant", "parameterization", "block_depth", "correction", "depths",
                    "spread_octaves", "drift_exponent", "n_at_edge", "lr_tuned_at_min_depth", "min_depth",
                    "max_depth", "lr_tuned_at_max_depth", "loss_transferred", "loss_best_at_max_depth",
                    "transfer_regret"]
TRANSFER_OCTAVES = 1.0  # a spread of η* across depth at most this many octaves counts as "transfers"
DRIFT_TOL = 0.15  # |α| at most this counts as "no drift" (over L = 4…64 that is ≤ 0.6 octave of systematic drift)
TASKS = ("flow", "digits")


@dataclasses.dataclass
class Config:
    """Settings of the ``lr_transfer`` sub-study (``--set lr_transfer.depths=4,16,64``); validated on construction.
    The network and training settings it shares with ``features`` and ``weight_reuse`` are fields of the
    depth-scaling config itself."""

    depths: tuple[int, ...] = (4, 8, 16, 32, 64)
    lr_grid: tuple[float, ...] = (1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2, 3.2e-2, 6.4e-2, 0.128, 0.256)  # base rates η
    tasks: tuple[str, ...] = TASKS

    def __post_init__(self) -> None:
        self.depths = check_positive_ints("lr_transfer.depths", self.depths)
        self.lr_grid, self.tasks = tuple(self.lr_grid), tuple(self.tasks)
        if not self.lr_grid:
            raise ConfigError("lr_transfer.lr_grid must not be empty")
        for lr in self.lr_grid:
            check_positive("lr_transfer.lr_grid", lr)
        for t in self.tasks:
            check_choice("lr_transfer.tasks", t, TASKS)


# ----------------------------------------------------------------------------------------------- pure helpers
def parabola_vertex(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """Vertex ``(x*, y*)`` of the parabola through three points ``(x_k, y_k)`` (any spacing).

    With divided differences ``d₁ = (y₁−y₀)/(x₁−x₀)``, ``d₂ = (y₂−y₁)/(x₂−x₁)`` and curvature
    ``c = (d₂−d₁)/(x₂−x₀)`` the parabola is ``y₀ + d₁(x−x₀) + c(x−x₀)(x−x₁)``, so
    ``x* = (x₀+x₁)/2 − d₁/(2c)``. If ``c ≤ 0`` (no interior minimum) the middle point is returned.
    """
    x0, x1, x2 = (float(v) for v in x)
    y0, y1, y2 = (float(v) for v in y)
    d1 = (y1 - y0) / (x1 - x0)
    d2 = (y2 - y1) / (x2 - x1)
    c = (d2 - d1) / (x2 - x0)
    if not c > 0:
        return x1, y1
    xs = 0.5 * (x0 + x1) - d1 / (2 * c)
    return xs, y0 + d1 * (xs - x0) + c * (xs - x0) * (xs - x1)


def refine_optimum(lrs: Sequence[float], losses: Sequence[float]) -> dict[str, Any]:
    """Optimal learning rate from a loss-vs-lr table (non-finite losses = diverged, never optimal).

    ``i = argmin_j loss_j`` over finite losses; if ``i`` has finite neighbours on both sides, the optimum is the
    vertex of the parabola through ``(log₂η_j, ln loss_j)``, ``j = i−1..i+1`` (it lies between the neighbours
    because ``loss_i`` is the smallest); otherwise the grid point is kept and ``at_edge`` is True. Returns
    ``grid_lr``, ``grid_loss``, ``optimal_lr``, ``optimal_loss`` (the vertex value ``exp(y*)``), ``at_edge``
    (all NaN/True when every run diverged).
    """
    order = np.argsort(np.asarray(lrs, dtype=float))
    eta = np.asarray(lrs, dtype=float)[order]
    loss = np.asarray(losses, dtype=float)[order]
    finite = np.isfinite(loss) & (loss > 0)
    if not finite.any():
        nan = float("nan")
        return {"grid_lr": nan, "grid_loss": float("inf"), "optimal_lr": nan, "optimal_loss": float("inf"),
                "at_edge": True}
    i = int(np.argmin(np.where(finite, loss, np.inf)))
    out = {"grid_lr": float(eta[i]), "grid_loss": float(loss[i]), "optimal_lr": float(eta[i]),
           "optimal_loss": float(loss[i]), "at_edge": True}
    if 0 < i < len(eta) - 1 and finite[i - 1] and finite[i + 1]:
        xs, ys = parabola_vertex(np.log2(eta[i - 1:i + 2]), np.log(loss[i - 1:i + 2]))
        out.update(optimal_lr=float(2.0 ** xs), optimal_loss=float(math.exp(ys)), at_edge=False)
    return out


def octave_spread(optimal_lrs: Sequence[float]) -> float:
    """``max log₂η* − min log₂η*`` over depths (octaves); NaN entries (all runs diverged) are skipped."""
    v = np.log2(np.asarray(optimal_lrs, dtype=float))
    v = v[np.isfinite(v)]
    return float(v.max() - v.min()) if v.size else float("nan")


def drift_exponent(depths: Sequence[float], optimal_lrs: Sequence[float]) -> float:
    """Least-squares slope ``α`` of ``log₂η*`` against ``log₂L`` (``η* ∝ L^α``); NaN with fewer than 2 depths.

    ``α = Σ(u−ū)(v−v̄)/Σ(u−ū)²`` with ``u = log₂L``, ``v = log₂η*``.
    """
    u = np.log2(np.asarray(depths, dtype=float))
    v = np.log2(np.asarray(optimal_lrs, dtype=float))
    ok = np.isfinite(u) & np.isfinite(v)
    u, v = u[ok], v[ok]
    if u.size < 2 or np.ptp(u) == 0:
        return float("nan")
    du = u - u.mean()
    return float((du * (v - v.mean())).sum() / (du * du).sum())


def aggregate_loss(losses: Sequence[float]) -> float:
    """Seed aggregate ``exp(mean ln loss)``; ``inf`` if any seed diverged (non-finite loss)."""
    a = np.asarray(losses, dtype=float)
    if a.size == 0 or not np.isfinite(a).all():
        return float("inf")
    return float(np.exp(np.log(np.maximum(a, 1e-300)).mean()))


# ----------------------------------------------------------------------------------------------- variants
def variants(cfg) -> list[dict[str, Any]]:
    """The (parameterization, block depth, correction) combinations: every parameterization × block depth,
    plus Depth-μP + block depth 2 + ``L^γ`` first-layer correction when both are selected."""
    out = [{"variant": p, "parameterization": p, "block_depth": b, "correction": 0.0}
           for p in cfg.parameterizations for b in cfg.block_depths]
    if "depth_mup" in cfg.parameterizations and 2 in cfg.block_depths:
        out.append({"variant": "depth_mup+corr", "parameterization": "depth_mup", "block_depth": 2,
                    "correction": float(cfg.correction_exponent)})
    return out


def variant_label(variant: str, block_depth: int, correction: float = 0.0) -> str:
    """Human-readable name, e.g. ``Depth-μP, b=2, +L^0.5 corr.``"""
    names = {"standard": "SP", "depth_mup": "Depth-μP", "ode": "ODE (T/L)", "depth_mup+corr": "Depth-μP"}
    label = f"{names.get(variant, variant)}, b={int(block_depth)}"
    if variant.endswith("+corr"):
        label += f", +L^{float(correction):g} corr."
    return label


def family_key(r: dict[str, Any]) -> tuple[str, str, int]:
    """``(task, variant, block depth)`` of a row: the curves that are compared across depth."""
    return str(r["task"]), str(r["variant"]), int(r["block_depth"])


# ----------------------------------------------------------------------------------------------- metrics
#: the loss the optimal learning rate is located on (a split carved from the training data, never the test set)
SELECT_ON = "val_loss"


def optima(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (task, variant, block depth, ``L``): grid and parabola-refined optimum of the seed-aggregated
    *validation* loss (:data:`SELECT_ON`; :func:`aggregate_loss`, :func:`refine_optimum`)."""
    out: list[dict[str, Any]] = []
    for key in sorted({family_key(r) for r in rows}):
        sel = [r for r in rows if family_key(r) == key]
        for L in sorted({int(r["n_layers"]) for r in sel}):
            at_L = [r for r in sel if int(r["n_layers"]) == L]
            lrs = sorted({float(r["lr"]) for r in at_L})
            losses = [aggregate_loss([float(r[SELECT_ON]) for r in at_L if float(r["lr"]) == lr]) for lr in lrs]
            opt = refine_optimum(lrs, losses)
            first = at_L[0]
            out.append({"task": key[0], "variant": key[1], "parameterization": first["parameterization"],
                        "block_depth": key[2], "correction": float(first["correction"]), "n_layers": L, **opt,
                        "log2_optimal_lr": math.log2(opt["optimal_lr"]) if opt["optimal_lr"] > 0 else float("nan"),
                        "n_diverged": sum(is_true(r["diverged"]) for r in at_L)})
    return out


def transfer(rows: list[dict[str, Any]], opt_rows: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """One row per (task, variant, block depth): octave spread and drift exponent of ``η*(L)``, and the transfer
    regret ``ℓ_test(L_max, η̂(L_min)) / ℓ_test(L_max, η̂(L_max))``, where ``η̂(L)`` is the grid optimum of the
    validation loss at depth ``L``: the test cost of tuning ``η`` on the shallow network instead of the deep one,
    with both choices made on validation data."""
    opt_rows = optima(rows) if opt_rows is None else opt_rows
    out: list[dict[str, Any]] = []
    for key in sorted({family_key(r) for r in opt_rows}):
        sel = sorted((r for r in opt_rows if family_key(r) == key), key=lambda r: int(r["n_layers"]))
        depths = [int(r["n_layers"]) for r in sel]
        etas = [float(r["optimal_lr"]) for r in sel]
        lo, hi = depths[0], depths[-1]
        eta0, eta1 = float(sel[0]["grid_lr"]), float(sel[-1]["grid_lr"])
        at_hi = [r for r in rows if family_key(r) == key and int(r["n_layers"]) == hi]

        transferred, best = (aggregate_loss([float(r["test_loss"]) for r in at_hi if float(r["lr"]) == eta])
                             if math.isfinite(eta) else float("inf") for eta in (eta0, eta1))
        regret = transferred / best if math.isfinite(best) and best > 0 else float("nan")
        out.append({"task": key[0], "variant": key[1], "parameterization": sel[0]["parameterization"],
                    "block_depth": key[2], "correction": float(sel[0]["correction"]),
                    "depths": " ".join(str(d) for d in depths), "spread_octaves": octave_spread(etas),
                    "drift_exponent": drift_exponent(depths, etas),
                    "n_at_edge": sum(is_true(r["at_edge"]) for r in sel), "lr_tuned_at_min_depth": eta0,
                    "min_depth": lo, "max_depth": hi, "lr_tuned_at_max_depth": eta1, "loss_transferred": transferred,
                    "loss_best_at_max_depth": best, "transfer_regret": regret})
    return out


# ----------------------------------------------------------------------------------------------- run / plot
def run(cfg, out: Path) -> list[dict[str, Any]]:
    """Train every (task, variant, ``L``, ``η``, seed) of the depth-scaling config ``cfg``; write ``optima.csv``,
    ``transfer.csv`` and finally ``results.csv``. Returns the per-run rows."""
    from testbed.progress import progress

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.csv").unlink(missing_ok=True)
    rows: list[dict[str, Any]] = []
    vs = variants(cfg)
    c = cfg.lr_transfer
    n_runs = len(c.tasks) * len(vs) * len(c.depths) * len(c.lr_grid) * len(cfg.seeds)
    bar = progress(total=n_runs, enabled=cfg.progress, desc="lr_transfer")
    for task in c.tasks:
        data = task_data(task, cfg)
        for v in vs:
            for L in c.depths:
                rows += train_lanes(task, data, v, int(L), c.lr_grid, cfg.seeds, cfg)
                bar.update(len(c.lr_grid) * len(cfg.seeds))
    bar.close()
    opt_rows = optima(rows)
    write_csv(out / "optima.csv", opt_rows, OPTIMA_COLUMNS)
    write_csv(out / "transfer.csv", transfer(rows, opt_rows), TRANSFER_COLUMNS)
    write_csv(out / "results.csv", rows, RESULT_COLUMNS)
    return rows


def _normalise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """CSV rows back to typed values (``inf`` strings, booleans)."""
    fixed = []
    for r in rows:
        r = dict(r)
        for k in ("lr", "train_loss", "test_loss", "test_accuracy", "correction"):
            if k in r and r[k] != "":
                r[k] = float(r[k])
        r["diverged"] = is_true(r.get("diverged"))
        fixed.append(r)
    return fixed


def plot(out: Path) -> list[Path]:
    """Redraw ``lr_curves`` and ``optimal_lr`` from ``out/results.csv`` (:mod:`.lr_transfer_plot`)."""
    from testbed.experiments.depth.lr_transfer_plot import draw

    out = Path(out)
    return draw(_normalise(read_csv(out / "results.csv")), out)


# ----------------------------------------------------------------------------------------------- summary
def _drifts(x: float) -> bool:
    return abs(x) > DRIFT_TOL


def _transfers(x: float) -> bool:
    return abs(x) <= DRIFT_TOL


# claim text, spread test, drift-exponent claim text, drift test (per variant; block depth appended for Depth-μP)
_CLAIMS = {
    "standard": ("SP: η* drifts with depth (spread > {t:g} octave)", lambda s: s > TRANSFER_OCTAVES,
                 "SP with Adam: η* shrinks with depth (α < −{a:g})", lambda a: a < -DRIFT_TOL),
    "depth_mup1": ("Depth-μP, block depth 1: η* transfers across depth (spread ≤ {t:g} octave)",
                   lambda s: s <= TRANSFER_OCTAVES, "Depth-μP, block depth 1: no drift (|α| ≤ {a:g})", _transfers),
    "depth_mup2": ("Depth-μP, block depth 2: transfer breaks (spread > {t:g} octave)", lambda s: s > TRANSFER_OCTAVES,
                   "Depth-μP, block depth 2: η* drifts (|α| > {a:g})", _drifts),
    "depth_mup+corr": ("Depth-μP, block depth 2 + first-layer correction: transfer restored (spread ≤ {t:g} octave)",
                       lambda s: s <= TRANSFER_OCTAVES,
                       "Depth-μP, block depth 2 + first-layer correction: no drift (|α| ≤ {a:g})", _transfers),
}
_NO_CLAIM = ("no claim (reported only)", None, "no claim (reported only)", None)


def _verdict(ok: bool | None) -> str:
    return "not tested" if ok is None else ("consistent" if ok else "NOT seen")


def _check(test, x: float) -> bool | None:
    return None if test is None or not math.isfinite(x) else bool(test(x))


def summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per task × variant: spread (octaves), drift exponent ``α``, transfer regret; plus paired comparisons (SP vs
    Depth-μP at b=1, b=2 vs b=1 and uncorrected vs corrected b=2 under Depth-μP) of the spread and of ``|α|``.
    Each ``claim`` states the paper's claim, the criterion (spread ≤ :data:`TRANSFER_OCTAVES` octave, ``|α| ≤``
    :data:`DRIFT_TOL`) and whether the measurement is consistent with it; optima on the grid edge are noted
    (their spread and drift are then bounds)."""
    rows = _normalise(rows)
    tr = transfer(rows)
    out: list[dict[str, Any]] = []
    by: dict[tuple[str, str, int], dict[str, Any]] = {}
    for t in tr:
        task, v, b = t["task"], t["variant"], int(t["block_depth"])
        by[(task, v, b)] = t
        name = f"{task} {variant_label(v, b, t['correction'])}"
        text, test, dtext, dtest = _CLAIMS.get(v if v in ("standard", "depth_mup+corr") else f"{v}{b}", _NO_CLAIM)
        s, alpha = t["spread_octaves"], t["drift_exponent"]
        edge = f"; {t['n_at_edge']} optimum(s) on the grid edge" if t["n_at_edge"] else ""
        out.append({"key": f"{name}: spread of log2 η* across L [octaves]", "value": s,
                    "claim": f"{text.format(t=TRANSFER_OCTAVES)} — {_verdict(_check(test, s))}{edge}"})
        out.append({"key": f"{name}: drift exponent α (η* ∝ L^α)", "value": alpha,
                    "claim": f"{dtext.format(a=DRIFT_TOL)} — {_verdict(_check(dtest, alpha))}{edge}"})
        out.append({"key": f"{name}: transfer regret (test loss at L={t['max_depth']} with η tuned on validation at "
                           f"L={t['min_depth']} / tuned at L={t['max_depth']})", "value": t["transfer_regret"],
                    "claim": "1 = transferring η costs nothing; inf = the transferred η diverges"})
    for task in dict.fromkeys(t["task"] for t in tr):
        pairs = [(("standard", 1), ("depth_mup", 1), "SP − Depth-μP (b=1)", "SP drifts more than Depth-μP"),
                 (("depth_mup", 2), ("depth_mup", 1), "Depth-μP b=2 − b=1",
                  "block depth 2 drifts more than block depth 1 under Depth-μP"),
                 (("depth_mup", 2), ("depth_mup+corr", 2), "Depth-μP b=2 uncorrected − corrected",
                  "the first-layer correction reduces the drift of block depth 2")]
        for x, y, what, claim in pairs:
            tx, ty = by.get((task, *x)), by.get((task, *y))
            if tx is None or ty is None:
                continue
            d = tx["spread_octaves"] - ty["spread_octaves"]
            out.append({"key": f"{task}: {what}: spread [octaves]", "value": d,
                        "claim": f"{claim} (> 0) — {_verdict(_check(lambda z: z > 0, d))}"})
            d = abs(tx["drift_exponent"]) - abs(ty["drift_exponent"])
            out.append({"key": f"{task}: {what}: |drift exponent α|", "value": d,
                        "claim": f"{claim} (> 0) — {_verdict(_check(lambda z: z > 0, d))}"})
    return out


__all__ = ["Config", "LOSS_NAMES", "OPTIMA_COLUMNS", "RESULT_COLUMNS", "TRANSFER_COLUMNS", "Lanes", "aggregate_loss",
           "drift_exponent", "family_key", "octave_spread", "optima", "parabola_vertex", "plot", "refine_optimum",
           "run", "summary", "task_data", "train_lanes", "train_reference", "transfer", "variant_label", "variants"]

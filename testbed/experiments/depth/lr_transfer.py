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

Intervals (:func:`bootstrap`): the seeds are resampled with replacement (:data:`N_BOOT` times; one draw shared by
every family of a task, so differences between families are paired), the aggregate loss, ``η*(L)``, ``α`` and the
spread recomputed; 95% percentile intervals. The verdict rules are declared at :data:`_CLAIMS` before any run.

Optimizers: every variant runs for each optimizer in ``cfg.optimizers`` — Adam (rates ``cfg.lr_transfer.lr_grid``;
Depth-μP branches ``η/√L``) and/or plain SGD (``cfg.lr_transfer.sgd_lr_grid``; Depth-μP branches ``η``; variant
names end in ``+sgd``).

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
from testbed.experiments.depth.variant_names import base_variant, optimizer_of, variant_name
from testbed.results import is_true, read_csv, write_csv

RESULT_COLUMNS = ["task", "variant", "parameterization", "block_depth", "correction", "optimizer", "n_layers", "lr",
                  "seed",
                  "diverged", "diverged_step", "train_loss", "val_loss", "test_loss", "test_accuracy", "loss_name",
                  "steps",
                  "wall_s"]
OPTIMA_COLUMNS = ["task", "variant", "parameterization", "block_depth", "correction", "n_layers", "grid_lr",
                  "grid_loss", "optimal_lr", "optimal_loss", "log2_optimal_lr", "log2_optimal_lr_lo",
                  "log2_optimal_lr_hi", "at_edge", "n_diverged", "n_seeds"]
TRANSFER_COLUMNS = ["task", "variant", "parameterization", "block_depth", "correction", "depths",
                    "spread_octaves", "spread_lo", "spread_hi", "drift_exponent", "drift_lo", "drift_hi",
                    "n_seeds", "n_at_edge", "lr_tuned_at_min_depth", "min_depth",
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
    lr_grid: tuple[float, ...] = (1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2, 3.2e-2, 6.4e-2, 0.128, 0.256)  # Adam base rates η
    sgd_lr_grid: tuple[float, ...] = (0.0125, 0.025, 0.05, 0.1, 0.2, 0.4, 0.8)  # SGD base rates (cfg.optimizers)
    tasks: tuple[str, ...] = TASKS

    def __post_init__(self) -> None:
        self.depths = check_positive_ints("lr_transfer.depths", self.depths)
        self.lr_grid, self.sgd_lr_grid, self.tasks = tuple(self.lr_grid), tuple(self.sgd_lr_grid), tuple(self.tasks)
        for name in ("lr_grid", "sgd_lr_grid"):
            grid = getattr(self, name)
            if not grid:
                raise ConfigError(f"lr_transfer.{name} must not be empty")
            for lr in grid:
                check_positive(f"lr_transfer.{name}", lr)
        for t in self.tasks:
            check_choice("lr_transfer.tasks", t, TASKS)

    def grid(self, optimizer: str) -> tuple[float, ...]:
        """The base-rate grid of ``optimizer``."""
        return self.sgd_lr_grid if optimizer == "sgd" else self.lr_grid


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
    """The (parameterization, block depth, correction, optimizer) combinations: for every optimizer in
    ``cfg.optimizers``, every parameterization × block depth, plus Depth-μP + block depth 2 + ``L^γ`` first-layer
    correction when both are selected. An SGD variant's name ends in ``+sgd`` (``depth_mup+corr+sgd``)."""
    out = []
    for opt in cfg.optimizers:
        out += [{"variant": variant_name(p, opt), "parameterization": p, "block_depth": b, "correction": 0.0,
                 "optimizer": opt} for p in cfg.parameterizations for b in cfg.block_depths]
        if "depth_mup" in cfg.parameterizations and 2 in cfg.block_depths:
            out.append({"variant": variant_name("depth_mup+corr", opt), "parameterization": "depth_mup",
                        "block_depth": 2, "correction": float(cfg.correction_exponent), "optimizer": opt})
    return out


def variant_label(variant: str, block_depth: int, correction: float = 0.0) -> str:
    """Human-readable name, e.g. ``Depth-μP, b=2, +L^0.5 corr.`` (``…, SGD`` for an SGD variant)."""
    names = {"standard": "SP", "depth_mup": "Depth-μP", "ode": "ODE (T/L)", "depth_mup+corr": "Depth-μP"}
    base = base_variant(variant)
    label = f"{names.get(base, base)}, b={int(block_depth)}"
    if base.endswith("+corr"):
        label += f", +L^{float(correction):g} corr."
    if optimizer_of(variant) == "sgd":
        label += ", SGD"
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


# ----------------------------------------------------------------------------------------------- bootstrap
def _loss_table(rows: list[dict[str, Any]], key: tuple[str, str, int], seeds: Sequence[int]
                ) -> tuple[list[int], list[list[float]], np.ndarray]:
    """``(depths, lr grid per depth, ln val-loss array (n_seeds, n_depths, n_lr))`` of one family on ``seeds``
    (``inf`` for a diverged or missing run; grids padded with ``inf`` losses to a common length)."""
    sel = [r for r in rows if family_key(r) == key]
    depths = sorted({int(r["n_layers"]) for r in sel})
    grids = [sorted({float(r["lr"]) for r in sel if int(r["n_layers"]) == L}) for L in depths]
    width = max(len(g) for g in grids)
    idx = {s: i for i, s in enumerate(seeds)}
    table = np.full((len(seeds), len(depths), width), np.inf)
    for r in sel:
        if int(r["seed"]) not in idx:
            continue
        j = depths.index(int(r["n_layers"]))
        v = float(r[SELECT_ON])
        table[idx[int(r["seed"])], j, grids[j].index(float(r["lr"]))] = (
            math.log(max(v, 1e-300)) if math.isfinite(v) else np.inf)
    return depths, grids, table


N_BOOT = 2000  # seed-bootstrap replicates of η*(L), α and the spread


def bootstrap(rows: list[dict[str, Any]], n_boot: int = N_BOOT, seed: int = 0) -> dict[tuple[str, str, int], dict]:
    """Seed bootstrap of the transfer metrics: ``n_boot`` times, draw the task's seeds with replacement (the *same*
    draw for every family of a task, so differences between families are paired), aggregate the validation loss
    over the drawn seeds (:func:`aggregate_loss`: ``exp(mean ln loss)``, ``inf`` if a drawn seed diverged), locate
    ``η*(L)`` (:func:`refine_optimum`) and compute ``α`` and the spread. Returns per family ``log2_eta``
    ``(n_boot, n_depths)``, ``alpha`` and ``spread`` ``(n_boot,)``, ``depths`` and ``n_seeds``."""
    out: dict[tuple[str, str, int], dict] = {}
    rng = np.random.default_rng(seed)
    for task in dict.fromkeys(str(r["task"]) for r in rows):
        keys = sorted({family_key(r) for r in rows if str(r["task"]) == task})
        seeds = sorted({int(r["seed"]) for r in rows if str(r["task"]) == task})
        draws = rng.integers(0, len(seeds), size=(n_boot, len(seeds)))
        for key in keys:
            depths, grids, table = _loss_table(rows, key, seeds)
            log2_eta = np.full((n_boot, len(depths)), np.nan)
            for b in range(n_boot):
                agg = table[draws[b]].mean(0)  # (n_depths, n_lr); inf where a drawn seed diverged
                for j, grid in enumerate(grids):
                    opt = refine_optimum(grid, np.exp(agg[j, :len(grid)]))
                    if opt["optimal_lr"] > 0:
                        log2_eta[b, j] = math.log2(opt["optimal_lr"])
            eta = 2.0 ** log2_eta
            out[key] = {"depths": depths, "n_seeds": len(seeds), "log2_eta": log2_eta,
                        "alpha": np.array([drift_exponent(depths, e) for e in eta]),
                        "spread": np.array([octave_spread(e) for e in eta])}
    return out


def attach_optimum_intervals(opt_rows: list[dict[str, Any]], boot: dict) -> list[dict[str, Any]]:
    """``optima`` rows with the 95% seed-bootstrap interval of ``log₂η*`` (NaN with one seed) and the number of
    seeds."""
    from testbed.stats import percentile_interval

    out = []
    for r in opt_rows:
        b = boot.get(family_key(r))
        lo = hi = float("nan")
        if b is not None and b["n_seeds"] >= 2 and int(r["n_layers"]) in b["depths"]:
            lo, hi = percentile_interval(b["log2_eta"][:, b["depths"].index(int(r["n_layers"]))])
        out.append({**r, "log2_optimal_lr_lo": lo, "log2_optimal_lr_hi": hi,
                    "n_seeds": b["n_seeds"] if b is not None else ""})
    return out


def attach_transfer_intervals(tr_rows: list[dict[str, Any]], boot: dict) -> list[dict[str, Any]]:
    """``transfer`` rows with the 95% seed-bootstrap intervals of the spread and of ``α`` (NaN with one seed: a
    verdict then reads "no estimate")."""
    from testbed.stats import percentile_interval

    out = []
    for r in tr_rows:
        b = boot.get(family_key(r))
        nan = float("nan")
        (slo, shi), (alo, ahi) = ((percentile_interval(b["spread"]), percentile_interval(b["alpha"]))
                                  if b is not None and b["n_seeds"] >= 2 else ((nan, nan), (nan, nan)))
        out.append({**r, "spread_lo": slo, "spread_hi": shi, "drift_lo": alo, "drift_hi": ahi,
                    "n_seeds": b["n_seeds"] if b is not None else ""})
    return out


# ----------------------------------------------------------------------------------------------- run / plot
def _train_all(cfg, out: Path) -> list[dict[str, Any]]:
    """Create ``out`` (removing a stale ``results.csv``) and train every (task, variant, ``L``, ``η``, seed) of
    ``cfg``; returns the per-run rows."""
    from testbed.progress import progress

    out.mkdir(parents=True, exist_ok=True)
    (out / "results.csv").unlink(missing_ok=True)
    rows: list[dict[str, Any]] = []
    vs = variants(cfg)
    c = cfg.lr_transfer
    n_runs = len(c.tasks) * len(c.depths) * len(cfg.seeds) * sum(len(c.grid(v["optimizer"])) for v in vs)
    bar = progress(total=n_runs, enabled=cfg.progress, desc="lr_transfer")
    for task in c.tasks:
        data = task_data(task, cfg)
        for v in vs:
            for L in c.depths:
                grid = c.grid(v["optimizer"])
                rows += train_lanes(task, data, v, int(L), grid, cfg.seeds, cfg)
                bar.update(len(grid) * len(cfg.seeds))
    bar.close()
    return rows


def _write_tables(out: Path, rows: list[dict[str, Any]], boot: dict) -> None:
    """Write ``optima.csv`` and ``transfer.csv`` (intervals from ``boot``, the :func:`bootstrap` of ``rows``) and
    finally ``results.csv``."""
    opt_rows = optima(rows)
    write_csv(out / "optima.csv", attach_optimum_intervals(opt_rows, boot), OPTIMA_COLUMNS)
    write_csv(out / "transfer.csv", attach_transfer_intervals(transfer(rows, opt_rows), boot), TRANSFER_COLUMNS)
    write_csv(out / "results.csv", rows, RESULT_COLUMNS)


def run(cfg, out: Path) -> list[dict[str, Any]]:
    """Train every (task, variant, ``L``, ``η``, seed) of the depth-scaling config ``cfg``; write ``optima.csv``,
    ``transfer.csv`` and finally ``results.csv``. Returns the per-run rows."""
    return run_with_summary(cfg, out)[0]


def run_with_summary(cfg, out: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """:func:`run` and :func:`summary` of its rows with one :func:`bootstrap` for both (the depth-scaling driver
    calls this instead of the pair). Returns ``(per-run rows, summary rows)``."""
    out = Path(out)
    rows = _train_all(cfg, out)
    boot = bootstrap(rows)
    _write_tables(out, rows, boot)
    return rows, summary(rows, boot)


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
#: Declared claims and verdict rules (fixed before any run) on the 95% seed-bootstrap interval (:func:`bootstrap`):
#: for the drift exponent ``α`` the equivalence band ``±DRIFT_TOL`` (:func:`testbed.stats.band_verdict`) — a claim
#: that ``η*`` transfers is *reproduced* if the interval lies inside the band, *not reproduced* if it lies wholly
#: outside; a claim that it drifts the other way round; *unresolved* if the interval straddles a bound. The spread
#: likewise against ``TRANSFER_OCTAVES``. Paired comparisons (the same seed draws for both families) of ``|α|``:
#: *reproduced* if the interval of the difference lies above 0. The optimizer suffix does not change the claim.
_CLAIMS: dict[str, tuple[bool, str]] = {  # base variant + block depth → (η* transfers?, claim)
    "standard1": (False, "SP: η* drifts with depth"),
    "standard2": (False, "SP: η* drifts with depth"),
    "depth_mup1": (True, "Depth-μP, block depth 1: η* transfers across depth"),
    "depth_mup2": (False, "Depth-μP, block depth 2: transfer breaks (η* drifts)"),
    "depth_mup+corr2": (True, "Depth-μP, block depth 2 + first-layer correction: transfer restored"),
}


def _transfer_verdict(transfers: bool, inside: str) -> str:
    """Map :func:`~testbed.stats.band_verdict` onto a claim that ``η*`` transfers (inside) or drifts (outside)."""
    good, bad = ("inside ±tol", "outside ±tol") if transfers else ("outside ±tol", "inside ±tol")
    return "reproduced" if inside == good else "not reproduced" if inside == bad else inside


def _spread_verdict(transfers: bool, lo: float, hi: float) -> str:
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "no estimate"
    if hi <= TRANSFER_OCTAVES:
        return "reproduced" if transfers else "not reproduced"
    if lo > TRANSFER_OCTAVES:
        return "not reproduced" if transfers else "reproduced"
    return "unresolved"


def summary(rows: list[dict[str, Any]], boot: dict | None = None) -> list[dict[str, Any]]:
    """Per task × variant: drift exponent ``α`` and spread (octaves) of the validation-located ``η*(L)`` with their
    seed-bootstrap intervals and the declared verdicts, and the transfer regret; per task and optimizer the paired
    comparisons of ``|α|`` (SP vs Depth-μP at b=1, b=2 vs b=1, uncorrected vs corrected b=2). Optima on the grid
    edge are noted (their ``η*`` is then a bound). ``boot``: the :func:`bootstrap` of these rows if already
    computed (:func:`run_with_summary`), else it is computed here."""
    from testbed.stats import band_verdict, percentile_interval, sign_verdict

    rows = _normalise(rows)
    boot = bootstrap(rows) if boot is None else boot
    tr = attach_transfer_intervals(transfer(rows), boot)
    out: list[dict[str, Any]] = []
    for t in tr:
        task, v, b = t["task"], t["variant"], int(t["block_depth"])
        name = f"{task} {variant_label(v, b, t['correction'])}"
        claim = _CLAIMS.get(f"{base_variant(v)}{b}")
        edge = f"; {t['n_at_edge']} optimum(s) on the grid edge" if t["n_at_edge"] else ""
        depths = f"L = {t['depths'].replace(' ', ', ')}"
        ad = band_verdict(t["drift_lo"], t["drift_hi"], DRIFT_TOL)
        out.append({"key": f"{name}: drift exponent α (η* ∝ L^α)", "value": t["drift_exponent"],
                    "lo": t["drift_lo"], "hi": t["drift_hi"], "n": t["n_seeds"],
                    "verdict": _transfer_verdict(claim[0], ad) if claim else "",
                    "claim": (f"{claim[1]} (|α| ≤ {DRIFT_TOL:g} counts as transfer)" if claim else "no claim")
                             + f"; {depths}{edge}"})
        out.append({"key": f"{name}: spread of log2 η* across L [octaves]", "value": t["spread_octaves"],
                    "lo": t["spread_lo"], "hi": t["spread_hi"], "n": t["n_seeds"],
                    "verdict": _spread_verdict(claim[0], t["spread_lo"], t["spread_hi"]) if claim else "",
                    "claim": (f"{claim[1]} (spread ≤ {TRANSFER_OCTAVES:g} octave counts as transfer)" if claim
                              else "no claim") + edge})
        out.append({"key": f"{name}: transfer regret (test loss at L={t['max_depth']} with η tuned on validation at "
                           f"L={t['min_depth']} / tuned at L={t['max_depth']})", "value": t["transfer_regret"],
                    "n": t["n_seeds"], "claim": "1 = transferring η costs nothing; inf = the transferred η diverges"})
    pairs = [("standard", 1, "depth_mup", 1, "SP − Depth-μP (b=1)", "SP drifts more than Depth-μP"),
             ("depth_mup", 2, "depth_mup", 1, "Depth-μP b=2 − b=1",
              "block depth 2 drifts more than block depth 1 under Depth-μP"),
             ("depth_mup", 2, "depth_mup+corr", 2, "Depth-μP b=2 uncorrected − corrected",
              "the first-layer correction reduces the drift of block depth 2")]
    by_family = {family_key(t): t for t in tr}
    for task in dict.fromkeys(t["task"] for t in tr):
        for opt in ("adam", "sgd"):
            for vx, bx, vy, by_, what, claim in pairs:
                kx, ky = (task, variant_name(vx, opt), bx), (task, variant_name(vy, opt), by_)
                bx_, by2 = boot.get(kx), boot.get(ky)
                if bx_ is None or by2 is None:
                    continue
                d = np.abs(bx_["alpha"]) - np.abs(by2["alpha"])
                point = abs(by_family[kx]["drift_exponent"]) - abs(by_family[ky]["drift_exponent"])
                lo, hi = percentile_interval(d) if bx_["n_seeds"] >= 2 else (float("nan"), float("nan"))
                sv = sign_verdict(lo, hi)
                out.append({"key": f"{task}{', SGD' if opt == 'sgd' else ''}: {what}: |drift exponent α|",
                            "value": point, "lo": lo, "hi": hi, "n": bx_["n_seeds"],
                            "verdict": {"positive": "reproduced", "negative": "not reproduced"}.get(sv, sv),
                            "claim": f"{claim} (paired over seeds: difference > 0)"})
    return out


__all__ = ["Config", "LOSS_NAMES", "OPTIMA_COLUMNS", "RESULT_COLUMNS", "TRANSFER_COLUMNS", "Lanes", "aggregate_loss",
           "attach_optimum_intervals", "attach_transfer_intervals", "base_variant", "bootstrap", "optimizer_of",
           "drift_exponent", "family_key", "octave_spread", "optima", "parabola_vertex", "plot", "refine_optimum",
           "run", "run_with_summary", "summary", "task_data", "train_lanes", "train_reference", "transfer",
           "variant_label", "variants"]

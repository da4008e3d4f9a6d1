"""Law recovery: does fitting the endpoint recover the law? (paper A, "Controlled systems").

For each teacher flow ``dx/dt = f*(t, x)`` we train the *same* residual student (same depth, width, data,
optimiser and step budget) under

  (a) ``endpoint``  — match ``h_L(x_0)`` to ``φ_T(x_0)`` only (the boundary of the propagation field);
  (b) ``field``     — endpoint + trajectory (``h_{l_k}`` vs ``φ_{t_k}`` at the observation times) +
                      vector field (``f_θ`` vs ``f*`` at the observed states).

and measure endpoint error, law-recovery error ``‖f_θ − f*‖/‖f*‖`` on in-distribution and OOD states,
solver consistency (re-integrating ``f_θ`` at ``L/4 … 4L`` steps and with dopri5, beside the teacher's own
curve) and path sensitivity. The paper expects comparable endpoint errors and a much lower law error and
consistency error for the field-trained student.

**Matched endpoint error** (``match_endpoint > 0``): ``val_fraction`` of the training trajectories are held out and
every student trains, up to ``steps``, until its relative endpoint error on that validation split is at most
``match_endpoint`` (checked every 50 steps); ``steps_trained`` and ``reached_band`` record where each stopped, so
students that never reach the band are counted, not dropped. Test data never enters the stopping rule.

Writes ``results.csv`` (one row per system × objective × seed), ``consistency.csv`` (the curves),
``results.json`` (run metadata), ``law_recovery.png/.pdf`` and one checkpoint per trained student.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

import systems
from testbed.config import (
    ConfigError,
    check_choice,
    check_nonneg,
    check_positive,
    check_positive_int,
)
from testbed.errors import divergence_context
from testbed.evaluate import evaluate_student, quality_flag, teacher_reference
from testbed.experiments.common import fit, make_splits
from testbed.experiments.protocol import ExperimentConfig, flag, seeds_field
from testbed.field.consistency import default_step_counts
from testbed.objectives import make_objective
from testbed.plotting import color_for, consistency_panel, save_figure, use_style
from testbed.results import fresh_output_dir, read_csv, run_metadata, write_csv, write_json
from testbed.seeding import DATA_SEED
from testbed.stats import summarize as summarize_values
from testbed.students import build_student

NAME = "law-recovery"
#: natural keys of a row besides its seed: rows sharing them are repeats over seeds
GROUP_KEYS = ["system", "objective", "student", "n_layers", "width", "tied"]
#: config fields that only partition the rows (a sweep over them still draws this study's figure)
PARTITION_FIELDS = ("systems",)
SUMMARY_COLUMNS = ["system", "objective", "seed", "endpoint_error", "law_error_id", "law_error_ood",
                   "consistency_error", "teacher_consistency_error", "path_sensitivity", "flag"]
CAPTIONS = {
    "law_recovery": (
        "One row per teacher flow. Columns 1–3: phase portraits of the teacher law f* and of the residual "
        "students trained on the endpoint only and on the field objective (endpoint + trajectory + vector "
        "field); streamlines coloured by log10 |f|, dashed box = region of training initial states. Column 4: "
        "solver consistency — relative endpoint change when the learned field is re-integrated with L' Euler "
        "steps (dotted: dopri5), beside the teacher law's own curve (mean over seeds ± 95% t-interval when there "
        "are several). Column 5: the re-integrated endpoint's error against the exact flow map. Bottom: endpoint "
        "error, law error (ID / OOD) and consistency error "
        "per system and objective (relative L2, log axis; error bars = 95% t-interval of the "
        "mean over seeds when there are several)."),
}
RESULT_COLUMNS = [
    "system", "objective", "seed", "endpoint_error", "law_error_id", "law_error_ood", "consistency_error",
    "path_sensitivity", "endpoint_error_ood", "trajectory_error", "interior_error", "aliased", "consistency_error_mean",
    "consistency_excess",
    "teacher_consistency_error", "teacher_path_sensitivity", "flow_jacobian_error", "final_loss",
    "train_seconds", "n_layers", "width", "student", "tied", "flag", "steps_trained", "reached_band",
]
OUTPUT_FILES = ("results.csv", "consistency.csv", "results.json", "law_recovery.png", "law_recovery.pdf")


@dataclasses.dataclass
class LawRecoveryConfig(ExperimentConfig):
    """Settings of the law-recovery study (validated on construction)."""

    UNIQUE_FIELDS: ClassVar[tuple[str, ...]] = ("systems", "objectives")

    systems: tuple[str, ...] = flag(("van_der_pol", "linear_spiral", "lotka_volterra", "damped_pendulum"),
                                    name="--system", help="teacher system(s)")
    objectives: tuple[str, ...] = ("endpoint", "field")
    seeds: tuple[int, ...] = seeds_field((0, 1, 2, 3, 4))
    student: str = "residual"
    n_layers: int = 32
    width: int = 64
    hidden_layers: int = 2
    tied: bool = True
    init_scale: float = 0.1
    n_train: int = 512
    n_test: int = 256
    n_obs: int = 8
    steps: int = 3000
    batch_size: int = 64
    lr: float = 3e-3
    grad_clip: float = 1.0
    dtype: str = "float64"
    #: > 0: matched-endpoint mode — every student trains (up to ``steps``) until its relative endpoint error on a
    #: validation split (``val_fraction`` of the training trajectories) is at most this; 0: equal budget
    match_endpoint: float = 0.0
    val_fraction: float = 0.2

    def validate(self) -> None:
        self.systems = tuple(systems.canonical_name(s) for s in self.systems)
        self.objectives = tuple(self.objectives)
        self.seeds = tuple(int(s) for s in self.seeds)
        if not self.systems:
            raise ConfigError("systems must name at least one system")
        for s in self.systems:
            systems.system_class(s)  # raises the registry's clear error for an unknown name
        if not self.objectives:
            raise ConfigError("objectives must name at least one objective")
        for o in self.objectives:
            make_objective(o)
        check_choice("student", self.student, ("residual", "neural_ode"))
        for name in ("n_layers", "width", "hidden_layers", "n_train", "n_test", "n_obs", "steps", "batch_size"):
            check_positive_int(name, getattr(self, name))
        check_positive("lr", self.lr)
        check_nonneg("grad_clip", self.grad_clip)
        check_nonneg("init_scale", self.init_scale)
        check_choice("dtype", self.dtype, ("float32", "float64"))
        if not 0.0 <= self.match_endpoint < 1.0:
            raise ConfigError(f"match_endpoint must lie in [0, 1) (0 = equal budget), got {self.match_endpoint}")
        if not 0.0 < self.val_fraction < 0.5:
            raise ConfigError(f"val_fraction must lie in (0, 0.5), got {self.val_fraction}")
        if self.n_layers % self.n_obs:
            raise ConfigError(f"n_layers ({self.n_layers}) must be a multiple of n_obs ({self.n_obs}) so every "
                              "observation time is a layer time")


def quick_config(**overrides: Any) -> LawRecoveryConfig:
    """Settings for a 2-core CPU in well under 3 minutes (3 systems × 2 objectives × 1 seed)."""
    base = dict(systems=("van_der_pol", "linear_spiral", "lotka_volterra"), seeds=(0,), n_train=256,
                n_test=128, steps=700)
    base.update(overrides)
    return LawRecoveryConfig(**base)


# ----------------------------------------------------------------------------------------------- run
def _student_kwargs(cfg: LawRecoveryConfig, system) -> dict[str, Any]:
    kw: dict[str, Any] = dict(dim=system.dim, n_layers=cfg.n_layers, horizon=float(system.horizon),
                              width=cfg.width, hidden_layers=cfg.hidden_layers,
                              time_conditioned=not system.autonomous, init_scale=cfg.init_scale)
    if cfg.student == "residual":
        kw["tied"] = cfg.tied
    return kw


def endpoint_band_stop(val_data, target: float):
    """``stop_when`` for the matched-endpoint mode: stop once the student's relative endpoint error on the
    validation split ``val_data`` (carved from the training data, never the test set) is at most ``target``."""
    from testbed.field.metrics import endpoint_error

    def reached(step: int, student) -> bool:
        device = next(student.parameters()).device
        with torch.no_grad():
            return endpoint_error(student, val_data.to(device)) <= target

    return reached


def split_for_matching(train_data, fraction: float):
    """``(fit_data, val_data)``: ``fraction`` of the training trajectories held out (:mod:`testbed.selection`)."""
    from testbed.selection import split_indices

    keep, val = split_indices(train_data.x0.shape[0], fraction, DATA_SEED + 3)
    return train_data.subset(keep), train_data.subset(val)


def run(cfg: LawRecoveryConfig, out: str | Path) -> list[dict[str, Any]]:
    """Train and evaluate every system × objective × seed; write the tables, metadata and figure to ``out``."""
    out = fresh_output_dir(out, OUTPUT_FILES)
    dtype = getattr(torch, cfg.dtype)
    steps = default_step_counts(cfg.n_layers)
    rows: list[dict[str, Any]] = []
    curves: list[dict[str, Any]] = []
    t_start = time.perf_counter()
    for sname in cfg.systems:
        system = systems.get_system(sname)
        train_data, test_id, test_ood = make_splits(system, cfg.n_train, cfg.n_test, cfg.n_obs, dtype)
        stop, val_data = None, None
        if cfg.match_endpoint > 0:
            train_data, val_data = split_for_matching(train_data, cfg.val_fraction)
            stop = endpoint_band_stop(val_data, cfg.match_endpoint)
        ref = teacher_reference(system, test_id, test_ood, cfg.n_layers, steps)
        curves += [{"system": sname, "objective": "teacher", "seed": -1, **r} for r in ref.consistency.rows]
        for obj_name in cfg.objectives:
            for seed in cfg.seeds:
                torch.manual_seed(seed)
                student = build_student(cfg.student, **_student_kwargs(cfg, system)).to(dtype)
                run_dir = out / "checkpoints" / f"{sname}-{obj_name}-s{seed}"
                with divergence_context(system=sname, objective=obj_name, seed=seed) as where:
                    result = fit(student, obj_name, train_data, seed=seed, steps=cfg.steps,
                                 batch_size=cfg.batch_size, lr=cfg.lr, grad_clip=cfg.grad_clip,
                                 progress=cfg.progress, run_dir=run_dir, device=cfg.device,
                                 extra={"system": sname, "system_params": system.params(),
                                        "objective": obj_name, "seed": seed}, stop_when=stop)
                    where["after training step"] = f"{result.steps} (final loss {result.final_loss:.3g})"
                    ev = evaluate_student(student, ref, steps)
                flag = quality_flag(ev.metrics, f"system {sname}, objective {obj_name}, seed {seed}")
                rows.append({"system": sname, "objective": obj_name, "seed": seed, **ev.metrics,
                             "final_loss": result.final_loss, "train_seconds": result.wall_time,
                             "n_layers": cfg.n_layers, "width": cfg.width, "student": cfg.student,
                             "tied": cfg.tied, "flag": flag, "steps_trained": result.steps,
                             "reached_band": bool(stop(result.steps, student)) if stop is not None else ""})
                curves += [{"system": sname, "objective": obj_name, "seed": seed, **r} for r in ev.consistency.rows]
    write_csv(out / "consistency.csv", curves)
    write_json(out / "results.json", run_metadata(cfg, cfg.seeds, experiment=NAME,
                                                  wall_seconds=time.perf_counter() - t_start))
    write_csv(out / "results.csv", rows, RESULT_COLUMNS)  # last: its presence means the run completed
    return rows


# ----------------------------------------------------------------------------------------------- figure
def _grid(system, n: int = 21) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
    lo = np.array(system.ood_low[:2], dtype=float)
    hi = np.array(system.ood_high[:2], dtype=float)
    xs, ys = np.linspace(lo[0], hi[0], n), np.linspace(lo[1], hi[1], n)
    gx, gy = np.meshgrid(xs, ys)
    pts = np.zeros((n * n, system.dim))
    if system.dim > 2:  # slice through the middle of the ID box in the other coordinates
        mid = 0.5 * (np.array(system.id_low) + np.array(system.id_high))
        pts[:] = mid
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
    ax.streamplot(gx, gy, u, w, color=logspeed, cmap="viridis", norm=norm, density=0.8, linewidth=0.6,
                  arrowsize=0.6)
    lo, hi = system.id_low, system.id_high
    ax.add_patch(Rectangle((lo[0], lo[1]), hi[0] - lo[0], hi[1] - lo[1], fill=False, ls="--", lw=0.8, ec="0.3"))
    ax.set_title(title)
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    ax.set_xlim(gx.min(), gx.max())
    ax.set_ylim(gy.min(), gy.max())
    return norm


def plot(out: str | Path) -> list[Path]:
    """Draw the figure from ``out/results.csv``, ``consistency.csv`` and the checkpoints."""
    import matplotlib.pyplot as plt

    from testbed.train import load_student

    out = Path(out)
    use_style()
    curves = read_csv(out / "consistency.csv")
    models: dict[tuple[str, str], tuple[int, Any]] = {}  # (system, objective) -> (seed, student): lowest seed
    for p in (out / "checkpoints").glob("*/checkpoint.pt"):
        student, ck = load_student(p)
        key, seed = (ck["extra"]["system"], ck["extra"]["objective"]), ck["extra"]["seed"]
        if key not in models or seed < models[key][0]:
            models[key] = (seed, student.double())
    sys_names = list(dict.fromkeys(r["system"] for r in curves))
    objectives = [o for o in dict.fromkeys(r["objective"] for r in curves) if o != "teacher"]
    n_rows = len(sys_names)
    n_cols = 3 + len(objectives)
    fig = plt.figure(figsize=(1.75 * n_cols + 0.4, 1.75 * n_rows + 2.3), layout="constrained")
    gs = fig.add_gridspec(n_rows + 1, n_cols, height_ratios=[1] * n_rows + [1.25])
    for i, sname in enumerate(sys_names):
        system = systems.get_system(sname)
        norm = _portrait(fig.add_subplot(gs[i, 0]), system, system.vector_field, f"{sname}: teacher $f^*$")
        for j, obj in enumerate(objectives):
            ax = fig.add_subplot(gs[i, 1 + j])
            if (sname, obj) in models:
                _portrait(ax, system, models[(sname, obj)][1].vector_field, f"{obj}-trained $f_\\theta$", norm)
            else:
                ax.set_axis_off()
        sys_curves = [r for r in curves if r["system"] == sname]
        series = ["teacher"] + objectives
        consistency_panel(fig.add_subplot(gs[i, -2]), sys_curves, series, "endpoint_change",
                          "rel. change vs $L$-step net", "solver consistency", legend=(i == 0))
        consistency_panel(fig.add_subplot(gs[i, -1]), sys_curves, series, "target_error",
                          "rel. error vs $\\varphi_T$", "re-integrated endpoint error")
    # bar chart of the error table
    ax = fig.add_subplot(gs[n_rows, :])
    _bars(ax, read_csv(out / "results.csv"), sys_names, objectives)
    fig.suptitle("Law recovery: endpoint-only vs field objectives. Portraits: streamlines coloured by "
                 "$\\log_{10}|f|$, dashed box = training region.\nCurves: grey line = trained depth $L$, "
                 "dotted = dopri5 re-integration; teacher = true law $f^*$ (discretisation floor).")
    return save_figure(fig, out / "law_recovery")


def _bars(ax, rows: list[dict[str, Any]], sys_names: list[str], objectives: list[str]) -> None:
    metrics = [("endpoint_error", "endpoint"), ("law_error_id", "law (ID)"), ("law_error_ood", "law (OOD)"),
               ("consistency_error", "consistency")]
    width = 0.8 / max(len(objectives), 1)
    xticks, xlabels = [], []
    x = 0.0
    for sname in sys_names:
        for mkey, mlabel in metrics:
            for j, obj in enumerate(objectives):
                vals = [r[mkey] for r in rows if r["system"] == sname and r["objective"] == obj]
                if not vals:
                    continue
                ax.bar(x + j * width, np.mean(vals), width,
                       yerr=summarize_values(vals).half_width if len(vals) > 1 else None,
                       color=color_for(obj, j), label=obj if (sname == sys_names[0] and mkey == "endpoint_error")
                       else None)
            xticks.append(x + 0.4 - width / 2)
            xlabels.append(mlabel)
            x += 1.0
        x += 0.6
    ax.set_yscale("log")
    ax.set_xticks(xticks, xlabels, rotation=60, ha="right")
    ax.set_ylabel("relative L2 error")
    ax.legend(frameon=False, ncols=len(objectives))
    # system names under each group
    per = len(metrics)
    for i, sname in enumerate(sys_names):
        centre = (xticks[i * per] + xticks[i * per + per - 1]) / 2 if len(xticks) >= (i + 1) * per else 0
        ax.annotate(sname, (centre, 1.0), xycoords=("data", "axes fraction"), ha="center", va="bottom")


Config = LawRecoveryConfig  # every experiment module exposes its config as ``Config``

__all__ = ["Config", "LawRecoveryConfig", "NAME", "plot", "quick_config", "run"]

"""Law recovery: does fitting the endpoint recover the law? (paper A, "Controlled systems").

For each teacher flow ``dx/dt = f*(t, x)`` the *same* student (same depth, width, data, optimiser and step budget)
is trained under four objectives (:mod:`testbed.objectives`):

  (a) ``endpoint``        ``h_L(x_0)`` vs ``φ_T(x_0)`` only — the boundary of the propagation field;
  (b) ``trajectory``      (a) + the states ``h_{l_k}`` vs ``φ_{t_k}`` at the observation times — *no* vector-field
                          term: does observing states (not the law) recover the law?
  (c) ``field``           (b) + ``f_θ`` vs ``f*`` at the observed states (the law is supervised directly);
  (d) ``field+jacobian``  (c) + ``∂f_θ/∂x`` vs ``∂f*/∂x`` there.

Students (:data:`STUDENT_VARIANTS`): the tied and the untied residual network ``h_{l+1} = h_l + Δt·f_θ(t_l, h_l)``
and the neural ODE ``ḣ = f_θ(t, h)`` (dopri5, adjoint gradients).

Measured on held-out test trajectories (relative L2, :mod:`testbed.evaluate`): endpoint error; law error
``‖f_θ − f*‖/‖f*‖`` on in-distribution and OOD states; trajectory and *interior* error (states strictly inside
``(0, T)``); solver consistency as the excess over the true law's own discretisation floor at the same ``L``;
an ``aliased`` flag (endpoint fits, interior does not: :func:`~testbed.field.metrics.is_aliased`).

**Two comparisons from one training run.** ``budget``: every student after the full ``steps`` (equal budget).
``matched`` (``match_endpoint > 0``): ``val_fraction`` of the training trajectories are held out; every
``log_every`` steps the student's relative endpoint error on that split is checked, and the first time it is at
most ``match_endpoint`` a copy of the weights is kept. The matched row is that copy's evaluation, so every
matched student sits in the same endpoint band ``(0, match_endpoint]`` *measured on validation data*; students
that never reach it are kept with ``reached_band = False`` (counted in every table, left out of the in-band
comparison). Test data never enters training or the stopping rule.

**Consistency across step sizes**: ``n_layers`` is one depth per run; the full study sweeps it
(``benchmarks/sweeps/law_recovery_full.toml``) and :func:`derive` tabulates ``consistency_excess`` vs ``L``.

Writes ``results.csv`` (one row per system × student × objective × regime × seed), ``consistency.csv`` (the
curves), ``summary.csv`` / ``paired.csv`` (:func:`derive`), ``results.json``, the figures and one checkpoint
per trained student (``checkpoints/SYSTEM-STUDENT-OBJECTIVE-L{L}-s{SEED}/``; the matched copy in ``matched/``).
"""

from __future__ import annotations

import copy
import dataclasses
import time
from pathlib import Path
from typing import Any, ClassVar

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
from testbed.experiments.common import fit, make_splits, path_component, split_validation
from testbed.experiments.protocol import ExperimentConfig, flag, seeds_field
from testbed.field.consistency import default_step_counts
from testbed.objectives import LAW_OBJECTIVES, make_objective, needs_jacobians
from testbed.results import fresh_output_dir, is_true, read_csv, run_metadata, write_csv, write_json
from testbed.stats import paired_table
from testbed.students import build_student
from testbed.train import save_checkpoint

NAME = "law-recovery"
#: natural keys of a row besides its seed: rows sharing them are repeats over seeds
GROUP_KEYS = ["system", "student", "regime", "objective", "n_layers", "width"]
#: config fields that only partition the rows (a sweep over them still draws this study's figure): every row names
#: its system, student, objective and depth, and the endpoint band is one per system
PARTITION_FIELDS = ("systems", "students", "objectives", "n_layers", "match_endpoint")
OBJECTIVES = LAW_OBJECTIVES
#: student name → (registry kind, fixed arguments)
STUDENT_VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "residual": ("residual", {"tied": True}),
    "residual_untied": ("residual", {"tied": False}),
    "neural_ode": ("neural_ode", {"method": "dopri5", "adjoint": True}),
}
REGIMES = ("budget", "matched")
SUMMARY_COLUMNS = ["system", "student", "regime", "objective", "seed", "endpoint_error", "law_error_id",
                   "interior_error", "consistency_excess", "reached_band", "flag"]
CAPTIONS = {
    "law_recovery": (
        "One row per teacher flow (tied residual student, equal budget, the study's main depth L). Columns 1–5: "
        "phase portraits of the teacher law f* and of the students trained on the endpoint only, on endpoint + "
        "states (trajectory), + vector field (field) and + Jacobian; streamlines coloured by log10 |f|, dashed "
        "box = region of training initial states. Last two columns: solver consistency — relative endpoint "
        "change when the learned field is re-integrated with L' Euler steps (dotted: dopri5), beside the teacher "
        "law's own curve — and the re-integrated endpoint's error against the exact flow map (mean over seeds ± "
        "95% t-interval)."),
    "law_error": (
        "Test errors per system, objective and student: top row at equal training budget, bottom row at matched "
        "endpoint error (each student stopped when its endpoint error on a validation split first fell into the "
        "band; only students that reached it; n reached / n trained under each system). Mean over seeds ± 95% "
        "t-interval, log axes; relative L2 errors."),
    "consistency_vs_depth": (
        "Solver consistency across step sizes: for students trained at depth L (same horizon T), the endpoint "
        "change from the L-step network to the dopri5 solve of its own field, minus the true law's own change "
        "at the same L (the discretisation floor). 0 = as consistent as the true law; > 0 = the student's field "
        "is a discretisation artefact; < 0 = it compensates its own steps. Tied residual students, equal budget; "
        "mean over seeds ± 95% t-interval; symmetric-log y axis."),
    "aliasing": (
        "The aliased law on the linear spiral x' = Ax (rotation rate w, horizon T). Left: the first state "
        "coordinate of one test trajectory — teacher flow (line) and the students' layer states (markers); the "
        "endpoint-trained student meets the teacher at T and not in between. Middle: the same in the phase plane. "
        "Right: each student's rotation rate, read from a least-squares linear fit of f_theta on the test states "
        "(one dot per seed), against the true rate w and the alias w − 2π/T, which has the same flow map at T."),
}
RESULT_COLUMNS = [
    "system", "student", "regime", "objective", "seed", "endpoint_error", "law_error_id", "law_error_ood",
    "trajectory_error", "interior_error", "aliased", "consistency_error", "consistency_excess",
    "teacher_consistency_error", "consistency_error_mean", "path_sensitivity", "teacher_path_sensitivity",
    "endpoint_error_ood", "flow_jacobian_error", "reached_band", "val_endpoint_error", "steps_trained",
    "match_endpoint", "final_loss", "train_seconds", "n_layers", "width", "tied", "flag",
]
#: the test metrics of the summary and paired tables (all but consistency_excess are positive errors: log ratios)
TABLE_METRICS = ("endpoint_error", "law_error_id", "law_error_ood", "trajectory_error", "interior_error",
                 "consistency_excess")
LOG_METRICS = ("endpoint_error", "law_error_id", "law_error_ood", "trajectory_error", "interior_error")
FIGURES = ("law_recovery", "law_error", "consistency_vs_depth", "aliasing")
DERIVED_FILES = ("summary.csv", "paired.csv")
OUTPUT_FILES = ("results.csv", "consistency.csv", "results.json", *DERIVED_FILES,
                *(f"{f}.{ext}" for f in FIGURES for ext in ("png", "pdf")))


@dataclasses.dataclass
class LawRecoveryConfig(ExperimentConfig):
    """Settings of the law-recovery study (validated on construction)."""

    UNIQUE_FIELDS: ClassVar[tuple[str, ...]] = ("systems", "students", "objectives")

    systems: tuple[str, ...] = flag(("van_der_pol", "linear_spiral", "lotka_volterra", "damped_pendulum",
                                     "double_gyre", "lorenz63"), name="--system", help="teacher system(s)")
    objectives: tuple[str, ...] = OBJECTIVES
    students: tuple[str, ...] = ("residual", "residual_untied", "neural_ode")
    seeds: tuple[int, ...] = seeds_field((0, 1, 2, 3, 4))
    n_layers: int = 32
    width: int = 64
    hidden_layers: int = 2
    init_scale: float = 0.1
    n_train: int = 512
    n_test: int = 256
    n_obs: int = 8
    steps: int = 2000
    batch_size: int = 64
    lr: float = 3e-3
    grad_clip: float = 1.0
    dtype: str = "float64"
    #: > 0: also report every student at the first check where its validation endpoint error is ≤ this (the
    #: ``matched`` regime); 0: equal budget only
    match_endpoint: float = 0.05
    val_fraction: float = 0.2
    #: steps between two checks of the validation endpoint error (matched regime)
    check_every: int = 50
    #: tolerances of the neural-ODE student's adaptive solver
    ode_rtol: float = 1e-5
    ode_atol: float = 1e-6

    def validate(self) -> None:
        self.systems = tuple(systems.canonical_name(s) for s in self.systems)
        self.objectives = tuple(self.objectives)
        self.students = tuple(self.students)
        self.seeds = tuple(int(s) for s in self.seeds)
        for name in ("systems", "objectives", "students"):
            if not getattr(self, name):
                raise ConfigError(f"{name} must name at least one entry")
        for s in self.systems:
            systems.system_class(s)  # raises the registry's clear error for an unknown name
        for o in self.objectives:
            make_objective(o)
        for st in self.students:
            check_choice("students", st, list(STUDENT_VARIANTS))
        for name in ("n_layers", "width", "hidden_layers", "n_train", "n_test", "n_obs", "steps", "batch_size",
                     "check_every"):
            check_positive_int(name, getattr(self, name))
        for name in ("lr", "ode_rtol", "ode_atol"):
            check_positive(name, getattr(self, name))
        check_nonneg("grad_clip", self.grad_clip)
        check_nonneg("init_scale", self.init_scale)
        check_choice("dtype", self.dtype, ("float32", "float64"))
        if not 0.0 <= self.match_endpoint < 1.0:
            raise ConfigError(f"match_endpoint must lie in [0, 1) (0 = equal budget only), got {self.match_endpoint}")
        if not 0.0 < self.val_fraction < 0.5:
            raise ConfigError(f"val_fraction must lie in (0, 0.5), got {self.val_fraction}")
        if self.n_layers % self.n_obs:
            raise ConfigError(f"n_layers ({self.n_layers}) must be a multiple of n_obs ({self.n_obs}) so every "
                              "observation time is a layer time")


def quick_config(**overrides: Any) -> LawRecoveryConfig:
    """Settings for a 2-core CPU in under 3 minutes: 3 systems × 4 objectives, the tied residual student, 1 seed."""
    base = dict(systems=("van_der_pol", "linear_spiral", "lotka_volterra"), students=("residual",), seeds=(0,),
                n_train=256, n_test=128, steps=600, match_endpoint=0.1)
    base.update(overrides)
    return LawRecoveryConfig(**base)


# ----------------------------------------------------------------------------------------------- run
def build(cfg: LawRecoveryConfig, student: str, system):
    """The ``student`` variant for ``system`` at the config's depth and width (call under ``torch.manual_seed``)."""
    kind, fixed = STUDENT_VARIANTS[student]
    kw: dict[str, Any] = dict(dim=system.dim, n_layers=cfg.n_layers, horizon=float(system.horizon),
                              width=cfg.width, hidden_layers=cfg.hidden_layers,
                              time_conditioned=not system.autonomous, init_scale=cfg.init_scale, **fixed)
    if kind == "neural_ode":
        kw.update(rtol=cfg.ode_rtol, atol=cfg.ode_atol)
    return build_student(kind, **kw).to(getattr(torch, cfg.dtype))


class BandWatch:
    """The matched-regime student: the weights at the first check where the relative endpoint error on ``val_data``
    (carved from the training data, never the test set) is at most ``target``.

    Pass as ``stop_when`` (it never stops training: the same run gives the equal-budget student at its end) and
    call :meth:`finish` after training (``stop_when`` is not called at the last step). The weights are written to
    ``path`` the moment the band is entered, so a resumed run (whose earlier checks were made before the resume)
    reads them back instead of forgetting them; a run that starts from step 0 deletes a stale file first."""

    def __init__(self, val_data, target: float, path: Path | None = None, resuming: bool = False,
                 extra: dict[str, Any] | None = None) -> None:
        self.val_data, self.target, self.path, self.extra = val_data, float(target), path, dict(extra or {})
        self.step: int | None = None
        self.state: dict[str, torch.Tensor] | None = None
        self.val_error = float("nan")        # at the band step (reached) or at the end (missed)
        if path is not None and path.exists():
            if resuming:
                from testbed.train import read_checkpoint

                ck = read_checkpoint(path)
                self.state, self.step = ck["student_state"], int(ck["extra"]["step"])
                self.val_error = float(ck["extra"]["val_endpoint_error"])
            else:
                path.unlink()

    def error(self, student) -> float:
        from testbed.field.metrics import endpoint_error

        device = next(student.parameters()).device
        with torch.no_grad():
            return endpoint_error(student, self.val_data.to(device))

    def __call__(self, step: int, student) -> bool:
        if self.step is None:
            err = self.error(student)
            if err <= self.target:
                self.step, self.val_error = step, err
                self.state = copy.deepcopy({k: v.detach().cpu() for k, v in student.state_dict().items()})
                if self.path is not None:
                    save_checkpoint(self.path, student, extra={**self.extra, "regime": "matched", "step": step,
                                                               "val_endpoint_error": err})
        return False

    def finish(self, step: int, student) -> float:
        """Check the final weights too; return their validation endpoint error."""
        self(step, student)
        final = self.val_error if self.step == step else self.error(student)
        if self.step is None:
            self.val_error = final
        return final


def train_and_evaluate(cfg: LawRecoveryConfig, system, student_name: str, obj_name: str, seed: int, train_data,
                       val_data, ref, out: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """One student trained once: its ``budget`` row (final weights) and, with a validation split, its ``matched``
    row (the weights at the first check in the band; a miss repeats the budget evaluation with
    ``reached_band = False``), plus their consistency curves (a miss adds none)."""
    torch.manual_seed(seed)
    student = build(cfg, student_name, system)
    sname = system.name
    run_dir = out / "checkpoints" / path_component(f"{sname}-{student_name}-{obj_name}-L{cfg.n_layers}-s{seed}")
    extra = {"system": sname, "system_params": system.params(), "objective": obj_name, "student": student_name,
             "seed": seed, "n_layers": cfg.n_layers}
    watch = None
    if val_data is not None:
        watch = BandWatch(val_data, cfg.match_endpoint, run_dir / "matched" / "checkpoint.pt",
                          resuming=(run_dir / "checkpoint.pt").exists(), extra=extra)
    where_txt = f"system {sname}, student {student_name}, objective {obj_name}, seed {seed}"
    step_counts = default_step_counts(cfg.n_layers)
    with divergence_context(system=sname, student=student_name, objective=obj_name, seed=seed) as where:
        result = fit(student, obj_name, train_data, seed=seed, steps=cfg.steps, batch_size=cfg.batch_size,
                     lr=cfg.lr, grad_clip=cfg.grad_clip, progress=cfg.progress, run_dir=run_dir, device=cfg.device,
                     extra={**extra, "regime": "budget"}, stop_when=watch, log_every=cfg.check_every)
        where["after training step"] = f"{result.steps} (final loss {result.final_loss:.3g})"
        ev = evaluate_student(student, ref, step_counts)
        common = {"student": student_name, "objective": obj_name, "seed": seed, "width": cfg.width,
                  "tied": STUDENT_VARIANTS[student_name][1].get("tied", ""), "match_endpoint": cfg.match_endpoint}
        budget = {**common, "regime": "budget", **ev.metrics, "final_loss": result.final_loss,
                  "train_seconds": result.wall_time, "steps_trained": result.steps,
                  "flag": quality_flag(ev.metrics, where_txt), "reached_band": "", "val_endpoint_error": ""}
        rows = [budget]
        ident = {"student": student_name, "objective": obj_name, "seed": seed}
        curves = [{**ident, "regime": "budget", **r} for r in ev.consistency.rows]
        if watch is None:
            return rows, curves
        budget["val_endpoint_error"] = watch.finish(result.steps, student)
        if watch.state is None:                                 # a miss: counted, evaluated at the final weights
            rows.append({**budget, "regime": "matched", "reached_band": False, "val_endpoint_error": watch.val_error})
            return rows, curves
        matched = copy.deepcopy(student)
        matched.load_state_dict(watch.state)
        mev = evaluate_student(matched, ref, step_counts)
        at = next((h for h in result.history if h["step"] == watch.step), {})
        rows.append({**common, "regime": "matched", **mev.metrics, "final_loss": at.get("loss", ""),
                     "train_seconds": at.get("time", ""), "steps_trained": watch.step,
                     "flag": quality_flag(mev.metrics, where_txt + " (matched)"), "reached_band": True,
                     "val_endpoint_error": watch.val_error})
        curves += [{**ident, "regime": "matched", **r} for r in mev.consistency.rows]
    return rows, curves


def run(cfg: LawRecoveryConfig, out: str | Path) -> list[dict[str, Any]]:
    """Train and evaluate every system × student × objective × seed; write the tables and metadata to ``out``."""
    out = fresh_output_dir(out, OUTPUT_FILES)
    dtype = getattr(torch, cfg.dtype)
    step_counts = default_step_counts(cfg.n_layers)
    rows: list[dict[str, Any]] = []
    curves: list[dict[str, Any]] = []
    t_start = time.perf_counter()
    for sname in cfg.systems:
        system = systems.get_system(sname)
        jac = needs_jacobians(cfg.objectives)
        train_data, test_id, test_ood = make_splits(system, cfg.n_train, cfg.n_test, cfg.n_obs, dtype,
                                                    with_jacobians=jac)
        val_data = None
        if cfg.match_endpoint > 0:
            train_data, val_data = split_validation(train_data, cfg.val_fraction)
        ref = teacher_reference(system, test_id, test_ood, cfg.n_layers, step_counts)
        tag = {"system": sname, "n_layers": cfg.n_layers}
        curves += [{**tag, "student": "teacher", "objective": "teacher", "regime": "", "seed": -1, **r}
                   for r in ref.consistency.rows]
        for student_name in cfg.students:
            for obj_name in cfg.objectives:
                for seed in cfg.seeds:
                    new_rows, new_curves = train_and_evaluate(cfg, system, student_name, obj_name, seed, train_data,
                                                              val_data, ref, out)
                    rows += [{**tag, **r} for r in new_rows]
                    curves += [{**tag, **c} for c in new_curves]
    write_csv(out / "consistency.csv", curves)
    write_json(out / "results.json", run_metadata(cfg, cfg.seeds, experiment=NAME,
                                                  wall_seconds=time.perf_counter() - t_start))
    write_csv(out / "results.csv", rows, RESULT_COLUMNS)  # the rows, complete
    derive(out)
    return rows


# ----------------------------------------------------------------------------------------------- tables
def in_band(r: dict[str, Any]) -> bool:
    """A row of the comparison: every equal-budget row; a matched row only if the student reached the band."""
    return r.get("regime") != "matched" or is_true(r.get("reached_band"))


def derive(out: str | Path) -> list[Path]:
    """Tables across seeds from ``out/results.csv``:

    * ``summary.csv`` — per system × student × regime × objective × depth: mean, sample std and 95% CI
      half-width of every metric over the rows in the comparison (:func:`in_band`), ``n`` of them, and
      ``n_trained`` / ``n_reached`` (how many students were trained, how many reached the band);
    * ``paired.csv`` — every objective against ``endpoint`` over the seeds both have (matched regime: seeds where
      both reached the band): paired differences of ``log10`` errors (geometric-mean ratio with its 95% CI) and of
      ``consistency_excess`` (:func:`testbed.stats.paired_table`).
    """
    from testbed.sweep.merge import summarize as group_summary

    out = Path(out)
    rows = read_csv(out / "results.csv")
    keys = ["system", "student", "regime", "objective", "n_layers", "width"]
    kept = [r for r in rows if in_band(r)]
    metric_rows = [{**{k: r[k] for k in keys}, "seed": r["seed"], **{m: r.get(m, "") for m in TABLE_METRICS}}
                   for r in kept]
    summary = group_summary(metric_rows, keys)
    for s in summary:
        members = [r for r in rows if all(r[k] == s[k] for k in keys)]
        s["n_trained"] = len(members)
        s["n_reached"] = sum(is_true(r.get("reached_band")) for r in members) if s["regime"] == "matched" else ""
    # groups where no student reached the band still get a line (n = 0), so misses are never silent
    for key in dict.fromkeys(tuple(r[k] for k in keys) for r in rows):
        if not any(tuple(s[k] for k in keys) == key for s in summary):
            summary.append({**dict(zip(keys, key, strict=True)), "n": 0,
                            "n_trained": sum(tuple(r[k] for k in keys) == key for r in rows), "n_reached": 0})
    pairs = paired_table(kept, ["system", "student", "regime", "n_layers", "width"], "objective", "endpoint",
                         TABLE_METRICS, LOG_METRICS)
    write_csv(out / "summary.csv", summary)
    write_csv(out / "paired.csv", pairs)
    return [out / "summary.csv", out / "paired.csv"]


def main_depth(rows: list[dict[str, Any]]) -> int:
    """The depth most rows were trained at (ties: the smaller) — the study's main ``L``."""
    counts: dict[int, int] = {}
    for r in rows:
        counts[int(r["n_layers"])] = counts.get(int(r["n_layers"]), 0) + 1
    return min(counts, key=lambda L: (-counts[L], L))


def report(folder: str | Path) -> str | None:
    """Markdown for ``testbed report``: law error per objective at equal budget and at matched endpoint error
    (mean ± 95% CI (n) with misses counted), the paired ratios against ``endpoint``, consistency excess across
    depths and the aliasing counts."""
    folder = Path(folder)
    if not (folder / "summary.csv").exists():
        return None
    from testbed.experiments.law.report import report_markdown

    summary, results = read_csv(folder / "summary.csv"), read_csv(folder / "results.csv")
    if not results or not summary or "n_trained" not in summary[0]:   # not derive()'s table: the generic one
        return None
    return report_markdown(results, summary,
                           read_csv(folder / "paired.csv") if (folder / "paired.csv").exists() else [],
                           main_depth(results))


# ----------------------------------------------------------------------------------------------- figures
def plot(out: str | Path) -> list[Path]:
    """Draw the figures from the files in ``out`` (tables, consistency curves and checkpoints)."""
    from testbed.experiments.law import figures as law_figures

    out = Path(out)
    rows = read_csv(out / "results.csv")
    if not rows:
        return []
    L, who = main_depth(rows), law_figures.main_student(rows)
    paths = law_figures.portraits(out, L, who)
    paths += law_figures.error_panels(out, rows, L)
    if len({int(r["n_layers"]) for r in rows}) > 1:
        paths += law_figures.consistency_vs_depth(out, rows)
    if any(r["system"] == "linear_spiral" for r in rows):
        paths += law_figures.aliasing(out, L, who)
    return paths


Config = LawRecoveryConfig  # every experiment module exposes its config as ``Config``

__all__ = ["BandWatch", "Config", "LawRecoveryConfig", "NAME", "OBJECTIVES", "STUDENT_VARIANTS", "derive", "plot",
           "quick_config", "report", "run"]

"""Law recovery as a benchmark: many teachers nobody here wrote, neural students against sparse regression.

The question of ``law-recovery`` — does observing endpoints, states or the field recover the law? — asked across
a catalogue instead of six hand-picked flows: by default every ``dysts`` flow with an analytic Jacobian and
dimension ≤ ``max_dim`` (:mod:`systems.dysts_catalogue`, optional extra) plus the built-in ODE teachers; any
system reference works (``path/file.py:NAME``, ``module:NAME``, ``dysts:NAME``). Methods, all on the same training
trajectories (``n_train`` initial states, ``n_obs`` observation intervals):

* ``endpoint``, ``trajectory``, ``field`` — the tied residual student of ``law-recovery`` (depth ``L``, equal
  budget) trained on those objectives;
* ``sindy_states``, ``sindy_field`` — SINDy (:mod:`testbed.students.sindy`, optional extra ``[sindy]``) with a
  declared polynomial library of degree ``sindy_degree``, fitted on finite-difference derivatives of the observed
  states (the information of ``trajectory``) or on the observed field samples (the information of ``field``); its
  threshold chosen on a validation split. Its fit is deterministic given the data, so it runs once per system (the
  first seed); on a time-dependent teacher it is ``not_applicable`` (no ``t`` terms in the library).

By default every teacher is put in nondimensional coordinates first (ID box → ``[−1, 1]^d``, horizon → 1;
:mod:`systems.standardized`, an exact conjugacy), so one architecture and learning rate serve the whole catalogue.
Every method is scored by the same code (:func:`testbed.evaluate.evaluate_student`, :func:`testbed.evaluate.rollout`):
law error ``‖f̂ − f*‖/‖f*‖`` on ID and OOD test states, endpoint and trajectory error, roll-out error at ``2T``. A
system that cannot be loaded (unbounded, stiff, a delay equation) or a method that fails on it is a row with
``status = failed`` and the reason; the others go on.

Writes ``results.csv`` (system × method × seed), ``summary.csv`` (per system × method, mean ± 95% CI over seeds),
``aggregate.csv`` (per method over systems: median and interquartile range of the per-system mean law error, the
number of systems), ``comparisons.csv`` (field vs endpoint ≥ 3×; SINDy vs the field-trained student; where SINDy
fails), ``results.json`` and the figure ``law_benchmark`` (law error per system, sorted, one marker per method).
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

import systems
from systems.base import SystemSpecError
from systems.standardized import standardize
from testbed.config import ConfigError, check_choice, check_positive, check_positive_int
from testbed.evaluate import evaluate_student, rollout, teacher_reference
from testbed.experiments import law_recovery
from testbed.experiments.common import make_splits, path_component, split_validation
from testbed.experiments.protocol import ExperimentConfig, flag, seeds_field
from testbed.field.consistency import default_step_counts
from testbed.report import is_finite_number
from testbed.results import fresh_output_dir, is_true, read_csv, run_metadata, write_csv, write_json

NAME = "law-benchmark"
NEURAL = ("endpoint", "trajectory", "field")
SINDY = ("sindy_states", "sindy_field")
METHODS = (*NEURAL, *SINDY)
BUILTIN = ("van_der_pol", "linear_spiral", "lotka_volterra", "damped_pendulum", "double_gyre", "lorenz63")
#: ``systems = ("default",)`` expands to the built-in teachers plus the dysts catalogue (when installed)
DEFAULT = "default"
GROUP_KEYS = ["system", "method"]
PARTITION_FIELDS = ("systems",)
SUMMARY_COLUMNS = ["system", "method", "seed", "status", "law_error_id", "law_error_ood", "endpoint_error",
                   "sindy_terms"]
RESULT_COLUMNS = ["system", "method", "seed", "status", "reason", "dim", "horizon", "law_error_id", "law_error_ood",
                  "endpoint_error", "endpoint_error_ood", "trajectory_error", "rollout_error_2T",
                  "consistency_error", "sindy_threshold", "sindy_terms", "train_seconds"]
METRICS = ("law_error_id", "law_error_ood", "endpoint_error", "trajectory_error", "rollout_error_2T")
#: "field beats endpoint" when the per-system mean law error is at least this many times lower
WIN_FACTOR = 3.0
#: the figure's floor: law errors below it are exact to rounding
FLOOR = 1e-10
#: a SINDy fit "fails" on a system when its ID law error stays above this (no law recovered)
SINDY_FAIL = 0.5
DERIVED_FILES = ("summary.csv", "aggregate.csv", "comparisons.csv")
OUTPUT_FILES = ("results.csv", "results.json", *DERIVED_FILES, "law_benchmark.png", "law_benchmark.pdf")
CAPTIONS = {
    "law_benchmark": (
        "Law error ‖f̂ − f*‖/‖f*‖ on in-distribution test states per teacher system (x axis, sorted by the "
        "field-trained student's error), one marker per method: the tied residual student trained on endpoints, "
        "observed states (trajectory) or the field, and SINDy fitted on finite-difference derivatives of the "
        "observed states or on the observed field samples. Mean over seeds; log axis; systems that failed to load "
        "are listed in results.csv with their reason."),
}


def default_systems(max_dim: int = 10) -> tuple[str, ...]:
    """The built-in ODE teachers, then every dysts flow with an analytic Jacobian and dimension ≤ ``max_dim``
    (none when dysts is not installed)."""
    try:
        from systems import dysts_catalogue

        names = dysts_catalogue.catalogue()
    except SystemSpecError:
        return BUILTIN
    picked = []
    for n in names:
        m = dysts_catalogue.model(n)
        if m.has_jacobian() and np.size(m.ic) <= max_dim and not getattr(m, "delay", False):
            picked.append(dysts_catalogue.PREFIX + n)
    return (*BUILTIN, *picked)


@dataclasses.dataclass
class LawBenchmarkConfig(ExperimentConfig):
    """Settings of the law benchmark (validated on construction; systems are loaded when the run reaches them, so
    one that fails to load becomes a failed row, not a config error)."""

    UNIQUE_FIELDS: ClassVar[tuple[str, ...]] = ("systems", "methods")

    systems: tuple[str, ...] = flag((DEFAULT,), name="--system", help="system(s), or 'default' (built-in + dysts)")
    methods: tuple[str, ...] = METHODS
    seeds: tuple[int, ...] = seeds_field((0, 1, 2, 3, 4))
    max_dim: int = 10
    n_layers: int = 16
    width: int = 64
    hidden_layers: int = 2
    n_train: int = 256
    n_test: int = 128
    n_obs: int = 8
    steps: int = 1500
    batch_size: int = 64
    lr: float = 3e-3
    sindy_degree: int = 3
    val_fraction: float = 0.2
    #: train and score every method in nondimensional coordinates (ID box → [−1, 1]^d, horizon → 1:
    #: :mod:`systems.standardized`), so one architecture and learning rate fit teachers of any scale
    standardize: bool = True

    def validate(self) -> None:
        self.systems = tuple(self.systems)
        if DEFAULT in self.systems:
            rest = [s for s in self.systems if s != DEFAULT]
            self.systems = tuple(dict.fromkeys((*default_systems(self.max_dim), *rest)))
        self.systems = tuple(systems.canonical_name(s) for s in self.systems)
        self.methods = tuple(self.methods)
        for name in ("systems", "methods", "seeds"):
            if not getattr(self, name):
                raise ConfigError(f"{name} must not be empty")
        for m in self.methods:
            check_choice("methods", m, METHODS)
        for name in ("max_dim", "n_layers", "width", "hidden_layers", "n_train", "n_test", "n_obs", "steps",
                     "batch_size", "sindy_degree"):
            check_positive_int(name, getattr(self, name))
        check_positive("lr", self.lr)
        if not 0.0 < self.val_fraction < 0.5:
            raise ConfigError(f"val_fraction must lie in (0, 0.5), got {self.val_fraction}")
        if self.n_layers % self.n_obs:
            raise ConfigError(f"n_layers ({self.n_layers}) must be a multiple of n_obs ({self.n_obs})")
        if not isinstance(self.standardize, bool):
            raise ConfigError(f"standardize must be true or false, got {self.standardize!r}")


QUICK_SYSTEMS = ("van_der_pol", "lotka_volterra", "damped_pendulum", "linear_spiral", "dysts:Lorenz",
                 "dysts:Rossler", "dysts:Thomas", "dysts:Chen")


def quick_config(**overrides: Any) -> LawBenchmarkConfig:
    """8 systems (4 built-in, 4 from dysts — replaced by built-ins when dysts is missing), 1 seed, short training:
    under 3 minutes on 2 cores."""
    try:
        from systems import dysts_catalogue

        dysts_catalogue.catalogue()
        quick = QUICK_SYSTEMS
    except SystemSpecError:
        quick = BUILTIN
    base = dict(systems=quick, seeds=(0,), n_train=128, n_test=64, steps=400)
    base.update(overrides)
    return LawBenchmarkConfig(**base)


# ----------------------------------------------------------------------------------------------- run
def law_config(cfg: LawBenchmarkConfig, system_name: str) -> law_recovery.LawRecoveryConfig:
    """The ``law-recovery`` settings the neural students train under (equal budget, no endpoint band)."""
    return law_recovery.LawRecoveryConfig(
        systems=(system_name,), objectives=tuple(m for m in cfg.methods if m in NEURAL) or ("field",),
        students=("residual",), seeds=cfg.seeds, n_layers=cfg.n_layers, width=cfg.width,
        hidden_layers=cfg.hidden_layers, n_train=cfg.n_train, n_test=cfg.n_test, n_obs=cfg.n_obs, steps=cfg.steps,
        batch_size=cfg.batch_size, lr=cfg.lr, match_endpoint=0.0, progress=cfg.progress, device=cfg.device)


def seeds_for(cfg: LawBenchmarkConfig, method: str) -> tuple[int, ...]:
    """The seeds a method runs: every seed for the neural students; the first only for SINDy, whose fit is
    deterministic given the data (one draw per system) — more rows would repeat it and fake a zero-width CI."""
    return cfg.seeds if method in NEURAL else cfg.seeds[:1]


def _failed(tags: dict[str, Any], err: BaseException) -> dict[str, Any]:
    reason = f"{type(err).__name__}: {err}".splitlines()[0][:800]
    return {**tags, "status": "failed", "reason": reason}


def run_system(cfg: LawBenchmarkConfig, name: str, out: Path) -> list[dict[str, Any]]:
    """Every method × seed on one system (failed rows carry the reason)."""
    from testbed.students.sindy import fit_sindy

    try:
        system = systems.get_system(name)
        if cfg.standardize:
            system = standardize(system)
        train_data, test_id, test_ood = make_splits(system, cfg.n_train, cfg.n_test, cfg.n_obs)
        fit_data, val_data = split_validation(train_data, cfg.val_fraction)
        step_counts = default_step_counts(cfg.n_layers)
        ref = teacher_reference(system, test_id, test_ood, cfg.n_layers, step_counts)
    except Exception as err:  # noqa: BLE001  (a teacher that cannot be set up is a row with its reason)
        return [_failed({"system": name, "method": m, "seed": s}, err) for m in cfg.methods for s in seeds_for(cfg, m)]
    info = {"dim": system.dim, "horizon": float(system.horizon)}
    T, x_roll = float(system.horizon), test_id.x0[:32]
    lcfg = law_config(cfg, name)
    rows = []
    for method in cfg.methods:
        for seed in seeds_for(cfg, method):
            tags = {"system": name, "method": method, "seed": seed, **info}
            if method in SINDY and not system.autonomous:
                rows.append({**tags, "status": "not_applicable",
                             "reason": "time-dependent law: the SINDy library has no t terms"})
                continue
            t0 = time.perf_counter()
            try:
                if method in NEURAL:
                    # the same student, objective and budget as law-recovery, trained on the fitted part of the split
                    new_rows, _ = law_recovery.train_and_evaluate(lcfg, system, "residual", method, seed, fit_data,
                                                                  None, ref, out)
                    m = new_rows[0]
                    extra = {"sindy_threshold": "", "sindy_terms": ""}
                    roll_err = _neural_rollout(lcfg, system, method, seed, out, x_roll, T)
                else:
                    torch.manual_seed(seed)
                    fitted = fit_sindy(fit_data, val_data, variant=method.removeprefix("sindy_"),
                                       n_layers=cfg.n_layers, horizon=T, degree=cfg.sindy_degree)
                    student = fitted.student
                    m = evaluate_student(student, ref, step_counts).metrics
                    extra = {"sindy_threshold": student.threshold, "sindy_terms": student.n_terms}
                    roll_err = rollout(student, system, x_roll, T, cfg.n_layers, factor=2).error_at(2 * T)
            except Exception as err:  # noqa: BLE001  (one method failing on one system must not stop the benchmark)
                rows.append(_failed(tags, err))
                continue
            rows.append({**tags, "status": "ok", "reason": "", **{k: m[k] for k in (
                "law_error_id", "law_error_ood", "endpoint_error", "endpoint_error_ood", "trajectory_error",
                "consistency_error")}, "rollout_error_2T": roll_err, **extra,
                "train_seconds": time.perf_counter() - t0})
    return rows


def _neural_rollout(lcfg, system, method: str, seed: int, out: Path, x_roll, T: float) -> float:
    """The trained neural student's roll-out error at 2T (reloaded from its checkpoint)."""
    from testbed.train import load_student

    run_dir = out / "checkpoints" / path_component(f"{system.name}-residual-{method}-L{lcfg.n_layers}-s{seed}")
    student, _ = load_student(run_dir)
    return rollout(student.double(), system, x_roll, T, lcfg.n_layers, factor=2).error_at(2 * T)


def run(cfg: LawBenchmarkConfig, out: str | Path) -> list[dict[str, Any]]:
    out = fresh_output_dir(out, OUTPUT_FILES)
    t_start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    for name in cfg.systems:
        rows += run_system(cfg, name, out)
    write_json(out / "results.json", run_metadata(cfg, cfg.seeds, experiment=NAME,
                                                  wall_seconds=time.perf_counter() - t_start))
    write_csv(out / "results.csv", rows, RESULT_COLUMNS)
    derive(out)
    return rows


# ----------------------------------------------------------------------------------------------- tables
def derive(out: str | Path) -> list[Path]:
    """``summary.csv`` (per system × method over seeds), ``aggregate.csv`` (per method over systems) and
    ``comparisons.csv`` from ``out/results.csv``."""
    from testbed.sweep.merge import summarize as group_summary

    out = Path(out)
    rows = read_csv(out / "results.csv")
    ok = [r for r in rows if r.get("status") == "ok"]
    metric_rows = [{"system": r["system"], "method": r["method"], "seed": r["seed"],
                    **{m: r.get(m, "") for m in METRICS}} for r in ok]
    summary = group_summary(metric_rows, ["system", "method"]) if metric_rows else []
    for s in summary:
        s["n_failed"] = sum(1 for r in rows if r["system"] == s["system"] and r["method"] == s["method"]
                            and r.get("status") != "ok")
    write_csv(out / "summary.csv", summary)
    write_csv(out / "aggregate.csv", aggregate(summary, rows))
    write_csv(out / "comparisons.csv", comparisons(summary))
    return [out / "summary.csv", out / "aggregate.csv", out / "comparisons.csv"]


def per_system(summary: list[dict[str, Any]], method: str, metric: str = "law_error_id") -> dict[str, float]:
    """``{system: mean over seeds}`` of ``metric`` for ``method`` (finite values only)."""
    return {s["system"]: float(s[f"{metric}_mean"]) for s in summary
            if s["method"] == method and is_finite_number(s.get(f"{metric}_mean"))}


def aggregate(summary: list[dict[str, Any]], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per method: the number of systems scored and failed, and the median and interquartile range (25th–75th
    percentile) over systems of the per-system mean law error (ID, OOD) and endpoint error."""
    out = []
    for method in dict.fromkeys(r["method"] for r in rows):
        rec: dict[str, Any] = {"method": method}
        for metric in ("law_error_id", "law_error_ood", "endpoint_error"):
            vals = np.array(list(per_system(summary, method, metric).values()), dtype=float)
            rec[f"{metric}_median"] = float(np.median(vals)) if vals.size else math.nan
            rec[f"{metric}_q25"] = float(np.percentile(vals, 25)) if vals.size else math.nan
            rec[f"{metric}_q75"] = float(np.percentile(vals, 75)) if vals.size else math.nan
            if metric == "law_error_id":
                rec["n_systems"] = int(vals.size)
        rec["n_failed_systems"] = len({r["system"] for r in rows if r["method"] == method
                                       and r.get("status") != "ok"})
        out.append(rec)
    return out


def comparisons(summary: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per system: the endpoint / field law-error ratio (field wins when ≥ :data:`WIN_FACTOR`), each SINDy variant
    against the neural student with the same information (sindy_states vs trajectory, sindy_field vs field), and
    whether SINDy failed (law error > :data:`SINDY_FAIL`)."""
    law = {m: per_system(summary, m) for m in METHODS}
    out = []
    for system in dict.fromkeys(s["system"] for s in summary):
        rec: dict[str, Any] = {"system": system}
        e, f = law["endpoint"].get(system), law["field"].get(system)
        rec["endpoint_over_field"] = e / f if e is not None and f and f > 0 else math.nan
        ratio = rec["endpoint_over_field"]
        rec["field_wins"] = bool(ratio >= WIN_FACTOR) if is_finite_number(ratio) else ""
        for sindy, neural in (("sindy_states", "trajectory"), ("sindy_field", "field")):
            a, b = law[sindy].get(system), law[neural].get(system)
            rec[f"{sindy}_over_{neural}"] = a / b if a is not None and b else math.nan
            rec[f"{sindy}_wins"] = bool(a < b) if a is not None and b is not None else ""
            rec[f"{sindy}_fails"] = bool(a > SINDY_FAIL) if a is not None else ""
        out.append(rec)
    return out


def report(folder: str | Path) -> str | None:
    """Markdown for ``testbed report``: the aggregate table and the comparison counts."""
    folder = Path(folder)
    if not (folder / "aggregate.csv").exists() or not (folder / "comparisons.csv").exists():
        return None
    agg, comp = read_csv(folder / "aggregate.csv"), read_csv(folder / "comparisons.csv")
    rows = read_csv(folder / "results.csv")
    seeds = sorted({r["seed"] for r in rows})
    lines = [f"{len({r['system'] for r in rows})} systems, {len(seeds)} seed(s) for the neural students (SINDy: one "
             "deterministic fit per system; not applied to time-dependent laws); per method the median [25th, 75th "
             "percentile] over systems of the per-system mean error (relative L2):", "",
             "| method | systems scored | failed | law error ID | law error OOD | endpoint error |",
             "|---|---|---|---|---|---|"]
    for a in agg:
        metrics = ("law_error_id", "law_error_ood", "endpoint_error")
        cells = [f"{a[f'{m}_median']:.3g} [{a[f'{m}_q25']:.3g}, {a[f'{m}_q75']:.3g}]"
                 if is_finite_number(a[f"{m}_median"]) else "—" for m in metrics]
        lines.append(f"| `{a['method']}` | {a['n_systems']} | {a['n_failed_systems']} | " + " | ".join(cells) + " |")

    def count(key: str) -> str:
        vals = [c[key] for c in comp if c.get(key) not in ("", None)]
        return f"{sum(is_true(v) for v in vals)} of {len(vals)}"

    fails = [c["system"] for c in comp if is_true(c.get("sindy_field_fails"))]
    lines += ["", f"- `field` beats `endpoint` by ≥ {WIN_FACTOR:g}× (per-system mean law error): "
              f"{count('field_wins')} systems.",
              f"- SINDy on the observed field beats the field-trained student: {count('sindy_field_wins')} systems; "
              f"SINDy on the observed states beats the state-trained (`trajectory`) student: "
              f"{count('sindy_states_wins')}.",
              f"- SINDy on the field fails (law error > {SINDY_FAIL:g}): {count('sindy_field_fails')} systems"
              + (f" ({', '.join(fails)})." if fails else ".")]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------- figure
def plot(out: str | Path) -> list[Path]:
    import matplotlib.pyplot as plt

    from testbed.plotting import color_for, save_figure, use_style

    out = Path(out)
    summary = read_csv(out / "summary.csv")
    if not summary:
        return []
    use_style()
    methods = [m for m in METHODS if any(s["method"] == m for s in summary)]
    order_by = "field" if "field" in methods else methods[0]
    key = per_system(summary, order_by)
    names = sorted({s["system"] for s in summary}, key=lambda n: key.get(n, math.inf))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.22 * len(names) + 2.5), 3.8), layout="constrained")
    markers = {"endpoint": "o", "trajectory": "s", "field": "D", "sindy_states": "^", "sindy_field": "v"}
    colors = {"sindy_states": "#000000", "sindy_field": "#999999"}
    for i, m in enumerate(methods):
        vals = per_system(summary, m)
        xs = [j for j, n in enumerate(names) if n in vals]
        ys = [max(vals[names[j]], FLOOR) for j in xs]          # exact recoveries (≈1e-15) drawn on the floor
        ax.scatter(xs, ys, marker=markers.get(m, "o"), s=24, color=colors.get(m, color_for(m, i)),
                   label=m, alpha=0.85, zorder=3)
    ax.set_yscale("log")
    ax.set_ylim(bottom=FLOOR / 3)
    ax.axhline(FLOOR, color="0.8", lw=0.6)
    ax.text(0.0, FLOOR * 1.4, f"≤ {FLOOR:g} (exact to rounding)", fontsize=6, color="0.4")
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels([n.removeprefix("dysts:") for n in names], rotation=90, fontsize=6)
    ax.set_xlabel(f"teacher system (sorted by the {order_by} student's law error)")
    ax.set_ylabel("law error ‖f̂ − f*‖/‖f*‖ (ID, mean over seeds)")
    ax.axhline(SINDY_FAIL, color="0.6", lw=0.6, ls=":")
    ax.legend(frameon=False, fontsize=7, ncol=len(methods), loc="lower center", bbox_to_anchor=(0.5, 1.0))
    return save_figure(fig, out / "law_benchmark")


Config = LawBenchmarkConfig

__all__ = ["Config", "LawBenchmarkConfig", "NAME", "derive", "plot", "quick_config", "report", "run"]

"""PDE law recovery: does fitting the endpoint of a PDE solve recover the method-of-lines law?

The teacher is a semi-discrete PDE ``du/dt = F*(u)`` on a periodic grid (heat, advection, viscous Burgers,
Allen–Cahn; see :mod:`systems.pdes`). The students are residual networks ``u_{l+1} = u_l + Δt·F_θ(u_l)``
with a tied branch, each *local* and translation-equivariant (``F_θ(u)_j`` reads the window ``u_{j−r..j+r}``):

* ``conv``  a learned stencil plus a pointwise MLP on each window (:class:`~testbed.students.conv.StencilField`);
* ``poly``  a local polynomial field (linear and quadratic window monomials plus ``u_j³``,
            :class:`~testbed.students.poly_stencil.PolynomialStencil`), exact for finite-difference laws of its
            radius, its monomials whitened on the training states (the optimiser's conditioning);
* ``mlp``   (optional) a fully connected field on the whole grid, the non-local baseline;

trained with the same data, depth, optimiser and step budget under the objectives of
:data:`OBJECTIVES` (:mod:`testbed.objectives` presets):

  (a) ``endpoint``        match ``u_L`` to ``φ_T(u_0)`` only;
  (b) ``trajectory``      (a) + the states at the observation times (no law term: the non-circular test);
  (c) ``field``           (b) + ``F_θ`` vs ``F*`` at the observed states;
  (d) ``field+jacobian``  (c) + ``∂F_θ/∂u`` vs ``∂F*/∂u`` there.

Measured per student: endpoint error; law error ``‖F_θ − F*‖/‖F*‖`` on in-distribution and OOD initial
conditions (OOD: higher wavenumbers); solver consistency (endpoint change from the ``L``-step network to
the dopri5 solve of ``F_θ``, beside the teacher's own floor); roll-out error beyond the training horizon at
``2T`` and ``4T`` (the network continued with its own step, vs the teacher's flow). For the heat equation
the linearised stencil of a ``conv`` student is compared coefficient by coefficient with the true
finite-difference stencil ``(ν/Δx²)(1, −2, 1)`` (``stencils.csv``).

Students may also be ``poly`` (a local polynomial field: linear and quadratic monomials of the stencil window plus
``u_j³``, exact for finite-difference laws of that radius). ``representability.csv`` gives, per system and window
width, the least-squares floor of such a field on the training states — what a local student can represent at all.

Writes ``results.csv`` (one row per system × student × objective × seed), ``consistency.csv``,
``rollout.csv`` (error vs time up to ``4T``), ``stencils.csv``, ``representability.csv``, ``results.json`` and
``pde_law_recovery.png/.pdf``.
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
from systems.pdes import PDESystem
from testbed.config import ConfigError, check_choice, check_nonneg, check_positive, check_positive_int
from testbed.errors import DivergenceError, divergence_context
from testbed.evaluate import evaluate_student, quality_flag, rollout, teacher_reference
from testbed.experiments.common import fit, make_splits, split_validation
from testbed.experiments.law.pde_report import SELECTION, chosen_lrs, derive, report
from testbed.experiments.protocol import ExperimentConfig, flag, seeds_field
from testbed.field.metrics import relative_l2
from testbed.objectives import LAW_OBJECTIVES, make_objective, needs_jacobians
from testbed.plotting import color_for, consistency_panel, save_figure, use_style
from testbed.results import fresh_output_dir, read_csv, run_metadata, write_csv, write_json
from testbed.students import build_student

NAME = "pde-law-recovery"
#: natural keys of a row besides its seed: rows sharing them are repeats over seeds
GROUP_KEYS = ["system", "student", "objective", "n_layers", "n_grid"]
#: config fields that only partition the rows (a sweep over them still draws this study's figure); a sweep may set
#: ``lr`` / ``steps`` per student (rows stay apart by ``student``) and ``n_layers`` per system
PARTITION_FIELDS = ("systems", "students", "n_layers", "lr", "steps")
CAPTIONS = {
    "pde_law_recovery": (
        "One row per PDE on a 32-point periodic grid. Space-time plots: one in-distribution initial condition "
        "under the teacher and under the first student kind of the table (seed with the lowest number) trained "
        "on each objective, continued past the training horizon T (dashed) to 4T with the network's own step. "
        "Next column: roll-out error vs time (relative L2, log axis; every student kind, lighter shade = second "
        "kind). Last column: solver consistency beside the teacher law's own floor. Every student kind × objective "
        "is shown at its learning rate chosen on validation loss (lr_selection.csv). Curves are means over seeds; "
        "error bars (several seeds) are 95% t-intervals of the mean."),
}
RESULT_COLUMNS = [
    "system", "student", "objective", "seed", "endpoint_error", "law_error_id", "law_error_ood",
    "consistency_error", "rollout_error_2T", "rollout_error_4T", "teacher_consistency_error",
    "teacher_rollout_error_4T", "trajectory_error", "endpoint_error_ood", "stencil_error", "stencil_moment_error",
    "final_loss", "val_loss",
    "train_seconds", "n_layers", "n_grid", "teacher_scheme", "lr", "steps", "jacobian_probes", "diverged",
]
#: tables across seeds, recomputed from results.csv (:func:`derive`; also after a sweep merges its cells)
DERIVED_FILES = ("lr_selection.csv", "summary.csv", "paired.csv")
OUTPUT_FILES = ("results.csv", "consistency.csv", "rollout.csv", "stencils.csv", "representability.csv",
                "results.json", *DERIVED_FILES, "pde_law_recovery.png", "pde_law_recovery.pdf")
#: window widths of the representability table (the best law error of any local polynomial field of that width)
FLOOR_KERNELS = (3, 5, 9, 15)
SUMMARY_COLUMNS = ["system", "student", "objective", "seed", "endpoint_error", "law_error_id", "law_error_ood",
                   "consistency_error", "teacher_consistency_error", "rollout_error_4T"]
PDE_SYSTEMS = ("heat", "advection", "burgers", "allen_cahn")
#: the objectives compared (same student, data, depth and budget): :data:`testbed.objectives.LAW_OBJECTIVES`
OBJECTIVES = LAW_OBJECTIVES
#: the local (radius-1 finite-difference) scheme of the systems that offer one: the central Laplacian (heat), the
#: conservative central flux + central Laplacian (Burgers), first-order upwinding (advection). Allen–Cahn has only
#: its pseudo-spectral Laplacian (least-squares floor of a 5-point polynomial field ≈ 0.013 on its data).
LOCAL_SCHEMES = {"heat": "fd", "burgers": "fd", "advection": "upwind"}
ROLLOUT_FACTOR = 4
#: roll-out error panels end here (relative error 10 = no skill left; a diverged roll-out runs off the top)
ROLLOUT_CLIP = 10.0


@dataclasses.dataclass
class PDELawRecoveryConfig(ExperimentConfig):
    """Settings of the PDE law-recovery study (validated on construction)."""

    UNIQUE_FIELDS: ClassVar[tuple[str, ...]] = ("systems", "students", "objectives")

    systems: tuple[str, ...] = flag(PDE_SYSTEMS, name="--system", help="PDE system(s)")
    students: tuple[str, ...] = ("conv", "poly")
    objectives: tuple[str, ...] = OBJECTIVES
    seeds: tuple[int, ...] = seeds_field((0, 1, 2, 3, 4))
    #: teach with each system's local finite-difference scheme where it offers one (:data:`LOCAL_SCHEMES`), so a
    #: local student can represent the law exactly; False: every system's default scheme (pseudo-spectral Burgers
    #: and advection, whose laws no window narrower than the grid represents exactly — ``representability.csv``)
    local_teachers: bool = True
    n_grid: int = 32
    n_layers: int = 16
    conv_width: int = 16
    kernel_size: int = 5
    mlp_width: int = 128
    hidden_layers: int = 2
    init_scale: float = 0.1
    n_train: int = 512
    n_test: int = 128
    n_obs: int = 8
    steps: int = 3000
    batch_size: int = 32
    lr: float = 3e-3
    grad_clip: float = 1.0
    #: how the ``jacobian`` term of ``field+jacobian`` is computed: 0 — the dense student Jacobian (d reverse passes
    #: per state); k ≥ 1 — the unbiased estimate from k Rademacher probes per state (k reverse passes;
    #: :mod:`testbed.field.probes`), which is what makes that objective affordable on a CPU
    jacobian_probes: int = 0
    #: share of the training trajectories held out as the validation split on which each run's ``val_loss`` (its
    #: own objective, dense Jacobians) is measured; the learning rate of a sweep over ``lr`` is chosen on it
    val_fraction: float = 0.125

    def validate(self) -> None:
        self.systems = tuple(systems.canonical_name(s) for s in self.systems)
        self.students = tuple(self.students)
        self.objectives = tuple(self.objectives)
        self.seeds = tuple(int(s) for s in self.seeds)
        for field_name in ("systems", "students", "objectives", "seeds"):
            if not getattr(self, field_name):
                raise ConfigError(f"{field_name} must not be empty")
        for s in self.systems:
            cls = systems.system_class(s)  # the registry's clear error for an unknown name
            if not issubclass(cls, PDESystem):
                raise ConfigError(f"systems: {s!r} is not a PDE system; PDE systems: {', '.join(pde_systems())}")
        for st in self.students:
            check_choice("students", st, ("conv", "mlp", "poly"))
        if not isinstance(self.local_teachers, bool):
            raise ConfigError(f"local_teachers must be true or false, got {self.local_teachers!r}")
        for o in self.objectives:
            make_objective(o)
        for name in ("n_grid", "n_layers", "conv_width", "kernel_size", "mlp_width", "hidden_layers", "n_train",
                     "n_test", "n_obs", "steps", "batch_size"):
            check_positive_int(name, getattr(self, name))
        check_positive("lr", self.lr)
        check_nonneg("grad_clip", self.grad_clip)
        if isinstance(self.val_fraction, bool) or not isinstance(self.val_fraction, (int, float)) \
                or not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction must lie in (0, 1), got {self.val_fraction!r}")
        if isinstance(self.jacobian_probes, bool) or not isinstance(self.jacobian_probes, int) \
                or self.jacobian_probes < 0:
            raise ConfigError("jacobian_probes must be an integer ≥ 0 (0: dense Jacobian), got "
                              f"{self.jacobian_probes!r}")
        check_nonneg("init_scale", self.init_scale)
        if self.kernel_size % 2 == 0 or self.kernel_size > self.n_grid:
            raise ConfigError(f"kernel_size must be odd and ≤ n_grid ({self.n_grid}), got {self.kernel_size}")
        if self.n_layers % self.n_obs:
            raise ConfigError(f"n_layers ({self.n_layers}) must be a multiple of n_obs ({self.n_obs}) so every "
                              "observation time is a layer time")


def teacher(name: str, n_grid: int, local: bool):
    """The PDE teacher ``name`` on ``n_grid`` points; ``local``: with its :data:`LOCAL_SCHEMES` entry if it has one."""
    scheme = LOCAL_SCHEMES.get(name) if local else None
    return systems.get_system(name, n_grid=n_grid, **({"scheme": scheme} if scheme else {}))


def pde_systems() -> list[str]:
    """Registered systems that are PDEs."""
    return [s for s in systems.list_systems() if issubclass(systems.system_class(s), PDESystem)]


def quick_config(**overrides: Any) -> PDELawRecoveryConfig:
    """A 2-core CPU in under 3 minutes: the local polynomial student on every PDE, one seed, three objectives
    (``field+jacobian`` costs ~10× a step on a 32-point grid: full mode only), short training at the learning rate
    its whitened parameters take (1e-2)."""
    base = dict(students=("poly",), objectives=("endpoint", "trajectory", "field"), seeds=(0,), n_train=128,
                n_test=64, steps=300, lr=1e-2)
    base.update(overrides)
    return PDELawRecoveryConfig(**base)


# ----------------------------------------------------------------------------------------------- run
def build(cfg: PDELawRecoveryConfig, kind: str, system, train_states: torch.Tensor | None = None) -> Any:
    """The residual student ``kind`` for ``system`` (tied, ODE-scaled, float64): ``conv`` (stencil + pointwise MLP),
    ``poly`` (local polynomial field, :class:`~testbed.students.poly_stencil.PolynomialStencil`), both of window
    ``kernel_size``, or ``mlp`` (fully connected, non-local). A ``poly`` field is preconditioned (its monomials
    whitened, :meth:`~testbed.students.poly_stencil.PolynomialStencil.precondition`) on the first and last rows of
    ``train_states`` (shape (K+1, N, d)): the initial and final states of the training trajectories, which every
    objective sees — not the intermediate ones, which the ``endpoint`` objective must not learn from — and starts
    at ``F_θ ≡ 0``."""
    kw: dict[str, Any] = dict(dim=system.dim, n_layers=cfg.n_layers, horizon=float(system.horizon), tied=True,
                              hidden_layers=cfg.hidden_layers, init_scale=cfg.init_scale)
    if kind == "conv":
        kw.update(branch="conv", width=cfg.conv_width, kernel_size=cfg.kernel_size, hidden_layers=1)
    elif kind == "poly":
        kw.update(branch="poly", kernel_size=cfg.kernel_size)
    else:
        kw.update(branch="mlp", width=cfg.mlp_width)
    student = build_student("residual", **kw).double()
    if kind == "poly" and train_states is not None:
        student.blocks[0].precondition(train_states[[0, -1]])
    return student


def stencil_rows(student, system, tags: dict[str, Any], states: torch.Tensor) -> tuple[list[dict], float, float]:
    """Learned (linearised, averaged over ``states``) vs true stencil of a heat ``conv`` student.

    Returns the per-offset rows, the coefficient error ``‖c − c*‖₂/‖c*‖₂`` over the offsets ``-r..r`` (true
    coefficients outside the true stencil are 0) and the **moment error** ``|m₂ − m₂*|/|m₂*|`` with
    ``m_p = Σ_o c_o o^p``. For smooth (band-limited) data only the low moments are identifiable: any stencil
    with ``m₀ = m₁ = 0`` and ``m₂ = 2ν/Δx²`` is a consistent second-order Laplacian on the low modes, so a
    stencil wider than 3 points can differ coefficient by coefficient while matching ``m₂``.
    """
    learned = student.blocks[0].effective_stencil(states).double()
    r = student.blocks[0].radius
    true = system.stencil()
    true_map = dict(zip(true.offsets, true.coefficients, strict=True))
    offsets = list(range(-r, r + 1))
    t = torch.tensor([true_map.get(o, 0.0) for o in offsets], dtype=torch.float64)
    o2 = torch.tensor(offsets, dtype=torch.float64) ** 2
    m2, m2_true = float((learned * o2).sum()), float((t * o2).sum())
    rows = [{**tags, "offset": o, "learned": float(learned[i]), "true": float(t[i])} for i, o in enumerate(offsets)]
    return rows, relative_l2(learned, t), abs(m2 - m2_true) / abs(m2_true)


def checkpoint_name(system: str, student: str, objective: str, lr: float, seed: int) -> str:
    """Folder of one run's checkpoint under ``checkpoints/`` (the learning rate is in it: a sweep over ``lr`` merges
    every candidate's runs into one folder)."""
    return f"{system}-{student}-{objective}-lr{lr:g}-s{seed}"


def validation_loss(student, objective: str, val_data) -> float:
    """The run's own objective (preset ``objective``, exact dense Jacobians, no probes) on the held-out validation
    trajectories, in one batch: what a learning rate is chosen on
    (:data:`~testbed.experiments.law.pde_report.SELECTION`) — every objective on its own loss, so no arm sees
    information the others do not."""
    with torch.enable_grad():        # the Jacobian term differentiates the field
        loss, _ = make_objective(objective)(student, val_data)
    return float(loss.detach())


def representability_rows(sname: str, train, test_id, test_ood) -> list[dict[str, Any]]:
    """What a local polynomial field can represent: for each window width ``k`` in :data:`FLOOR_KERNELS`, the
    least-squares fit of ``F*`` on the monomials of :class:`~testbed.students.poly_stencil.PolynomialStencil`
    (linear + quadratic window terms + ``u_j³``) over the training states. ``lsq_floor``: its law error there — the
    smallest any such field reaches on that data (0 for a finite-difference law of radius ``≤ k // 2``; a
    pseudo-spectral, non-local law keeps a floor that falls as ``k`` grows). ``lsq_error_id`` / ``lsq_error_ood``:
    the same fit's law error on the test states (not floors: a window wider than the data's modes can pin is
    left free off them)."""
    from testbed.students.poly_stencil import least_squares_floor

    out = []
    for k in FLOOR_KERNELS:
        if k > train.states.shape[-1]:
            continue
        floor, id_err, ood_err = least_squares_floor(train.states, train.velocities, k,
                                                     tests=[(test_id.states, test_id.velocities),
                                                            (test_ood.states, test_ood.velocities)])
        out.append({"system": sname, "kernel_size": k, "lsq_floor": floor, "lsq_error_id": id_err,
                    "lsq_error_ood": ood_err})
    return out


def run(cfg: PDELawRecoveryConfig, out: str | Path) -> list[dict[str, Any]]:
    """Train and evaluate every system × student × objective × seed; write tables, metadata and figure."""
    out = fresh_output_dir(out, OUTPUT_FILES)
    step_counts = [cfg.n_layers // 2, 2 * cfg.n_layers, 4 * cfg.n_layers]
    rows: list[dict[str, Any]] = []
    curves: list[dict[str, Any]] = []
    rollouts: list[dict[str, Any]] = []
    stencils: list[dict[str, Any]] = []
    floors: list[dict[str, Any]] = []
    t_start = time.perf_counter()
    for sname in cfg.systems:
        system = teacher(sname, cfg.n_grid, cfg.local_teachers)
        # the teacher's own Euler discretisation at depth L must not blow up (transport: bounded growth)
        system.check_stability(cfg.n_layers, max_growth=1e3, action="warn")
        train_data, test_id, test_ood = make_splits(system, cfg.n_train, cfg.n_test, cfg.n_obs,
                                                    with_jacobians=needs_jacobians(cfg.objectives))
        train_data, val_data = split_validation(train_data, cfg.val_fraction)
        floors += representability_rows(sname, train_data, test_id, test_ood)
        ref = teacher_reference(system, test_id, test_ood, cfg.n_layers, step_counts, n_jacobian=8)
        curves += [{"system": sname, "series": "teacher", "seed": -1, **r} for r in ref.consistency.rows]
        x_roll = test_id.x0[:32]
        T = float(system.horizon)
        # the true law under the students' own discretisation (Euler, Δt = T/L): the roll-out floor
        teacher_roll = rollout(system.vector_field, system, x_roll, T, cfg.n_layers, ROLLOUT_FACTOR)
        rollouts += [{"system": sname, "series": "teacher", "seed": -1, "t": float(t), "error": e}
                     for t, e in zip(teacher_roll.times, teacher_roll.errors, strict=True)]
        for kind in cfg.students:
            for obj_name in cfg.objectives:
                series = f"{kind}/{obj_name}"
                for seed in cfg.seeds:
                    torch.manual_seed(seed)
                    student = build(cfg, kind, system, train_data.states)
                    tags = {"system": sname, "student": kind, "objective": obj_name, "seed": seed}
                    objective = make_objective(obj_name, probes={"jacobian": cfg.jacobian_probes})
                    setting = {"n_layers": cfg.n_layers, "n_grid": cfg.n_grid,
                               "teacher_scheme": system.params().get("scheme", ""), "lr": cfg.lr, "steps": cfg.steps,
                               "jacobian_probes": objective.probes.get("jacobian", 0)}
                    try:  # only training can diverge into a row: a failure on test data is an error, as before
                        with divergence_context(**tags) as where:
                            result = fit(student, objective, train_data, seed=seed, steps=cfg.steps,
                                         batch_size=cfg.batch_size, lr=cfg.lr, grad_clip=cfg.grad_clip,
                                         progress=cfg.progress, device=cfg.device,
                                         run_dir=out / "checkpoints" / checkpoint_name(sname, kind, obj_name,
                                                                                        cfg.lr, seed),
                                         extra={**tags, "system_params": system.params()})
                            val_loss = validation_loss(student, obj_name, val_data)
                            if not math.isfinite(val_loss):
                                raise FloatingPointError(f"validation loss is {val_loss}")  # → DivergenceError
                    except DivergenceError as err:  # a result: this objective failed on this seed at this lr
                        rows.append({**tags, **setting, "val_loss": float("inf"), "diverged": True,
                                     "flag": str(err)})
                        continue
                    with divergence_context(**tags) as where:
                        where["after training step"] = f"{result.steps} (final loss {result.final_loss:.3g})"
                        ev = evaluate_student(student, ref, step_counts)
                        roll = rollout(student, system, x_roll, T, cfg.n_layers, ROLLOUT_FACTOR)
                    flag = quality_flag(ev.metrics, ", ".join(f"{k} {v}" for k, v in tags.items()))
                    stencil_error = moment_error = float("nan")
                    if kind in ("conv", "poly") and hasattr(system, "stencil") and sname == "heat":
                        states = test_id.states[:, :16].reshape(-1, system.dim)
                        srows, stencil_error, moment_error = stencil_rows(student, system, tags, states)
                        stencils += srows
                    rows.append({**tags, **ev.metrics, "rollout_error_2T": roll.error_at(2 * T),
                                 "rollout_error_4T": roll.error_at(4 * T),
                                 "teacher_rollout_error_4T": teacher_roll.error_at(4 * T),
                                 "stencil_error": stencil_error, "stencil_moment_error": moment_error,
                                 "final_loss": result.final_loss, "val_loss": val_loss,
                                 "train_seconds": result.wall_time, **setting, "diverged": False, "flag": flag})
                    curves += [{"system": sname, "series": series, "seed": seed, "lr": cfg.lr, **r}
                               for r in ev.consistency.rows]
                    rollouts += [{"system": sname, "series": series, "seed": seed, "lr": cfg.lr, "t": float(t),
                                  "error": e}
                                 for t, e in zip(roll.times, roll.errors, strict=True)]
    write_csv(out / "consistency.csv", curves)
    write_csv(out / "rollout.csv", rollouts)
    write_csv(out / "stencils.csv", stencils, ["system", "student", "objective", "seed", "offset", "learned", "true"])
    write_csv(out / "representability.csv", floors)
    write_json(out / "results.json", run_metadata(cfg, cfg.seeds, experiment=NAME, selection=SELECTION.as_dict(),
                                                  wall_seconds=time.perf_counter() - t_start))
    write_csv(out / "results.csv", rows, RESULT_COLUMNS)  # its presence means the run completed
    derive(out)
    return rows


# ----------------------------------------------------------------------------------------------- figure
def _series_color(series: str, i: int, first_kind: str) -> str:
    """Colour by objective (teacher black); students other than ``first_kind`` get a lighter shade of the same hue."""
    from matplotlib.colors import to_hex, to_rgb

    kind, _, obj = series.rpartition("/")
    base = color_for(obj or series, i)
    if not kind or kind == first_kind:
        return base
    return to_hex(tuple(0.45 * c + 0.55 for c in to_rgb(base)))


def plot(out: str | Path) -> list[Path]:
    """Space-time plots (teacher vs the endpoint- and field-trained students of the first student kind),
    roll-out error vs time and consistency vs step count, one row per system."""
    import matplotlib.pyplot as plt

    from testbed.train import load_student

    out = Path(out)
    use_style()
    chosen = chosen_lrs(out)                  # (system, series) → the learning rate chosen on validation loss

    def at_choice(r: dict[str, Any]) -> bool:  # a group with no stable learning rate has no choice: not drawn
        return r["series"] == "teacher" or float(r["lr"]) == chosen.get((r["system"], r["series"]), math.nan)

    curves = [r for r in read_csv(out / "consistency.csv") if at_choice(r)]
    rolls = [r for r in read_csv(out / "rollout.csv") if at_choice(r)]
    rows = [r for r in read_csv(out / "results.csv") if at_choice({**r, "series": f"{r['student']}/{r['objective']}"})]
    if not rows:  # every run diverged: nothing to draw (the tables say so)
        return []
    sys_names = list(dict.fromkeys(r["system"] for r in rows))
    kinds = list(dict.fromkeys(r["student"] for r in rows))
    objectives = list(dict.fromkeys(r["objective"] for r in rows))
    shown_kind = kinds[0]
    series = ["teacher"] + [f"{k}/{o}" for k in kinds for o in objectives]
    colors = {s: _series_color(s, i, shown_kind) for i, s in enumerate(series)}
    n_cols = 1 + len(objectives) + 2
    fig, axes = plt.subplots(len(sys_names), n_cols, figsize=(2.1 * n_cols, 1.9 * len(sys_names) + 0.8),
                             layout="constrained", squeeze=False)
    for i, sname in enumerate(sys_names):
        lowest = min(r["seed"] for r in rows if r["system"] == sname)
        first = next(r for r in rows if r["system"] == sname)
        scheme = first.get("teacher_scheme") or None            # older tables have no such column: the default
        system = systems.get_system(sname, n_grid=int(first["n_grid"]), **({"scheme": scheme} if scheme else {}))
        T = float(system.horizon)
        n_layers = int(next(r["n_layers"] for r in rows if r["system"] == sname))
        gen = torch.Generator().manual_seed(7)
        u0 = system.sample_id(1, gen)
        times = torch.linspace(0.0, ROLLOUT_FACTOR * T, ROLLOUT_FACTOR * n_layers + 1, dtype=torch.float64)
        teacher = system.flow(u0, times)[:, 0].numpy()
        panels = [("teacher $u^*(x, t)$", teacher)]
        for obj in objectives:
            lr = chosen.get((sname, f"{shown_kind}/{obj}"))
            ck = out / "checkpoints" / checkpoint_name(sname, shown_kind, obj, lr if lr is not None else 0.0, lowest)
            if ck.exists():
                student, _ = load_student(ck)
                roll = rollout(student.double(), system, u0, T, n_layers, ROLLOUT_FACTOR)
                panels.append((f"{shown_kind}, {obj}-trained", roll.student[:, 0].numpy()))
        vmax = float(np.abs(teacher).max())
        x = system.grid().numpy()
        for j, (title, field) in enumerate(panels):
            ax = axes[i, j]
            im = ax.pcolormesh(x, times.numpy(), np.clip(field, -2 * vmax, 2 * vmax), cmap="RdBu_r", vmin=-vmax,
                               vmax=vmax, shading="nearest", rasterized=True)
            ax.axhline(T, color="k", lw=0.8, ls="--")
            ax.set_title(f"{sname}: {title}" if j == 0 else title)
            ax.set_xlabel("$x$")
            ax.set_ylabel("$t$")
        fig.colorbar(im, ax=axes[i, len(panels) - 1], shrink=0.8, label="$u$")
        for j in range(len(panels), 1 + len(objectives)):
            axes[i, j].set_axis_off()
        ax = axes[i, -2]
        for s in series:
            pts = [r for r in rolls if r["system"] == sname and r["series"] == s]
            if not pts:
                continue
            ts = sorted({float(r["t"]) for r in pts})
            vals = np.array([[float(r["error"]) for r in pts if float(r["t"]) == t] for t in ts])
            ax.plot(ts[1:], vals.mean(1)[1:], color=colors[s], lw=1.1, ls="--" if s == "teacher" else "-",
                    label="teacher law, Euler $\\Delta t$" if s == "teacher" else s)
        ax.axvline(T, color="0.6", lw=0.6)
        ax.set_yscale("log")
        if ax.get_ylim()[1] > ROLLOUT_CLIP:  # a roll-out that diverged would flatten every other curve
            ax.set_ylim(top=ROLLOUT_CLIP)
            ax.text(0.02, 0.97, f"clipped at {ROLLOUT_CLIP:g} (diverged)", transform=ax.transAxes, fontsize=6,
                    va="top", color="0.4")
        ax.set_xlabel("time $t$ (training horizon $T$ = grey line)")
        ax.set_ylabel("rel. $L^2$ error vs $\\varphi_t$")
        ax.set_title("roll-out beyond $T$")
        if i == 0:
            ax.legend(frameon=False, fontsize=6)
        consistency_panel(axes[i, -1], [r for r in curves if r["system"] == sname], series, "endpoint_change",
                          "rel. change vs $L$-step net", "solver consistency", series_key="series", colors=colors)
    fig.suptitle(f"PDE law recovery: {', '.join(objectives)} objectives (space-time: {shown_kind} student, first "
                 "seed, one ID initial condition continued to 4T; dashed line = training horizon T).\nConsistency: "
                 "dotted = dopri5 re-integration of the learned law; teacher = the true law's own discretisation "
                 "floor.")
    return save_figure(fig, out / "pde_law_recovery")


Config = PDELawRecoveryConfig

__all__ = ["Config", "NAME", "PDELawRecoveryConfig", "derive", "plot", "quick_config", "report", "run"]

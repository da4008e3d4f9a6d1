"""Endpoint-equivalent models with very different propagation fields (paper A, "endpoint underdetermination").

An endpoint loss constrains only the boundary ``h_L(x_0)`` of the propagation field. This study collects
models whose endpoint behaviour falls in one narrow band and measures how far apart their fields are:

1. **Constructed** (exact): from a base model, transformations that leave ``h_L`` unchanged to round-off
   but change the interior (:mod:`testbed.students.constructed`) — the teacher's exact flow sampled on a warped
   clock ``h_l = φ_{τ(t_l)}(x_0)``, conjugation ``h'_l = M(t_l) h_l`` by ``M(t) = exp(s·sin(πt/T)·B)``, and a
   detour ``h'_l = h_l + a·sin(πt_l/T)·c``. Applied to the teacher's exact flow (closed-form systems) and to
   the first trained model inside the band.
2. **Trained**: a population of residual students (depths, tied/untied, widths, init scales, seeds, with and
   without a kinetic-energy or Jacobian regulariser) fitted with the *endpoint* objective to the same teacher
   flow map, and residual classifiers fitted to scikit-learn's digits. Each trains until its endpoint metric
   (relative endpoint error on the training set; validation accuracy for digits) reaches the target, so the
   test endpoint metrics land in one band; models outside ``[target/band_ratio, target·band_ratio]`` (test
   endpoint error, or test error rate) are reported with ``in_band = False``.

For every model: the field geometry (trajectory length, kinetic energy, curvature, layer-Jacobian spectral
norm and condition number, log-determinant, path sensitivity; :mod:`testbed.field.geometry`), the law error
against ``f*`` (flow task), and the **solver-consistency study**: the model's vector field re-integrated at
``L/8 … 8L`` steps with euler, midpoint and rk4 and with dopri5. ``consistency_error`` is the relative
endpoint distance between the network and the dopri5 solve of its own field; ``order_<solver>`` is the
observed convergence order of the re-integrations towards that converged solve. The teacher's own curves
(at each depth) are stored beside them: a model that learned a law converges like the teacher.

Writes ``results.csv`` (one row per model), ``spread.csv`` (max/min of each field metric inside the band),
``consistency.csv`` (the curves), ``results.json`` and the figures ``endpoint_vs_field.png/.pdf`` and
``consistency_curves.png/.pdf``.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import systems
from testbed.config import ConfigError, check_nonneg, check_positive, check_positive_int
from testbed.datasets import LabeledData, load_digits, stratified_split
from testbed.experiments.common import fit, make_splits
from testbed.experiments.protocol import ExperimentConfig, flag, seeds_field
from testbed.field.consistency import integrate, observed_order, solver_consistency
from testbed.field.geometry import SUMMARY_KEYS, field_geometry
from testbed.field.metrics import law_error, relative_l2
from testbed.plotting import PALETTE, save_figure, use_style
from testbed.results import fresh_output_dir, is_true, read_csv, run_metadata, write_csv, write_json
from testbed.solvers import LOOP_METHODS
from testbed.students import Conjugated, Detour, ExactFlowStudent, Reparameterized, build_student

NAME = "endpoint-equivalence"
#: natural keys of a row besides its seed: rows sharing them are repeats over seeds
GROUP_KEYS = ["task", "source", "group", "how", "n_layers", "tied", "width", "init_scale", "regularizer"]
CAPTIONS = {
    "endpoint_vs_field": (
        "One marker per model: the endpoint metric (x: relative endpoint error on the flow task; test error "
        "rate on digits) against each field metric (y, log axes). The grey band holds the models whose "
        "endpoint metric reached the target; inside it the field metrics (trajectory length, kinetic energy, "
        "curvature, layer conditioning) spread over orders of magnitude while endpoint-map quantities stay "
        "put. Crosses: exact endpoint-preserving constructions (clock warp, conjugation, detour)."),
    "consistency_curves": (
        "Each model's own field re-integrated at L/8 … 8L steps: relative distance to its dopri5 solve vs "
        "L'/L, one panel per solver and task (log–log). The teacher's own curves are dashed; a learned law "
        "converges at the solver's order like the teacher."),
}
SOLVERS = LOOP_METHODS  # euler, midpoint, rk4
REGULARIZERS = ("none", "kinetic", "jacobian_norm")
FIELD_METRICS = (*SUMMARY_KEYS, "consistency_error")
RESULT_COLUMNS = [
    "model_id", "task", "source", "group", "how", "in_band", "endpoint_metric", "endpoint_metric_name", "n_layers",
    "tied", "width", "init_scale", "regularizer", "seed", "steps_trained", *FIELD_METRICS, "law_error_id",
    *(f"order_{s}" for s in SOLVERS),
]
SUMMARY_COLUMNS = ["model_id", "in_band", "endpoint_metric", "trajectory_length", "kinetic_energy",
                   "jac_condition_max", "path_sensitivity", "consistency_error"]
OUTPUT_FILES = ("results.csv", "spread.csv", "consistency.csv", "results.json", "endpoint_vs_field.png",
                "endpoint_vs_field.pdf", "consistency_curves.png", "consistency_curves.pdf")


@dataclasses.dataclass
class EndpointEquivalenceConfig(ExperimentConfig):
    """Settings of the endpoint-equivalence study (validated on construction)."""

    system: str = flag("linear_spiral", name="--system", help="the teacher system of the flow task")
    depths: tuple[int, ...] = (4, 8, 16, 32)
    tied: tuple[bool, ...] = (True, False)
    widths: tuple[int, ...] = (32, 128)
    init_scales: tuple[float, ...] = (0.1, 1.0)
    regularizers: tuple[str, ...] = REGULARIZERS
    reg_weight: float = 0.1
    seeds: tuple[int, ...] = seeds_field((0, 1, 2, 3, 4))
    target_error: float = 0.02
    band_ratio: float = 2.0
    max_steps: int = 4000
    check_every: int = 25
    n_train: int = 512
    n_test: int = 256
    batch_size: int = 64
    lr: float = 3e-3
    grad_clip: float = 1.0
    digits: bool = True
    digits_dim: int = 16
    digits_target_accuracy: float = 0.95
    conjugation_strengths: tuple[float, ...] = (1.0, 2.0, 3.0)
    detour_amplitudes: tuple[float, ...] = (1.0, 4.0)
    warp_powers: tuple[float, ...] = (2.0, 4.0)
    construct_depth: int = 16
    n_eval: int = 128

    def validate(self) -> None:
        for name in ("depths", "tied", "widths", "init_scales", "regularizers", "seeds", "conjugation_strengths",
                     "detour_amplitudes", "warp_powers"):
            setattr(self, name, tuple(getattr(self, name)))
        self.system = systems.canonical_name(self.system)
        systems.system_class(self.system)
        for name in ("depths", "tied", "widths", "init_scales", "regularizers", "seeds"):
            if not getattr(self, name):
                raise ConfigError(f"{name} must not be empty")
        for d in self.depths + self.widths:
            check_positive_int("depths/widths", d)
        for r in self.regularizers:
            if r not in REGULARIZERS:
                raise ConfigError(f"regularizers: unknown {r!r}; choose from {', '.join(REGULARIZERS)}")
        for name in ("max_steps", "check_every", "n_train", "n_test", "batch_size", "digits_dim", "construct_depth",
                     "n_eval"):
            check_positive_int(name, getattr(self, name))
        for name in ("target_error", "lr", "reg_weight"):
            check_positive(name, getattr(self, name))
        check_nonneg("grad_clip", self.grad_clip)
        if not self.band_ratio >= 1.0:
            raise ConfigError(f"band_ratio must be ≥ 1, got {self.band_ratio}")
        if not 0.0 < self.digits_target_accuracy < 1.0:
            raise ConfigError(f"digits_target_accuracy must lie in (0, 1), got {self.digits_target_accuracy}")


def quick_config(**overrides: Any) -> EndpointEquivalenceConfig:
    """A 2-core CPU in about 3 minutes: 8 flow students + 8 digits classifiers (no Jacobian regulariser),
    a looser band."""
    base = dict(seeds=(0,), depths=(4, 16), widths=(32,), init_scales=(0.1, 2.0), target_error=0.05, max_steps=600,
                n_train=256, n_test=128, regularizers=("none", "kinetic"), digits_dim=12,
                digits_target_accuracy=0.93, conjugation_strengths=(1.0, 3.0), detour_amplitudes=(4.0,),
                warp_powers=(3.0,), n_eval=64)
    base.update(overrides)
    return EndpointEquivalenceConfig(**base)


# ----------------------------------------------------------------------------------------------- evaluation
def consistency_steps(n_layers: int) -> list[int]:
    """``L/8 … 8L`` in factors of 2 (fractions only where they are whole numbers ≥ 1)."""
    return [n_layers * 2**k // 8 for k in range(7) if (n_layers * 2**k) % 8 == 0 and n_layers * 2**k >= 8]


def evaluate_field(flow, x0: torch.Tensor, tags: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Field geometry, consistency error and observed orders of the propagation field ``flow`` from ``x0``.

    ``consistency_error = rel. L2(h_L(x_0), Φ^{dopri5}_T(x_0))``: the network's endpoint against the
    converged solve of its own vector field.
    """
    metrics = field_geometry(flow, x0).summary()
    T, n_layers = float(flow.horizon), flow.n_layers
    res = solver_consistency(flow.vector_field, x0, T, n_layers, consistency_steps(n_layers), methods=SOLVERS,
                             rtol=1e-8, atol=1e-10)
    with torch.no_grad():
        converged, _ = integrate(flow.vector_field, x0, T, "dopri5", rtol=1e-8, atol=1e-10)
        metrics["consistency_error"] = relative_l2(flow(x0), converged[-1])
    for s in SOLVERS:
        metrics[f"order_{s}"] = observed_order(res.rows, s)
    curves = [{**tags, **r} for r in res.rows]
    return metrics, curves


def _in_band(value: float, target: float, ratio: float) -> bool:
    return bool(target / ratio <= value <= target * ratio)


def _population(cfg: EndpointEquivalenceConfig):
    return itertools.product(cfg.depths, cfg.tied, cfg.widths, cfg.init_scales, cfg.regularizers, cfg.seeds)


def _objective(base: str, reg: str, weight: float) -> str:
    """The preset ``base`` (``endpoint`` or ``classify``) plus ``weight × reg`` (unless ``reg == "none"``)."""
    term = {"endpoint": "endpoint", "classify": "cross_entropy"}[base]
    return base if reg == "none" else f"{term}=1,{reg}={weight}"


def _model_id(task: str, L: int, tied: bool, w: int, s: float, reg: str, seed: int) -> str:
    return f"{task}-L{L}-{'tied' if tied else 'untied'}-w{w}-i{s:g}-{reg}-s{seed}"


# ----------------------------------------------------------------------------------------------- flow task
def run_flow_task(cfg: EndpointEquivalenceConfig, out: Path) -> tuple[list[dict], list[dict]]:
    system = systems.get_system(cfg.system)
    T = float(system.horizon)
    n_obs = math.gcd(*cfg.depths, cfg.construct_depth)  # every observation time on every depth's grid
    train_data, test_id, _ = make_splits(system, cfg.n_train, cfg.n_test, n_obs)
    x_eval = test_id.x0[: cfg.n_eval]
    rows: list[dict] = []
    curves: list[dict] = []
    for L in sorted(set(cfg.depths) | {cfg.construct_depth}):
        res = solver_consistency(system.vector_field, x_eval, T, L, consistency_steps(L), methods=SOLVERS,
                                 rtol=1e-8, atol=1e-10)
        curves += [{"model_id": f"teacher-L{L}", "task": "flow", "source": "teacher", "n_layers": L, **r}
                   for r in res.rows]

    def endpoint_err(model) -> float:
        with torch.no_grad():
            return relative_l2(model(test_id.x0), test_id.endpoints)

    def add(model, tags: dict[str, Any]) -> None:
        metrics, c = evaluate_field(model, x_eval, {"model_id": tags["model_id"], "task": "flow",
                                                    "source": tags["source"], "n_layers": model.n_layers})
        err = endpoint_err(model)
        rows.append({**tags, "task": "flow", "endpoint_metric": err, "endpoint_metric_name": "rel. endpoint error",
                     "in_band": _in_band(err, cfg.target_error, cfg.band_ratio), "n_layers": model.n_layers,
                     "law_error_id": law_error(model.vector_field, test_id), **metrics})
        curves.extend(c)

    # trained population
    first_reached = None
    for L, tied, w, s, reg, seed in _population(cfg):
        mid = _model_id("flow", L, tied, w, s, reg, seed)
        torch.manual_seed(seed)
        student = build_student("residual", dim=system.dim, n_layers=L, horizon=T, width=w, hidden_layers=2,
                                tied=tied, time_conditioned=not system.autonomous, init_scale=s).double()
        full_train = train_data.subset(torch.arange(min(cfg.n_train, 256)))

        def reached(step: int, model, data=full_train) -> bool:
            with torch.no_grad():
                return relative_l2(model(data.x0), data.endpoints) <= cfg.target_error

        result = fit(student, _objective("endpoint", reg, cfg.reg_weight), train_data, seed=seed,
                     steps=cfg.max_steps, batch_size=cfg.batch_size, lr=cfg.lr, grad_clip=cfg.grad_clip,
                     progress=cfg.progress, run_dir=None, device=cfg.device, stop_when=reached,
                     log_every=cfg.check_every)
        result_tags = {"model_id": mid, "source": "trained", "group": "trained", "how": f"endpoint fit, {reg}",
                       "tied": tied, "width": w, "init_scale": s, "regularizer": reg, "seed": seed,
                       "steps_trained": result.steps}
        add(student, result_tags)
        if first_reached is None and reached(0, student):   # chosen on training data, not on the test band
            first_reached = student

    # constructed from the exact flow (closed-form teachers) and from the first student that reached the target
    bases: list[tuple[str, Any]] = []
    if system.closed_form:
        exact = ExactFlowStudent(system, cfg.construct_depth)
        bases.append(("exact", exact))
        add(exact, {"model_id": "flow-exact", "source": "constructed", "group": "exact", "how": "exact flow φ_t"})
        for p in cfg.warp_powers:
            add(Reparameterized(exact, p), {"model_id": f"flow-exact-warp{p:g}", "source": "constructed",
                                            "group": "exact", "how": f"exact flow, clock τ=T(t/T)^{p:g}"})
    if first_reached is not None:
        bases.append(("student", first_reached))
    for bname, base in bases:
        for strength in cfg.conjugation_strengths:
            add(Conjugated.linear(base, strength), {"model_id": f"flow-{bname}-conj{strength:g}",
                                                    "source": "constructed", "group": bname,
                                                    "how": f"{bname} conjugated by exp(s·sin(πt/T)·B), s={strength:g}"})
        for a in cfg.detour_amplitudes:
            add(Detour(base, a), {"model_id": f"flow-{bname}-detour{a:g}", "source": "constructed", "group": bname,
                                  "how": f"{bname} with a detour of amplitude {a:g}"})
    return rows, curves


# ----------------------------------------------------------------------------------------------- digits task
class _ClassifierView(torch.nn.Module):
    """Head ∘ (a propagation field) ∘ embedding: accuracy of a classifier whose flow was replaced."""

    def __init__(self, model, flow) -> None:
        super().__init__()
        self.model, self.flow = model, flow

    @torch.no_grad()
    def accuracy(self, data: LabeledData) -> float:
        logits = self.model.head(self.flow(self.model.initial_state(data.x)))
        return float((logits.argmax(-1) == data.y).double().mean())


def run_digits_task(cfg: EndpointEquivalenceConfig, out: Path) -> tuple[list[dict], list[dict]]:
    train_all, test = load_digits(seed=0, dtype=torch.float64)
    tr_idx, val_idx = stratified_split(train_all.y.numpy(), 0.2, seed=1)
    train, val = train_all.subset(torch.as_tensor(tr_idx)), train_all.subset(torch.as_tensor(val_idx))
    target_err = 1.0 - cfg.digits_target_accuracy
    rows: list[dict] = []
    curves: list[dict] = []

    def add(model, flow, tags: dict[str, Any]) -> None:
        x_eval = model.initial_state(test.x[: cfg.n_eval]).detach()
        metrics, c = evaluate_field(flow, x_eval, {"model_id": tags["model_id"], "task": "digits",
                                                   "source": tags["source"], "n_layers": flow.n_layers})
        err = 1.0 - _ClassifierView(model, flow).accuracy(test)
        rows.append({**tags, "task": "digits", "endpoint_metric": err, "endpoint_metric_name": "test error rate",
                     "in_band": _in_band(max(err, 1e-12), target_err, cfg.band_ratio), "n_layers": flow.n_layers,
                     "law_error_id": float("nan"), **metrics})
        curves.extend(c)

    first_reached = None
    for L, tied, w, s, reg, seed in _population(cfg):
        mid = _model_id("digits", L, tied, w, s, reg, seed)
        torch.manual_seed(seed)
        model = build_student("residual_classifier", input_dim=64, n_classes=10, dim=cfg.digits_dim, n_layers=L,
                              width=w, tied=tied, init_scale=s).double()

        def reached(step: int, m, data=val) -> bool:
            return m.accuracy(data.x, data.y) >= cfg.digits_target_accuracy

        result = fit(model, _objective("classify", reg, cfg.reg_weight), train, seed=seed,
                     steps=cfg.max_steps, batch_size=cfg.batch_size, lr=cfg.lr, grad_clip=cfg.grad_clip,
                     progress=cfg.progress, run_dir=None, device=cfg.device, stop_when=reached,
                     log_every=cfg.check_every)
        add(model, model.flow, {"model_id": mid, "source": "trained", "group": "trained",
                                "how": f"cross-entropy fit, {reg}", "tied": tied, "width": w, "init_scale": s,
                                "regularizer": reg, "seed": seed, "steps_trained": result.steps})
        if first_reached is None and reached(0, model):     # chosen on the validation split, not on the test band
            first_reached = model
    if first_reached is not None:
        m = first_reached
        for strength in cfg.conjugation_strengths:
            add(m, Conjugated.linear(m.flow, strength), {"model_id": f"digits-student-conj{strength:g}",
                                                         "source": "constructed", "group": "student",
                                                         "how": f"conjugated by exp(s·sin(πt/T)·B), s={strength:g}"})
        for a in cfg.detour_amplitudes:
            add(m, Detour(m.flow, a), {"model_id": f"digits-student-detour{a:g}", "source": "constructed",
                                       "group": "student",
                                       "how": f"detour of amplitude {a:g}"})
    return rows, curves


# ----------------------------------------------------------------------------------------------- run
SPREAD_GROUPS = {
    "in band (trained + constructed)": lambda r: is_true(r["in_band"]),
    "in band, trained only": lambda r: is_true(r["in_band"]) and r["source"] == "trained",
    "exact-flow family": lambda r: r.get("group") == "exact",
}


def spread(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per task, model group (:data:`SPREAD_GROUPS`) and field metric: min, max and max/min (positive
    metrics) or the range max − min (``logdet``, a log quantity). The exact-flow family shares the teacher's
    endpoint map exactly (endpoint error at round-off), so it sits below the band but is endpoint-equivalent."""
    out = []
    for task in dict.fromkeys(r["task"] for r in rows):
        for gname, member in SPREAD_GROUPS.items():
            group = [r for r in rows if r["task"] == task and member(r)]
            for m in FIELD_METRICS:
                vals = np.array([float(r[m]) for r in group], dtype=float)
                vals = vals[np.isfinite(vals)]
                if vals.size < 2:
                    continue
                lo, hi = float(vals.min()), float(vals.max())
                ratio = hi / lo if (m != "logdet" and lo > 0) else float("nan")
                out.append({"task": task, "group": gname, "metric": m, "n_models": int(vals.size), "min": lo,
                            "max": hi, "max_over_min": ratio, "range": hi - lo,
                            "orders_of_magnitude": math.log10(ratio) if ratio == ratio else float("nan")})
    return out


def run(cfg: EndpointEquivalenceConfig, out: str | Path) -> list[dict[str, Any]]:
    """Train/construct every model, evaluate its field, write the tables and figures to ``out``."""
    out = fresh_output_dir(out, OUTPUT_FILES)
    t0 = time.perf_counter()
    rows, curves = run_flow_task(cfg, out)
    if cfg.digits:
        r2, c2 = run_digits_task(cfg, out)
        rows += r2
        curves += c2
    write_csv(out / "consistency.csv", curves)
    write_csv(out / "spread.csv", spread(rows))
    write_json(out / "results.json", run_metadata(cfg, cfg.seeds, experiment=NAME,
                                                  wall_seconds=time.perf_counter() - t0))
    write_csv(out / "results.csv", rows, RESULT_COLUMNS)
    return rows


# ----------------------------------------------------------------------------------------------- figures
PANEL_METRICS = (("trajectory_length", "trajectory length $\\Lambda$"),
                 ("kinetic_energy", "kinetic energy $E$"),
                 ("total_curvature", "total curvature $\\Theta$ (rad)"),
                 ("jac_spectral_max", "max$_l\\,\\|J_l\\|_2$"),
                 ("jac_condition_max", "max$_l$ cond$(J_l)$"),
                 ("path_sensitivity", "$E\\|\\partial h_L/\\partial h_0\\|_2$"),
                 ("logdet", "$\\log|\\det \\partial h_L/\\partial h_0|$"),
                 ("consistency_error", "consistency error (vs dopri5)"))


def _style(r: dict[str, Any]) -> tuple[str, str, str]:
    """(colour, marker, legend label) of a model row."""
    if r["source"] == "constructed":
        return "#000000", "x", "constructed"
    reg = r.get("regularizer") or "none"
    color = {"none": PALETTE[0], "kinetic": PALETTE[1], "jacobian_norm": PALETTE[2]}.get(reg, PALETTE[3])
    tied = is_true(r.get("tied"))
    return color, ("o" if tied else "s"), f"trained, {reg}, {'tied' if tied else 'untied'}"


def _minor_label(v: float, _pos: int) -> str:
    """Label the 2× and 5× minor ticks of a log axis (enough to read an axis that spans less than a decade)."""
    lead = round(v / 10 ** math.floor(math.log10(v)), 6) if v > 0 else 0
    return f"{v:.0e}".replace("e-0", "e-") if lead in (2.0, 5.0) else ""


def plot(out: str | Path) -> list[Path]:
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter

    out = Path(out)
    use_style()
    rows = read_csv(out / "results.csv")
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    n_cols = len(PANEL_METRICS)
    fig, axes = plt.subplots(len(tasks), n_cols, figsize=(1.9 * n_cols, 2.0 * len(tasks) + 0.9),
                             layout="constrained", squeeze=False)
    handles: dict[str, Any] = {}
    for i, task in enumerate(tasks):
        trs = [r for r in rows if r["task"] == task]
        xname = trs[0]["endpoint_metric_name"]
        band = [float(r["endpoint_metric"]) for r in trs if is_true(r["in_band"])]
        for j, (key, label) in enumerate(PANEL_METRICS):
            ax = axes[i, j]
            for r in trs:
                y = float(r[key])
                if not np.isfinite(y):
                    continue
                color, marker, lab = _style(r)
                alpha = 1.0 if (is_true(r["in_band"]) or r.get("group") == "exact") else 0.3
                h = ax.scatter(max(float(r["endpoint_metric"]), 1e-4), y, c=color, marker=marker, s=16, alpha=alpha,
                               linewidths=0.8)
                handles.setdefault(lab, h)
            if band:
                ax.axvspan(min(band), max(band), color="0.9", zorder=0)
            ax.set_xscale("log")
            lo, hi = ax.get_xlim()
            if hi / lo < 15:  # less than about a decade: label the 2× and 5× ticks so the axis can be read
                ax.xaxis.set_minor_formatter(FuncFormatter(_minor_label))
            else:
                ax.xaxis.set_minor_formatter(NullFormatter())
            if key not in ("logdet", "path_sensitivity"):  # endpoint-map quantities: invariant, linear scale
                ax.set_yscale("log")
            ax.set_xlabel(xname)
            ax.set_ylabel(label)
            if j == 0:
                ax.set_title(f"{task}", loc="left", fontweight="bold")
    fig.legend(list(handles.values()), list(handles.keys()), loc="outside lower center", ncols=4, frameon=False)
    fig.suptitle("Endpoint-equivalent models: endpoint metric (x) vs field metrics (y); grey band = the endpoint band "
                 "(faded: trained models outside it).\nConstructions on the exact flow have endpoint error at "
                 "round-off and are drawn at $10^{-4}$.")
    paths = save_figure(fig, out / "endpoint_vs_field")
    return paths + plot_consistency(out)


def plot_consistency(out: Path) -> list[Path]:
    """Distance to the converged (dopri5) solve vs re-integration step count, per solver and task."""
    import matplotlib.pyplot as plt

    curves = read_csv(out / "consistency.csv")
    tasks = list(dict.fromkeys(r["task"] for r in curves))
    fig, axes = plt.subplots(len(tasks), len(SOLVERS), figsize=(2.6 * len(SOLVERS), 2.2 * len(tasks) + 0.6),
                             layout="constrained", squeeze=False)
    colors = {"teacher": "#000000", "trained": PALETTE[0], "constructed": PALETTE[3]}
    for i, task in enumerate(tasks):
        tc = [r for r in curves if r["task"] == task]
        for j, solver in enumerate(SOLVERS):
            ax = axes[i, j]
            for mid in dict.fromkeys(r["model_id"] for r in tc):
                pts = sorted((int(r["n_steps"]), float(r["converged_error"])) for r in tc
                             if r["model_id"] == mid and r["method"] == solver and r["n_steps"] not in ("", None)
                             and r.get("is_reference") not in (True, "True"))
                if not pts:
                    continue
                src = next(r["source"] for r in tc if r["model_id"] == mid)
                ratio = [n / int(next(r["n_layers"] for r in tc if r["model_id"] == mid)) for n, _ in pts]
                ax.plot(ratio, [max(e, 1e-12) for _, e in pts], color=colors[src],
                        lw=1.4 if src == "teacher" else 0.7, ls="--" if src == "teacher" else "-",
                        alpha=1.0 if src == "teacher" else 0.6, label=src)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel("re-integration steps $L'/L$")
            ax.set_ylabel("rel. distance to dopri5 solve")
            ax.set_title(f"{task}: {solver}")
            if i == 0 and j == 0:
                hs, ls = ax.get_legend_handles_labels()
                keep = dict(zip(ls, hs, strict=True))
                ax.legend(keep.values(), keep.keys(), frameon=False)
    fig.suptitle("Solver consistency: each model's own field re-integrated at $L/8 … 8L$ steps; a learned law "
                 "converges at the solver's order like the teacher (dashed).")
    return save_figure(fig, out / "consistency_curves")


Config = EndpointEquivalenceConfig

__all__ = ["Config", "EndpointEquivalenceConfig", "NAME", "evaluate_field", "plot", "quick_config", "run", "spread"]


# ----------------------------------------------------------------------------------------------- report
def report(folder: str | Path) -> str:
    """Markdown for ``testbed report``: per task, how many models are in the endpoint band (trained and constructed
    counted apart), and the spread (max/min, in orders of magnitude) of each field metric among the trained models
    in the band, among all models in the band and in the exact-flow family — with a verdict, computed from the
    table, on whether trained models *alone* reach an order of magnitude."""
    folder = Path(folder)
    rows = read_csv(folder / "results.csv")
    spreads = read_csv(folder / "spread.csv") if (folder / "spread.csv").exists() else spread(rows)
    lines: list[str] = []
    for task in dict.fromkeys(r["task"] for r in rows):
        in_band = [r for r in rows if r["task"] == task and is_true(r["in_band"])]
        trained = [r for r in rows if r["task"] == task and r["source"] == "trained"]
        n_tr = sum(r["source"] == "trained" for r in in_band)
        lines += [f"**{task}**: {len(trained)} trained models, {n_tr} of them in the endpoint band; "
                  f"{len(in_band) - n_tr} constructed models in the band.", ""]
        by = {(s["group"], s["metric"]): s for s in spreads if s["task"] == task}
        groups = [g for g in SPREAD_GROUPS if any(k[0] == g for k in by)]
        metrics = [m for m in FIELD_METRICS if any((g, m) in by for g in groups) and m != "logdet"]
        lines += ["| metric | " + " | ".join(f"{g} (n)" for g in groups) + " |", "|---|" + "---|" * len(groups)]
        for m in metrics:
            cells = []
            for g in groups:
                s = by.get((g, m))
                cells.append("—" if s is None else f"{s['max_over_min']:.3g}× = {s['orders_of_magnitude']:.2f} "
                             f"decades ({s['n_models']})")
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
        tr = [by[("in band, trained only", m)] for m in metrics if ("in band, trained only", m) in by]
        wide = [s["metric"] for s in tr if float(s["orders_of_magnitude"]) >= 1.0]
        if tr:
            lines += ["", f"Trained models alone (n = {tr[0]['n_models']}) span at least one order of magnitude in "
                      f"{len(wide)} of {len(tr)} field metrics" + (f" ({', '.join(wide)})" if wide else "")
                      + (";" if wide else ": the orders-of-magnitude spread comes from the constructed models;")
                      + " the rest is narrower.", ""]
    return "\n".join(lines).rstrip()

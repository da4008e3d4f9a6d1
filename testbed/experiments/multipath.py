"""Multi-path tasks: unseen-path generalisation, OOD robustness and calibration under field objectives (paper A).

When observations come along several paths — intermediate states of some inputs, several depth grids, several
routes to an endpoint — a field term can supervise the interior of the propagation field. The paper's claim
has two sides, and this study measures both on the same tasks, students, data and step budgets:

* **aligned**: ``L = L_out + λ·observed_path`` with the field term only where paths were observed (the observed
  inputs, at the observed depths) — it should help on unseen paths, OOD inputs and calibration;
* **over-constrained**: the field term at *every* depth for *every* input, with made-up targets where nothing
  was observed (depth-interpolation between the known states; "stay at x0" for inputs never observed) —
  it should collapse as ``λ`` grows;

* **distill** (tasks with a teacher network, i.e. ``digits``): ``L = L_out + λ·KL(teacher ‖ student)`` on the
  same observed inputs — the teacher's *outputs* instead of its interior, at the same budget, so a gain of
  ``aligned`` over ``distill`` is a field effect and not distillation.

``L_out`` is the cross-entropy (classification) or the relative endpoint error (regression), and ``λ = 0``
is the endpoint-only baseline shared by every variant. ``λ`` sweeps ``lambdas`` (at least five values from
0 to clearly too large).

**Selection on validation data.** A fraction ``val_fraction`` of the training inputs (stratified by label) is
held out of training (:func:`testbed.multipath.tasks.hold_out_validation`). Each variant's ``λ`` is chosen among
its positive candidates by :class:`testbed.selection.SelectionRule` — the smallest seed-mean validation loss
(``select_on``; cross-entropy or relative endpoint error), ties to the smaller ``λ`` — and every test metric is
reported at that one ``λ`` (:func:`derive`: ``selection.csv``, ``selected.csv``, ``paired.csv``). The full
sweep over ``λ`` stays in ``results.csv`` and the figure. Tasks (:mod:`testbed.multipath.tasks`):

* ``moons_shear`` / ``spiral_twist`` / ``circles_lift`` — a 2-D data set carried by a transport teacher flow,
  classified from the endpoint; unseen paths = initial states in a held-out polar wedge;
* ``routes`` — endpoint regression along routes composed of three non-commuting laws; unseen paths = route
  combinations never trained on;
* ``digits`` — scikit-learn digits with few labels; observed paths = a teacher network's hidden states.

Every task is also scored on a held-out *depth grid* (the learned field re-integrated with ``L/2`` and ``2L``
Euler steps), on shifted and noisy inputs, and — for classifiers — by ECE (15 bins), NLL and a reliability
diagram. Writes ``results.csv`` (one row per task × variant × λ × seed), ``reliability.csv``,
``results.json``, ``multipath.png/.pdf`` (metrics vs λ, mean ± 95% CI over seeds) and
``reliability.png/.pdf``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from testbed.config import (
    ConfigError,
    canonical_choices,
    check_nonneg,
    check_positive,
    check_positive_int,
)
from testbed.experiments.common import fit
from testbed.experiments.protocol import ExperimentConfig, seeds_field
from testbed.multipath import SPLITS, MultipathTask, digits_task, evaluate, route_task, transport_task
from testbed.multipath.tasks import hold_out_validation
from testbed.plotting import PALETTE, save_figure, use_style
from testbed.report import format_paired, is_finite_number
from testbed.results import fresh_output_dir, read_csv, run_metadata, write_csv, write_json
from testbed.selection import SelectionRule, rows_at_choice, select, to_float
from testbed.stats import paired
from testbed.stats import summarize as summarize_values

NAME = "multipath"
#: natural keys of a row besides its seed: rows sharing them are repeats over seeds
GROUP_KEYS = ["task", "variant", "lam", "metric"]
TRANSPORT = ("moons_shear", "spiral_twist", "circles_lift")
TASKS = (*TRANSPORT, "routes", "digits")
VARIANTS = ("aligned", "over", "distill")
#: the validation metrics λ may be chosen on
SELECT_ON = ("val_loss", "val_score")
#: config fields that only partition the rows: a sweep over tasks still draws this study's figure
PARTITION_FIELDS = ("tasks",)
DERIVED_FILES = ("selection.csv", "selected.csv", "paired.csv", "selection.json")
#: test metrics reported at the selected λ (and compared, paired over seeds, against the endpoint-only student)
TEST_METRICS = (*SPLITS, "ece", "nll")
#: paired comparisons (variant − reference) over shared seeds
COMPARISONS = (("aligned", "endpoint"), ("over", "endpoint"), ("distill", "endpoint"), ("aligned", "distill"))
RESULT_COLUMNS = [
    "task", "variant", "lam", "seed", "metric", *SPLITS, "ece", "nll", "val_score", "val_loss", "path_error_seen",
    "path_error_unseen_path",
    "law_error_seen", "law_error_unseen_path", "path_error_shifted", "path_error_noisy", "path_sensitivity",
    "final_loss", "train_seconds", "n_layers",
]
SUMMARY_COLUMNS = ["task", "variant", "lam", "seed", "metric", "seen", "unseen_path", "unseen_grid", "shifted",
                   "noisy", "ece", "nll"]
CAPTIONS = {
    "multipath": (
        "One row per task, one column per metric, against the field weight λ (log axis; λ = 0 is the endpoint-only "
        "student, also drawn as a dotted line). Blue: aligned field term (observed inputs at observed depths only); "
        "vermillion: over-constrained (every input at every depth, interpolated targets where nothing was "
        "observed). Classification rows show accuracy (higher is better), the routes row the relative endpoint "
        "error (lower is better). Columns: fresh in-distribution inputs, unseen paths (held-out wedge of initial "
        "states / unseen route combinations), the field re-integrated on unseen depth grids (L/2, 2L), shifted and "
        "noisy inputs, ECE (15 bins), and the validation loss λ is chosen on (cross-entropy / relative endpoint "
        "error on the split held out of the training inputs). Green: logit distillation from the same teacher on "
        "the same inputs (digits). Stars: each variant's validation-selected λ. Error bars: 95% t-interval of the "
        "mean over seeds."),
    "reliability": (
        "Reliability diagrams on fresh in-distribution inputs, pooled over seeds: accuracy vs confidence per "
        "15-bin confidence bin (marker area ∝ √share of inputs) for the endpoint-only student, the aligned λ chosen "
        "on validation data and the largest over-constrained λ; the dashed diagonal is perfect calibration."),
}
OUTPUT_FILES = ("results.csv", "reliability.csv", "results.json", "multipath.png", "multipath.pdf",
                "reliability.png", "reliability.pdf", *DERIVED_FILES)


@dataclasses.dataclass
class MultipathConfig(ExperimentConfig):
    """Settings of the multi-path study (validated on construction)."""

    UNIQUE_FIELDS: ClassVar[tuple[str, ...]] = ("tasks", "variants")

    tasks: tuple[str, ...] = TASKS
    variants: tuple[str, ...] = VARIANTS
    lambdas: tuple[float, ...] = (0.0, 0.1, 1.0, 10.0, 100.0)
    seeds: tuple[int, ...] = seeds_field((0, 1, 2, 3, 4))
    val_fraction: float = 0.2       # of the training inputs, held out for choosing λ
    select_on: str = "val_loss"     # val_loss (min) | val_score (accuracy: max; relative error: min)
    steps: int = 1000
    batch_size: int = 128
    lr: float = 3e-3
    grad_clip: float = 1.0
    width: int = 64
    hidden_layers: int = 2
    n_layers: int = 16              # transport tasks
    n_train: int = 128              # transport and routes: training inputs
    n_test: int = 512
    n_obs: int = 3                  # observed interior depths (transport, digits)
    observed_fraction: float = 0.5  # fraction of training inputs whose path is observed
    wedge_deg: tuple[float, float] = (60.0, 120.0)
    noise_std: float = 0.15         # noisy inputs (data units; digits pixels in [0, 1])
    route_segments: int = 3
    route_layers: int = 12
    route_seen: int = 9             # seen routes out of 3^route_segments
    digits_labeled: int = 100
    digits_layers: int = 8
    digits_dim: int = 32
    digits_teacher_steps: int = 1500

    def validate(self) -> None:
        self.tasks = tuple(self.tasks)
        self.variants = tuple(self.variants)
        self.lambdas = tuple(float(v) for v in self.lambdas)
        self.seeds = tuple(int(s) for s in self.seeds)
        self.wedge_deg = tuple(float(v) for v in self.wedge_deg)
        if not self.tasks:
            raise ConfigError("tasks must name at least one task")
        self.tasks = canonical_choices("tasks", self.tasks, TASKS)
        if not self.variants or any(v not in VARIANTS for v in self.variants):
            raise ConfigError(f"variants must be a non-empty subset of {VARIANTS}, got {self.variants}")
        if not 0.0 < self.val_fraction < 0.5:
            raise ConfigError(f"val_fraction must lie in (0, 0.5), got {self.val_fraction}")
        if self.select_on not in SELECT_ON:
            raise ConfigError(f"select_on must be one of {SELECT_ON}, got {self.select_on!r}")
        if len(self.lambdas) < 2 or any(not math.isfinite(v) or v < 0 for v in self.lambdas):
            raise ConfigError(f"lambdas must hold ≥ 2 finite values ≥ 0, got {self.lambdas}")
        if 0.0 not in self.lambdas:
            raise ConfigError(f"lambdas must include 0 (the endpoint-only baseline every variant is compared with), "
                              f"got {self.lambdas}")
        if len(set(self.lambdas)) != len(self.lambdas):
            raise ConfigError(f"lambdas must be distinct, got {self.lambdas}")
        for name in ("steps", "batch_size", "width", "hidden_layers", "n_layers", "n_train", "n_test", "n_obs",
                     "route_segments", "route_layers", "route_seen", "digits_labeled", "digits_layers",
                     "digits_dim", "digits_teacher_steps"):
            check_positive_int(name, getattr(self, name))
        check_positive("lr", self.lr)
        check_nonneg("grad_clip", self.grad_clip)
        check_nonneg("noise_std", self.noise_std)
        if not 0.0 < self.observed_fraction <= 1.0:
            raise ConfigError(f"observed_fraction must lie in (0, 1], got {self.observed_fraction}")
        lo, hi = self.wedge_deg if len(self.wedge_deg) == 2 else (0.0, -1.0)
        if not 0.0 <= lo < hi <= 360.0:
            raise ConfigError(f"wedge_deg must be (lo, hi) with 0 ≤ lo < hi ≤ 360, got {self.wedge_deg}")
        if self.n_obs >= min(self.n_layers, self.digits_layers):
            raise ConfigError(f"n_obs={self.n_obs} must be smaller than n_layers and digits_layers")
        if self.route_layers % self.route_segments:
            raise ConfigError(f"route_layers={self.route_layers} must be a multiple of route_segments="
                              f"{self.route_segments}")
        if not 0 < self.route_seen < 3 ** self.route_segments:
            raise ConfigError(f"route_seen must lie in [1, {3 ** self.route_segments - 1}], got {self.route_seen}")


Config = MultipathConfig


def quick_config(**overrides: Any) -> MultipathConfig:
    """A 2-core CPU in under 3 minutes: one transport task, routes and digits; one seed; short training."""
    base: dict[str, Any] = dict(tasks=("spiral_twist", "routes", "digits"), seeds=(0,), steps=250, n_layers=8,
                                n_test=256, route_layers=6, digits_teacher_steps=300, width=32)
    base.update(overrides)
    return MultipathConfig(**base)


# ----------------------------------------------------------------------------------------------- run
def build_task(cfg: MultipathConfig, name: str) -> MultipathTask:
    """The task ``name`` at the config's sizes (data and, for digits, the teacher are seeded independently of
    the student seeds, so every objective and seed sees the same task)."""
    common = dict(observed_fraction=cfg.observed_fraction, noise_std=cfg.noise_std, width=cfg.width,
                  hidden_layers=cfg.hidden_layers)
    if name in TRANSPORT:
        return transport_task(name, n_train=cfg.n_train, n_test=cfg.n_test, n_layers=cfg.n_layers, n_obs=cfg.n_obs,
                              wedge_deg=cfg.wedge_deg, **common)
    if name == "routes":
        return route_task(n_segments=cfg.route_segments, n_seen_routes=cfg.route_seen, n_train=cfg.n_train,
                          n_test=cfg.n_test, n_layers=cfg.route_layers, **common)
    common["hidden_layers"] = max(cfg.hidden_layers - 1, 1)
    return digits_task(n_labeled=cfg.digits_labeled, n_layers=cfg.digits_layers, n_obs=cfg.n_obs, dim=cfg.digits_dim,
                       teacher_steps=cfg.digits_teacher_steps, **common)


def objective_for(task: MultipathTask, lam: float, variant: str = "aligned") -> str:
    """``L_out=1,term=λ``: ``L_out`` is ``cross_entropy`` (classification) or ``endpoint`` (regression); the term
    is ``distill`` for the distillation baseline, else ``observed_path`` (aligned / over-constrained targets)."""
    out = "cross_entropy" if task.kind == "classification" else "endpoint"
    term = "distill" if variant == "distill" else "observed_path"
    return f"{out}=1,{term}={lam:g}"


def task_variants(cfg: MultipathConfig, task: MultipathTask) -> tuple[str, ...]:
    """The configured variants that apply to ``task`` (``distill`` needs a teacher network's logits)."""
    return tuple(v for v in cfg.variants if v != "distill" or task.teacher_logits is not None)


def runs(cfg: MultipathConfig, variants: tuple[str, ...] | None = None) -> list[tuple[str, float]]:
    """The (variant, λ) pairs trained per task and seed: λ = 0 once (variant ``endpoint``), then each variant."""
    out: list[tuple[str, float]] = [("endpoint", 0.0)]
    out += [(v, lam) for v in (cfg.variants if variants is None else variants) for lam in cfg.lambdas if lam > 0]
    return out


def selection_rule(kind: str, select_on: str) -> SelectionRule:
    """The rule λ is chosen by for a task of ``kind``: the validation loss is minimised; the validation score
    is maximised for accuracy (classification) and minimised for relative error (regression)."""
    mode = "max" if select_on == "val_score" and kind == "classification" else "min"
    return SelectionRule("lam", select_on, mode)


def run(cfg: MultipathConfig, out: str | Path) -> list[dict[str, Any]]:
    """Train and evaluate every task × (variant, λ) × seed; write the tables, metadata and figures to ``out``."""
    out = fresh_output_dir(out, OUTPUT_FILES)
    rows: list[dict[str, Any]] = []
    rel_rows: list[dict[str, Any]] = []
    info: dict[str, Any] = {}
    t_start = time.perf_counter()
    for name in cfg.tasks:
        task = hold_out_validation(build_task(cfg, name), cfg.val_fraction)
        info[name] = {**task.info, "kind": task.kind}
        variants = task_variants(cfg, task)
        data = {v: task.path_data(v) for v in dict.fromkeys(("aligned", *(v for v in variants if v != "distill")))}
        data["endpoint"] = data["distill"] = data["aligned"]   # λ = 0: no field term; distill: the observed inputs
        for variant, lam in runs(cfg, variants):
            for seed in cfg.seeds:
                student = task.make_student(seed)
                result = fit(student, objective_for(task, lam, variant), data[variant], seed=seed, steps=cfg.steps,
                             batch_size=cfg.batch_size, lr=cfg.lr, grad_clip=cfg.grad_clip, progress=cfg.progress,
                             run_dir=None, device=cfg.device)
                metrics, rel = evaluate(student, task)
                key = {"task": name, "variant": variant, "lam": lam, "seed": seed}
                rows.append({**key, **metrics, "final_loss": result.final_loss, "train_seconds": result.wall_time,
                             "n_layers": task.n_layers})
                rel_rows += [{**key, **r} for r in rel]
    write_csv(out / "reliability.csv", rel_rows)
    rules = {kind: selection_rule(kind, cfg.select_on).as_dict() for kind in ("classification", "regression")}
    write_json(out / "results.json", run_metadata(cfg, cfg.seeds, experiment=NAME, task_info=info, selection=rules,
                                                  wall_seconds=time.perf_counter() - t_start))
    write_csv(out / "results.csv", rows, RESULT_COLUMNS)  # the sweep over λ, complete
    derive(out)
    return rows


# ----------------------------------------------------------------------------------------------- selection
def derive(out: str | Path) -> list[Path]:
    """Choose each (task, variant)'s λ on validation data and read the test metrics there.

    From ``out/results.csv`` and the rule recorded in ``out/results.json`` (``select_on``) writes

    * ``selection.csv`` — every candidate λ with its validation mean, 95% CI and n, and which was chosen;
    * ``selected.csv`` — the rows at the chosen λ (all seeds), the endpoint-only rows (λ = 0) beside them;
    * ``paired.csv`` — per task, comparison (:data:`COMPARISONS`) and test metric, the paired difference over
      shared seeds (mean, 95% CI, n, paired t and exact sign-flip p-values; :func:`testbed.stats.paired`);
    * ``selection.json`` — the rule in words and the chosen λ per task and variant.
    """
    out = Path(out)
    rows = read_csv(out / "results.csv")
    meta = _read_json(out / "results.json")
    select_on = (meta.get("config") or {}).get("select_on") or _rule_metric(meta) or "val_loss"
    kinds = {r["task"]: ("regression" if r["metric"] == "endpoint_error" else "classification") for r in rows}
    sel_rows: list[dict[str, Any]] = []
    chosen_rows: list[dict[str, Any]] = []
    chosen: dict[str, dict[str, float]] = {}
    for task, kind in kinds.items():
        rule = selection_rule(kind, select_on)
        task_rows = [r for r in rows if r["task"] == task]
        cands = [r for r in task_rows if r["variant"] != "endpoint" and float(r["lam"]) > 0]
        choices = select(cands, rule, ("task", "variant")) if cands else {}
        for c in choices.values():
            sel_rows += c.as_rows(("task", "variant"), "lam")
            chosen.setdefault(task, {})[c.group[1]] = c.value
        chosen_rows += [r for r in task_rows if r["variant"] == "endpoint"]
        chosen_rows += rows_at_choice(cands, choices, rule, ("task", "variant"))
    pair_rows = paired_rows(chosen_rows)
    write_csv(out / "selection.csv", sel_rows)
    write_csv(out / "selected.csv", chosen_rows, RESULT_COLUMNS)
    write_csv(out / "paired.csv", pair_rows)
    rules = {k: selection_rule(k, select_on).describe() for k in sorted(set(kinds.values()))}
    return [out / "selection.csv", out / "selected.csv", out / "paired.csv",
            write_json(out / "selection.json", {"rules": rules, "selected_lambda": chosen})]


def _read_json(path: Path) -> dict[str, Any]:
    import json

    return json.loads(path.read_text()) if path.exists() else {}


def _rule_metric(meta: dict[str, Any]) -> str | None:
    rules = meta.get("selection") or {}
    return next((r.get("metric") for r in rules.values() if isinstance(r, dict)), None)


def paired_rows(chosen_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Paired differences ``A − B`` over the seeds both have, per task, comparison and test metric."""
    by: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}
    for r in chosen_rows:
        by.setdefault((r["task"], r["variant"]), {})[int(r["seed"])] = r
    out: list[dict[str, Any]] = []
    for task in dict.fromkeys(r["task"] for r in chosen_rows):
        for a, b in COMPARISONS:
            ra, rb = by.get((task, a)), by.get((task, b))
            if not ra or not rb:
                continue
            seeds = sorted(set(ra) & set(rb))
            for m in TEST_METRICS:
                va = [to_float(ra[s].get(m)) for s in seeds]
                vb = [to_float(rb[s].get(m)) for s in seeds]
                if all(math.isnan(v) for v in va):
                    continue
                pc = paired(va, vb)
                out.append({"task": task, "a": a, "lam_a": float(ra[seeds[0]]["lam"]), "b": b,
                            "lam_b": float(rb[seeds[0]]["lam"]), "metric": m, "mean_diff": pc.diff.mean,
                            "lo": pc.diff.lo, "hi": pc.diff.hi, "n": pc.diff.n, "p_t": pc.p_t,
                            "p_sign_flip": pc.p_sign_flip})
    return out



# ----------------------------------------------------------------------------------------------- summaries
def aggregate(rows: list[dict[str, Any]], key: str) -> dict[tuple[str, str, float], tuple[float, float, int]]:
    """``(task, variant, λ) → (mean, 95% CI half-width, n)`` of ``key`` over seeds (:mod:`testbed.stats`; NaNs
    dropped; half-width 0 for one seed)."""
    groups: dict[tuple[str, str, float], list[float]] = {}
    for r in rows:
        v = r.get(key)
        if v is None or v == "" or (isinstance(v, float) and math.isnan(v)):
            continue
        groups.setdefault((r["task"], r["variant"], float(r["lam"])), []).append(float(v))
    return {k: (s.mean, s.half_width if s.n > 1 else 0.0, s.n)
            for k, s in ((k, summarize_values(v)) for k, v in groups.items())}


def variant_curve(agg: dict, task: str, variant: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(λ, mean, 95% CI half-width)`` of one variant, λ = 0 taken from the shared endpoint-only runs."""
    pts = sorted((lam, m, s) for (t, v, lam), (m, s, _) in agg.items()
                 if t == task and (v == variant or (v == "endpoint" and lam == 0.0)))
    if not pts:
        return np.array([]), np.array([]), np.array([])
    a = np.array(pts, dtype=float)
    return a[:, 0], a[:, 1], a[:, 2]


# ----------------------------------------------------------------------------------------------- figures
PANELS = [("val_loss", "validation loss (selects λ)"), ("seen", "seen inputs"), ("unseen_path", "unseen paths"),
          ("unseen_grid", "unseen depth grid"), ("shifted", "shifted inputs"), ("noisy", "noisy inputs"),
          ("ece", "ECE (15 bins)")]
VARIANT_STYLE = {"aligned": (PALETTE[0], "o", "aligned"), "over": (PALETTE[3], "s", "over-constrained"),
                 "distill": (PALETTE[2], "^", "logit distillation")}


def selected_lambdas(out: Path) -> dict[str, dict[str, float]]:
    """``{task: {variant: λ*}}`` from ``selection.json`` (empty when the run has none)."""
    return _read_json(out / "selection.json").get("selected_lambda", {})


def _lam_axis(lams: np.ndarray) -> tuple[np.ndarray, float]:
    """Positions on a log axis, λ = 0 drawn one decade left of the smallest positive λ."""
    pos = lams[lams > 0]
    zero_at = (pos.min() / 10.0) if pos.size else 0.1
    return np.where(lams > 0, lams, zero_at), zero_at


def plot(out: str | Path) -> list[Path]:
    """Draw ``multipath.png/.pdf`` (metric vs λ per task) and ``reliability.png/.pdf`` from the tables."""
    import matplotlib.pyplot as plt

    out = Path(out)
    rows = read_csv(out / "results.csv")
    rel_rows = read_csv(out / "reliability.csv") if (out / "reliability.csv").exists() else []
    chosen = selected_lambdas(out)
    use_style()
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    metric_of = {r["task"]: r["metric"] for r in rows}
    aggs = {key: aggregate(rows, key) for key, _ in PANELS}
    all_lams = np.array(sorted({float(r["lam"]) for r in rows}))
    xs_all, _ = _lam_axis(all_lams)
    fig, axes = plt.subplots(len(tasks), len(PANELS), figsize=(1.55 * len(PANELS) + 0.6, 1.45 * len(tasks) + 0.5),
                             squeeze=False)
    for i, task in enumerate(tasks):
        reg = metric_of[task] == "endpoint_error"
        for j, (key, title) in enumerate(PANELS):
            ax = axes[i, j]
            agg = aggs[key]
            drawn = False
            for variant, (color, marker, label) in VARIANT_STYLE.items():
                lams, mean, std = variant_curve(agg, task, variant)
                if not lams.size or (lams.size == 1 and lams[0] == 0.0 and variant != "aligned"):
                    continue
                xs, _ = _lam_axis(lams)
                ax.errorbar(xs, mean, yerr=std, color=color, marker=marker, ms=3, lw=1, capsize=2, label=label)
                star = chosen.get(task, {}).get(variant)
                if star is not None and star in lams:
                    k = int(np.flatnonzero(lams == star)[0])
                    ax.plot(xs[k], mean[k], marker="*", ms=9, color=color, mec="k", mew=0.5, zorder=5,
                            ls="none", label=None)
                drawn = True
            if drawn:
                ax.set_xscale("log")
                ax.set_xticks(xs_all)
                ax.set_xticklabels(["0" if lam == 0 else f"{lam:g}" for lam in all_lams], fontsize=6)
                ax.minorticks_off()
                base = agg.get((task, "endpoint", 0.0))
                if base is not None:
                    ax.axhline(base[0], color="0.5", lw=0.8, ls=":", zorder=0)
            else:
                ax.text(0.5, 0.5, "n/a", ha="center", va="center", transform=ax.transAxes, color="0.5")
                ax.set_xticks([])
                ax.set_yticks([])
            if i == 0:
                ax.set_title(title)
            if i == len(tasks) - 1 and drawn:
                ax.set_xlabel("field weight λ")
            if j == 0:
                ax.set_ylabel(f"{task}\n{'val. rel. endpoint error' if reg else 'val. cross-entropy [nats]'}")
            elif j == 1:
                ax.set_ylabel("rel. endpoint error" if reg else "accuracy")
            elif key == "ece":
                ax.set_ylabel("ECE")
    legend: dict[str, Any] = {}
    for ax in axes[:, 1]:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            legend.setdefault(lab, h)
    fig.legend(list(legend.values()), list(legend), loc="upper center", ncol=3, frameon=False,
               bbox_to_anchor=(0.5, 1.0))
    fig.suptitle("Multi-path tasks: field weight λ (mean ± 95% CI over seeds; dotted: endpoint-only, λ=0; "
                 "★: λ chosen on validation data)", y=1.03, fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    paths = save_figure(fig, out / "multipath")
    paths += _plot_reliability(out, rows, rel_rows, chosen)
    return paths


def _plot_reliability(out: Path, rows: list[dict[str, Any]], rel_rows: list[dict[str, Any]],
                      selected: dict[str, dict[str, float]]) -> list[Path]:
    """Reliability diagrams (seen inputs, pooled over seeds; marker area ∝ √(share of inputs in the bin)):
    endpoint-only, the aligned λ chosen on validation data (the largest positive λ when the run has no
    selection), the largest over-constrained λ."""
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(r["task"] for r in rel_rows))
    if not tasks:
        return []
    fig, axes = plt.subplots(1, len(tasks), figsize=(2.3 * len(tasks) + 0.3, 2.4), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        lams = {(r["variant"], float(r["lam"])) for r in rows if r["task"] == task}
        aligned = sorted(lam for v, lam in lams if v == "aligned")
        over = [lam for v, lam in lams if v == "over"]
        picks = [("endpoint", 0.0, "endpoint-only (λ=0)", PALETTE[7])]
        if aligned:
            best = selected.get(task, {}).get("aligned", aligned[-1])
            picks.append(("aligned", best, f"aligned, λ={best:g} (validation)", PALETTE[0]))
        if over:
            picks.append(("over", max(over), f"over-constrained, λ={max(over):g}", PALETTE[3]))
        ax.plot([0, 1], [0, 1], color="0.6", lw=0.8, ls="--")
        for variant, lam, label, color in picks:
            sel = [r for r in rel_rows if r["task"] == task and r["variant"] == variant and float(r["lam"]) == lam]
            conf, accs, counts = _pool_bins(sel)
            ok = counts > 0
            ax.plot(conf[ok], accs[ok], lw=0.8, color=color, alpha=0.7)
            size = 4 + 60 * np.sqrt(counts[ok] / max(counts.sum(), 1))     # marker area ∝ √(share of inputs)
            ax.scatter(conf[ok], accs[ok], s=size, color=color, label=label, zorder=3)
        ax.set_xlim(0, 1.02)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("confidence")
        ax.set_ylabel("accuracy")
        ax.set_title(f"{task}: reliability (seen)")
        ax.legend(loc="lower right", fontsize=6, frameon=False)
    fig.tight_layout()
    return save_figure(fig, out / "reliability")


def _pool_bins(rows: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pool reliability rows over seeds: count-weighted mean confidence and accuracy per bin."""
    bins: dict[float, list[tuple[int, float, float]]] = {}
    for r in rows:
        k = int(r["count"])
        if k:
            bins.setdefault(float(r["bin_lo"]), []).append((k, float(r["confidence"]), float(r["accuracy"])))
    keys = sorted(bins)
    conf = np.array([sum(k * c for k, c, _ in bins[b]) / sum(k for k, _, _ in bins[b]) for b in keys])
    accs = np.array([sum(k * a for k, _, a in bins[b]) / sum(k for k, _, _ in bins[b]) for b in keys])
    counts = np.array([sum(k for k, _, _ in bins[b]) for b in keys])
    return conf, accs, counts


# ----------------------------------------------------------------------------------------------- report
REPORT_COLUMNS = [("seen", "seen"), ("unseen_path", "unseen paths"), ("unseen_grid", "unseen grid"),
                  ("shifted", "shifted"), ("noisy", "noisy"), ("ece", "ECE"), ("nll", "NLL")]


def report(folder: str | Path) -> str | None:
    """Markdown for ``testbed report``: the test metrics at each variant's validation-selected λ (mean ± 95% CI
    (n) over seeds) and the paired differences against the endpoint-only student (and aligned − distill)."""
    folder = Path(folder)
    if not (folder / "selected.csv").exists():
        return None             # a run without selection tables: testbed report prints the generic table
    rows = read_csv(folder / "selected.csv")
    kinds = {r["task"]: r["metric"] for r in rows}
    cols = [(k, t) for k, t in REPORT_COLUMNS if any(is_finite_number(r.get(k)) for r in rows)]
    lines = ["Test metrics at the λ chosen on validation data (accuracy; routes: relative endpoint error, lower is "
             "better); mean ± 95% CI (n seeds):", "",
             "| task | variant | λ (validation) | " + " | ".join(t for _, t in cols) + " |",
             "|---|---|---|" + "---|" * len(cols)]
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["task"], r["variant"]), []).append(r)
    for (task, variant), members in groups.items():
        label = f"{task} ({'error' if kinds[task] == 'endpoint_error' else 'accuracy'})"
        cells = [summarize_values([float(r[k]) for r in members if is_finite_number(r.get(k))]).format(3)
                 if any(is_finite_number(r.get(k)) for r in members) else "—" for k, _ in cols]
        lines.append(f"| {label} | {variant} | {float(members[0]['lam']):g} | " + " | ".join(cells) + " |")
    pairs = read_csv(folder / "paired.csv") if (folder / "paired.csv").exists() else []
    if pairs:
        lines += ["", "Paired differences A − B over shared seeds at the selected λ: mean [95% CI], exact sign-flip "
                  "p:", "", "| task | A − B | " + " | ".join(t for _, t in cols) + " |",
                  "|---|---|" + "---|" * len(cols)]
        by: dict[tuple[str, str, str], dict[str, dict[str, Any]]] = {}
        for p in pairs:
            by.setdefault((p["task"], p["a"], p["b"]), {})[p["metric"]] = p
        for (task, a, b), per in by.items():
            cells = [format_paired(per.get(k)) for k, _ in cols]
            lines.append(f"| {task} | {a} − {b} | " + " | ".join(cells) + " |")
    return "\n".join(lines)



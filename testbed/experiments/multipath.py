"""Multi-path tasks: unseen-path generalisation, OOD robustness and calibration under field objectives (paper A).

When observations come along several paths — intermediate states of some inputs, several depth grids, several
routes to an endpoint — a field term can supervise the interior of the propagation field. The paper's claim
has two sides, and this study measures both on the same tasks, students, data and step budgets:

* **aligned**: ``L = L_out + λ·observed_path`` with the field term only where paths were observed (the observed
  inputs, at the observed depths) — it should help on unseen paths, OOD inputs and calibration;
* **over-constrained**: the field term at *every* depth for *every* input, with made-up targets where nothing
  was observed (depth-interpolation between the known states; "stay at x0" for inputs never observed) —
  it should collapse as ``λ`` grows;

``L_out`` is the cross-entropy (classification) or the relative endpoint error (regression), and ``λ = 0``
is the endpoint-only baseline shared by both variants. ``λ`` sweeps ``lambdas`` (at least five values from
0 to clearly too large). Tasks (:mod:`testbed.multipath.tasks`):

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
from testbed.multipath import SPLITS, VARIANTS, MultipathTask, digits_task, evaluate, route_task, transport_task
from testbed.plotting import PALETTE, save_figure, use_style
from testbed.results import fresh_output_dir, read_csv, run_metadata, write_csv, write_json
from testbed.stats import summarize as summarize_values

NAME = "multipath"
#: natural keys of a row besides its seed: rows sharing them are repeats over seeds
GROUP_KEYS = ["task", "variant", "lam", "metric"]
TRANSPORT = ("moons_shear", "spiral_twist", "circles_lift")
TASKS = (*TRANSPORT, "routes", "digits")
RESULT_COLUMNS = [
    "task", "variant", "lam", "seed", "metric", *SPLITS, "ece", "nll", "path_error_seen", "path_error_unseen_path",
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
        "noisy inputs, ECE (15 bins). Error bars: 95% t-interval of the mean over seeds."),
    "reliability": (
        "Reliability diagrams on fresh in-distribution inputs, pooled over seeds: accuracy vs confidence per "
        "15-bin confidence bin (marker area ∝ √share of inputs) for the endpoint-only student, the aligned λ with "
        "the best accuracy and the largest over-constrained λ; the dashed diagonal is perfect calibration."),
}
OUTPUT_FILES = ("results.csv", "reliability.csv", "results.json", "multipath.png", "multipath.pdf",
                "reliability.png", "reliability.pdf")


@dataclasses.dataclass
class MultipathConfig(ExperimentConfig):
    """Settings of the multi-path study (validated on construction)."""

    UNIQUE_FIELDS: ClassVar[tuple[str, ...]] = ("tasks", "variants")

    tasks: tuple[str, ...] = TASKS
    variants: tuple[str, ...] = VARIANTS
    lambdas: tuple[float, ...] = (0.0, 0.1, 1.0, 10.0, 100.0)
    seeds: tuple[int, ...] = seeds_field((0, 1, 2, 3, 4))
    steps: int = 2000
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
        if len(self.lambdas) < 2 or any(not math.isfinite(v) or v < 0 for v in self.lambdas):
            raise ConfigError(f"lambdas must hold ≥ 2 finite values ≥ 0, got {self.lambdas}")
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


def objective_for(task: MultipathTask, lam: float) -> str:
    """``cross_entropy=1,observed_path=λ`` (classification) or ``endpoint=1,observed_path=λ`` (regression)."""
    out = "cross_entropy" if task.kind == "classification" else "endpoint"
    return f"{out}=1,observed_path={lam:g}"


def runs(cfg: MultipathConfig) -> list[tuple[str, float]]:
    """The (variant, λ) pairs trained per task and seed: λ = 0 once (variant ``endpoint``), then each variant."""
    out: list[tuple[str, float]] = []
    if 0.0 in cfg.lambdas:
        out.append(("endpoint", 0.0))
    out += [(v, lam) for v in cfg.variants for lam in cfg.lambdas if lam > 0]
    return out


def run(cfg: MultipathConfig, out: str | Path) -> list[dict[str, Any]]:
    """Train and evaluate every task × (variant, λ) × seed; write the tables, metadata and figures to ``out``."""
    out = fresh_output_dir(out, OUTPUT_FILES)
    rows: list[dict[str, Any]] = []
    rel_rows: list[dict[str, Any]] = []
    info: dict[str, Any] = {}
    t_start = time.perf_counter()
    for name in cfg.tasks:
        task = build_task(cfg, name)
        info[name] = task.info
        data = {v: task.path_data(v) for v in dict.fromkeys(("aligned", *cfg.variants))}
        data["endpoint"] = data["aligned"]          # λ = 0: the field term is not evaluated
        for variant, lam in runs(cfg):
            for seed in cfg.seeds:
                student = task.make_student(seed)
                result = fit(student, objective_for(task, lam), data[variant], seed=seed, steps=cfg.steps,
                             batch_size=cfg.batch_size, lr=cfg.lr, grad_clip=cfg.grad_clip, progress=cfg.progress,
                             run_dir=None, device=cfg.device)
                metrics, rel = evaluate(student, task)
                key = {"task": name, "variant": variant, "lam": lam, "seed": seed}
                rows.append({**key, **metrics, "final_loss": result.final_loss, "train_seconds": result.wall_time,
                             "n_layers": task.n_layers})
                rel_rows += [{**key, **r} for r in rel]
    write_csv(out / "reliability.csv", rel_rows)
    write_json(out / "results.json", run_metadata(cfg, cfg.seeds, experiment=NAME, task_info=info,
                                                  wall_seconds=time.perf_counter() - t_start))
    write_csv(out / "results.csv", rows, RESULT_COLUMNS)  # last: its presence means the run completed
    return rows


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
PANELS = [("seen", "seen inputs"), ("unseen_path", "unseen paths"), ("unseen_grid", "unseen depth grid"),
          ("shifted", "shifted inputs"), ("noisy", "noisy inputs"), ("ece", "ECE (15 bins)")]
VARIANT_STYLE = {"aligned": (PALETTE[0], "o", "aligned"), "over": (PALETTE[3], "s", "over-constrained")}


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
                ax.set_ylabel(f"{task}\n{'rel. endpoint error' if reg else 'accuracy'}")
            elif key == "ece":
                ax.set_ylabel("ECE")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=2, frameon=False, bbox_to_anchor=(0.5, 1.0))
    fig.suptitle("Multi-path tasks: field weight λ, aligned vs over-constrained (mean ± 95% CI over seeds; "
                 "dotted: endpoint-only, λ=0)", y=1.03, fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    paths = save_figure(fig, out / "multipath")
    paths += _plot_reliability(out, rows, rel_rows)
    return paths


def _plot_reliability(out: Path, rows: list[dict[str, Any]], rel_rows: list[dict[str, Any]]) -> list[Path]:
    """Reliability diagrams (seen inputs, pooled over seeds; marker area ∝ √(share of inputs in the bin)):
    endpoint-only, the best aligned λ (by seen accuracy), the largest over-constrained λ."""
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(r["task"] for r in rel_rows))
    if not tasks:
        return []
    fig, axes = plt.subplots(1, len(tasks), figsize=(2.3 * len(tasks) + 0.3, 2.4), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        acc = aggregate([r for r in rows if r["task"] == task], "seen")
        aligned = {lam: m for (t, v, lam), (m, _, _) in acc.items() if v == "aligned"}
        over = [lam for (t, v, lam) in acc if v == "over"]
        picks = [("endpoint", 0.0, "endpoint-only (λ=0)", PALETTE[7])]
        if aligned:
            best = max(aligned, key=aligned.get)
            picks.append(("aligned", best, f"aligned, λ={best:g}", PALETTE[0]))
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

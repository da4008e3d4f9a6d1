"""Continual learning: does preserving the propagation field help replay? (paper A, "Continual learning").

Class-incremental split benchmarks (tasks of disjoint classes arrive one after another; one head over all
classes) and domain-incremental ones (``perm_mnist``, ``rot_mnist``: every task holds all 10 digits under its own
fixed pixel permutation or rotation; one 10-way head). We first reproduce the DER paper's protocols (Buzzega et al.,
NeurIPS 2020): Seq-MNIST (MLP 784-100-100-10, one epoch per task, batch 10, SGD, reservoir buffer of 200 or 500),
P-MNIST / R-MNIST (the same MLP, 20 tasks, one epoch, batch 128) and Seq-CIFAR-10 (ResNet-18, 50 epochs, batch 32,
random crop + flip), for

  fine-tuning (lower bound), joint training (upper bound), ER, DER and DER++,

so the new result stands on a baseline known to be right, and then add **field preservation** to ER and DER++:
the buffer also stores each sample's hidden states at the backbone's stages and Jacobian sketches (JVPs along
fixed random probes), and their drift is penalised with weight ``γ`` (:mod:`testbed.continual.methods.
field_preservation`). Every run records both accuracy matrices (class-IL and task-IL), average accuracy, backward
transfer, forward transfer (against the initial network), forgetting and the trajectory / Jacobian retention of
the field on past tasks' test data. On domain-incremental benchmarks the class-IL columns hold the domain-IL
accuracy (argmax over the one 10-way head) and the task-IL columns are NaN.

Hyperparameters left at ``None`` (``lr``, ``alpha``, ``beta``, ``minibatch_size``, ``batch_size``, ``epochs``,
``backbone``) take the published per-benchmark, per-method, per-buffer values (:data:`PAPER_HPARAMS`,
:data:`PROTOCOL`); field-preservation variants use their host method's values.

**The preservation weight γ is chosen on validation data.** ``val_fraction`` of every class's training samples
is held out (:func:`testbed.continual.data.hold_out_validation`; every method, baselines included, trains on the
rest). Each FP variant runs at every ``γ ∈ gammas``; :func:`derive` keeps, per benchmark × method × buffer, the
``γ`` with the highest seed-mean final class-IL accuracy on the validation split (:mod:`testbed.selection`,
ties to the smaller ``γ``) and reports every test metric at that ``γ`` only, with paired differences FP − host
over shared seeds.

Writes ``results.csv`` (one row per benchmark × method × buffer × γ × seed), ``selection.csv`` / ``selection.json``
(validation accuracy of every γ, the choice), ``selected.csv`` (the rows at the chosen γ), ``paired.csv``,
``summary.csv`` (mean, std and 95% CI over seeds at the chosen γ, beside the DER paper's numbers, :data:`PAPER`),
``accuracy_matrices.csv`` (tidy; ``after_task = 0`` holds the initial network's accuracies ``b_j``, from which
``fwt`` is computed), ``results.json`` and the figure ``continual.png/.pdf``.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from testbed.config import (
    ConfigError,
    canonical_choices,
    check_choice,
    check_nonneg,
    check_nonneg_int,
    check_positive,
    check_positive_int,
    check_unique,
)
from testbed.continual import BENCHMARKS, LearnerConfig, build_learner, load_benchmark, method_class
from testbed.continual.backbones import BACKBONES, build_backbone
from testbed.continual.base import ReplayLearner
from testbed.continual.data import Benchmark, hold_out_validation, subsample_per_class
from testbed.experiments.continual_paired import plot_paired, verdict, verdict_table
from testbed.experiments.protocol import ExperimentConfig, flag, seeds_field
from testbed.plotting import PALETTE, save_figure, use_style
from testbed.report import format_paired, is_finite_number
from testbed.results import fresh_output_dir, is_true, read_csv, run_metadata, write_csv, write_json
from testbed.selection import SelectionRule, rows_at_choice, select
from testbed.stats import paired
from testbed.stats import summarize as summarize_values

NAME = "continual"
#: natural keys of a row besides its seed: rows sharing them are repeats over seeds
GROUP_KEYS = ["benchmark", "method", "buffer_size", "gamma"]
#: config fields that only partition the rows (a sweep over them still draws this study's figure)
PARTITION_FIELDS = ("benchmarks", "methods", "buffer_sizes", "gammas")
DERIVED_FILES = ("selection.csv", "selected.csv", "paired.csv", "selection.json", "summary.csv")
#: γ of every FP variant is chosen by this rule on the validation split
SELECTION = SelectionRule("gamma", "val_avg_acc_class_il", "max")
ALL_METHODS = ("finetune", "joint", "er", "der", "derpp", "er_fp", "derpp_fp")
RESULT_COLUMNS = [
    "benchmark", "method", "buffer_size", "seed", "avg_acc_class_il", "avg_acc_task_il", "bwt", "forgetting", "fwt",
    "trajectory_retention", "jacobian_retention", "jacobian_retention_fresh", "jacobian_retention_exact",
    "bwt_task_il", "forgetting_task_il", "fwt_task_il",
    "val_avg_acc_class_il", "lr", "alpha", "beta",
    "gamma", "jvp_weight", "minibatch_size", "batch_size", "epochs", "backbone", "augment", "train_seconds",
    "final_loss",
]
SUMMARY_COLUMNS = ["benchmark", "method", "buffer_size", "seed", "avg_acc_class_il", "avg_acc_task_il", "bwt",
                   "forgetting", "trajectory_retention", "jacobian_retention", "jacobian_retention_fresh",
                   "jacobian_retention_exact"]
CAPTIONS = {
    "continual": (
        "Top row: class-IL accuracy matrices (mean over seeds; one per method, at the largest buffer): row i = after "
        "training task i, column j = evaluated on task j, cells in % accuracy. Bottom left: final average accuracy "
        "per method and buffer (plain: class-IL, hatched: task-IL; ×: the DER paper's value; on domain-incremental "
        "benchmarks the plain bar is the domain-IL accuracy and there is no task-IL bar). Bottom "
        "middle: class-IL backward transfer (0 = no forgetting). Bottom right: field retention on past tasks' test "
        "inputs, 1 − relative drift of the stage states, of the JVP sketches along the training probes (those the FP "
        "penalty uses), along fresh probes no method trains on, and of the exact Jacobians of 8 inputs per task "
        "(Frobenius). FP = field "
        "preservation, at the weight γ chosen on the validation split (selection.csv). Error bars: 95% t-interval "
        "of the mean over seeds."),
    "continual_paired": (
        "Field preservation minus its host method (ER or DER++), paired over shared seeds, at the γ chosen on the "
        "validation split: mean difference and 95% t-interval per benchmark, FP variant and buffer; filled markers: "
        "the interval excludes 0. Panels: final average accuracy, backward and forward transfer (percentage "
        "points), and the four retentions on past tasks' test inputs (states; JVP sketches along the probes the FP "
        "penalty trains on; along fresh probes; exact Jacobians, Frobenius)."),
}
OUTPUT_FILES = ("results.csv", "accuracy_matrices.csv", "results.json", "continual.png", "continual.pdf",
                "results.partial.csv", *DERIVED_FILES)

# Per-benchmark protocol: minibatch size of the stream, passes per task, backbone, augmentation (the default of the
# `augment` switch), whether the inputs are images (C, H, W) — what `augment` and `channels_last` need — and how
# many test inputs per task get the exact-Jacobian retention (the default of `n_exact`; 0 on the ResNets, whose
# full Jacobians of every task would not fit in memory).
# seq_cifar10 / perm_mnist / rot_mnist: the DER paper's settings (mammoth datasets/seq_cifar10.py, perm_mnist.py,
# rot_mnist.py: batch 32 × 50 epochs with RandomCrop(32, padding=4) + RandomHorizontalFlip and backbone
# ResNet18.resnet18 (nf = 64); batch 128 × 1 epoch with the MNIST MLP).
_MLP = {"backbone": "mlp", "augment": False, "images": False, "n_exact": 8}
_RESNET = {"augment": True, "images": True, "n_exact": 0}
PROTOCOL: dict[str, dict[str, Any]] = {
    "split_mnist": {"batch_size": 10, "epochs": 1, **_MLP},
    "perm_mnist": {"batch_size": 128, "epochs": 1, **_MLP},
    "rot_mnist": {"batch_size": 128, "epochs": 1, **_MLP},
    "seq_cifar10": {"batch_size": 32, "epochs": 50, "backbone": "resnet18_full", **_RESNET},
    "split_cifar100": {"batch_size": 32, "epochs": 50, "backbone": "resnet18", **_RESNET},
    "split_digits": {"batch_size": 10, "epochs": 4, **_MLP},
}

# (benchmark, method, buffer) -> hyperparameters; buffer -1 = any. Seq-MNIST, Seq-CIFAR-10, P-MNIST, R-MNIST: the DER
# paper's grid-searched values (DER paper (Buzzega et al., NeurIPS 2020), Appendix best args = mammoth
# utils/best_args.py, keys 'seq-mnist', 'seq-cifar10', 'perm-mnist', 'rot-mnist'; 'sgd' there is fine-tuning here),
# checked against aimagelab/mammoth@0d727a7. Joint training has no best_args entry: it takes fine-tuning's lr
# (unverified choice). CIFAR-100: SGD lr 0.03, α, β from the DER-family defaults for Seq-CIFAR (α 0.1-0.3, β 0.5).
# Digits: our own small-data choice (not tuned per method).
PAPER_HPARAMS: dict[tuple[str, str, int], dict[str, float]] = {
    ("split_mnist", "finetune", -1): {"lr": 0.03},
    ("split_mnist", "joint", -1): {"lr": 0.03},
    ("split_mnist", "er", 200): {"lr": 0.01, "minibatch_size": 10},
    ("split_mnist", "er", 500): {"lr": 0.1, "minibatch_size": 10},
    ("split_mnist", "der", 200): {"lr": 0.03, "minibatch_size": 10, "alpha": 0.2},
    ("split_mnist", "der", 500): {"lr": 0.03, "minibatch_size": 128, "alpha": 1.0},
    ("split_mnist", "derpp", 200): {"lr": 0.03, "minibatch_size": 128, "alpha": 0.2, "beta": 1.0},
    ("split_mnist", "derpp", 500): {"lr": 0.03, "minibatch_size": 10, "alpha": 1.0, "beta": 0.5},
    ("seq_cifar10", "finetune", -1): {"lr": 0.1},
    ("seq_cifar10", "joint", -1): {"lr": 0.1},
    ("seq_cifar10", "er", -1): {"lr": 0.1, "minibatch_size": 32},
    ("seq_cifar10", "der", -1): {"lr": 0.03, "minibatch_size": 32, "alpha": 0.3},
    ("seq_cifar10", "derpp", 200): {"lr": 0.03, "minibatch_size": 32, "alpha": 0.1, "beta": 0.5},
    ("seq_cifar10", "derpp", 500): {"lr": 0.03, "minibatch_size": 32, "alpha": 0.2, "beta": 0.5},
    ("perm_mnist", "finetune", -1): {"lr": 0.2},
    ("perm_mnist", "joint", -1): {"lr": 0.2},
    ("perm_mnist", "er", -1): {"lr": 0.2, "minibatch_size": 128},
    ("perm_mnist", "der", -1): {"lr": 0.2, "minibatch_size": 128, "alpha": 1.0},
    ("perm_mnist", "derpp", 200): {"lr": 0.1, "minibatch_size": 128, "alpha": 1.0, "beta": 1.0},
    ("perm_mnist", "derpp", 500): {"lr": 0.2, "minibatch_size": 128, "alpha": 1.0, "beta": 0.5},
    ("rot_mnist", "finetune", -1): {"lr": 0.2},
    ("rot_mnist", "joint", -1): {"lr": 0.2},
    ("rot_mnist", "er", -1): {"lr": 0.2, "minibatch_size": 128},
    ("rot_mnist", "der", 200): {"lr": 0.2, "minibatch_size": 128, "alpha": 1.0},
    ("rot_mnist", "der", 500): {"lr": 0.2, "minibatch_size": 128, "alpha": 0.5},
    ("rot_mnist", "derpp", 200): {"lr": 0.1, "minibatch_size": 128, "alpha": 1.0, "beta": 0.5},
    ("rot_mnist", "derpp", 500): {"lr": 0.2, "minibatch_size": 128, "alpha": 0.5, "beta": 1.0},
    ("split_cifar100", "finetune", -1): {"lr": 0.03},
    ("split_cifar100", "joint", -1): {"lr": 0.03},
    ("split_cifar100", "er", -1): {"lr": 0.1, "minibatch_size": 32},
    ("split_cifar100", "der", -1): {"lr": 0.03, "minibatch_size": 32, "alpha": 0.3},
    ("split_cifar100", "derpp", -1): {"lr": 0.03, "minibatch_size": 32, "alpha": 0.1, "beta": 0.5},
    ("split_digits", "finetune", -1): {"lr": 0.1},
    ("split_digits", "joint", -1): {"lr": 0.1},
    ("split_digits", "er", -1): {"lr": 0.1, "minibatch_size": 10},
    ("split_digits", "der", -1): {"lr": 0.1, "minibatch_size": 32, "alpha": 0.5},
    ("split_digits", "derpp", -1): {"lr": 0.1, "minibatch_size": 32, "alpha": 0.5, "beta": 0.5},
}
FALLBACK_HPARAMS = {"lr": 0.03, "minibatch_size": 10, "alpha": 0.2, "beta": 1.0}
HOST_METHOD = {"er_fp": "er", "derpp_fp": "derpp"}

# DER paper, Table 2, Seq-MNIST (mean ± std over 10 runs), in %: (method, buffer) -> (class-IL, ±, task-IL, ±).
# Transcribed from the paper (could not be re-fetched offline when this was written: check before citing).
PAPER_SEQ_MNIST: dict[tuple[str, int], tuple[float, float, float, float]] = {
    ("joint", 0): (95.57, 0.24, 99.51, 0.07),
    ("finetune", 0): (19.60, 0.04, 94.94, 2.18),
    ("er", 200): (80.43, 1.89, 97.86, 0.35),
    ("er", 500): (86.12, 1.89, 99.04, 0.18),
    ("der", 200): (84.55, 1.64, 98.80, 0.15),
    ("der", 500): (90.54, 1.12, 98.84, 0.13),
    ("derpp", 200): (85.61, 1.40, 98.76, 0.28),
    ("derpp", 500): (91.00, 1.49, 98.94, 0.27),
}
NAN = float("nan")
# DER paper, Table 2, Seq-CIFAR-10 (class-IL, ±, task-IL, ±; mean ± std over 10 runs), in %. Recalled, not
# re-fetched offline (unverified): check against the paper before citing.
PAPER_SEQ_CIFAR10: dict[tuple[str, int], tuple[float, float, float, float]] = {
    ("joint", 0): (92.20, 0.15, 98.31, 0.12),
    ("finetune", 0): (19.62, 0.05, 61.02, 3.33),
    ("er", 200): (44.79, 1.86, 91.19, 0.94),
    ("er", 500): (57.74, 0.27, 93.61, 0.27),
    ("der", 200): (61.93, 1.79, 91.40, 0.92),
    ("der", 500): (70.51, 1.67, 93.40, 0.39),
    ("derpp", 200): (64.88, 1.17, 91.92, 0.60),
    ("derpp", 500): (72.70, 1.36, 93.88, 0.50),
}
# DER paper, Table 2, domain-IL accuracy (%) on P-MNIST and R-MNIST: means recalled, not re-fetched offline
# (unverified: check against the paper before citing); the stds are not transcribed, so NaN. No task-IL setting: NaN.
PAPER_DOMAIN_IL: dict[str, dict[tuple[str, int], float]] = {
    "perm_mnist": {("er", 200): 72.37, ("er", 500): 80.60, ("der", 200): 81.74, ("der", 500): 87.29,
                   ("derpp", 200): 83.58, ("derpp", 500): 88.21},
    "rot_mnist": {("er", 200): 85.01, ("er", 500): 88.91, ("der", 200): 90.04, ("der", 500): 92.24,
                  ("derpp", 200): 90.43, ("derpp", 500): 92.77},
}
#: benchmark -> (method, buffer) -> (class-IL (domain-IL), ±, task-IL, ±) in %, NaN where the paper gives none
PAPER: dict[str, dict[tuple[str, int], tuple[float, float, float, float]]] = {
    "split_mnist": PAPER_SEQ_MNIST,
    "seq_cifar10": PAPER_SEQ_CIFAR10,
    **{b: {k: (v, NAN, NAN, NAN) for k, v in refs.items()} for b, refs in PAPER_DOMAIN_IL.items()},
}
#: the DER paper's name of each benchmark it reports
PAPER_NAMES = {"split_mnist": "Seq-MNIST", "seq_cifar10": "Seq-CIFAR-10", "perm_mnist": "P-MNIST",
               "rot_mnist": "R-MNIST"}


def paper_reference(benchmark: str, method: str, buffer_size: int) -> tuple[float, float, float, float] | None:
    """The DER paper's ``(class-IL, ±, task-IL, ±)`` for this cell (FP variants have none), or None."""
    return PAPER.get(benchmark, {}).get((method, int(buffer_size)))


@dataclasses.dataclass
class ContinualConfig(ExperimentConfig):
    """Settings of the continual-learning study (validated on construction). ``None`` = published protocol."""

    UNIQUE_FIELDS: ClassVar[tuple[str, ...]] = ("benchmarks", "methods", "buffer_sizes")

    benchmarks: tuple[str, ...] = flag(("split_mnist",), name="--benchmark", help="benchmark(s)")
    methods: tuple[str, ...] = ALL_METHODS
    buffer_sizes: tuple[int, ...] = (200, 500)
    seeds: tuple[int, ...] = seeds_field((0, 1, 2, 3, 4))
    backbone: str | None = None
    lr: float | None = None
    alpha: float | None = None
    beta: float | None = None
    minibatch_size: int | None = None
    batch_size: int | None = None
    epochs: int | None = None
    gammas: tuple[float, ...] = (0.3, 1.0, 3.0)   # FP weight candidates, chosen on validation data
    val_fraction: float = 0.1                      # of every class's training samples, held out for choosing γ
    jvp_weight: float = 1.0
    field_refresh: bool = True
    n_probes: int = 4
    n_retention: int = 256
    n_fresh_probes: int = 16                       # probe directions for retention that no method trains on
    n_exact: int | None = None                     # inputs per task with exact-Jacobian retention; None = protocol
    max_train_per_class: int = 0
    limit: int = 0                                 # keep the first `limit` samples of each split (0 = all)
    augment: bool | None = None                    # random crop + flip; None = the benchmark's protocol
    channels_last: bool = False                    # NHWC weights and image batches
    amp: bool = False                              # autocast: bfloat16 on CPU, float16 + GradScaler on CUDA
    data_dir: str | None = flag(None, name="--data-dir", help="local data folder")

    def validate(self) -> None:
        self.benchmarks = tuple(self.benchmarks)
        self.methods = tuple(self.methods)
        self.buffer_sizes = tuple(int(b) for b in self.buffer_sizes)
        self.seeds = tuple(int(s) for s in self.seeds)
        if not self.benchmarks:
            raise ConfigError("benchmarks must name at least one benchmark")
        self.benchmarks = canonical_choices("benchmarks", self.benchmarks, BENCHMARKS)
        if not self.methods:
            raise ConfigError("methods must name at least one method")
        for m in self.methods:
            method_class(m)
        if any(issubclass(method_class(m), ReplayLearner) for m in self.methods) and not self.buffer_sizes:
            raise ConfigError("buffer_sizes must hold at least one size for replay methods")
        for b in self.buffer_sizes:
            check_positive_int("buffer_sizes", b)
        if self.backbone is not None:
            check_choice("backbone", self.backbone, BACKBONES)
        if self.lr is not None:
            check_positive("lr", self.lr)
        for name in ("alpha", "beta"):
            if getattr(self, name) is not None:
                check_nonneg(name, getattr(self, name))
        for name in ("minibatch_size", "batch_size", "epochs"):
            if getattr(self, name) is not None:
                check_positive_int(name, getattr(self, name))
        self.gammas = tuple(float(g) for g in self.gammas)
        if not self.gammas:
            raise ConfigError("gammas must hold at least one preservation weight")
        for g in self.gammas:
            check_nonneg("gammas", g)
        check_unique("gammas", self.gammas)
        if not 0.0 <= self.val_fraction < 0.5:
            raise ConfigError(f"val_fraction must lie in [0, 0.5), got {self.val_fraction}")
        if self.val_fraction == 0.0 and len(self.gammas) > 1:
            raise ConfigError(f"gammas={self.gammas} needs a validation split to choose from: set val_fraction > 0 "
                              "(or give one γ)")
        check_nonneg("jvp_weight", self.jvp_weight)
        check_positive_int("n_probes", self.n_probes)
        check_positive_int("n_retention", self.n_retention)
        check_positive_int("n_fresh_probes", self.n_fresh_probes)
        if self.n_exact is not None:
            check_nonneg_int("n_exact", self.n_exact)
        check_nonneg_int("max_train_per_class", self.max_train_per_class)
        check_nonneg_int("limit", self.limit)
        for name in ("augment", "channels_last", "amp", "field_refresh"):
            value = getattr(self, name)
            if not (isinstance(value, bool) or (name == "augment" and value is None)):
                raise ConfigError(f"{name} must be true or false, got {value!r}")
        for name in ("augment", "channels_last"):
            flat = [b for b in self.benchmarks if not PROTOCOL[b]["images"]]
            if getattr(self, name) and flat:
                raise ConfigError(f"{name}=true needs image benchmarks; {', '.join(flat)} "
                                  f"{'has' if len(flat) == 1 else 'have'} flat inputs")


def quick_config(**overrides: Any) -> ContinualConfig:
    """Split digits, fine-tuning / ER / DER++ / DER++ + FP at two γ, buffer 200, one seed: under 2 minutes."""
    base: dict[str, Any] = dict(benchmarks=("split_digits",), methods=("finetune", "er", "derpp", "derpp_fp"),
                                buffer_sizes=(200,), seeds=(0,), gammas=(0.3, 1.0))
    base.update(overrides)
    return ContinualConfig(**base)


# ----------------------------------------------------------------------------------------------- run
def hyperparameters(cfg: ContinualConfig, benchmark: str, method: str, buffer_size: int) -> dict[str, Any]:
    """The learner settings of one run: config overrides, else the published table, else the fallback."""
    host = HOST_METHOD.get(method, method)
    table = PAPER_HPARAMS.get((benchmark, host, buffer_size)) or PAPER_HPARAMS.get((benchmark, host, -1)) or {}
    hp = {**FALLBACK_HPARAMS, **table}
    for key in ("lr", "alpha", "beta", "minibatch_size"):
        if getattr(cfg, key) is not None:
            hp[key] = getattr(cfg, key)
    proto = PROTOCOL[benchmark]
    return {**hp, "batch_size": cfg.batch_size or proto["batch_size"], "epochs": cfg.epochs or proto["epochs"],
            "backbone": cfg.backbone or proto["backbone"],
            "augment": proto["augment"] if cfg.augment is None else cfg.augment,
            "n_exact": proto["n_exact"] if cfg.n_exact is None else cfg.n_exact}


def run_one(bench: Benchmark, method: str, buffer_size: int, seed: int, cfg: ContinualConfig,
            gamma: float = 1.0) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Train one method on one benchmark with one seed (FP variants with weight ``gamma``); returns its results row
    and tidy accuracy rows."""
    hp = hyperparameters(cfg, bench.name, method, buffer_size)
    torch.manual_seed(seed)
    net = build_backbone(hp["backbone"], bench.input_shape, bench.n_classes)
    lcfg = LearnerConfig(lr=hp["lr"], batch_size=hp["batch_size"], minibatch_size=int(hp["minibatch_size"]),
                         epochs=hp["epochs"], buffer_size=buffer_size, alpha=hp["alpha"], beta=hp["beta"],
                         gamma=gamma, jvp_weight=cfg.jvp_weight, field_refresh=cfg.field_refresh,
                         n_probes=cfg.n_probes,
                         n_retention=cfg.n_retention, n_fresh_probes=cfg.n_fresh_probes, n_exact=hp["n_exact"],
                         augment=hp["augment"], channels_last=cfg.channels_last,
                         amp=cfg.amp, seed=seed, device=cfg.device, progress=cfg.progress)
    result = build_learner(method, net, bench, lcfg).learn(bench)
    is_fp = method in HOST_METHOD
    uses_der = HOST_METHOD.get(method, method) in ("der", "derpp")
    row = {"benchmark": bench.name, "method": method, "buffer_size": buffer_size, "seed": seed, **result.summary(),
           "lr": hp["lr"], "alpha": hp["alpha"] if uses_der else "", "beta": hp["beta"] if "derpp" in method else "",
           "gamma": gamma if is_fp else "", "jvp_weight": cfg.jvp_weight if is_fp else "",
           "minibatch_size": hp["minibatch_size"] if buffer_size else "", "batch_size": hp["batch_size"],
           "epochs": hp["epochs"], "backbone": hp["backbone"], "augment": hp["augment"]}
    tidy = []
    for setting, mat, init in (("class_il", result.acc_class_il, result.init_class_il),
                               ("task_il", result.acc_task_il, result.init_task_il)):
        rows_by_stage = [init, *mat] if init is not None else list(mat)   # after_task 0: the initial network
        first = 0 if init is not None else 1
        for i, accs in enumerate(rows_by_stage, start=first):
            for j, acc in enumerate(accs):
                tidy.append({"benchmark": bench.name, "method": method, "buffer_size": buffer_size,
                             "gamma": gamma if is_fp else "", "seed": seed, "setting": setting,
                             "after_task": i, "task": j + 1, "accuracy": float(acc)})
    return row, tidy


def _prepare(cfg: ContinualConfig, name: str) -> Benchmark:
    bench = load_benchmark(name, cfg.data_dir, cfg.limit or None)
    if cfg.max_train_per_class:
        bench = dataclasses.replace(bench, train=subsample_per_class(bench.train, cfg.max_train_per_class, seed=0))
    return hold_out_validation(bench, cfg.val_fraction) if cfg.val_fraction > 0 else bench


def run(cfg: ContinualConfig, out: str | Path) -> list[dict[str, Any]]:
    """Every benchmark × method × buffer (replay methods; one run with buffer 0 otherwise) × seed; write tables,
    metadata and the figure to ``out`` (``results.csv`` last, so its presence means the run completed)."""
    out = fresh_output_dir(out, OUTPUT_FILES)
    rows: list[dict[str, Any]] = []
    tidy: list[dict[str, Any]] = []
    t_start = time.perf_counter()
    for name in cfg.benchmarks:
        bench = _prepare(cfg, name)
        for method in cfg.methods:
            buffers = cfg.buffer_sizes if issubclass(method_class(method), ReplayLearner) else (0,)
            gammas = cfg.gammas if method in HOST_METHOD else (1.0,)
            for buffer_size in buffers:
                for gamma in gammas:
                    for seed in cfg.seeds:
                        row, acc = run_one(bench, method, buffer_size, seed, cfg, gamma)
                        rows.append(row)
                        tidy += acc
                        write_csv(out / "results.partial.csv", rows, RESULT_COLUMNS)
    write_csv(out / "accuracy_matrices.csv", tidy)
    write_json(out / "results.json", run_metadata(cfg, cfg.seeds, experiment=NAME, selection=SELECTION.as_dict(),
                                                  wall_seconds=time.perf_counter() - t_start,
                                                  hyperparameters={f"{b}/{m}/{s}": hyperparameters(cfg, b, m, s)
                                                                   for b in cfg.benchmarks for m in cfg.methods
                                                                   for s in (0, *cfg.buffer_sizes)}))
    write_csv(out / "results.csv", rows, RESULT_COLUMNS)
    (out / "results.partial.csv").unlink(missing_ok=True)
    derive(out)
    return rows


# ----------------------------------------------------------------------------------------------- selection
#: metrics compared between an FP variant (at its chosen γ) and its host method, paired over seeds
PAIRED_METRICS = ("avg_acc_class_il", "avg_acc_task_il", "bwt", "forgetting", "fwt", "trajectory_retention",
                  "jacobian_retention", "jacobian_retention_fresh", "jacobian_retention_exact")


def derive(out: str | Path) -> list[Path]:
    """Choose γ per FP variant on validation data (:data:`SELECTION`) and read the test metrics there.

    From ``out/results.csv`` writes ``selection.csv`` (every γ's validation class-IL accuracy, mean and 95% CI over
    seeds, and the choice), ``selection.json``, ``selected.csv`` (the non-FP rows and the FP rows at the chosen
    γ), ``summary.csv`` (of ``selected.csv``) and ``paired.csv`` (FP − host over shared seeds: mean, 95% CI, n,
    paired t and exact sign-flip p). With one γ and no validation split, that γ is kept (fixed a priori)."""
    out = Path(out)
    rows = read_csv(out / "results.csv")
    keys = ("benchmark", "method", "buffer_size")
    fp = [r for r in rows if r["method"] in HOST_METHOD]
    fixed = [r for r in rows if r["method"] not in HOST_METHOD]
    sel_rows: list[dict[str, Any]] = []
    chosen: dict[str, float] = {}
    picked: list[dict[str, Any]] = []
    if fp:
        single = len({float(r["gamma"]) for r in fp}) == 1
        vals = [r for r in fp if is_finite_number(r.get("val_avg_acc_class_il"))]
        if single and not vals:
            picked = fp
            chosen = {"/".join(str(r[k]) for k in keys): float(r["gamma"]) for r in fp}
        else:
            choices = select(fp, SELECTION, keys)
            for c in choices.values():
                sel_rows += c.as_rows(keys, "gamma")
                chosen["/".join(map(str, c.group))] = c.value
            picked = rows_at_choice(fp, choices, SELECTION, keys)
    selected = [*fixed, *picked]
    write_csv(out / "selection.csv", sel_rows)
    write_csv(out / "selected.csv", selected, RESULT_COLUMNS)
    write_csv(out / "summary.csv", summarize(selected))
    write_csv(out / "paired.csv", paired_rows(selected))
    return [out / "selection.csv", out / "selected.csv", out / "summary.csv", out / "paired.csv",
            write_json(out / "selection.json", {"rule": SELECTION.describe(), "selected_gamma": chosen})]


def paired_rows(selected: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """FP variant − host method over the seeds both ran, per benchmark, buffer and metric."""
    by: dict[tuple[str, str, int], dict[int, dict[str, Any]]] = {}
    for r in selected:
        by.setdefault((r["benchmark"], r["method"], int(r["buffer_size"])), {})[int(r["seed"])] = r
    out = []
    for (bench, method, buf), fp_rows in by.items():
        host = by.get((bench, HOST_METHOD.get(method, ""), buf))
        if method not in HOST_METHOD or not host:
            continue
        seeds = sorted(set(fp_rows) & set(host))
        for m in PAIRED_METRICS:
            pc = paired([float(fp_rows[s][m]) for s in seeds], [float(host[s][m]) for s in seeds])
            out.append({"benchmark": bench, "method": method, "host": HOST_METHOD[method], "buffer_size": buf,
                        "gamma": float(fp_rows[seeds[0]]["gamma"]), "metric": m, "mean_diff": pc.diff.mean,
                        "lo": pc.diff.lo, "hi": pc.diff.hi, "n": pc.diff.n, "p_t": pc.p_t,
                        "p_sign_flip": pc.p_sign_flip})
            out[-1]["verdict"] = verdict(out[-1])
    return out



# ----------------------------------------------------------------------------------------------- summary
SUMMARY_METRICS = ("avg_acc_class_il", "avg_acc_task_il", "bwt", "forgetting", "fwt", "trajectory_retention",
                   "jacobian_retention", "jacobian_retention_fresh", "jacobian_retention_exact")


def _groups(rows: list[dict[str, Any]]) -> dict[tuple[str, str, int], list[dict[str, Any]]]:
    groups: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["benchmark"], r["method"], int(r["buffer_size"])), []).append(r)
    return groups


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean, sample std (``ddof = 1``) and 95% t-interval half-width over seeds (:mod:`testbed.stats`) of every
    metric per benchmark × method × buffer (a metric missing from older tables counts as NaN), with the DER
    paper's numbers (:data:`PAPER`) beside ours where it reports them ("" where it does not)."""
    out = []
    for (bench, method, buf), rs in _groups(rows).items():
        rec: dict[str, Any] = {"benchmark": bench, "method": method, "buffer_size": buf,
                               "gamma": rs[0].get("gamma", ""), "n_seeds": len(rs)}
        for m in SUMMARY_METRICS:
            s = summarize_values([_number(r.get(m)) for r in rs])
            rec[f"{m}_mean"], rec[f"{m}_std"], rec[f"{m}_ci95"] = s.mean, s.std, s.half_width
        paper = paper_reference(bench, method, buf) or (NAN,) * 4
        for col, value in zip(("paper_class_il", "paper_class_il_std", "paper_task_il", "paper_task_il_std"), paper,
                              strict=True):
            rec[col] = value if is_finite_number(value) else ""
        out.append(rec)
    return out


def _number(value: Any) -> float:
    """``value`` as a float; NaN for a missing or empty cell."""
    return float(value) if value not in (None, "") else NAN


# ----------------------------------------------------------------------------------------------- figure
METHOD_LABELS = {"finetune": "fine-tune", "joint": "joint", "er": "ER", "der": "DER", "derpp": "DER++",
                 "er_fp": "ER+FP", "derpp_fp": "DER+++FP"}


def _label(method: str, buf: int) -> str:
    return METHOD_LABELS.get(method, method) + (f"\n(buf {buf})" if buf else "")


def _color(method: str) -> str:
    order = list(METHOD_LABELS)
    return PALETTE[order.index(method) % len(PALETTE)] if method in order else PALETTE[-1]


def _legend_handles(names: tuple[str, ...], paper: str | None = None,
                    hatches: tuple[str, ...] = ("", "///")) -> list:
    """Grey bar patches labelled ``names`` with ``hatches`` (plain, then hatched), and the paper's marker."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles = [Patch(facecolor="0.55", edgecolor="white", hatch=hatch, label=name)
               for name, hatch in zip(names, hatches, strict=False)]
    if paper:
        handles.append(Line2D([], [], color="black", ls="none", marker="x", ms=3.5, label=f"DER paper ({paper})"))
    return handles


#: the retention bars of the figure: (column, hatch, legend label)
RETENTION_BARS = (("trajectory_retention", "", "states"), ("jacobian_retention", "///", "JVP, training probes"),
                  ("jacobian_retention_fresh", "...", "JVP, fresh probes"),
                  ("jacobian_retention_exact", "xxx", "exact Jacobian"))


def plot(out: str | Path) -> list[Path]:
    """One figure per benchmark (the first is ``continual.png/.pdf``, others ``continual_<benchmark>``): class-IL
    accuracy matrices (seed mean), average accuracy (class-IL, task-IL) and BWT per method, field retention; and,
    when FP ran beside its host over several seeds, the forest plot of the paired differences
    (``continual_paired``, :mod:`~testbed.experiments.continual_paired`)."""
    out = Path(out)
    has_selection = (out / "selected.csv").exists()
    rows = read_csv(out / ("selected.csv" if has_selection else "results.csv"))
    keep = {(r["benchmark"], r["method"], int(r["buffer_size"]), str(r.get("gamma", "")), int(r["seed"])) for r in rows}
    tidy = [t for t in read_csv(out / "accuracy_matrices.csv")
            if not has_selection or (t["benchmark"], t["method"], int(t["buffer_size"]), str(t.get("gamma", "")),
                                     int(t["seed"])) in keep]
    paths: list[Path] = []
    for k, bench in enumerate(dict.fromkeys(r["benchmark"] for r in rows)):
        stem = out / ("continual" if k == 0 else f"continual_{bench}")
        paths += _plot_benchmark([r for r in rows if r["benchmark"] == bench],
                                 [t for t in tidy if t["benchmark"] == bench], bench, stem)
    pairs = read_csv(out / "paired.csv") if (out / "paired.csv").exists() else []
    if any(is_finite_number(p.get("lo")) for p in pairs):
        paths += plot_paired(pairs, out / "continual_paired", METHOD_LABELS)
    return paths


def _plot_benchmark(rows: list[dict[str, Any]], tidy: list[dict[str, Any]], bench: str, stem: Path) -> list[Path]:
    import matplotlib.pyplot as plt

    use_style()
    groups = _groups(rows)
    keys = list(groups)
    # domain-incremental benchmarks have no task-IL numbers: their one-head accuracy is the domain-IL accuracy
    setting = "domain-IL" if not any(is_finite_number(r.get("avg_acc_task_il")) for r in rows) else "class-IL"
    # heat maps: every method at the largest buffer (plus the buffer-free ones)
    buffers = sorted({k[2] for k in keys if k[2] > 0})
    heat_keys = [k for k in keys if k[2] == 0 or (buffers and k[2] == buffers[-1])]
    n_heat = len(heat_keys)
    n_cols = max(n_heat, 3)
    fig = plt.figure(figsize=(max(1.55 * n_cols, 7.0), 5.6), layout="constrained")
    gs = fig.add_gridspec(2, n_cols, height_ratios=[1.0, 1.25])
    n_tasks = max(int(t["task"]) for t in tidy)
    im = None
    for c, key in enumerate(heat_keys):
        ax = fig.add_subplot(gs[0, c])
        mat = np.zeros((n_tasks, n_tasks))
        cnt = np.zeros((n_tasks, n_tasks))
        for t in tidy:
            if (t["method"], int(t["buffer_size"])) == key[1:] and t["setting"] == "class_il" \
                    and int(t["after_task"]) >= 1:
                mat[int(t["after_task"]) - 1, int(t["task"]) - 1] += float(t["accuracy"])
                cnt[int(t["after_task"]) - 1, int(t["task"]) - 1] += 1
        mat = mat / np.maximum(cnt, 1)
        im = ax.imshow(mat, vmin=0, vmax=100, cmap="viridis")
        ax.set_title(_label(key[1], key[2]).replace("\n", " "))
        # every task up to 10 tasks; beyond, tasks 1, 5, 10, … (20 numbered ticks on a small heat map overlap)
        ticks = np.arange(n_tasks) if n_tasks <= 10 else np.array([0, *range(4, n_tasks, 5)])
        ax.set_xticks(ticks, [str(i + 1) for i in ticks])
        ax.set_yticks(ticks, [str(i + 1) for i in ticks])
        ax.set_xlabel("evaluated task")
        if c == 0:
            ax.set_ylabel("after training task")
        if n_tasks <= 5:
            for i in range(n_tasks):
                for j in range(n_tasks):
                    ax.text(j, i, f"{mat[i, j]:.0f}", ha="center", va="center", fontsize=5.5,
                            color="white" if mat[i, j] < 60 else "black")
    if im is not None:
        fig.colorbar(im, ax=fig.axes[:n_heat], shrink=0.8, label=f"{setting} acc. (%)")

    sub = gs[1, :].subgridspec(1, 3, width_ratios=[1.5, 1.0, 1.0])
    labels = [_label(k[1], k[2]).replace("\n", " ") for k in keys]   # one line: rotated two-line labels overlap
    x = np.arange(len(keys))

    def stat(key: tuple[str, str, int], metric: str) -> tuple[float, float]:
        """Mean and 95% CI half-width over seeds (0 for one seed)."""
        s = summarize_values([float(r[metric]) for r in groups[key]])
        return s.mean, s.half_width if s.n > 1 else 0.0

    ax = fig.add_subplot(sub[0, 0])
    w = 0.38
    for off, metric, hatch in ((-w / 2, "avg_acc_class_il", ""), (w / 2, "avg_acc_task_il", "///")):
        ms = [stat(k, metric) for k in keys]
        ax.bar(x + off, [m for m, _ in ms], w, yerr=[s for _, s in ms], color=[_color(k[1]) for k in keys],
               hatch=hatch, edgecolor="white", linewidth=0.3, capsize=1.5)
    if bench in PAPER:
        for i, k in enumerate(keys):
            ref = paper_reference(bench, k[1], k[2])
            if ref:
                ax.plot([i - w / 2, i + w / 2], [ref[0], ref[2]], ls="none", marker="x", ms=3.5, mew=0.9,
                        color="black", zorder=5)
    ax.set_xticks(x, labels, fontsize=5.5, rotation=90)
    ax.set_ylabel("average accuracy (%)")
    ax.set_ylim(0, 119)
    ax.set_yticks(range(0, 101, 20))
    ax.set_title("final average accuracy")
    names = (setting, "task-IL") if setting == "class-IL" else (setting,)   # no task-IL bars on domain-IL
    ax.legend(handles=_legend_handles(names, paper=PAPER_NAMES.get(bench)), frameon=False,
              fontsize=6, loc="upper center", ncols=3)

    ax = fig.add_subplot(sub[0, 1])
    ms = [stat(k, "bwt") for k in keys]
    ax.bar(x, [m for m, _ in ms], 0.7, yerr=[s for _, s in ms], color=[_color(k[1]) for k in keys], capsize=1.5)
    ax.axhline(0, color="0.3", lw=0.6)
    ax.set_xticks(x, labels, fontsize=5.5, rotation=90)
    ax.set_ylabel(f"backward transfer, {setting} (%)")
    ax.set_title("BWT (0 = no forgetting)")

    ax = fig.add_subplot(sub[0, 2])
    shown = [(metric, hatch, name) for metric, hatch, name in RETENTION_BARS
             if any(is_finite_number(r.get(metric)) for r in rows)]
    wr = 0.8 / len(shown)
    for i, (metric, hatch, _) in enumerate(shown):
        ms = [stat(k, metric) for k in keys]
        ax.bar(x + (i - (len(shown) - 1) / 2) * wr, [m for m, _ in ms], wr, yerr=[s for _, s in ms],
               color=[_color(k[1]) for k in keys], hatch=hatch, edgecolor="white", linewidth=0.3, capsize=1.0)
    ax.axhline(1, color="0.3", lw=0.6, ls="--")
    ax.set_ylim(top=1.2)
    ax.set_xticks(x, labels, fontsize=5.5, rotation=90)
    ax.set_ylabel("retention on past tasks (1 − rel. drift)")
    ax.set_title("field retention")
    ax.legend(handles=_legend_handles(tuple(n for *_, n in shown), hatches=tuple(h for _, h, _ in shown)),
              frameon=False, fontsize=5.5, loc="upper left", ncols=2)
    n_seeds = max(len(v) for v in groups.values())
    fig.suptitle(f"Continual learning on {bench}: {setting} accuracy matrices (mean of {n_seeds} seed(s); "
                 "largest buffer),\naverage accuracy, backward transfer and field retention (error bars: 95% CI "
                 "over seeds; FP = field preservation at the γ chosen on validation data)")
    return save_figure(fig, stem)


# ----------------------------------------------------------------------------------------------- report
def _paper_cell(ref: tuple[float, float, float, float] | None) -> str:
    """``class-IL ± std / task-IL ± std`` (each ``± std`` only where known; the class-IL value alone where there is
    no task-IL one), or "—"."""
    if ref is None:
        return "—"

    def one(value: float, std: float) -> str:
        return f"{value:.2f} ± {std:.2f}" if is_finite_number(std) else f"{value:.2f}"

    return one(ref[0], ref[1]) + (f" / {one(ref[2], ref[3])}" if is_finite_number(ref[2]) else "")


#: the metrics of the report's tables: per method, and as paired FP − host differences (paired.csv has all of
#: :data:`PAIRED_METRICS`)
REPORT_METRICS = ("avg_acc_class_il", "avg_acc_task_il", "bwt", "fwt", "trajectory_retention", "jacobian_retention",
                 "jacobian_retention_fresh", "jacobian_retention_exact")


def report(folder: str | Path) -> str | None:
    """Markdown for ``testbed report``: test metrics at the chosen γ (mean ± 95% CI (n) over seeds, with the DER
    paper's values, :data:`PAPER`), the paired FP − host differences, and the validation accuracy of every γ."""
    folder = Path(folder)
    if not (folder / "selected.csv").exists():
        return None             # a run without selection tables: testbed report prints the generic table
    rows = read_csv(folder / "selected.csv")
    benches = {r["benchmark"] for r in rows}
    paper_note = ("the DER paper's Seq-MNIST class-IL / task-IL (mean ± std over 10 runs)"
                  if benches <= {"split_mnist"} else
                  "the DER paper's class-IL / task-IL (mean ± std over 10 runs; domain-IL accuracy on P-MNIST and "
                  "R-MNIST, where the class-IL column is the domain-IL accuracy and task-IL does not apply)")
    lines = ["Test metrics (%, retention in [0, 1]) at the γ chosen on validation data; mean ± 95% CI (n seeds); "
             f"paper: {paper_note}:", "",
             "| benchmark | method | buffer | γ | class-IL | task-IL | BWT | FWT | trajectory ret. | "
             "JVP ret. (training probes) | JVP ret. (fresh probes) | exact-Jacobian ret. | paper |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    order = {m: i for i, m in enumerate(ALL_METHODS)}
    for (bench, method, buf), rs in sorted(_groups(rows).items(),
                                           key=lambda kv: (kv[0][0], order.get(kv[0][1], 99), kv[0][2])):
        cells = [summarize_values([_number(r.get(m)) for r in rs]).format(3)
                 for m in REPORT_METRICS]
        paper = _paper_cell(paper_reference(bench, method, buf))
        gamma = rs[0].get("gamma", "")
        lines.append(f"| {bench} | {METHOD_LABELS.get(method, method)} | {buf or '—'} | "
                     f"{gamma if gamma != '' else '—'} | " + " | ".join(cells) + f" | {paper} |")
    pairs = read_csv(folder / "paired.csv") if (folder / "paired.csv").exists() else []
    pairs = [p for p in pairs if p["metric"] in REPORT_METRICS and is_finite_number(p.get("mean_diff"))]
    if pairs:
        metrics = [m for m in REPORT_METRICS if any(p["metric"] == m for p in pairs)]
        lines += ["", "FP − host over shared seeds at the chosen γ: mean [95% CI], exact sign-flip p:", "",
                  "| benchmark | FP variant | buffer | γ | " + " | ".join(metrics) + " |",
                  "|---|---|---|---|" + "---|" * len(metrics)]
        by: dict[tuple, dict[str, dict[str, Any]]] = {}
        for p in pairs:
            by.setdefault((p["benchmark"], p["method"], p["buffer_size"], p["gamma"]), {})[p["metric"]] = p
        for (bench, method, buf, gamma), per in by.items():
            cells = [format_paired(per.get(m)) for m in metrics]
            lines.append(f"| {bench} | {METHOD_LABELS.get(method, method)} | {buf} | {gamma:g} | "
                         + " | ".join(cells) + " |")
        lines += ["", "Verdicts of these comparisons (the paired 95% t-interval against 0):", "",
                  *verdict_table(pairs)]
    sel = read_csv(folder / "selection.csv") if (folder / "selection.csv").exists() else []
    if sel:
        gammas = sorted({float(r["gamma"]) for r in sel})
        lines += ["", "Validation class-IL accuracy (%) of every γ (mean [95% CI], n seeds); **bold** = chosen:", "",
                  "| benchmark | FP variant | buffer | " + " | ".join(f"γ = {g:g}" for g in gammas) + " |",
                  "|---|---|---|" + "---|" * len(gammas)]
        groups: dict[tuple, dict[float, dict[str, Any]]] = {}
        for r in sel:
            groups.setdefault((r["benchmark"], r["method"], r["buffer_size"]), {})[float(r["gamma"])] = r
        for (bench, method, buf), per in groups.items():
            cells = []
            for g in gammas:
                r = per.get(g)
                if r is None:
                    cells.append("—")
                    continue
                ci = f" [{r['val_lo']:.2f}, {r['val_hi']:.2f}]" if is_finite_number(r.get("val_lo")) else ""
                text = f"{r['val_mean']:.2f}{ci} ({r['n']})"
                cells.append(f"**{text}**" if is_true(r["selected"]) else text)
            lines.append(f"| {bench} | {METHOD_LABELS.get(method, method)} | {buf} | " + " | ".join(cells) + " |")
    return "\n".join(lines)



Config = ContinualConfig

__all__ = ["PAPER", "Config", "ContinualConfig", "NAME", "PAPER_HPARAMS", "PAPER_SEQ_MNIST", "paper_reference", "plot",
           "quick_config", "run"]

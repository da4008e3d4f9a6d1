"""Depth as step size: the infinite-depth limit of ResNets (paper B, arXiv 2512.21075; Tensor Programs VI).

Four sub-studies, selectable with ``--study`` (default: all), each in its own module under
:mod:`testbed.experiments.depth` and writing to ``OUT/<study>/``:

1. ``convergence``   one continuous-time weight function ``W(t)`` discretised at ``L = 4 … 512``: distance of the
                     hidden trajectory to the finest network vs ``L`` (claim: ``O(1/L)``); with i.i.d. weights
                     under ``1/√L`` the diffusive limit — statistics of ``h(t)`` converge, paths do not.
2. ``lr_transfer``   loss vs learning rate for ``L ∈ {4 … 64}`` under SP and Depth-μP, block depth 1 and 2 (with
                     and without the first-layer correction), on a teacher-flow regression and on digits
                     (claim: curves line up across ``L`` for Depth-μP with block depth 1, drift for SP, break for
                     block depth 2 and are restored by the correction).
3. ``features``      feature change ``‖h_l(θ_T) − h_l(θ_0)‖`` and weight change per layer after training, vs ``l``
                     and ``L``; layers whose feature updates vanish as ``L`` grows are flagged.
4. ``weight_reuse``  correlation between forward features and backward signals across depth, against a control
                     whose backward pass uses an independent copy of each weight instead of ``Wᵀ`` (claims:
                     ``O(1/n)`` in width at initialisation, effect on the dynamics ``O(1/L²)`` in depth).

The parameterizations and learning-rate rules are in :mod:`testbed.parameterization`.
"""

from __future__ import annotations

import dataclasses
import importlib
import time
from pathlib import Path
from typing import Any, ClassVar

from testbed.config import ConfigError, canonical_choices, check_positive, check_positive_int
from testbed.experiments.protocol import ExperimentConfig, flag, seeds_field
from testbed.results import run_metadata, write_json

NAME = "depth-scaling"
#: natural keys of a row besides its seed: rows sharing them are repeats over seeds
GROUP_KEYS = ["study", "key"]
CAPTIONS = {
    "convergence": (
        "Depth as step size. (a) One continuous weight function W(t) discretised at L = 4 … 512: relative "
        "distance of the hidden trajectory to the finest network vs L (log–log, claim O(1/L)). (b–d) i.i.d. "
        "weights under 1/√L: the statistic ‖h_T‖²/n converges, paths of independent draws do not, "
        "Brownian-coupled paths converge at order ½."),
    "lr_curves": (
        "Test loss vs base learning rate (log axes), one curve per depth L, for SP and Depth-μP with one- and "
        "two-matrix residual blocks (stars: parabola-refined optima). Curves that line up across L transfer "
        "the learning rate across depth."),
    "optimal_lr": (
        "Optimal learning rate vs depth L (log–log) per parameterization and block depth, with the fitted "
        "drift exponent of η*(L); a flat line means the optimum transfers across depth."),
    "feature_change_per_layer": (
        "Relative feature change ‖Δh_l‖/‖h_l‖ after training vs layer time l/L, one curve per depth, per "
        "parameterization and block depth."),
    "update_vs_depth": (
        "Layer-mean feature and weight updates after training vs depth L (log–log), including the first "
        "internal layer's own update ‖ΔW₁h‖/‖W₁h‖; slopes below zero flag layers whose updates vanish as L "
        "grows."),
    "weight_reuse": (
        "Forward/backward coupling through W_lᵀ against a control whose backward pass uses an independent "
        "copy of each weight: excess coupling at initialisation vs width n (claim 1/n) and its effect on "
        "training vs depth L (claim 1/L²), log–log."),
}
STUDIES = ("convergence", "lr_transfer", "features", "weight_reuse")
SUMMARY_COLUMNS = ["study", "key", "value", "claim"]


@dataclasses.dataclass
class DepthScalingConfig(ExperimentConfig):
    """Settings of every sub-study (each reads its own block of fields; validated on construction)."""

    UNIQUE_FIELDS: ClassVar[tuple[str, ...]] = ("studies",)

    studies: tuple[str, ...] = flag(STUDIES, name="--study", help="sub-study/studies to run")
    seeds: tuple[int, ...] = seeds_field((0, 1, 2))
    # 1. convergence
    conv_depths: tuple[int, ...] = (4, 8, 16, 32, 64, 128, 256, 512)
    conv_width: int = 64            # residual-stream width n
    conv_hidden: int = 64           # hidden width inside a two-matrix branch
    conv_anchors: int = 4           # anchors of the continuous weight function W(t)
    conv_n_inputs: int = 256
    conv_n_draws: int = 64          # i.i.d. weight draws for the diffusive (SDE) limit
    # 2. learning-rate transfer
    lr_depths: tuple[int, ...] = (4, 8, 16, 32, 64)
    lr_grid: tuple[float, ...] = (1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2, 3.2e-2, 6.4e-2, 0.128, 0.256)
    parameterizations: tuple[str, ...] = ("standard", "depth_mup")
    block_depths: tuple[int, ...] = (1, 2)
    tasks: tuple[str, ...] = ("flow", "digits")
    flow_system: str = "van_der_pol"
    width: int = 64                 # residual-stream width for lr_transfer / features
    steps: int = 500
    batch_size: int = 64
    n_train: int = 512
    n_test: int = 256
    correction_exponent: float = 0.5
    # 3. features
    feat_depths: tuple[int, ...] = (4, 8, 16, 32, 64)
    feat_lr: float = 1e-2
    # 4. weight reuse
    reuse_widths: tuple[int, ...] = (16, 32, 64, 128, 256)
    reuse_depths: tuple[int, ...] = (4, 8, 16, 32, 64)
    reuse_steps: int = 200

    def validate(self) -> None:
        if not self.studies:
            raise ConfigError("studies must name at least one sub-study")
        self.studies = canonical_choices("studies", self.studies, STUDIES)
        for name in ("conv_depths", "lr_depths", "feat_depths", "reuse_depths", "reuse_widths", "block_depths"):
            vals = getattr(self, name)
            if not vals:
                raise ConfigError(f"{name} must not be empty")
            for v in vals:
                check_positive_int(name, v)
        for b in self.block_depths:
            if b not in (1, 2):
                raise ConfigError(f"block_depths must hold 1 and/or 2, got {b}")
        for p in self.parameterizations:
            if p not in ("standard", "depth_mup", "ode"):
                raise ConfigError(f"parameterizations: unknown {p!r}; choose from standard, depth_mup, ode")
        for t in self.tasks:
            if t not in ("flow", "digits"):
                raise ConfigError(f"tasks: unknown {t!r}; choose from flow, digits")
        for lr in self.lr_grid:
            check_positive("lr_grid", lr)
        for name in ("conv_width", "conv_hidden", "conv_anchors", "conv_n_inputs", "conv_n_draws", "width", "steps",
                     "batch_size", "n_train", "n_test", "reuse_steps"):
            check_positive_int(name, getattr(self, name))
        check_positive("feat_lr", self.feat_lr)


def quick_config(**overrides: Any) -> DepthScalingConfig:
    """2 CPU cores, under 3 minutes for all four sub-studies: small depth ranges, one seed, short training."""
    base = dict(seeds=(0,), conv_depths=(4, 8, 16, 32, 64, 128), conv_width=32, conv_hidden=32, conv_n_inputs=64,
                conv_n_draws=16, lr_depths=(4, 16, 64), lr_grid=(2e-3, 8e-3, 3.2e-2, 0.128), tasks=("flow",),
                block_depths=(1, 2), width=32, steps=150, n_train=256, n_test=128, feat_depths=(4, 16, 64),
                reuse_widths=(16, 32, 64, 128), reuse_depths=(4, 8, 16, 32), reuse_steps=50)
    base.update(overrides)
    return DepthScalingConfig(**base)


def study_module(study: str):
    """The module implementing ``study`` (``run(cfg, out) -> rows``, ``plot(out)``, ``summary(rows)``)."""
    return importlib.import_module(f"testbed.experiments.depth.{study}")


def run(cfg: DepthScalingConfig, out: str | Path) -> list[dict[str, Any]]:
    """Run the selected sub-studies; each writes ``out/<study>/results.csv`` and its figures. Returns the summary
    rows (``study``, ``key``, ``value``, ``claim``) also written to ``out/summary.csv``."""
    from testbed.results import write_csv

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.csv").unlink(missing_ok=True)
    t0 = time.perf_counter()
    summary: list[dict[str, Any]] = []
    for study in cfg.studies:
        mod = study_module(study)
        rows = mod.run(cfg, out / study)
        summary += [{"study": study, **r} for r in mod.summary(rows)]
    write_json(out / "results.json", run_metadata(cfg, cfg.seeds, experiment=NAME,
                                                  wall_seconds=time.perf_counter() - t0))
    write_csv(out / "summary.csv", summary, SUMMARY_COLUMNS)
    return summary


def plot(out: str | Path) -> list[Path]:
    """Redraw the figures of every sub-study found under ``out``."""
    out = Path(out)
    paths: list[Path] = []
    for study in STUDIES:
        if (out / study / "results.csv").exists():
            paths += study_module(study).plot(out / study)
    return paths


Config = DepthScalingConfig

__all__ = ["Config", "DepthScalingConfig", "NAME", "STUDIES", "plot", "quick_config", "run"]

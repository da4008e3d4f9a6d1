"""Depth as step size: the infinite-depth limit of ResNets (paper B, arXiv 2512.21075; Tensor Programs VI).

Five sub-studies, selectable with ``--study`` (default: all), each in its own module under
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
5. ``trained_limit`` trained networks at ``L = 4 … 256`` with Brownian-coupled initialisation and one data order:
                     successive differences of the trained function and features vs ``L``, the fitted order with
                     a seed-bootstrap CI and a declared verdict (claim: ``O(1/L)``; SP as the no-limit control).

Settings (:class:`DepthScalingConfig`): ``studies`` (``--study``), ``seeds`` (``--seed``), ``device`` (``--device``),
the settings two or more sub-studies share (``width``, ``steps``, ``batch_size``, ``lr``, ``flow_system``,
``n_train``, ``n_test``, ``parameterizations``, ``block_depths``, ``correction_exponent``; ``--set width=32``) and
one sub-config per sub-study with its own settings (``convergence``, ``lr_transfer``, ``features``,
``weight_reuse``: the ``Config`` of each module; ``--set convergence.depths=4,8,16 weight_reuse.steps=50``, or a
``[fixed.convergence]`` table in a sweep spec). Every sub-study runs on ``--device``.

The parameterizations and learning-rate rules are in :mod:`testbed.parameterization`.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

from testbed.config import (
    ConfigError,
    canonical_choices,
    check_choice,
    check_positive,
    check_positive_int,
    check_positive_ints,
    shown,
)
from testbed.experiments.depth import convergence, features, lr_transfer, trained_limit, weight_reuse
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
        "Brownian-coupled paths converge at order ½. Error bars (several seeds): 95% t-interval of the mean."),
    "lr_curves": (
        "Validation loss (20% of the training data held out) vs base learning rate (log axes), one curve per "
        "depth L, for SP and Depth-μP with one- and two-matrix residual blocks (stars: parabola-refined optima of "
        "the validation loss; × diverged). Curves that line up across L transfer the learning rate across depth; "
        "test losses are read only at the validation optima (transfer.csv)."),
    "optimal_lr": (
        "Optimal learning rate (located on the validation loss) vs depth L (log–log) per parameterization and "
        "block depth, with the fitted drift exponent of η*(L); a flat line means the optimum transfers across "
        "depth."),
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
        "training vs depth L (claim 1/L²), log–log. Error bars: 95% t-interval over seeds (one seed: normal 95% "
        "interval over the random draws)."),
    "trained_limit": (
        "Trained networks across depth: one network per L, initialisations coupled across L (one Brownian weight "
        "path, or with init = smooth one smooth W(t) sampled at l/L: every depth a discretisation of one weight "
        "path), the same data, minibatch order and base learning rate. Successive "
        "differences ‖f_L − f_2L‖/‖f_2L‖ of the trained function (left) and of the residual stream on a coarse "
        "layer-time grid (middle) vs L, log–log, at initialisation (dashed) and after training (solid), mean ± "
        "95% t-interval over seeds, fitted order (seed-bootstrap CI in fits.csv); right: test loss vs L. Guides: "
        "1/L and 1/√L."),
}
SUMMARY_COLUMNS = ["study", "key", "value", "lo", "hi", "n", "verdict", "claim"]
#: the sub-studies, in run order: each module provides ``Config`` (its own settings), ``run(cfg, out) -> rows``
#: (``cfg`` the whole :class:`DepthScalingConfig`), ``plot(out) -> paths`` and ``summary(rows) -> rows``; a module
#: whose summary reuses work of its run also provides ``run_with_summary(cfg, out) -> (rows, summary rows)``, which
#: :func:`run` then calls instead of the pair
STUDIES: dict[str, ModuleType] = {"convergence": convergence, "lr_transfer": lr_transfer, "features": features,
                                  "weight_reuse": weight_reuse, "trained_limit": trained_limit}
PARAMETERIZATIONS = ("standard", "depth_mup", "ode")
OPTIMIZERS = ("adam", "sgd")


@dataclasses.dataclass
class DepthScalingConfig(ExperimentConfig):
    """Which sub-studies run, the settings two or more of them share, and one sub-config per sub-study (its own
    settings, unprefixed: ``--set convergence.depths=4,8,16``). Validated on construction."""

    UNIQUE_FIELDS: ClassVar[tuple[str, ...]] = ("studies",)

    studies: tuple[str, ...] = flag(tuple(STUDIES), name="--study", help="sub-study/studies to run")
    seeds: tuple[int, ...] = seeds_field((0, 1, 2, 3, 4))
    # shared by two or more sub-studies (the readers in brackets)
    flow_system: str = "van_der_pol"    # teacher flow of the regression task [lr_transfer, features, weight_reuse,
    #                                     trained_limit]
    width: int = 64                     # residual-stream (and hidden) width [lr_transfer, features, weight_reuse]
    steps: int = 500                    # training steps [lr_transfer, features]
    batch_size: int = 64                # [lr_transfer, features, weight_reuse]
    n_train: int = 512                  # teacher-flow trajectories [lr_transfer, features, weight_reuse]
    n_test: int = 256                   # [lr_transfer, features, weight_reuse]
    lr: float = 1e-2                    # base learning rate of a single training run [features, weight_reuse]
    parameterizations: tuple[str, ...] = ("standard", "depth_mup")  # [lr_transfer, features]
    block_depths: tuple[int, ...] = (1, 2)  # matrices per residual branch [lr_transfer, features]
    correction_exponent: float = 0.5    # γ of the first-layer learning-rate correction L^γ [lr_transfer, features]
    optimizers: tuple[str, ...] = ("adam",)  # "adam" and/or "sgd" (Depth-μP: η/√L on branches with Adam, η with
    #                                          SGD; testbed.parameterization) [lr_transfer, features]
    sgd_lr: float = 0.1                 # base learning rate of a single SGD training run [features]
    # one sub-config per sub-study (its own settings)
    convergence: convergence.Config = dataclasses.field(default_factory=convergence.Config)
    lr_transfer: lr_transfer.Config = dataclasses.field(default_factory=lr_transfer.Config)
    features: features.Config = dataclasses.field(default_factory=features.Config)
    weight_reuse: weight_reuse.Config = dataclasses.field(default_factory=weight_reuse.Config)
    trained_limit: trained_limit.Config = dataclasses.field(default_factory=trained_limit.Config)

    def validate(self) -> None:
        if not self.studies:
            raise ConfigError("studies must name at least one sub-study")
        self.studies = canonical_choices("studies", self.studies, STUDIES)
        self.block_depths = check_positive_ints("block_depths", self.block_depths)
        for b in self.block_depths:
            if b not in (1, 2):
                raise ConfigError(f"block_depths must hold 1 and/or 2, got {b}")
        for p in self.parameterizations:
            check_choice("parameterizations", p, PARAMETERIZATIONS)
        for name in ("width", "steps", "batch_size", "n_train", "n_test"):
            check_positive_int(name, getattr(self, name))
        check_positive("lr", self.lr)
        check_positive("sgd_lr", self.sgd_lr)
        self.optimizers = canonical_choices("optimizers", self.optimizers, OPTIMIZERS)
        if not self.optimizers:
            raise ConfigError("optimizers must name at least one of " + ", ".join(OPTIMIZERS))
        for name, module in STUDIES.items():
            if not isinstance(getattr(self, name), module.Config):
                raise ConfigError(f"{name} must be a {module.__name__}.Config, got {shown(getattr(self, name))}")


def quick_config(**overrides: Any) -> DepthScalingConfig:
    """2 CPU cores, under 3 minutes for all five sub-studies: small depth ranges, one seed, short training."""
    base = dict(seeds=(0,), width=32, steps=150, n_train=256, n_test=128, block_depths=(1, 2),
                convergence=convergence.Config(depths=(4, 8, 16, 32, 64, 128), width=32, hidden=32, n_inputs=64,
                                               n_draws=16),
                lr_transfer=lr_transfer.Config(depths=(4, 16, 64), lr_grid=(2e-3, 8e-3, 3.2e-2, 0.128),
                                               tasks=("flow",)),
                features=features.Config(depths=(4, 16, 64)),
                weight_reuse=weight_reuse.Config(widths=(16, 32, 64, 128), depths=(4, 8, 16, 32), steps=50),
                trained_limit=trained_limit.Config(depths=(4, 8, 16, 32)))
    base.update(overrides)
    return DepthScalingConfig(**base)


def run(cfg: DepthScalingConfig, out: str | Path) -> list[dict[str, Any]]:
    """Run the selected sub-studies (:data:`STUDIES`); each writes its tables to ``out/<study>/`` (``results.csv``
    last). Returns the summary rows (``study``, ``key``, ``value``, ``claim``) also written to ``out/summary.csv``."""
    from testbed.results import write_csv

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.csv").unlink(missing_ok=True)
    t0 = time.perf_counter()
    summary: list[dict[str, Any]] = []
    for study in cfg.studies:
        mod = STUDIES[study]
        if hasattr(mod, "run_with_summary"):  # its summary reuses work of the run (lr_transfer: the bootstrap)
            _, study_summary = mod.run_with_summary(cfg, out / study)
        else:
            study_summary = mod.summary(mod.run(cfg, out / study))
        summary += [{"study": study, **r} for r in study_summary]
    write_json(out / "results.json", run_metadata(cfg, cfg.seeds, experiment=NAME,
                                                  wall_seconds=time.perf_counter() - t0))
    write_csv(out / "summary.csv", summary, SUMMARY_COLUMNS)
    return summary


def plot(out: str | Path) -> list[Path]:
    """Redraw the figures of every sub-study found under ``out``."""
    out = Path(out)
    paths: list[Path] = []
    for study, mod in STUDIES.items():
        if (out / study / "results.csv").exists():
            paths += mod.plot(out / study)
    return paths


def report(folder: str | Path) -> str | None:
    """Markdown for ``testbed report``: every row of ``summary.csv`` as claim, value with its 95% interval (where
    the study fitted one), number of points and the declared verdict."""
    from testbed.report import is_finite_number
    from testbed.results import read_csv

    path = Path(folder) / "summary.csv"
    if not path.exists():
        return None
    lines = ["| study | quantity | value [95% CI] | n | verdict | claim tested |", "|---|---|---|---|---|---|"]
    for r in read_csv(path):
        v = r.get("value")
        cell = f"{float(v):.3g}" if is_finite_number(v) else str(v)
        if is_finite_number(r.get("lo", "")) and is_finite_number(r.get("hi", "")):
            cell += f" [{float(r['lo']):.3g}, {float(r['hi']):.3g}]"
        claim = str(r.get("claim", "")).replace("|", "\\|")
        lines.append(f"| {r['study']} | {r['key']} | {cell} | {r.get('n', '')} | {r.get('verdict', '')} | {claim} |")
    return "\n".join(lines)


Config = DepthScalingConfig

__all__ = ["Config", "DepthScalingConfig", "NAME", "STUDIES", "plot", "quick_config", "report", "run"]

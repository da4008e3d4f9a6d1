"""Experiments, one module each, registered by name for the CLI.

Every experiment module meets the contract of :mod:`testbed.experiments.protocol` (``NAME``, ``Config``,
``quick_config``, ``run``, ``plot``, ``CAPTIONS``, ``SUMMARY_COLUMNS``, ``GROUP_KEYS``), checked here at import.
Register a new one with one line in ``EXPERIMENTS``.
"""

from __future__ import annotations

from types import ModuleType

from testbed.config import lookup
from testbed.experiments import (
    continual,
    depth_scaling,
    endpoint_equivalence,
    law_benchmark,
    law_recovery,
    multipath,
    pde_law_recovery,
)
from testbed.experiments.protocol import check_experiment

EXPERIMENTS: dict[str, ModuleType] = {m.NAME: check_experiment(m) for m in (
    law_recovery, pde_law_recovery, endpoint_equivalence, depth_scaling, continual, multipath, law_benchmark,
)}


def get_experiment(name: str) -> ModuleType:
    return lookup(EXPERIMENTS, name, "experiment")


def list_experiments() -> list[str]:
    return sorted(EXPERIMENTS)

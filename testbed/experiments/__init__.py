"""Experiments, one module each, registered by name for the CLI.

An experiment module defines ``NAME``, a ``Config`` dataclass, ``quick_config(**overrides)``,
``run(config, out_dir) -> rows`` and ``plot(out_dir)``. Register a new one by adding it to ``EXPERIMENTS``.
"""

from __future__ import annotations

from types import ModuleType

from testbed.config import lookup
from testbed.experiments import (
    continual,
    depth_scaling,
    endpoint_equivalence,
    law_recovery,
    multipath,
    pde_law_recovery,
)

EXPERIMENTS: dict[str, ModuleType] = {
    law_recovery.NAME: law_recovery,
    pde_law_recovery.NAME: pde_law_recovery,
    endpoint_equivalence.NAME: endpoint_equivalence,
    depth_scaling.NAME: depth_scaling,
    continual.NAME: continual,
    multipath.NAME: multipath,
}


def get_experiment(name: str) -> ModuleType:
    return lookup(EXPERIMENTS, name, "experiment")


def list_experiments() -> list[str]:
    return sorted(EXPERIMENTS)

"""Experiments, one module each, registered by name for the CLI.

Every experiment module meets the contract of :mod:`testbed.experiments.protocol` (``NAME``, ``Config``,
``quick_config``, ``run``, ``plot``, ``CAPTIONS``, ``SUMMARY_COLUMNS``, ``GROUP_KEYS``), checked when it is first
looked up. Register a new one with one line in ``REGISTRY``. Modules are imported on first use, so naming one
experiment (``testbed run law-recovery``, a sweep worker) does not import the others.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from types import ModuleType

from testbed.config import lookup

#: experiment name → its module
REGISTRY: dict[str, str] = {
    "law-recovery": "testbed.experiments.law_recovery",
    "pde-law-recovery": "testbed.experiments.pde_law_recovery",
    "endpoint-equivalence": "testbed.experiments.endpoint_equivalence",
    "depth-scaling": "testbed.experiments.depth_scaling",
    "continual": "testbed.experiments.continual",
    "multipath": "testbed.experiments.multipath",
    "law-benchmark": "testbed.experiments.law_benchmark",
}


class _Experiments(Mapping[str, ModuleType]):
    """``REGISTRY`` as name → module, importing (and checking against the protocol, and that its ``NAME`` is the
    registered one) each module on first access."""

    def __init__(self, registry: Mapping[str, str]) -> None:
        self._registry = registry
        self._loaded: dict[str, ModuleType] = {}

    def __getitem__(self, name: str) -> ModuleType:
        if name not in self._loaded:
            from testbed.experiments.protocol import check_experiment

            path = self._registry[name]   # the only KeyError that means "unknown experiment"
            try:
                module = check_experiment(importlib.import_module(path))
            except KeyError as err:       # raised while importing: not an unknown name
                raise RuntimeError(f"importing experiment {name!r} ({path}) failed: KeyError {err}") from err
            if module.NAME != name:
                raise RuntimeError(f"{path} declares NAME = {module.NAME!r}, registered as {name!r}")
            self._loaded[name] = module
        return self._loaded[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._registry)

    def __len__(self) -> int:
        return len(self._registry)


EXPERIMENTS: Mapping[str, ModuleType] = _Experiments(REGISTRY)


def get_experiment(name: str) -> ModuleType:
    return lookup(EXPERIMENTS, name, "experiment")


def module_name(name: str) -> str | None:
    """The module of experiment ``name`` (any spelling :func:`get_experiment` accepts) without importing it;
    ``None`` if unknown."""
    from testbed.config import canonical_key

    return REGISTRY.get(canonical_key(REGISTRY, name))


def list_experiments() -> list[str]:
    return sorted(EXPERIMENTS)

"""Experiments, one module each, registered by name for the CLI.

An experiment module defines ``NAME``, a ``Config`` dataclass, ``quick_config(**overrides)``,
``run(config, out_dir) -> rows`` and ``plot(out_dir)``. Register a new one by adding it to ``EXPERIMENTS``.
"""

from __future__ import annotations

import difflib
from types import ModuleType

from testbed.config import ConfigError
from testbed.experiments import law_recovery

EXPERIMENTS: dict[str, ModuleType] = {
    law_recovery.NAME: law_recovery,
}


def get_experiment(name: str) -> ModuleType:
    try:
        return EXPERIMENTS[name]
    except KeyError:
        close = difflib.get_close_matches(str(name), list(EXPERIMENTS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"unknown experiment {name!r}{hint}; known: {', '.join(EXPERIMENTS)}") from None


def list_experiments() -> list[str]:
    return sorted(EXPERIMENTS)

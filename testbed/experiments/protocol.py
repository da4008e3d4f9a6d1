"""The experiment contract, written down once: what every experiment module provides, and the config base.

An experiment is one module that meets :class:`Experiment`:

========================  =================================================================================
``NAME``                  canonical name, hyphenated (``law-recovery``); users may type ``law_recovery`` too
``Config``                an :class:`ExperimentConfig` subclass (validated on construction)
``quick_config(**kw)``    the ``--quick`` settings (≤ 3 minutes on 2 CPU cores)
``run(cfg, out) -> rows`` computes and writes the tables (``results.csv`` last: its presence means the run
                          completed) and ``results.json``; it never draws
``plot(out) -> paths``    draws every figure from the files in ``out`` only (PNG + PDF)
``CAPTIONS``              ``{figure stem: one-paragraph caption}`` for every figure ``plot`` draws
``SUMMARY_COLUMNS``       the columns ``testbed run`` prints after a run
``GROUP_KEYS``            the natural keys of a row besides its seed (system, objective, …): rows that share
                          them are repeats over seeds (sweep summaries and statistics group by them)
========================  =================================================================================

Optional members (checked when present):

========================  =================================================================================
``derive(out) -> paths``  tables computed from ``out/results.csv`` across seeds (e.g. a hyperparameter chosen on
                          validation data and the test metrics at that choice); ``run`` calls it at the end and
                          a sweep calls it on the merged rows, so the choice sees every seed
``DERIVED_FILES``         the files ``derive`` writes (a sweep does not concatenate the cells' copies of them)
``report(folder)``        markdown for ``testbed report`` instead of the generic table (None: use the generic one)
``PARTITION_FIELDS``      config fields that only partition the rows (``tasks``: every row names its task), so
                          a sweep over them may still draw the experiment's own figure from the merged rows
========================  =================================================================================

:func:`check_experiment` verifies a module at registration, so a missing hook fails at import with a message
naming it, not deep inside the CLI.

:class:`ExperimentConfig` holds what every experiment shares — ``seeds``, ``device``, ``progress`` — and the one
normalisation/validation path: lists become tuples for tuple-typed fields, the subclass's :meth:`validate` runs,
then the shared checks (distinct seeds in ``0 … 2**32 − 1``, a usable device, no repeated entries in the fields
named by ``UNIQUE_FIELDS``). Command-line flags map to fields through field metadata ``{"flag": "--system"}``
(see :func:`flag_fields`), never by guessing from field names.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar, Protocol, runtime_checkable

from testbed.config import check_seeds, check_unique
from testbed.devices import check_device


def flag(default: Any = dataclasses.MISSING, *, default_factory: Any = dataclasses.MISSING, name: str,
         help: str = "") -> Any:  # noqa: A002 - mirrors argparse
    """A dataclass field that the command-line flag ``name`` (e.g. ``--system``) sets."""
    kw: dict[str, Any] = {"metadata": {"flag": name, "help": help}}
    if default is not dataclasses.MISSING:
        kw["default"] = default
    if default_factory is not dataclasses.MISSING:
        kw["default_factory"] = default_factory
    return dataclasses.field(**kw)


def seeds_field(default: tuple[int, ...] = (0,)) -> Any:
    """The ``seeds`` field (flag ``--seed``) with an experiment's own default."""
    return flag(default, name="--seed", help="seed(s)")


@dataclasses.dataclass
class ExperimentConfig:
    """Fields every experiment shares, and the one validation path (see the module docstring)."""

    seeds: tuple[int, ...] = seeds_field()
    device: str = flag("cpu", name="--device", help="torch device, e.g. cpu or cuda")
    progress: bool = True

    #: tuple fields whose entries must be distinct (a system named twice would duplicate rows)
    UNIQUE_FIELDS: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if typing.get_origin(hints.get(f.name)) is tuple and isinstance(value, list):
                setattr(self, f.name, tuple(value))
        self.validate()
        self.seeds = check_seeds("seeds", self.seeds)
        check_device("device", self.device)
        for name in self.UNIQUE_FIELDS:
            check_unique(name, getattr(self, name))

    def validate(self) -> None:
        """Experiment-specific checks (raise :class:`~testbed.config.ConfigError` naming the field)."""


def flag_fields(config_cls: type) -> dict[str, dataclasses.Field]:
    """``{flag: field}`` for the fields of ``config_cls`` that a command-line flag sets."""
    return {f.metadata["flag"]: f for f in dataclasses.fields(config_cls) if "flag" in f.metadata}


@runtime_checkable
class Experiment(Protocol):
    """What an experiment module provides (checked by :func:`check_experiment`)."""

    NAME: str
    Config: type
    CAPTIONS: Mapping[str, str]
    SUMMARY_COLUMNS: Sequence[str]
    GROUP_KEYS: Sequence[str]

    def quick_config(self, **overrides: Any) -> Any: ...

    def run(self, cfg: Any, out: Path) -> list[dict[str, Any]]: ...

    def plot(self, out: Path) -> list[Path]: ...


_HOOKS: dict[str, Callable[[Any], bool]] = {
    "NAME": lambda v: isinstance(v, str) and v == v.strip().lower() and "_" not in v,
    "Config": lambda v: isinstance(v, type) and issubclass(v, ExperimentConfig),
    "CAPTIONS": lambda v: isinstance(v, Mapping) and all(isinstance(t, str) for t in v.values()),
    "SUMMARY_COLUMNS": lambda v: isinstance(v, (list, tuple)) and all(isinstance(c, str) for c in v),
    "GROUP_KEYS": lambda v: isinstance(v, (list, tuple)) and all(isinstance(c, str) for c in v),
    "quick_config": callable,
    "run": callable,
    "plot": callable,
}


_OPTIONAL: dict[str, Callable[[Any], bool]] = {
    "derive": callable,
    "report": callable,
    "DERIVED_FILES": lambda v: isinstance(v, (list, tuple)) and all(isinstance(c, str) for c in v),
    "PARTITION_FIELDS": lambda v: isinstance(v, (list, tuple)) and all(isinstance(c, str) for c in v),
}


def check_experiment(module: ModuleType) -> ModuleType:
    """Return ``module`` if it meets :class:`Experiment`, else raise ``TypeError`` naming what is missing."""
    problems = [name for name, ok in _HOOKS.items() if not hasattr(module, name) or not ok(getattr(module, name))]
    problems += [name for name, ok in _OPTIONAL.items() if hasattr(module, name) and not ok(getattr(module, name))]
    if hasattr(module, "derive") != hasattr(module, "DERIVED_FILES"):
        problems.append("derive and DERIVED_FILES (one without the other)")
    if problems:
        raise TypeError(f"experiment module {module.__name__} does not meet the protocol "
                        f"(testbed.experiments.protocol): missing or invalid {', '.join(problems)}")
    return module

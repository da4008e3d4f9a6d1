"""Tidy results on disk: atomic CSV/JSON writes and run metadata (command, seed, commit, versions)."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from testbed.config import to_jsonable


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically, on error it is
    removed — so ``path`` is never half-written. The temporary name keeps ``path``'s suffix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}")
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_csv(path: str | Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> Path:
    """Write ``rows`` (dicts) as CSV; columns default to the union of keys in first-seen order."""
    if columns is None:
        seen: dict[str, None] = {}
        for r in rows:
            for k in r:
                seen.setdefault(k, None)
        columns = list(seen)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: _fmt(r.get(k, "")) for k in columns})
    return atomic_write_text(path, buf.getvalue())


def _fmt(v: Any) -> Any:
    if isinstance(v, float):
        return repr(v)
    return v


#: identifier columns: always read as strings, whatever they look like (a 12-hex ``cell_id`` such as
#: ``012345678901`` must not become a number)
STRING_COLUMNS = frozenset({
    "cell_id", "model_id", "system", "objective", "student", "variant", "method", "benchmark", "study", "key",
    "claim", "flag", "source", "how", "metric", "series", "commit", "endpoint_metric_name", "regularizer",
    "parameterization",
})


def read_csv(path: str | Path, types: Mapping[str, type] | None = None) -> list[dict[str, Any]]:
    """Read a CSV written by :func:`write_csv`: :data:`STRING_COLUMNS` (and columns typed ``str`` in ``types``)
    stay strings, other numeric strings become ints/floats, empty cells stay ``""``. A file that is not a text
    CSV raises :class:`~testbed.config.ConfigError` naming it."""
    from testbed.config import ConfigError

    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not a UTF-8 text CSV file (binary?)") from None
    except csv.Error as err:
        raise ConfigError(f"{path} is not a valid CSV file ({err})") from None
    if any(None in row or any(v is None for v in row.values()) for row in rows):
        raise ConfigError(f"{path}: rows do not match the header (ragged CSV)")
    strings = set(STRING_COLUMNS) | {k for k, t in (types or {}).items() if t is str}
    casts = {k: t for k, t in (types or {}).items() if t is not str}
    return [{k: (v if k in strings else casts[k](v) if k in casts and v != "" else _parse(v)) for k, v in row.items()}
            for row in rows]


def load(path: str | Path, types: Mapping[str, type] | None = None, frame: bool | None = None) -> Any:
    """A results table: a pandas ``DataFrame`` when pandas is installed (``frame=None``), else (or with
    ``frame=False``) a list of dicts. Column types as in :func:`read_csv` (identifiers stay strings; ``types``
    declares more). ``path`` may be a results folder (its ``results.csv`` is read)."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.csv"
    rows = read_csv(path, types)
    if frame is False:
        return rows
    try:
        import pandas as pd
    except ModuleNotFoundError:
        if frame:
            raise
        return rows
    with open(path, newline="", encoding="utf-8") as fh:
        header = next(csv.reader(fh), [])
    df = pd.DataFrame(rows, columns=header)
    for col in header:
        if col in STRING_COLUMNS or (types or {}).get(col) is str:
            df[col] = df[col].astype("string")
        elif any(v == "" for v in df[col]) and all(isinstance(v, (int, float)) or v == "" for v in df[col]):
            df[col] = df[col].map(lambda v: float("nan") if v == "" else v).astype(float)  # empty cell → NaN
    return df


def _parse(v: str) -> Any:
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return v


def fresh_output_dir(out: str | Path, files: Iterable[str]) -> Path:
    """Create ``out`` and delete the listed result ``files`` from an earlier run, so stale results never look
    like this run's (every experiment writes its ``results.csv`` last, as the mark of a completed run)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for f in files:
        (out / f).unlink(missing_ok=True)
    return out


def write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(to_jsonable(obj), indent=2, sort_keys=True) + "\n")


def git_commit(cwd: str | Path | None = None) -> str | None:
    """The current git commit of the project (None outside a checkout)."""
    try:
        here = Path(cwd) if cwd else Path(__file__).resolve().parent
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def run_metadata(config: Any = None, seeds: Iterable[int] | None = None, **extra: Any) -> dict[str, Any]:
    """Command line, config, seeds, git commit, package versions and host for a results folder."""
    import numpy
    import scipy
    import torch
    import torchdiffeq

    return {
        "command": " ".join(sys.argv),
        "config": to_jsonable(config),
        "seeds": list(seeds) if seeds is not None else None,
        "commit": git_commit(),
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "torchdiffeq": getattr(torchdiffeq, "__version__", "?"), "numpy": numpy.__version__,
                     "scipy": scipy.__version__},
        "host": {"platform": platform.platform(), "threads": torch.get_num_threads()},
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **extra,
    }

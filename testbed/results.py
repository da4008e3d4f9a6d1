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

import numpy as np

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
    header = list(rows[0]) if rows else []
    df = pd.DataFrame(rows, columns=header)
    for col in header:
        if col in STRING_COLUMNS or (types or {}).get(col) is str:
            df[col] = df[col].astype("string")
        elif any(v == "" for v in df[col]) and all(isinstance(v, (int, float)) or v == "" for v in df[col]):
            df[col] = df[col].map(lambda v: float("nan") if v == "" else v).astype(float)  # empty cell → NaN
    return df


def is_true(v: Any) -> bool:
    """A boolean cell as written (``True``, also a NumPy bool) or as :func:`read_csv` gives it back (``"True"``:
    booleans stay strings); anything else is false."""
    return isinstance(v, (bool, str, np.bool_)) and str(v) == "True"


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


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.decode("utf-8", "replace") if out.returncode == 0 else None


def git_state(cwd: str | Path | None = None) -> dict[str, Any]:
    """``{"commit", "dirty", "diff_sha256"}`` of the project's checkout: the HEAD commit, whether tracked files
    differ from it or untracked (not ignored) files exist, and a SHA-256 of ``git diff HEAD`` plus the untracked
    names (``None`` when clean). All ``None`` outside a checkout.

    Without ``cwd`` the answer is computed once per process — the CLI asks before a run starts, so a run that
    writes into tracked folders (``figures/``) is judged by the tree it started from.
    """
    if cwd is None:
        global _STATE
        if _STATE is None:
            _STATE = git_state(Path(__file__).resolve().parent)
        return dict(_STATE)
    here = Path(cwd)
    commit = (_git(["rev-parse", "HEAD"], here) or "").strip() or None
    if commit is None:
        return {"commit": None, "dirty": None, "diff_sha256": None}
    status = _git(["status", "--porcelain", "--untracked-files=normal"], here) or ""
    dirty = bool(status.strip())
    digest = None
    if dirty:
        import hashlib

        diff = _git(["diff", "HEAD", "--binary"], here) or ""
        untracked = sorted(line[3:] for line in status.splitlines() if line.startswith("??"))
        digest = hashlib.sha256((diff + "\n".join(untracked)).encode()).hexdigest()
    return {"commit": commit, "dirty": dirty, "diff_sha256": digest}


_STATE: dict[str, Any] | None = None
_COMMAND: list[str] | None = None


_ALLOW_DIRTY = False


def set_allow_dirty(value: bool = True) -> None:
    """Record that this process was told to write committed results from a dirty tree (``--allow-dirty``)."""
    global _ALLOW_DIRTY
    _ALLOW_DIRTY = bool(value)


def set_command(argv: list[str]) -> None:
    """Record the command this process is running (the CLI calls it; ``sys.argv`` otherwise)."""
    global _COMMAND
    _COMMAND = [str(a) for a in argv]


def pin_git_state(state: dict[str, Any], command: str | None = None) -> None:
    """Make this process report ``state`` (and ``command``) as its provenance: a sweep's worker processes record the
    tree and command the sweep started from, not whatever the working tree holds when a cell runs."""
    global _STATE, _COMMAND
    _STATE = dict(state)
    if command:
        _COMMAND = command.split()


def project_root() -> Path | None:
    """The checkout holding this package (``git rev-parse --show-toplevel``), or None outside one."""
    top = (_git(["rev-parse", "--show-toplevel"], Path(__file__).resolve().parent) or "").strip()
    return Path(top) if top else None


def committed_results_folders() -> list[Path]:
    """Folders whose results are committed: ``figures/`` of the project checkout."""
    root = project_root()
    return [root / "figures"] if root else []


def check_clean_tree(out: str | Path, allow_dirty: bool = False) -> None:
    """Refuse to write results under a committed folder (``figures/``) from a dirty tree: committed numbers must
    be traceable to a commit. ``allow_dirty`` overrides (and is recorded in ``results.json``)."""
    from testbed.config import ConfigError

    target = Path(out).resolve()
    protected = [p.resolve() for p in committed_results_folders()]
    if allow_dirty or not any(target == p or target.is_relative_to(p) for p in protected):
        return
    state = git_state()
    if state["dirty"]:
        raise ConfigError(f"{out} is under a committed results folder and the working tree has uncommitted changes "
                          f"(diff {str(state['diff_sha256'])[:12]}): commit first, or pass --allow-dirty (recorded)")


def git_commit(cwd: str | Path | None = None) -> str | None:
    """The current git commit of the project (None outside a checkout)."""
    return git_state(cwd)["commit"]


def relative_command(argv: list[str] | None = None, cwd: str | Path | None = None) -> str:
    """The command line as typed, with the program as its name (``testbed``) and paths inside the working folder
    relative to it; the home folder becomes ``~`` (no absolute home paths in committed metadata)."""
    argv = list((_COMMAND or sys.argv) if argv is None else argv)
    if not argv:
        return ""
    here = Path(cwd) if cwd is not None else Path.cwd()
    home = str(Path.home())
    prog = Path(argv[0]).name
    if prog in ("__main__.py", "cli.py"):
        prog = "testbed"

    def rel(arg: str) -> str:
        head, eq, value = arg.partition("=") if arg.startswith("-") and "=" in arg else ("", "", arg)
        if not value.startswith("/"):
            return arg
        try:
            return head + eq + Path(value).relative_to(here).as_posix()
        except ValueError:
            if value == home or value.startswith(home + "/"):
                return head + eq + "~" + value[len(home):]
            return arg

    return " ".join([prog, *(rel(a) for a in argv[1:])])


def host_info() -> dict[str, Any]:
    """CPU model, core count, GPU model (when CUDA is available), platform and torch threads."""
    import torch

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"platform": platform.platform(), "cpu": cpu, "cores": os.cpu_count(), "gpu": gpu,
            "threads": torch.get_num_threads()}


def run_metadata(config: Any = None, seeds: Iterable[int] | None = None, **extra: Any) -> dict[str, Any]:
    """Provenance of a results folder: the command (paths relative to the working folder), config, seeds, git
    commit with the dirty flag and diff hash of the tree the run started from, package versions, host (CPU/GPU
    model, threads) and time."""
    import numpy
    import scipy
    import torch
    import torchdiffeq

    state = git_state()
    return {
        "command": relative_command(),
        "config": to_jsonable(config),
        "seeds": list(seeds) if seeds is not None else None,
        "commit": state["commit"],
        "dirty": state["dirty"],
        "diff_sha256": state["diff_sha256"],
        "allow_dirty": _ALLOW_DIRTY,
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "torchdiffeq": getattr(torchdiffeq, "__version__", "?"), "numpy": numpy.__version__,
                     "scipy": scipy.__version__, "testbed": _version()},
        "host": host_info(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **extra,
    }


def _version() -> str:
    from testbed import __version__

    return __version__

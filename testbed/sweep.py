"""Sweeps over seeds × configs on Dask distributed: resumable, one tidy table (``testbed sweep SPEC.toml``).

A **spec** (TOML) names one experiment and the cells to run::

    experiment = "law-recovery"     # a registered experiment (`testbed list`)
    quick = true                    # start from quick_config(), or from Config() (false, the default)
    seeds = [0, 1, 2]               # every cell runs once per seed (default: the base config's seeds)
    figures = false                 # draw each cell's own figure too (default false: sweeps need the tables)

    [fixed]                         # options shared by every cell
    systems = ["van_der_pol"]
    steps = 300

    [grid]                          # Cartesian product of these lists
    n_layers = [16, 32, 64]
    objectives = ["endpoint", "field"]

    [[cells]]                       # optional extra cells (each merged over [fixed]; not crossed with [grid])
    n_layers = 128
    lr = 1e-3

Every option must be a field of the experiment's ``Config`` (``seeds`` is set by the top-level ``seeds``); a
tuple-valued field takes a scalar as a one-element tuple, so ``objectives = ["endpoint", "field"]`` in
``[grid]`` gives one cell per objective. Each cell's config is built (and so validated) before anything runs.

A **cell** is (experiment, resolved config with one seed); its id is a stable hash of that canonical config.
Each cell runs as one Dask task (:func:`run_cell`) that pins torch to ``threads`` threads, runs the
experiment into ``SWEEP_DIR/cells/.tmp-ID-*/`` and renames that folder to ``SWEEP_DIR/cells/ID/`` when done,
with ``status.json`` (ok / failed + error and traceback), ``cell.json`` (options, config) and ``rows.csv``
(the rows ``run`` returned). Re-running the same sweep skips cells whose status is ok and re-runs failed or
missing ones; a killed sweep loses at most the cells in flight. A cell that raises is recorded and does not
stop the others. At the end the sweep writes, from the cells' ``rows.csv`` in spec order (so a resumed sweep
gives the same table as an uninterrupted one):

* ``SWEEP_DIR/results.csv`` (and ``results.parquet`` if pyarrow is installed): ``cell_id``, one column per
  swept option (``seed`` included), then the experiment's own result columns;
* ``SWEEP_DIR/summary.csv``: mean and sample std (ddof = 1) over seeds of every numeric result column,
  grouped by the swept options and the experiment's natural keys (its non-numeric columns: system,
  objective, …), with ``n`` the number of rows in the group;
* ``SWEEP_DIR/cells.csv``: one line per cell with its status, error and wall time;
* ``SWEEP_DIR/sweep.json`` and ``spec.toml``: the spec and the list of cells.

The TOML parser is :mod:`tomllib` (Python ≥ 3.11), or the ``tomli`` package on Python 3.10.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import hashlib
import itertools
import json
import math
import os
import shutil
import socket
import sys
import time
import traceback
import types
import typing
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from testbed.config import ConfigError, parse_value, to_jsonable
from testbed.plotting import figures_disabled
from testbed.results import atomic_write_text, read_csv, write_csv, write_json

#: default bound on the number of cells in one spec (``--max-cells`` raises it); checked before expanding
MAX_CELLS = 10_000
SPEC_KEYS = ("experiment", "quick", "seeds", "figures", "fixed", "grid", "cells", "description")
SEED_COLUMN = "seed"
STATUS_OK, STATUS_FAILED, STATUS_MISSING = "ok", "failed", "missing"
#: config fields that do not change a cell's results (left out of the cell id)
NON_RESULT_FIELDS = ("progress",)


def _load_toml(path: Path) -> dict[str, Any]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ModuleNotFoundError:
            raise ConfigError("reading a sweep spec needs Python >= 3.11 (tomllib) or the 'tomli' package "
                              "(pip install tomli)") from None
    if path.is_dir():
        raise ConfigError(f"sweep spec {path} is a folder; give the path of a .toml file")
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise FileNotFoundError(f"sweep spec {path} not found") from None
    except UnicodeDecodeError:
        raise ConfigError(f"sweep spec {path} is not a UTF-8 text file (binary?)") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from None
    except OSError as err:
        raise ConfigError(f"sweep spec {path}: cannot be read ({err.strerror or err})") from None


# --------------------------------------------------------------------------------------------- spec → cells
@dataclasses.dataclass(frozen=True)
class Cell:
    """One task of a sweep: the experiment's config for one option set and one seed."""

    cell_id: str
    options: dict[str, Any]  # swept option -> value (as given in the spec, ``seed`` included)
    overrides: dict[str, Any]  # every option applied to the base config (fixed + swept, ``seeds=(s,)``)
    config: Any  # the resolved, validated experiment config


@dataclasses.dataclass
class SweepSpec:
    """A parsed, validated sweep spec and the cells it defines (in spec order: grid product, then ``[[cells]]``,
    each once per seed)."""

    path: Path
    experiment: str
    quick: bool
    seeds: tuple[int, ...]
    fixed: dict[str, Any]
    swept: list[str]  # swept option names, ``seed`` last
    cells: list[Cell]
    figures: bool = False
    description: str = ""
    raw: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def module(self):
        from testbed.experiments import get_experiment

        return get_experiment(self.experiment)


def _seed_field(config_cls: type) -> str:
    names = {f.name for f in dataclasses.fields(config_cls)}
    if "seeds" in names:
        return "seeds"
    if "seed" in names:
        return "seed"
    raise ConfigError(f"{config_cls.__name__} has no seeds/seed field: cannot sweep seeds")


def _coerce(name: str, value: Any, hint: Any, where: str) -> Any:
    """A TOML value → the field's type: lists → tuples for tuple fields, a scalar → a one-element tuple, strings
    parsed for non-string fields (``"1e-3"`` → 0.001)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Union or origin is types.UnionType:
        non_none = [a for a in args if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        hint, origin, args = non_none[0], typing.get_origin(non_none[0]), typing.get_args(non_none[0])
    try:
        if origin in (tuple, list):
            inner = args[0] if args else str
            items = list(value) if isinstance(value, (list, tuple)) else [value]
            vals = [parse_value(v, inner) if isinstance(v, str) and inner is not str else v for v in items]
            return tuple(vals) if origin is tuple else vals
        if isinstance(value, str) and hint is not str:
            return parse_value(value, hint)
        if hint is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
    except (ValueError, TypeError) as err:
        raise ConfigError(f"{where}: bad value {value!r} for option {name!r}: {err}") from None
    return value


def _check_options(opts: Mapping[str, Any], valid: Sequence[str], where: str, experiment: str) -> None:
    for key in opts:
        if key in ("seeds", "seed"):
            raise ConfigError(f"{where}: option {key!r}: set seeds with the top-level `seeds = [...]` of the spec")
        if key not in valid:
            close = difflib.get_close_matches(key, list(valid), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{where}: unknown option {key!r}{hint} for experiment {experiment!r}; "
                              f"valid options: {', '.join(valid)}")


def canonical(obj: Any) -> Any:
    """A JSON-stable form of a config value (tuples → lists, floats kept exact)."""
    return to_jsonable(obj)


def cell_id_of(experiment: str, config: Any) -> str:
    """Stable id of a cell: the first 12 hex digits of the SHA-256 of its canonical config (without
    :data:`NON_RESULT_FIELDS`)."""
    cfg = {k: v for k, v in canonical(config).items() if k not in NON_RESULT_FIELDS}
    text = json.dumps({"experiment": experiment, "config": cfg}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def load_spec(path: str | Path, max_cells: int | None = None) -> SweepSpec:
    """Read and validate a sweep spec; every cell's config is built (so validated) here.

    Raises :class:`ConfigError` naming the spec file and the offending key for an unknown experiment or option,
    an empty ``[grid]`` or grid list, bad seeds, a config the experiment rejects, or more than ``max_cells``
    cells (default :data:`MAX_CELLS`; counted from the list lengths before anything is expanded).
    """
    from testbed.experiments import get_experiment

    path = Path(path)
    raw = _load_toml(path)
    unknown = [k for k in raw if k not in SPEC_KEYS]
    if unknown:
        close = difflib.get_close_matches(unknown[0], SPEC_KEYS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"{path}: unknown top-level key {unknown[0]!r}{hint}; valid keys: {', '.join(SPEC_KEYS)}")
    if "experiment" not in raw:
        raise ConfigError(f"{path}: missing `experiment = \"NAME\"` (see `testbed list`)")
    name = str(raw["experiment"])
    try:
        exp = get_experiment(name)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    quick = raw.get("quick", False)
    if not isinstance(quick, bool):
        raise ConfigError(f"{path}: `quick` must be true or false, got {quick!r}")
    figures = raw.get("figures", False)
    if not isinstance(figures, bool):
        raise ConfigError(f"{path}: `figures` must be true or false, got {figures!r}")
    base = exp.quick_config() if quick else exp.Config()
    cls = type(base)
    seed_field = _seed_field(cls)
    valid = [f.name for f in dataclasses.fields(cls) if f.init and f.name != seed_field]
    hints = typing.get_type_hints(cls)

    seeds_raw = raw.get("seeds")
    if seeds_raw is None:
        base_seeds = getattr(base, seed_field)
        seeds = tuple(base_seeds) if isinstance(base_seeds, (list, tuple)) else (base_seeds,)
    else:
        if not isinstance(seeds_raw, list) or not seeds_raw:
            raise ConfigError(f"{path}: `seeds` must be a non-empty list of non-negative integers, got {seeds_raw!r}")
        seeds = tuple(seeds_raw)
    if any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds):
        raise ConfigError(f"{path}: `seeds` must hold non-negative integers, got {list(seeds)!r}")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"{path}: `seeds` has duplicates: {list(seeds)!r}")

    def table(key: str) -> dict[str, Any]:
        val = raw.get(key, {})
        if not isinstance(val, dict):
            raise ConfigError(f"{path}: `{key}` must be a table ([{key}]), got {val!r}")
        return val

    fixed, grid = table("fixed"), table("grid")
    extra = raw.get("cells", [])
    if not isinstance(extra, list) or not all(isinstance(c, dict) for c in extra):
        raise ConfigError(f"{path}: `cells` must be an array of tables ([[cells]])")
    _check_options(fixed, valid, f"{path} [fixed]", name)
    _check_options(grid, valid, f"{path} [grid]", name)
    for i, c in enumerate(extra):
        _check_options(c, valid, f"{path} [[cells]] #{i + 1}", name)
        if not c:
            raise ConfigError(f"{path}: [[cells]] #{i + 1} is empty: give at least one option")
    if "grid" in raw and not grid:
        raise ConfigError(f"{path}: [grid] is empty: give at least one option with a list of values "
                          "(or drop the table)")
    for key, vals in grid.items():
        if not isinstance(vals, list):
            raise ConfigError(f"{path} [grid]: option {key!r} must be a list of values, got {vals!r}")
        if not vals:
            raise ConfigError(f"{path} [grid]: option {key!r} is an empty list: the grid would have no cells")
    both = [k for k in grid if k in fixed]
    if both:
        raise ConfigError(f"{path}: option {both[0]!r} is in both [fixed] and [grid]")
    limit = MAX_CELLS if max_cells is None else max_cells
    n_cells = (math.prod(len(v) for v in grid.values()) if grid else (0 if extra else 1)) + len(extra)
    n_cells *= len(seeds)
    if n_cells > limit:
        sizes = " × ".join(f"{k}: {len(v)}" for k, v in grid.items())
        raise ConfigError(f"{path}: the spec defines {n_cells:,} cells ({sizes or 'no grid'}, "
                          f"{len(extra)} extra cell(s), {len(seeds)} seed(s)), more than the limit of {limit:,}; "
                          "shrink the grid or pass --max-cells N")

    swept = list(grid)
    for c in extra:
        swept += [k for k in c if k not in swept]
    option_sets: list[tuple[str, dict[str, Any]]] = []
    keys = list(grid)
    for combo in itertools.product(*(grid[k] for k in keys)) if keys else ([] if extra else [()]):
        option_sets.append(("[grid]", dict(zip(keys, combo, strict=True))))
    option_sets += [(f"[[cells]] #{i + 1}", dict(c)) for i, c in enumerate(extra)]

    cells: list[Cell] = []
    seen: dict[str, str] = {}
    for where, opts in option_sets:
        for seed in seeds:
            merged = {**fixed, **opts}
            overrides = {k: _coerce(k, v, hints[k], f"{path} {where}") for k, v in merged.items()}
            overrides[seed_field] = (seed,) if seed_field == "seeds" else seed
            try:
                cfg = dataclasses.replace(base, **overrides)
            except (ConfigError, ValueError, TypeError, KeyError) as err:
                shown = ", ".join(f"{k}={v!r}" for k, v in opts.items())
                raise ConfigError(f"{path} {where} ({shown}, seed={seed}): {err}") from None
            if hasattr(cfg, "progress"):
                cfg = dataclasses.replace(cfg, progress=False)
            cid = cell_id_of(name, cfg)
            label = f"{where} {opts} seed={seed}"
            if cid in seen:
                raise ConfigError(f"{path}: {label} is the same cell as {seen[cid]}")
            seen[cid] = label
            values = {k: getattr(cfg, k) for k in swept}
            values[SEED_COLUMN] = seed
            cells.append(Cell(cid, values, overrides, cfg))
    if not cells:
        raise ConfigError(f"{path}: the spec defines no cells")
    return SweepSpec(path=path, experiment=name, quick=quick, seeds=seeds, fixed=fixed, swept=[*swept, SEED_COLUMN],
                     cells=cells, figures=figures, description=str(raw.get("description", "")), raw=raw)


# --------------------------------------------------------------------------------------------- one cell
def _status(cell_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((cell_dir / "status.json").read_text())
    except (OSError, ValueError):
        return None


def cell_status(sweep_dir: str | Path, cell_id: str) -> str:
    """``ok``, ``failed`` or ``missing`` for one cell of a sweep folder."""
    st = _status(Path(sweep_dir) / "cells" / cell_id)
    return STATUS_MISSING if st is None else str(st.get("status", STATUS_FAILED))


def run_cell(task: dict[str, Any]) -> dict[str, Any]:
    """Run one cell (the Dask task): pin torch threads, run the experiment into a temporary folder, record
    ``rows.csv`` / ``cell.json`` / ``status.json`` and rename the folder to ``cells/ID`` atomically.

    Never raises for an error of the experiment: that is recorded as ``status = failed`` with the error and
    traceback, and returned. ``task`` holds ``experiment``, ``config`` (the config object), ``cell_id``,
    ``options``, ``sweep_dir``, ``threads`` and ``figures``.
    """
    import torch

    from testbed.experiments import get_experiment

    threads = int(task.get("threads") or 1)
    torch.set_num_threads(threads)
    cells = Path(task["sweep_dir"]) / "cells"
    cells.mkdir(parents=True, exist_ok=True)
    final = cells / task["cell_id"]
    tmp = cells / f".tmp-{task['cell_id']}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    info = {"cell_id": task["cell_id"], "experiment": task["experiment"], "options": task["options"],
            "config": task["config"]}
    write_json(tmp / "cell.json", info)
    t0 = time.perf_counter()
    status: dict[str, Any] = {"cell_id": task["cell_id"], "host": socket.gethostname(), "pid": os.getpid(),
                              "threads": threads}
    try:
        exp = get_experiment(task["experiment"])
        with contextlib.nullcontext() if task.get("figures") else figures_disabled():
            rows = exp.run(task["config"], tmp / "run")
        write_csv(tmp / "rows.csv", rows)
        status.update(status=STATUS_OK, n_rows=len(rows))
    except Exception as err:  # noqa: BLE001 — a failing cell must not stop the sweep
        status.update(status=STATUS_FAILED, error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc())
    status.update(seconds=time.perf_counter() - t0, finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    write_json(tmp / "status.json", status)
    _publish(tmp, final)
    return {k: v for k, v in status.items() if k != "traceback"}


def _publish(tmp: Path, final: Path) -> None:
    """Rename a finished cell folder into place. A failed earlier attempt is replaced; if another run of the same
    cell (a duplicate task: a client killed while a worker kept running, a worker retried by Dask) has already
    published an ok result, that one is kept and ``tmp`` discarded — cells are deterministic."""
    for _ in range(3):
        existing = _status(final)
        if existing is not None and existing.get("status") == STATUS_OK:
            shutil.rmtree(tmp, ignore_errors=True)
            return
        if final.exists():
            shutil.rmtree(final, ignore_errors=True)
        try:
            os.replace(tmp, final)
            return
        except OSError:  # another attempt published between the check and the rename: look again
            continue
    raise RuntimeError(f"could not publish {tmp} as {final}")


def _record_lost(sweep_dir: Path, cell: Cell, error: str) -> dict[str, Any]:
    """Record a cell whose task died without writing its status (e.g. a killed worker)."""
    final = sweep_dir / "cells" / cell.cell_id
    existing = _status(final)
    if existing is not None:  # the cell was published after all (e.g. by a duplicate task)
        return existing
    status = {"cell_id": cell.cell_id, "status": STATUS_FAILED, "error": error}
    final.mkdir(parents=True, exist_ok=True)
    write_json(final / "cell.json", {"cell_id": cell.cell_id, "options": cell.options, "config": cell.config})
    write_json(final / "status.json", status)
    return status


# --------------------------------------------------------------------------------------------- the sweep
@dataclasses.dataclass
class SweepResult:
    """What a sweep call did and where the tables are."""

    sweep_dir: Path
    n_cells: int
    skipped: int
    ran: int
    failed: list[str]  # ids of cells whose status is failed at the end
    missing: list[str]  # ids of cells with no status at the end (interrupted)
    results: Path | None
    summary: Path | None
    seconds: float


def _task(spec: SweepSpec, cell: Cell, sweep_dir: Path, threads: int) -> dict[str, Any]:
    return {"experiment": spec.experiment, "config": cell.config, "cell_id": cell.cell_id,
            "options": canonical(cell.options), "sweep_dir": str(sweep_dir), "threads": threads,
            "figures": spec.figures}


def _progress_bar(total: int, initial: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="sweep", unit="cell", disable=not enabled, dynamic_ncols=True)


def local_cluster(workers: int, threads: int = 1):
    """A ``LocalCluster`` of ``workers`` single-threaded worker processes whose environment pins BLAS/OpenMP to
    ``threads`` threads and can import this package; no dashboard (no port to clash with)."""
    from distributed import LocalCluster

    import testbed

    root = str(Path(testbed.__file__).resolve().parent.parent)
    pypath = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
    env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "PYTHONPATH": pypath}
    # after Ctrl-C the interrupted workers leave semaphores behind; multiprocessing's resource tracker (started
    # from this process's environment) would print a multi-line warning about them after our one-line message
    if "PYTHONWARNINGS" not in os.environ:
        os.environ["PYTHONWARNINGS"] = "ignore:resource_tracker:UserWarning"
    return LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                        env=env, silence_logs=50)  # CRITICAL: a lost worker becomes a failed cell, not log noise


def default_workers() -> int:
    return max(os.cpu_count() or 1, 1)


def run_sweep(spec: SweepSpec | str | Path, sweep_dir: str | Path | None = None, *, workers: int | None = None,
              threads: int | None = None, scheduler: str | None = None, sequential: bool = False,
              rerun_failed: bool = True, progress: bool = True) -> SweepResult:
    """Run every unfinished cell of ``spec`` and write the merged tables to ``sweep_dir``.

    ``scheduler``: address of an existing Dask scheduler (``tcp://HOST:PORT``); otherwise a ``LocalCluster``
    with ``workers`` single-threaded worker processes (default: one per core). ``threads``: torch threads per
    task (default: cores // workers, at least 1). ``sequential``: run the cells one after another in this
    process instead (no Dask; for debugging and as a benchmark baseline). ``rerun_failed=False`` leaves failed
    cells as they are.
    """
    if not isinstance(spec, SweepSpec):
        spec = load_spec(spec)
    sweep_dir = Path(sweep_dir or Path("runs") / "sweeps" / spec.path.stem).resolve()
    cells_dir = sweep_dir / "cells"
    cells_dir.mkdir(parents=True, exist_ok=True)
    for stale in cells_dir.glob(".tmp-*"):  # left by a killed sweep
        shutil.rmtree(stale, ignore_errors=True)
    _write_spec(spec, sweep_dir)
    t0 = time.perf_counter()
    done = {c.cell_id for c in spec.cells if cell_status(sweep_dir, c.cell_id) == STATUS_OK}
    if not rerun_failed:
        done |= {c.cell_id for c in spec.cells if cell_status(sweep_dir, c.cell_id) == STATUS_FAILED}
    todo = [c for c in spec.cells if c.cell_id not in done]
    n_workers = workers if workers is not None else default_workers()
    if n_workers <= 0:
        raise ConfigError(f"--workers must be a positive integer, got {n_workers}")
    if threads is None:
        threads = max((os.cpu_count() or 1) // (1 if sequential else n_workers), 1)
    if threads <= 0:
        raise ConfigError(f"--threads must be a positive integer, got {threads}")
    n_failed = 0
    bar = _progress_bar(len(spec.cells), len(done), progress and bool(todo))
    try:
        if todo and sequential:
            for cell in todo:
                bar.set_postfix_str(f"failed={n_failed} running=1")
                st = run_cell(_task(spec, cell, sweep_dir, threads))
                n_failed += st["status"] != STATUS_OK
                bar.update(1)
        elif todo:
            n_failed = _run_distributed(spec, todo, sweep_dir, threads, n_workers, scheduler, bar)
        bar.set_postfix_str(f"failed={n_failed} running=0")
    finally:
        bar.close()
    res, summ = merge(spec, sweep_dir)
    statuses = {c.cell_id: cell_status(sweep_dir, c.cell_id) for c in spec.cells}
    return SweepResult(sweep_dir=sweep_dir, n_cells=len(spec.cells), skipped=len(done), ran=len(todo),
                       failed=[k for k, v in statuses.items() if v == STATUS_FAILED],
                       missing=[k for k, v in statuses.items() if v == STATUS_MISSING], results=res, summary=summ,
                       seconds=time.perf_counter() - t0)


def _run_distributed(spec: SweepSpec, todo: list[Cell], sweep_dir: Path, threads: int, workers: int,
                     scheduler: str | None, bar) -> int:
    """Submit every cell to Dask and follow them with one progress bar; returns the number that failed."""
    try:
        from distributed import Client, as_completed
    except ModuleNotFoundError:
        raise ConfigError("testbed sweep needs dask distributed: pip install 'dask[distributed]' "
                          "(or run with --sequential)") from None
    cluster = None
    try:
        if scheduler:
            try:
                client = Client(scheduler, timeout="20s")
            except (OSError, TimeoutError) as err:
                raise ConfigError(f"--scheduler: cannot connect to {scheduler}: {err}") from None
        else:
            cluster = local_cluster(workers, threads)
            client = Client(cluster)
        with client:
            by_key = {}
            futures = []
            for cell in todo:
                fut = client.submit(run_cell, _task(spec, cell, sweep_dir, threads), key=f"cell-{cell.cell_id}",
                                    pure=False, retries=0)
                by_key[fut.key] = cell
                futures.append(fut)
            n_failed, finished = 0, 0

            def running() -> int:
                try:
                    slots = sum(client.nthreads().values())
                    return min(sum(len(v) for v in client.processing().values()), slots, len(futures) - finished)
                except Exception:  # noqa: BLE001 — the count is cosmetic
                    return 0

            bar.set_postfix_str(f"failed=0 running={running()}")
            for fut in as_completed(futures):
                cell = by_key[fut.key]
                try:
                    st = fut.result()
                except Exception as err:  # noqa: BLE001 — the task died (worker killed, unpicklable, …)
                    st = _record_lost(sweep_dir, cell, f"{type(err).__name__}: {err}")
                finished += 1
                n_failed += st["status"] != STATUS_OK
                bar.update(1)
                bar.set_postfix_str(f"failed={n_failed} running={running()}")
            return n_failed
    finally:
        if cluster is not None:
            cluster.close()


def _write_spec(spec: SweepSpec, sweep_dir: Path) -> None:
    with contextlib.suppress(OSError):
        atomic_write_text(sweep_dir / "spec.toml", spec.path.read_text())
    write_json(sweep_dir / "sweep.json", {
        "spec": str(spec.path), "experiment": spec.experiment, "quick": spec.quick, "seeds": list(spec.seeds),
        "fixed": spec.fixed, "swept": spec.swept, "figures": spec.figures, "description": spec.description,
        "command": " ".join(sys.argv),
        "cells": [{"cell_id": c.cell_id, "options": c.options} for c in spec.cells],
    })


# --------------------------------------------------------------------------------------------- tables
def _column_value(v: Any) -> Any:
    """A swept option's value as one table cell: one-element tuples unwrapped, others joined by commas."""
    if isinstance(v, (list, tuple)):
        return v[0] if len(v) == 1 else ",".join(map(str, v))
    return v


def merged_rows(spec: SweepSpec, sweep_dir: str | Path) -> list[dict[str, Any]]:
    """The rows of every finished cell, in spec order: ``cell_id``, the swept options, the experiment's
    columns (read back from each cell's ``rows.csv``, so fresh and resumed sweeps give identical values)."""
    sweep_dir = Path(sweep_dir)
    out: list[dict[str, Any]] = []
    for cell in spec.cells:
        cdir = sweep_dir / "cells" / cell.cell_id
        if cell_status(sweep_dir, cell.cell_id) != STATUS_OK or not (cdir / "rows.csv").exists():
            continue
        swept = {k: _column_value(v) for k, v in cell.options.items()}
        for row in read_csv(cdir / "rows.csv"):
            out.append({"cell_id": cell.cell_id, **swept, **{k: v for k, v in row.items() if k not in swept}})
    return out


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def group_keys(rows: Sequence[Mapping[str, Any]], swept: Sequence[str], module=None) -> list[str]:
    """Columns a summary groups by: the swept options but the seed, then the experiment's ``GROUP_KEYS`` (if it
    defines them) or its non-numeric columns (system, objective, …)."""
    keys = [k for k in swept if k != SEED_COLUMN]
    natural = list(getattr(module, "GROUP_KEYS", []) or [])
    if not natural:
        cols = list(dict.fromkeys(k for r in rows for k in r))
        natural = [c for c in cols if c not in ("cell_id", SEED_COLUMN) and c not in keys
                   and any(r.get(c, "") != "" for r in rows)
                   and not all(_is_number(r.get(c)) for r in rows if r.get(c, "") != "")]
    return keys + [k for k in natural if k not in keys]


def summarize(rows: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> list[dict[str, Any]]:
    """Mean and sample std (ddof = 1; empty for one row) of every numeric column over the rows of each group of
    ``keys`` (groups in first-seen order), with ``n`` rows per group."""
    metrics = [c for c in dict.fromkeys(k for r in rows for k in r)
               if c not in keys and c not in ("cell_id", SEED_COLUMN)
               and any(_is_number(r.get(c)) for r in rows)
               and all(_is_number(r.get(c)) or r.get(c, "") == "" for r in rows)]
    groups: dict[tuple, list[Mapping[str, Any]]] = {}
    for r in rows:
        groups.setdefault(tuple(r.get(k, "") for k in keys), []).append(r)
    out = []
    for gkey, members in groups.items():
        row: dict[str, Any] = dict(zip(keys, gkey, strict=True))
        row["n"] = len(members)
        for m in metrics:
            vals = [float(r[m]) for r in members if _is_number(r.get(m))]
            finite = [v for v in vals if not math.isnan(v)]
            mean = sum(finite) / len(finite) if finite else float("nan")
            row[f"{m}_mean"] = mean
            row[f"{m}_std"] = (math.sqrt(sum((v - mean) ** 2 for v in finite) / (len(finite) - 1))
                               if len(finite) > 1 else "")
        out.append(row)
    return out


def _write_parquet(path: Path, rows: Sequence[Mapping[str, Any]]) -> Path | None:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ModuleNotFoundError:
        return None
    from testbed.results import atomic_path

    cols = list(dict.fromkeys(k for r in rows for k in r))
    data: dict[str, list[Any]] = {}
    for c in cols:
        vals = [r.get(c) for r in rows]
        vals = [None if v == "" else v for v in vals]
        kinds = {type(v) for v in vals if v is not None}
        if len(kinds) > 1 and not kinds <= {int, float}:
            vals = [None if v is None else str(v) for v in vals]
        elif kinds == {int, float}:
            vals = [None if v is None else float(v) for v in vals]
        data[c] = vals
    with atomic_path(path) as tmp:
        pq.write_table(pa.table(data), tmp)
    return path


def merge(spec: SweepSpec, sweep_dir: str | Path) -> tuple[Path | None, Path | None]:
    """Write ``results.csv`` (+ ``.parquet``), ``summary.csv`` and ``cells.csv`` for the finished cells; returns
    the paths of the first two (None when no cell has finished)."""
    sweep_dir = Path(sweep_dir)
    status_rows = []
    for cell in spec.cells:
        st = _status(sweep_dir / "cells" / cell.cell_id) or {"status": STATUS_MISSING}
        status_rows.append({"cell_id": cell.cell_id, **{k: _column_value(v) for k, v in cell.options.items()},
                            "status": st.get("status", STATUS_FAILED), "error": st.get("error", ""),
                            "seconds": st.get("seconds", "")})
    write_csv(sweep_dir / "cells.csv", status_rows)
    rows = merged_rows(spec, sweep_dir)
    res_path, sum_path = sweep_dir / "results.csv", sweep_dir / "summary.csv"
    if not rows:
        for p in (res_path, sum_path, sweep_dir / "results.parquet"):
            p.unlink(missing_ok=True)
        return None, None
    swept = list(spec.swept)
    keys = group_keys(rows, swept, spec.module)
    summary = summarize(rows, keys)
    write_csv(sum_path, summary)
    _write_parquet(sweep_dir / "results.parquet", rows)
    write_csv(res_path, rows)  # last
    return res_path, sum_path


def format_report(res: SweepResult) -> str:
    """A short human summary of a sweep call."""
    lines = [f"sweep {res.sweep_dir}: {res.n_cells} cells, {res.skipped} already done, ran {res.ran} "
             f"in {res.seconds:.1f} s; {len(res.failed)} failed, {len(res.missing)} missing"]
    if res.results:
        lines.append(f"wrote {res.results}, {res.summary} and {res.sweep_dir / 'cells.csv'}")
    for cid in res.failed:
        st = _status(res.sweep_dir / "cells" / cid) or {}
        lines.append(f"  failed {cid}: {st.get('error', '?')}  (cells/{cid}/status.json)")
    return "\n".join(lines)


__all__ = ["Cell", "SweepResult", "SweepSpec", "cell_id_of", "cell_status", "format_report", "group_keys",
           "load_spec", "local_cluster", "merge", "merged_rows", "run_cell", "run_sweep", "summarize"]

"""One cell of a sweep: run it in a temporary folder and publish it atomically (:func:`run_cell`).

Each cell runs as one Dask task that pins torch to ``threads`` threads, runs the experiment into
``SWEEP_DIR/cells/.tmp-ID-*/`` and renames that folder to ``SWEEP_DIR/cells/ID/`` when done, with
``status.json`` (ok / failed + error and traceback), ``cell.json`` (options, config) and ``rows.csv`` (the rows
``run`` returned). ``run`` never draws; with ``figures = true`` in the spec the cell then calls the experiment's
``plot(run_dir)``. A cell that raises is recorded as failed and does not stop the others.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import time
import traceback
import uuid
from pathlib import Path
from typing import Any

from testbed import results
from testbed.results import write_csv, write_json
from testbed.sweep.spec import Cell

STATUS_OK, STATUS_FAILED, STATUS_MISSING = "ok", "failed", "missing"


def _status(cell_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((cell_dir / "status.json").read_text())
    except (OSError, ValueError):
        return None


def cell_status(sweep_dir: str | Path, cell_id: str) -> str:
    """``ok``, ``failed`` or ``missing`` for one cell of a sweep folder."""
    st = _status(Path(sweep_dir) / "cells" / cell_id)
    return STATUS_MISSING if st is None else str(st.get("status", STATUS_FAILED))


def _in_dask_worker() -> bool:
    distributed = sys.modules.get("distributed")
    if distributed is None:
        return False
    try:
        distributed.get_worker()
    except ValueError:
        return False
    return True


def run_cell(task: dict[str, Any]) -> dict[str, Any]:
    """Run one cell (the Dask task): pin torch threads, run the experiment into a temporary folder (and draw its
    figures from that folder when ``figures``), record ``rows.csv`` / ``cell.json`` / ``status.json`` and rename
    the folder to ``cells/ID`` atomically.

    Never raises for an error of the experiment: that is recorded as ``status = failed`` with the error and
    traceback, and returned. ``task`` holds ``experiment``, ``config`` (the config object), ``cell_id``,
    ``options``, ``sweep_dir``, ``threads`` and ``figures``.
    """
    import torch

    from testbed.experiments import get_experiment

    threads = int(task.get("threads") or 1)
    torch.set_num_threads(threads)
    if task.get("git_state") is not None:   # the tree the sweep started from (see runner._task)
        results.pin_git_state(task["git_state"], task.get("command"))
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
                              "threads": threads, "started_unix": time.time()}
    try:
        exp = get_experiment(task["experiment"])
        rows = exp.run(task["config"], tmp / "run")
        if task.get("figures"):
            if _in_dask_worker():  # no display in a worker process (in this process, keep the caller's backend)
                import matplotlib

                matplotlib.use("Agg")
            exp.plot(tmp / "run")
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

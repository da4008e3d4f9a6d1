"""Running a sweep: every unfinished cell as one task on Dask distributed, or in sequence (:func:`run_sweep`).

Re-running the same sweep skips cells whose status is ok and re-runs failed or missing ones; a killed sweep loses
at most the cells in flight. At the end the sweep writes the merged tables (:mod:`testbed.sweep.merge`) and
``SWEEP_DIR/sweep.json`` and ``spec.toml``: the spec and the list of cells.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from testbed.config import ConfigError
from testbed.results import atomic_write_text, git_state, relative_command, write_json
from testbed.sweep.cells import STATUS_FAILED, STATUS_MISSING, STATUS_OK, _record_lost, cell_status, run_cell
from testbed.sweep.merge import merge
from testbed.sweep.spec import Cell, SweepSpec, canonical, load_spec


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
    """One cell's Dask task. It carries the git state of the tree the sweep *started* from, so every cell
    records that commit and dirty flag even if the working tree changes while the sweep runs."""
    return {"experiment": spec.experiment, "config": cell.config, "cell_id": cell.cell_id,
            "options": canonical(cell.options), "sweep_dir": str(sweep_dir), "threads": threads,
            "figures": spec.figures, "git_state": git_state(), "command": relative_command()}


def _progress_bar(total: int, initial: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="sweep", unit="cell", disable=not enabled, dynamic_ncols=True)


#: what every worker process imports before its first cell; imported once, in the fork server the workers are
#: forked from (:func:`start_worker_server`), instead of once per worker after a ``spawn``. ``torch._dynamo`` is
#: what the first ``torch.optim`` constructor imports (~1.5 s); the CLI adds the sweep's experiment module.
WORKER_PRELOAD = ("distributed", "numpy", "torch", "torch._dynamo", "testbed.sweep.cells", "testbed.experiments")


THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
#: the preload and thread count of the running fork server (None: not started by this module)
_SERVER: dict[str, Any] = {}


def _quiet_resource_tracker() -> None:
    """After Ctrl-C the interrupted workers leave semaphores behind; multiprocessing's resource tracker keeps the
    environment it started with and would print a multi-line warning about them after our one-line message."""
    if "PYTHONWARNINGS" not in os.environ:
        os.environ["PYTHONWARNINGS"] = "ignore:resource_tracker:UserWarning"


def stop_worker_server() -> None:
    """Let go of this process's fork server: the next :func:`start_worker_server` starts a fresh one, importing
    the current code (call it after editing modules in a long-lived session such as a notebook).

    Never waits. A fork server lives until its parent *and every process forked from it* have closed the "alive"
    pipe, so workers of a cluster that is still running keep the old server alive; it exits by itself after the
    last of them (a thread reaps it), and those workers keep working."""
    import threading
    from multiprocessing import forkserver, util

    server = forkserver._forkserver
    with server._lock:
        pid = getattr(server, "_forkserver_pid", None)
        if pid is not None:
            os.close(server._forkserver_alive_fd)
            address = server._forkserver_address
            server._forkserver_alive_fd = server._forkserver_pid = server._forkserver_address = None
            if address and not util.is_abstract_socket_namespace(address):
                with contextlib.suppress(OSError):
                    os.unlink(address)
            threading.Thread(target=_reap, args=(pid,), daemon=True, name="forkserver-reaper").start()
    _SERVER.clear()


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, 0)


def start_worker_server(threads: int = 1, preload: Sequence[str] = WORKER_PRELOAD) -> bool:
    """Start the ``forkserver`` that this process's Dask worker processes will be forked from, with ``preload``
    imported in it; returns whether this call started one (``False``: a suitable one is running, or the platform
    has no ``forkserver`` or ``distributed`` is not installed).

    A spawned worker pays the interpreter start plus every import (torch, scipy, the experiments: seconds) before
    its first cell, and on a small machine the workers pay it side by side with the client's own imports. The
    fork server pays it once and every worker of :func:`local_cluster` is a copy-on-write ``fork`` of it,
    started in milliseconds. The server runs no computation, so no OpenMP pool exists when it forks; its
    environment pins BLAS/OpenMP to ``threads`` threads (OpenBLAS sizes its pool at import and re-creates it in a
    forked child). Call it early (the CLI does, before it parses the spec): its imports then overlap the client's.

    A running server is reused when it was started here with the same ``threads`` and a preload that includes
    ``preload``; otherwise it is stopped and restarted. Its modules are those imported when it started: after
    editing code in a long-lived process, call :func:`stop_worker_server` (or use ``fork=False``).
    """
    import multiprocessing
    from multiprocessing import forkserver

    if "forkserver" not in multiprocessing.get_all_start_methods():
        return False
    try:
        import distributed.utils as dutils
    except ModuleNotFoundError:  # testbed sweep says what to install (runner._run_distributed)
        return False
    wanted = tuple(dict.fromkeys(preload))
    if getattr(forkserver._forkserver, "_forkserver_pid", None) is not None:
        if _SERVER.get("threads") == threads and set(wanted) <= set(_SERVER.get("preload", ())):
            return False
        stop_worker_server()
    # distributed sets its own preload list on first use (importing pandas & co. in *this* process to build it);
    # ours replaces it — mark it set so distributed leaves it alone
    if hasattr(dutils, "_forkserver_preload_set"):
        dutils._forkserver_preload_set = True
    _quiet_resource_tracker()
    multiprocessing.get_context("forkserver").set_forkserver_preload(list(wanted))
    pinned = {k: str(threads) for k in THREAD_VARIABLES}
    saved = {k: os.environ.get(k) for k in pinned}
    os.environ.update(pinned)
    try:
        forkserver.ensure_running()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    _SERVER.update(threads=threads, preload=wanted)
    return True


def start_method(fork: bool, threads: int) -> str:
    """``"forkserver"`` (the preloaded server of :func:`start_worker_server` running) when ``fork`` and the
    platform allows it, else ``"spawn"``: the ``distributed.worker.multiprocessing-method`` for the cluster."""
    import multiprocessing

    if fork and "forkserver" in multiprocessing.get_all_start_methods():
        start_worker_server(threads)
        return "forkserver"
    return "spawn"


def local_cluster(workers: int, threads: int = 1, fork: bool = True):
    """A ``LocalCluster`` of ``workers`` single-threaded worker processes whose environment pins BLAS/OpenMP to
    ``threads`` threads and can import this package; its HTTP server on a free port (no clash with another
    cluster). ``fork`` (default, POSIX): the workers are forked from the preloaded server of
    :func:`start_worker_server` (started here if none suitable is running); ``fork=False``: spawned, each importing
    everything itself (Dask's default). A worker the nanny restarts later is started by the method configured
    then (``run_sweep`` keeps the fork server configured while its cluster lives)."""
    import dask
    from distributed import LocalCluster

    import testbed

    root = str(Path(testbed.__file__).resolve().parent.parent)
    pypath = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
    env = {**{k: str(threads) for k in THREAD_VARIABLES}, "PYTHONPATH": pypath}
    _quiet_resource_tracker()
    with dask.config.set({"distributed.worker.multiprocessing-method": start_method(fork, threads)}):
        return LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                            env=env, silence_logs=50)  # CRITICAL: a lost worker becomes a failed cell, not log noise


def default_workers() -> int:
    return max(os.cpu_count() or 1, 1)


def default_threads(workers: int, sequential: bool = False) -> int:
    """torch threads per cell: the cores shared out among the workers (all of them when sequential), ≥ 1."""
    return max((os.cpu_count() or 1) // (1 if sequential else max(workers, 1)), 1)


def run_sweep(spec: SweepSpec | str | Path, sweep_dir: str | Path | None = None, *, workers: int | None = None,
              threads: int | None = None, scheduler: str | None = None, sequential: bool = False,
              rerun_failed: bool = True, progress: bool = True, fork: bool = True) -> SweepResult:
    """Run every unfinished cell of ``spec`` and write the merged tables to ``sweep_dir``.

    ``scheduler``: address of an existing Dask scheduler (``tcp://HOST:PORT``); otherwise a ``LocalCluster``
    with ``workers`` single-threaded worker processes (default: one per core). ``threads``: torch threads per
    task (default: cores // workers, at least 1). ``sequential``: run the cells one after another in this
    process instead (no Dask; for debugging and as a benchmark baseline). ``rerun_failed=False`` leaves failed
    cells as they are. ``fork``: the local cluster's workers are forked from a preloaded server
    (:func:`start_worker_server`) rather than spawned (``False``: Dask's default).
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
        threads = default_threads(n_workers, sequential)
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
            n_failed = _run_distributed(spec, todo, sweep_dir, threads, n_workers, scheduler, bar, fork)
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
                     scheduler: str | None, bar, fork: bool = True) -> int:
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
            cluster = local_cluster(workers, threads, fork=fork)
            client = Client(cluster)
        import dask

        method = start_method(fork, threads) if cluster is not None else dask.config.get(
            "distributed.worker.multiprocessing-method")
        with client, dask.config.set({"distributed.worker.multiprocessing-method": method}):  # for restarts too
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
        "command": relative_command(),
        "cells": [{"cell_id": c.cell_id, "options": c.options} for c in spec.cells],
    })

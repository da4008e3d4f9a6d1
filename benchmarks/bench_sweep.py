"""Speed-up of a sweep on a 2-worker Dask cluster over running the same cells one after another.

The same spec (default ``benchmarks/sweeps/law_recovery_tiny.toml``: 8 law-recovery cells of about a second)
runs three ways, each into its own fresh folder:

* ``sequential``  — ``run_sweep(..., sequential=True)`` in this process, after one warm-up cell (imports and
  first-call costs paid), torch on ``--threads`` threads: the best case for running in sequence;
* ``distributed`` — on a ``LocalCluster`` of ``--workers`` single-threaded worker processes that is already
  started and warmed up (one cell per worker beforehand): the steady-state throughput of the cluster;
  the two alternate for ``--repeats`` rounds and the median round's ratio is reported;
* ``cold``        — ``testbed sweep SPEC`` in a fresh interpreter, exactly as a user runs it: its own cluster,
  workers forked from a server that imported torch and the experiment while the client expanded the spec; and
  ``cold_spawn``, the same with ``--spawn-workers`` (each worker a fresh interpreter importing everything, Dask's
  default). Start-up = launch → first cell starting (skipped with ``--scheduler`` / ``--smoke``).

It prints the wall times, ``speedup = sequential / distributed`` and ``speedup_cold = sequential / cold``, and
checks that the distributed table equals the sequential one (wall-time columns aside). On 2 cores the ceiling
is 2×; other processes on the machine lower it (the 1-minute load average is recorded).

    python benchmarks/bench_sweep.py [--spec SPEC] [--workers 2] [--threads 1] [--repeats 3]
                                     [--scheduler tcp://…] [--dir DIR] [--smoke] [--json out.json]

``--smoke`` runs two 10-step cells instead (seconds; used by the test suite).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from testbed.results import write_json
from testbed.sweep import SweepSpec, load_spec, local_cluster, run_cell, run_sweep

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SPEC = REPO_ROOT / "benchmarks" / "sweeps" / "law_recovery_tiny.toml"
SMOKE_SPEC = """\
experiment = "law-recovery"
quick = true
seeds = [0, 1]
[fixed]
systems = ["linear_spiral"]
objectives = ["endpoint"]
steps = 10
n_train = 16
n_test = 8
n_layers = 8
width = 8
hidden_layers = 1
"""


def _table(path: Path | None) -> list[dict[str, str]]:
    if path is None:
        return []
    with open(path, newline="") as fh:
        return [{k: v for k, v in r.items() if not k.startswith("train_seconds")} for r in csv.DictReader(fh)]


def _cell_seconds(sweep_dir: Path) -> float:
    with open(sweep_dir / "cells.csv", newline="") as fh:
        return sum(float(r["seconds"]) for r in csv.DictReader(fh) if r["seconds"])


def _task(spec: SweepSpec, folder: Path, threads: int) -> dict[str, Any]:
    cell = spec.cells[0]
    return {"experiment": spec.experiment, "config": cell.config, "cell_id": cell.cell_id, "options": {},
            "sweep_dir": str(folder), "threads": threads, "figures": spec.figures}


def cold_cli(spec_path: Path, out: Path, workers: int, threads: int, flags: Sequence[str] = ()) -> dict[str, Any]:
    """Run ``testbed sweep SPEC`` as a user does — a fresh interpreter, its own cluster — and time it.
    ``startup_seconds``: launch → the first cell starting (its ``started_unix``): imports, spec expansion,
    cluster and workers, everything a cell does not do."""
    spec_path, out = Path(spec_path).resolve(), Path(out).resolve()
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "testbed", "sweep", str(spec_path), "--out", str(out), "--workers", str(workers),
           "--threads", str(threads), "--no-progress", *flags]
    t_launch = time.time()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_ROOT)
    seconds = time.perf_counter() - t0
    statuses = [json.loads(p.read_text()) for p in sorted((out / "cells").glob("*/status.json"))]
    started = [s["started_unix"] for s in statuses if "started_unix" in s]
    if proc.returncode != 0:
        print(f"testbed sweep exited {proc.returncode}: {proc.stderr[-1500:]}", file=sys.stderr)
    return {"seconds": seconds, "startup_seconds": (min(started) - t_launch) if started else float("nan"),
            "failed": int(proc.returncode != 0) + sum(s.get("status") != "ok" for s in statuses)}


def _load() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def bench(spec: SweepSpec, work: Path, workers: int = 2, threads: int = 1, scheduler: str | None = None,
          cold: bool = True, repeats: int = 3) -> dict[str, Any]:
    """Time ``spec`` sequentially and on a warm ``workers``-worker cluster, ``repeats`` rounds back to back (and
    once cold); return the record. The speed-up is the median over rounds of the per-round ratio, which load
    from other processes moves less than a ratio of two separately measured times."""
    from distributed import Client

    rec: dict[str, Any] = {"benchmark": "bench_sweep", "spec": str(spec.path), "cells": len(spec.cells),
                           "workers": workers, "threads_per_cell": threads, "repeats": repeats,
                           "load_before": _load(), "python": platform.python_version(), "cpus": os.cpu_count()}
    run_cell(_task(spec, work / "warmup-local", threads))  # imports and first-call costs, in this process
    cluster = None
    t0 = time.perf_counter()
    if scheduler is None:
        cluster = local_cluster(workers, threads)
        scheduler = cluster.scheduler_address
    rounds: list[dict[str, float]] = []
    try:
        with Client(scheduler) as client:
            client.wait_for_workers(workers, timeout=120)
            rec["cluster_start_seconds"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            addrs = sorted(client.nthreads())[:workers]
            futs = [client.submit(run_cell, _task(spec, work / f"warmup-{i}", threads), workers=[a], pure=False,
                                  allow_other_workers=False) for i, a in enumerate(addrs)]
            client.gather(futs)
            rec["worker_warmup_seconds"] = time.perf_counter() - t0
        for r in range(repeats):
            t0 = time.perf_counter()
            seq = run_sweep(spec, work / f"sequential-{r}", sequential=True, threads=threads, progress=False)
            t_seq = time.perf_counter() - t0
            t0 = time.perf_counter()
            dist = run_sweep(spec, work / f"distributed-{r}", scheduler=scheduler, threads=threads, progress=False)
            t_dist = time.perf_counter() - t0
            rounds.append({"sequential_seconds": t_seq, "distributed_seconds": t_dist, "speedup": t_seq / t_dist,
                           "sequential_cell_seconds": _cell_seconds(seq.sweep_dir),
                           "distributed_cell_seconds": _cell_seconds(dist.sweep_dir),
                           "failed": len(seq.failed) + len(dist.failed),
                           "tables_identical": _table(seq.results) == _table(dist.results)
                           and bool(_table(seq.results))})
    finally:
        if cluster is not None:
            cluster.close()
    rec["rounds"] = rounds
    mid = sorted(rounds, key=lambda x: x["speedup"])[len(rounds) // 2]  # the median round
    for key in ("sequential_seconds", "distributed_seconds", "speedup", "sequential_cell_seconds",
                "distributed_cell_seconds"):
        rec[key] = mid[key]
    # cells side by side: summed per-cell wall time / sweep wall time (≈ workers when the cores are free; other
    # processes' load shows as longer per-cell times instead)
    rec["concurrency"] = mid["distributed_cell_seconds"] / mid["distributed_seconds"]
    rec["failed"] = sum(x["failed"] for x in rounds)
    rec["tables_identical"] = all(x["tables_identical"] for x in rounds)
    if cold:
        for label, flags in (("cold", []), ("cold_spawn", ["--spawn-workers"])):
            c = cold_cli(spec.path, work / label, workers, threads, flags)
            rec[f"{label}_seconds"], rec[f"{label}_startup_seconds"] = c["seconds"], c["startup_seconds"]
            rec[f"speedup_{label}"] = rec["sequential_seconds"] / c["seconds"]
            rec[f"{label}_failed"] = c["failed"]
    rec["load_after"] = _load()
    return rec


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--spec", type=Path, default=DEFAULT_SPEC, help="sweep spec to time")
    p.add_argument("--workers", type=int, default=2, help="Dask worker processes")
    p.add_argument("--threads", type=int, default=1, help="torch threads per cell (both ways)")
    p.add_argument("--scheduler", default=None, help="use this running scheduler instead of a LocalCluster")
    p.add_argument("--dir", type=Path, default=None, help="work folder (default: a temporary one, removed)")
    p.add_argument("--repeats", type=int, default=3, help="back-to-back rounds (median speed-up is reported)")
    p.add_argument("--smoke", action="store_true", help="two tiny cells, one round, no cold run (seconds)")
    p.add_argument("--json", type=Path, default=None, help="write the record here")
    args = p.parse_args(argv)
    work = args.dir or Path(tempfile.mkdtemp(prefix="bench_sweep-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        spec_path = args.spec
        if args.smoke:
            spec_path = work / "smoke.toml"
            spec_path.write_text(SMOKE_SPEC)
        spec = load_spec(spec_path)
        rec = bench(spec, work, args.workers, args.threads, args.scheduler,
                    cold=not (args.smoke or args.scheduler), repeats=1 if args.smoke else args.repeats)
    finally:
        if args.dir is None:
            shutil.rmtree(work, ignore_errors=True)
    print(f"{rec['cells']} cells of {Path(rec['spec']).name}; {rec['workers']} workers × {rec['threads_per_cell']} "
          f"thread(s); load average {rec['load_before']} → {rec['load_after']}")
    print(f"  sequential (warm, in process)     {rec['sequential_seconds']:8.2f} s")
    print(f"  cluster start / worker warm-up    {rec['cluster_start_seconds']:8.2f} s / "
          f"{rec['worker_warmup_seconds']:.2f} s")
    ratios = ", ".join(f"{x['speedup']:.2f}" for x in rec["rounds"])
    print(f"  distributed (warm cluster)        {rec['distributed_seconds']:8.2f} s   speed-up {rec['speedup']:.2f}× "
          f"(median of {len(rec['rounds'])} rounds: {ratios})")
    print(f"  summed cell time: sequential {rec['sequential_cell_seconds']:.2f} s, distributed "
          f"{rec['distributed_cell_seconds']:.2f} s (cells side by side: {rec['concurrency']:.2f})")
    for label, what in (("cold", "workers forked from a preloaded server"), ("cold_spawn", "--spawn-workers")):
        if f"{label}_seconds" in rec:
            print(f"  cold `testbed sweep` ({what}) {rec[f'{label}_seconds']:6.2f} s   speed-up "
                  f"{rec[f'speedup_{label}']:.2f}×; start-up (launch → first cell) "
                  f"{rec[f'{label}_startup_seconds']:.2f} s")
    print(f"  tables identical: {rec['tables_identical']}; failed cells: {rec['failed']}")
    if args.json:
        write_json(args.json, rec)
    return rec


if __name__ == "__main__":
    main()

"""Wall time of every registered experiment's ``--quick`` mode against its targets.

Each experiment runs in its own subprocess, exactly as a user would run it:

    python -m testbed run NAME --quick --out TMPDIR/NAME --no-progress --threads N

(``OMP_NUM_THREADS=N`` too), and the script records its wall time, exit status and the tail of its output.
Targets (from the benchmark issue): ≤ 3 minutes for each experiment, ≤ 15 minutes for all of them together.
The default ``--threads 1`` is the conservative setting on a 2-core machine shared with other work (one
thread never oversubscribes the cores); the targets are stated for 2 CPU cores, so ``--threads 2`` is the
optimistic one. The 1-minute load average before and after is recorded, since other processes on the machine
inflate the times.

    python benchmarks/bench_quick_modes.py [--only NAME ...] [--threads 1] [--keep DIR] [--json out.json]

It takes several minutes in total (one quick mode at a time).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from testbed.experiments import list_experiments
from testbed.results import write_json

TARGET_EACH_S = 180.0
TARGET_TOTAL_S = 900.0
REPO_ROOT = Path(__file__).resolve().parent.parent


def quick_command(name: str, out: Path, threads: int) -> list[str]:
    """The command line of one quick run."""
    return [sys.executable, "-m", "testbed", "run", name, "--quick", "--out", str(out), "--no-progress",
            "--threads", str(threads)]


def time_command(cmd: Sequence[str], *, threads: int = 1, timeout_s: float | None = None,
                 cwd: Path = REPO_ROOT) -> dict[str, Any]:
    """Run ``cmd`` in a subprocess; wall time, exit status (``None`` on timeout) and the output's tail."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(list(cmd), cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout_s)
        rc, out = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as err:
        rc = None
        out = (err.stdout or b"").decode() if isinstance(err.stdout, bytes) else (err.stdout or "")
    return {"seconds": time.perf_counter() - t0, "returncode": rc, "output_tail": out[-2000:]}


def verdict(seconds: float, returncode: int | None, target_s: float = TARGET_EACH_S) -> str:
    if returncode is None:
        return "TIMEOUT"
    if returncode != 0:
        return f"FAILED (rc={returncode})"
    return "ok" if seconds <= target_s else "MISSED"


def print_table(records: list[dict[str, Any]], total_s: float) -> None:
    print(f"{'experiment':<22} {'wall':>9} {'target':>8}  verdict")
    for r in records:
        print(f"{r['name']:<22} {r['seconds']:8.1f}s {TARGET_EACH_S:7.0f}s  {r['verdict']}")
    total_ok = "ok" if total_s <= TARGET_TOTAL_S else "MISSED"
    print(f"{'total':<22} {total_s:8.1f}s {TARGET_TOTAL_S:7.0f}s  {total_ok}")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="+", default=None, metavar="NAME", help="run only these experiments")
    ap.add_argument("--threads", type=int, default=1, help="torch/OpenMP threads per run (default 1)")
    ap.add_argument("--timeout", type=float, default=3 * TARGET_EACH_S, help="kill a run after this many seconds")
    ap.add_argument("--keep", type=Path, default=None, help="write the runs' results here (default: a temp dir)")
    ap.add_argument("--json", default=None, help="write the record here")
    return ap


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    names = list_experiments()
    if args.only:
        unknown = [n for n in args.only if n not in names]
        if unknown:
            raise SystemExit(f"--only: unknown experiment(s) {unknown}; known: {', '.join(names)}")
        names = list(args.only)
    load_before = os.getloadavg()[0]
    records: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench_quick_") as tmp:
        base = args.keep or Path(tmp)
        for name in names:
            cmd = quick_command(name, base / name, args.threads)
            print(f"running {' '.join(cmd[1:])} …", flush=True)
            res = time_command(cmd, threads=args.threads, timeout_s=args.timeout)
            rec = {"name": name, "command": " ".join(["python", *cmd[1:]]), **res,
                   "verdict": verdict(res["seconds"], res["returncode"])}
            records.append(rec)
            print(f"  {rec['seconds']:.1f}s  {rec['verdict']}", flush=True)
            if res["returncode"] != 0:
                print(res["output_tail"][-800:], file=sys.stderr)
    total = sum(r["seconds"] for r in records)
    load_after = os.getloadavg()[0]
    print(f"\nquick modes, threads={args.threads}, load average (1 min) before {load_before:.2f} after "
          f"{load_after:.2f} on {os.cpu_count()} cores")
    print_table(records, total)
    rec = {"benchmark": "bench_quick_modes", "date": time.strftime("%Y-%m-%d"), "threads": args.threads,
           "cpu_count": os.cpu_count(), "machine": platform.machine(), "load_avg_before": load_before,
           "load_avg_after": load_after, "target_each_s": TARGET_EACH_S, "target_total_s": TARGET_TOTAL_S,
           "total_seconds": total, "total_ok": total <= TARGET_TOTAL_S, "records": records}
    if args.json:
        write_json(args.json, rec)
    return rec


if __name__ == "__main__":
    main()

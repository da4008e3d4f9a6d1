"""Time per training step vs depth L and batch size: the curve should be linear in L.

One training step is what :func:`testbed.train.train` does per minibatch: the library objective
(``--objective``, default ``endpoint``) on a batch of initial states, ``zero_grad``, ``backward`` and one
``torch.optim.Adam`` step, for a residual student (ODE scaling, 2 hidden layers, width ``--width``) of depth
``L ∈ {4, 8, …, 512}`` at batch sizes ``{32, 128, 512}``; tied (one branch shared by all layers, the
law-recovery student) and untied (one branch per layer, so the parameter count and the Adam update grow
with L too). Each point is the best of several steps (enough to fill ~0.3 s, at least 3).

The script fits the log-log slope of time against L, over all depths and over ``L ≥ --fit-from`` (past the
fixed per-step overhead), and prints it per batch size: a slope ≈ 1 means time ∝ L. Torch runs on one
thread (``--threads``).

    python benchmarks/bench_scaling.py [--layers 4,8,16,32,64,128,256,512] [--batch 32,128,512] [--width 64]
                                       [--ties tied,untied] [--fit-from 32] [--json out.json]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch

from systems.data import TrajectoryData
from testbed.config import parse_int_list as int_list
from testbed.fitting import loglog_slope
from testbed.objectives import make_objective
from testbed.results import write_json
from testbed.students import build_student
from testbed.timing import benchmark_header

DEFAULT_LAYERS = [4, 8, 16, 32, 64, 128, 256, 512]






def step_time(layers: int, batch: int, *, width: int = 64, tied: bool = True, dim: int = 2,
              objective: str = "endpoint", dtype: torch.dtype = torch.float64, budget_s: float = 0.3,
              max_repeats: int = 20, seed: int = 0) -> tuple[float, int]:
    """Best wall time of one Adam training step and the number of timed steps it is the best of."""
    torch.manual_seed(seed)
    s = build_student("residual", dim=dim, n_layers=layers, width=width, hidden_layers=2, tied=tied,
                      init_scale=0.1).to(dtype)
    gen = torch.Generator().manual_seed(seed)
    states = torch.randn(2, batch, dim, generator=gen, dtype=dtype)
    data = TrajectoryData(torch.tensor([0.0, 1.0], dtype=dtype), states, torch.randn_like(states))
    obj = make_objective(objective)
    opt = torch.optim.Adam(s.parameters(), lr=1e-3)
    s.train()

    def one_step() -> None:
        loss, _ = obj(s, data)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    t0 = time.perf_counter()
    one_step()  # warm-up (allocates Adam state)
    first = time.perf_counter() - t0
    n = max(3, min(max_repeats, int(budget_s / max(first, 1e-9))))
    best = float("inf")
    for _ in range(n):
        t0 = time.perf_counter()
        one_step()
        best = min(best, time.perf_counter() - t0)
    return best, n


def fit_slopes(rows: list[dict[str, Any]], fit_from: int) -> list[dict[str, Any]]:
    """Per (tie, batch): log-log slope of step time vs L over all depths and over ``L ≥ fit_from``."""
    out = []
    for tie in dict.fromkeys(r["tie"] for r in rows):
        for b in dict.fromkeys(r["batch"] for r in rows):
            pts = [(r["layers"], r["seconds"]) for r in rows if r["tie"] == tie and r["batch"] == b]
            tail = [p for p in pts if p[0] >= fit_from]
            out.append({"tie": tie, "batch": b,
                        "slope_all": loglog_slope(*zip(*pts, strict=True)) if len(pts) > 1 else float("nan"),
                        "slope_tail": loglog_slope(*zip(*tail, strict=True)) if len(tail) > 1 else float("nan"),
                        "fit_from": fit_from})
    return out


def print_table(rows: list[dict[str, Any]], slopes: list[dict[str, Any]]) -> None:
    layers = sorted({r["layers"] for r in rows})
    print("time per training step, ms (µs per layer in brackets)")
    print(f"{'tie':<7} {'batch':>5}  " + "".join(f"{'L=' + str(L):>16}" for L in layers)
          + f"  {'slope all':>9} {'slope tail':>10}")
    for sl in slopes:
        cells = []
        for L in layers:
            r = next((r for r in rows if r["tie"] == sl["tie"] and r["batch"] == sl["batch"] and r["layers"] == L),
                     None)
            cells.append(f"{r['seconds'] * 1e3:8.2f} ({r['seconds'] / L * 1e6:4.0f})" if r else f"{'-':>15}")
        print(f"{sl['tie']:<7} {sl['batch']:>5}  " + "".join(f"{c:>16}" for c in cells)
              + f"  {sl['slope_all']:9.2f} {sl['slope_tail']:10.2f}")
    print(f"slope tail: fit over L ≥ {slopes[0]['fit_from'] if slopes else '-'}; 1.0 = linear in L")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int_list, default=DEFAULT_LAYERS, help="depths L")
    ap.add_argument("--batch", type=int_list, default=[32, 128, 512], help="batch sizes")
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--ties", default="tied,untied", help="tied, untied or both (comma-separated)")
    ap.add_argument("--objective", default="endpoint", help="library objective preset or spec")
    ap.add_argument("--dtype", choices=("float32", "float64"), default="float64")
    ap.add_argument("--fit-from", type=int, default=32, help="smallest L in the 'tail' slope fit")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    ap.add_argument("--json", default=None, help="write the record here")
    return ap


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    ties = [t for t in args.ties.replace(" ", "").split(",") if t]
    if not ties or any(t not in ("tied", "untied") for t in ties):
        raise SystemExit(f"--ties: expected tied and/or untied, got {args.ties!r}")
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    t_start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    for tie in ties:
        for b in args.batch:
            for L in args.layers:
                t, n = step_time(L, b, width=args.width, tied=tie == "tied", objective=args.objective, dtype=dtype)
                rows.append({"tie": tie, "batch": b, "layers": L, "seconds": t, "timed_steps": n})
    slopes = fit_slopes(rows, args.fit_from)
    print(f"one Adam step, objective={args.objective}, width={args.width}, {args.dtype}, "
          f"threads={torch.get_num_threads()}")
    print_table(rows, slopes)
    rec = {**benchmark_header("bench_scaling"),
           "width": args.width, "dtype": args.dtype,
           "objective": args.objective, "rows": rows, "slopes": slopes,
           "wall_seconds": time.perf_counter() - t_start}
    print(f"wall time {rec['wall_seconds']:.1f}s")
    if args.json:
        write_json(args.json, rec)
    return rec


if __name__ == "__main__":
    main()

"""Residual-student forward (+ backward) with full trajectory capture vs torchdiffeq.odeint (euler and rk4).

Every implementation integrates the *same* learned field ``f_θ`` with the *same* number of steps ``L`` and
returns the full trajectory (all ``L + 1`` states); the script checks they agree, then times them side by
side — interleaved, each of ``--repeats`` rounds running every implementation once — and prints the best
time and the ratio to ``torchdiffeq.odeint``: the median over rounds of the back-to-back time ratio, which
bursts of load from other processes move less than a ratio of two minima (below 1.0 means faster):

* euler — ``student``: the residual student's own ``trajectory`` (the network); ``integrate``: the
  library's re-integration path ``testbed.field.consistency.integrate(f_θ, x0, T, "euler", L, times=grid)``;
  ``torchdiffeq``: ``odeint(f_θ, x0, grid, method="euler")``.
* rk4 — ``integrate``: ``integrate(f_θ, x0, T, "rk4", L, times=grid)``; ``torchdiffeq``:
  ``odeint(f_θ, x0, grid, method="rk4")``; ``loop``: a plain hand-written batched loop of the same scheme
  (torchdiffeq's ``rk4`` is the 3/8-rule Runge–Kutta), the floor any wrapper could reach.

``forward`` runs under ``torch.no_grad``; ``forward+backward`` backpropagates ``Σ traj²`` to the weights.
Torch runs on one thread (``torch.set_num_threads(1)``; ``--threads`` to change) so ratios are comparable
across shared machines. Settings are the Cartesian product of the comma-separated ``--layers``,
``--width`` and ``--batch``.

    python benchmarks/bench_forward.py [--layers 16,64] [--width 32,128] [--batch 64,512] [--repeats 7]
                                       [--dtype float32] [--untied] [--json out.json]
"""

from __future__ import annotations

import argparse
import itertools
import time
from collections.abc import Callable
from typing import Any

import torch
from torchdiffeq import odeint

from testbed.config import parse_int_list as int_list
from testbed.field.consistency import integrate
from testbed.results import write_json
from testbed.students import build_student
from testbed.students.residual import ResidualStudent
from testbed.timing import benchmark_header, paired_ratio, time_interleaved

Tensor = torch.Tensor
TARGET_RATIO = 1.0  # issue target: ours ≤ 1.0 × torchdiffeq's time (judged on the geometric mean over settings)
LIBRARY_IMPLS = ("student", "integrate")  # the library's own paths; "loop" is a reference, not judged




def rk4_loop(f: Callable[[float, Tensor], Tensor], x0: Tensor, horizon: float, n_steps: int) -> Tensor:
    """Hand-written batched fixed-step RK4 (3/8 rule, as torchdiffeq's ``rk4``); all ``n + 1`` states."""
    dt = horizon / n_steps
    h, hs = x0, [x0]
    for k in range(n_steps):
        t = k * dt
        k1 = f(t, h)
        k2 = f(t + dt / 3, h + dt * k1 / 3)
        k3 = f(t + 2 * dt / 3, h + dt * (k2 - k1 / 3))
        k4 = f(t + dt, h + dt * (k1 - k2 + k3))
        h = h + (k1 + 3 * (k2 + k3) + k4) * (dt * 0.125)
        hs.append(h)
    return torch.stack(hs)


def implementations(s: ResidualStudent, x0: Tensor) -> dict[str, dict[str, Callable[[], Tensor]]]:
    """``{solver: {impl: () -> trajectory}}``; ``torchdiffeq`` is the reference in each group."""
    T, L, f = float(s.horizon), s.n_layers, s.vector_field
    grid = s.layer_times.to(x0.dtype)
    times = s.layer_times  # float64 grid times, as the library passes them
    return {
        "euler": {
            "torchdiffeq": lambda: odeint(f, x0, grid, method="euler"),
            "student": lambda: s.trajectory(x0),
            "integrate": lambda: integrate(f, x0, T, "euler", L, times)[0],
        },
        "rk4": {
            "torchdiffeq": lambda: odeint(f, x0, grid, method="rk4"),
            "integrate": lambda: integrate(f, x0, T, "rk4", L, times)[0],
            "loop": lambda: rk4_loop(f, x0, T, L),
        },
    }


def check_agreement(impls: dict[str, dict[str, Callable[[], Tensor]]]) -> None:
    """Every implementation must return the torchdiffeq trajectory (to round-off)."""
    with torch.no_grad():
        for solver, group in impls.items():
            ref = group["torchdiffeq"]()
            for name, fn in group.items():
                out = fn()
                if out.shape != ref.shape or not torch.allclose(out, ref, rtol=1e-5, atol=1e-6):
                    raise AssertionError(f"{solver}/{name} disagrees with torchdiffeq "
                                         f"(max diff {float((out - ref).abs().max()):.2e})")


def bench_setting(layers: int, width: int, batch: int, *, dim: int = 2, repeats: int = 7,
                  dtype: torch.dtype = torch.float32, tied: bool = True, seed: int = 0) -> list[dict[str, Any]]:
    """Time every implementation at one (L, width, batch); one row per solver × direction × implementation."""
    torch.manual_seed(seed)
    s = build_student("residual", dim=dim, n_layers=layers, width=width, hidden_layers=2, tied=tied).to(dtype)
    x0 = torch.randn(batch, dim, dtype=dtype)
    impls = implementations(s, x0)
    check_agreement(impls)
    rows: list[dict[str, Any]] = []

    def fwd(fn: Callable[[], Tensor]) -> Callable[[], None]:
        def run() -> None:
            with torch.no_grad():
                fn()
        return run

    def fwd_bwd(fn: Callable[[], Tensor]) -> Callable[[], None]:
        def run() -> None:
            s.zero_grad(set_to_none=True)
            fn().pow(2).sum().backward()
        return run

    for solver, group in impls.items():
        for direction, wrap in (("forward", fwd), ("forward+backward", fwd_bwd)):
            times = time_interleaved({name: wrap(fn) for name, fn in group.items()}, repeats)
            for name, ts in times.items():
                rows.append({"layers": layers, "width": width, "batch": batch, "solver": solver,
                             "direction": direction, "impl": name, "seconds": min(ts),
                             "ratio_vs_torchdiffeq": paired_ratio(ts, times["torchdiffeq"])})
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    """One line per setting × solver × direction: each implementation's time and its ratio to torchdiffeq."""
    key = lambda r: (r["layers"], r["width"], r["batch"], r["solver"], r["direction"])  # noqa: E731
    print(f"{'L':>4} {'width':>5} {'batch':>5}  {'solver':<5} {'direction':<16}  {'torchdiffeq':>11}   "
          "implementation: time (ratio vs torchdiffeq)")
    for k, grp in itertools.groupby(rows, key=key):
        grp = list(grp)
        ref = next(r for r in grp if r["impl"] == "torchdiffeq")
        others = "   ".join(f"{r['impl']}: {r['seconds'] * 1e3:7.2f} ms ({r['ratio_vs_torchdiffeq']:4.2f}x)"
                           for r in grp if r["impl"] != "torchdiffeq")
        print(f"{k[0]:>4} {k[1]:>5} {k[2]:>5}  {k[3]:<5} {k[4]:<16}  {ref['seconds'] * 1e3:8.2f} ms   {others}")


def summarize(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Geometric-mean and worst ratio per solver/direction/implementation (torchdiffeq excluded)."""
    out: dict[str, dict[str, float]] = {}
    groups: dict[str, list[float]] = {}
    for r in rows:
        if r["impl"] != "torchdiffeq":
            groups.setdefault(f"{r['solver']}/{r['direction']}/{r['impl']}", []).append(r["ratio_vs_torchdiffeq"])
    for k, v in groups.items():
        gmean = float(torch.tensor(v, dtype=torch.float64).log().mean().exp())
        library = k.rsplit("/", 1)[1] in LIBRARY_IMPLS
        out[k] = {"geomean_ratio": gmean, "worst_ratio": max(v), "n_settings": len(v),
                  "meets_target": (gmean <= TARGET_RATIO) if library else None}
    return out


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int_list, default=[16, 64], help="depths L, comma-separated")
    ap.add_argument("--width", type=int_list, default=[32, 128], help="branch widths, comma-separated")
    ap.add_argument("--batch", type=int_list, default=[64, 512], help="batch sizes, comma-separated")
    ap.add_argument("--dim", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=7, help="timed rounds per setting (each runs every implementation)")
    ap.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    ap.add_argument("--untied", action="store_true", help="one branch per layer (default: one shared branch)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    ap.add_argument("--json", default=None, help="write the record here")
    return ap


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    for L, w, b in itertools.product(args.layers, args.width, args.batch):
        rows += bench_setting(L, w, b, dim=args.dim, repeats=args.repeats, dtype=dtype, tied=not args.untied)
    print_table(rows)
    summary = summarize(rows)
    print(f"\nratio vs torchdiffeq over all settings (target: geomean ≤ {TARGET_RATIO:.2f} for the library's paths)")
    for k, v in summary.items():
        flag = {True: "ok", False: "MISSED", None: "(reference)"}[v["meets_target"]]
        print(f"  {k:<36} geomean {v['geomean_ratio']:.2f}x   worst {v['worst_ratio']:.2f}x   {flag}")
    rec = {**benchmark_header("bench_forward"),
           "dtype": args.dtype, "dim": args.dim,
           "tied": not args.untied, "repeats": args.repeats, "wall_seconds": time.perf_counter() - t0,
           "rows": rows, "summary": summary}
    if args.json:
        write_json(args.json, rec)
    return rec


if __name__ == "__main__":
    main()

"""Per-sample adaptive dopri5 at batched cost: time, accuracy and evaluation counts, side by side.

For each field and batch size, the same initial states are solved over ``[0, T]`` at the same tolerance
(``rtol = 1e-7``, ``atol = 1e-9``, float64, 1 thread) by

* ``batched``     torchdiffeq's dopri5 on the whole batch as one system (shared steps: every row takes the step its
                  hardest batch-mate needs) — the library's default;
* ``per_sample``  :func:`testbed.field.adaptive.dopri5_per_sample` — a step size and error test per row, all rows
                  in one tensor program;
* ``loop``        torchdiffeq's dopri5 on one row at a time (the old ``per_sample=True``), on ``--loop-rows`` rows,
                  its time scaled to the batch;
* ``torchode``    torchode's per-sample ``Dopri5`` + ``IntegralController`` (when installed).

Ratios are medians of per-round ratios to ``batched`` (rounds alternate, ``testbed.timing``); the accuracy column is
the largest relative endpoint error of any checked row against SciPy's DOP853 at ``rtol = 1e-12`` (``--check-rows``
rows); nfev per row for the per-sample solvers. Target (issue 23): ``per_sample`` ≤ 1.5× ``batched`` at batch 256.

Fields: ``oscillators`` (damped oscillators whose frequencies, carried as a constant third coordinate, span 1–32:
rows of very different stiffness), ``van_der_pol`` (μ = 3, initial states in ``[−3, 3]²``) and ``student`` (an
untrained tied residual student's field, width 64).

    python benchmarks/bench_per_sample.py [--batch 32,256,1024] [--repeats 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from scipy.integrate import solve_ivp

import systems
from testbed.config import parse_int_list as int_list
from testbed.field.adaptive import dopri5_per_sample
from testbed.field.consistency import integrate
from testbed.results import write_json
from testbed.students import build_student
from testbed.timing import benchmark_header, paired_ratio, time_interleaved

RTOL, ATOL = 1e-7, 1e-9
TARGET_RATIO, TARGET_BATCH = 1.5, 256


def oscillators(t, x):
    a = x[:, 2:3]
    return torch.cat([x[:, 1:2], -a**2 * x[:, 0:1] - 0.1 * x[:, 1:2], torch.zeros_like(a)], 1)


def fields(batch: int, seed: int = 0) -> dict[str, tuple[Callable, torch.Tensor, float, bool]]:
    """name → (f, x0, T, autonomous)."""
    g = torch.Generator().manual_seed(seed)
    freq = torch.logspace(0, 1.5, batch, dtype=torch.float64)[torch.randperm(batch, generator=g)]
    osc_x0 = torch.cat([torch.randn(batch, 2, generator=g, dtype=torch.float64), freq[:, None]], 1)
    vdp = systems.get_system("van_der_pol", mu=3.0)
    vdp_x0 = 6 * torch.rand(batch, 2, generator=g, dtype=torch.float64) - 3
    torch.manual_seed(seed)
    student = build_student("residual", dim=4, n_layers=16, width=64, hidden_layers=2, tied=True,
                            init_scale=1.0).double()
    st_x0 = torch.randn(batch, 4, generator=g, dtype=torch.float64)
    return {"oscillators": (oscillators, osc_x0, 1.0, True),
            "van_der_pol": (vdp.vector_field, vdp_x0, 3.0, True),
            "student": (student.vector_field, st_x0, 1.0, True)}


def torchode_solver(f: Callable) -> Callable | None:
    if importlib.util.find_spec("torchode") is None:
        return None
    import torchode as to

    term = to.ODETerm(f)
    solver = to.AutoDiffAdjoint(to.Dopri5(term=term), to.IntegralController(atol=ATOL, rtol=RTOL, term=term))

    def solve(x0: torch.Tensor, T: float):
        t_eval = torch.tensor([0.0, T], dtype=x0.dtype).expand(x0.shape[0], 2)
        sol = solver.solve(to.InitialValueProblem(y0=x0, t_eval=t_eval))
        return sol.ys[:, -1], sol.stats["n_f_evals"]
    return solve


def reference(f: Callable, x0: torch.Tensor, T: float) -> np.ndarray:
    r = solve_ivp(lambda t, y: f(torch.tensor(t), torch.from_numpy(y)[None])[0].detach().numpy(), (0.0, T),
                  x0.numpy(), method="DOP853", rtol=1e-12, atol=1e-14)
    return r.y[:, -1]


def bench(name: str, f: Callable, x0: torch.Tensor, T: float, autonomous: bool, repeats: int, loop_rows: int,
          check_rows: int) -> list[dict[str, Any]]:
    times = torch.tensor([0.0, T], dtype=torch.float64)
    B = x0.shape[0]
    with torch.no_grad():
        ends: dict[str, torch.Tensor] = {}
        nfevs: dict[str, Any] = {}

        def batched():
            sol, n = integrate(f, x0, T, "dopri5", None, times, RTOL, ATOL)
            ends["batched"], nfevs["batched"] = sol[-1], n

        def per_sample():
            sol, n = dopri5_per_sample(f, x0, times, RTOL, ATOL, autonomous=autonomous)
            ends["per_sample"], nfevs["per_sample"] = sol[-1], n

        loop_x0 = x0[:loop_rows]

        def loop():
            out, n = [], []
            for i in range(loop_x0.shape[0]):
                s, k = integrate(f, loop_x0[i:i + 1], T, "dopri5", None, times, RTOL, ATOL)
                out.append(s[-1])
                n.append(k)
            ends["loop"], nfevs["loop"] = torch.cat(out), torch.tensor(n)

        fns = {"batched": batched, "per_sample": per_sample, "loop": loop}
        tode = torchode_solver(f)
        if tode is not None:
            def run_torchode():
                ends["torchode"], nfevs["torchode"] = tode(x0, T)
            fns["torchode"] = run_torchode
        tm = time_interleaved(fns, repeats)
    scale = {"loop": B / loop_x0.shape[0]}
    check = list(range(0, B, max(1, B // check_rows)))[:check_rows]
    refs = {i: reference(f, x0[i], T) for i in check}
    rows = []
    for solver, ts in tm.items():
        sc = scale.get(solver, 1.0)
        end = ends[solver]
        errs = [float(np.abs(end[i].numpy() - refs[i]).max() / max(1.0, np.abs(refs[i]).max()))
                for i in check if i < end.shape[0]]
        n = nfevs[solver]
        per_row = torch.as_tensor(n).to(torch.float64) if not isinstance(n, int) else None
        rows.append({"field": name, "batch": B, "solver": solver, "seconds": min(ts) * sc,
                     "ratio_vs_batched": paired_ratio([t * sc for t in ts], tm["batched"]),
                     "max_rel_error_vs_dop853": max(errs) if errs else float("nan"),
                     "nfev_total": int(n) if per_row is None else float(per_row.sum() * sc),
                     "nfev_row_min": None if per_row is None else float(per_row.min()),
                     "nfev_row_max": None if per_row is None else float(per_row.max())})
    return rows


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int_list, default=[32, 256, 1024])
    ap.add_argument("--fields", default="oscillators,van_der_pol,student")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--loop-rows", type=int, default=32, help="rows the one-at-a-time loop solves (time scaled)")
    ap.add_argument("--check-rows", type=int, default=16, help="rows checked against SciPy DOP853")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    return ap


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    names = [n for n in args.fields.split(",") if n]
    rows: list[dict[str, Any]] = []
    for B in args.batch:
        fs = fields(B)
        for name in names:
            f, x0, T, auto = fs[name]
            rows += bench(name, f, x0, T, auto, args.repeats, min(args.loop_rows, B), min(args.check_rows, B))
    print(f"dopri5 at rtol {RTOL:g}, atol {ATOL:g}, float64, {torch.get_num_threads()} thread(s); ratio = median "
          "per-round time / batched; error = max relative endpoint error vs DOP853 (rtol 1e-12)")
    print(f"{'field':<12} {'batch':>5} {'solver':<11} {'seconds':>8} {'ratio':>6} {'max err':>9} "
          f"{'nfev total':>10} {'per row min–max':>16}")
    for r in rows:
        per = "" if r["nfev_row_min"] is None else f"{r['nfev_row_min']:.0f}–{r['nfev_row_max']:.0f}"
        print(f"{r['field']:<12} {r['batch']:>5} {r['solver']:<11} {r['seconds']:8.3f} {r['ratio_vs_batched']:6.2f} "
              f"{r['max_rel_error_vs_dop853']:9.1e} {r['nfev_total']:>10.0f} {per:>16}")
    at = [r["ratio_vs_batched"] for r in rows if r["solver"] == "per_sample" and r["batch"] == TARGET_BATCH]
    rec = {**benchmark_header("bench_per_sample"),
           "rows": rows,
           "target": {"ratio": TARGET_RATIO, "batch": TARGET_BATCH, "worst": max(at) if at else None,
                      "meets_target": (max(at) <= TARGET_RATIO) if at else None},
           "wall_seconds": time.perf_counter() - t_start}
    print(f"wall time {rec['wall_seconds']:.1f}s")
    if args.json:
        write_json(args.json, rec)
    return rec


if __name__ == "__main__":
    main()

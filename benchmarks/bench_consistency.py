"""Solver-consistency sweep on trained students: time and function evaluations vs depth L and width.

For each depth ``L`` and branch width, a residual student (tied, ODE scaling, 2 hidden layers, float64 — the
law-recovery student) is trained briefly on a teacher system (``--train-steps`` Adam steps of the ``field``
objective; ``--train-steps 0`` keeps the seeded initial weights) and then
:func:`testbed.field.consistency.solver_consistency` re-integrates its learned field ``f_θ`` with forward
Euler at six step counts ``L/8, L/4, L/2, 2L, 4L, 8L`` (plus the ``L``-step reference) and with adaptive
``dopri5`` (``rtol=1e-7``, ``atol=1e-9``, the library defaults) from ``--n`` in-distribution initial states.

Timed (best of ``--repeats`` runs; the slow per-sample sweep once — read ratios and exponents rather than
the last digit):

* ``fixed``       the sweep without dopri5 (``adaptive=()``);
* ``batched``     the full sweep, dopri5 solving the whole batch as one system (``per_sample=False``) —
  **what the library reports**: ``evaluate_student`` and ``testbed consistency`` use the default;
* ``per_sample``  the full sweep with ``per_sample=True``: dopri5 with a step size and error test per initial state
  (:func:`testbed.field.adaptive.dopri5_per_sample`, all states in one tensor program; before 2026-11-30 this
  solved each state alone in a loop);
* ``dopri5_batched`` the batched dopri5 solve alone (``integrate``); ``dopri5_per_sample`` is
  ``per_sample − fixed``.

torchdiffeq's adaptive solvers couple a batch's samples (one shared step size, error norm over the batch), so
the two modes can report slightly different dopri5 endpoints; the script prints the difference in the
reported ``endpoint_change`` of the dopri5 row (= the ``consistency_error`` summary) and in the
``converged_error`` column. It fits growth exponents ``time ∝ L^a`` (per width) and ``time ∝ width^b`` (per
L) by least squares in log-log. Torch runs on one thread (``--threads``).

    python benchmarks/bench_consistency.py [--layers 8,16,32,64] [--width 32,64,128] [--n 32]
                                           [--train-steps 40] [--repeats 3] [--system van_der_pol]
                                           [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from typing import Any

import torch

import systems
from testbed.config import parse_int_list as int_list
from testbed.experiments.common import make_splits
from testbed.field.consistency import ConsistencyResult, integrate, solver_consistency
from testbed.fitting import loglog_slope
from testbed.students import build_student
from testbed.students.residual import ResidualStudent
from testbed.timing import benchmark_header
from testbed.train import TrainConfig, train

MODES = ("fixed", "batched", "per_sample")




def six_step_counts(n_layers: int) -> list[int]:
    """``L/8, L/4, L/2, 2L, 4L, 8L`` (the fractions only where they are whole numbers ≥ 1)."""
    return [n_layers * 2**k // 8 for k in (0, 1, 2, 4, 5, 6) if (n_layers * 2**k) % 8 == 0]




def trained_student(system, train_data, n_layers: int, width: int, train_steps: int,
                    seed: int = 0) -> tuple[ResidualStudent, float]:
    """The law-recovery student at depth ``n_layers`` and ``width``, after ``train_steps`` Adam steps."""
    torch.manual_seed(seed)
    s = build_student("residual", dim=system.dim, n_layers=n_layers, horizon=float(system.horizon), width=width,
                      hidden_layers=2, tied=True, time_conditioned=not system.autonomous, init_scale=0.1)
    s = s.double()
    t0 = time.perf_counter()
    if train_steps > 0:
        cfg = TrainConfig(steps=train_steps, batch_size=64, lr=3e-3, grad_clip=1.0, seed=seed,
                          log_every=train_steps, checkpoint_every=0, progress=False)
        train(s, "field", train_data, cfg)
    s.eval()
    return s, time.perf_counter() - t0


def _timed(fn, repeats: int = 1) -> tuple[Any, float]:
    """``fn()``'s result and its best wall time over ``repeats`` calls."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return out, best


def _adaptive_row(res: ConsistencyResult) -> dict[str, Any]:
    return next(r for r in res.rows if r["n_steps"] is None)


def bench_config(s: ResidualStudent, x0: torch.Tensor, repeats: int = 3) -> dict[str, Any]:
    """Time the sweep in the three modes on one student (``fixed`` and ``batched``: best of ``repeats``;
    ``per_sample``: once); nfev and the batched/per-sample differences."""
    T, L, f = float(s.horizon), s.n_layers, s.vector_field
    steps = six_step_counts(L)
    fixed, t_fixed = _timed(lambda: solver_consistency(f, x0, T, L, steps, adaptive=()), repeats)
    batched, t_batched = _timed(lambda: solver_consistency(f, x0, T, L, steps, per_sample=False), repeats)
    per_sample, t_per_sample = _timed(lambda: solver_consistency(f, x0, T, L, steps, per_sample=True))
    common = torch.linspace(0.0, T, math.gcd(L, *steps) + 1, dtype=torch.float64)  # the sweep's output grid
    with torch.no_grad():
        _, t_dopri5 = _timed(lambda: integrate(f, x0, T, "dopri5", None, common), repeats)
    rb, rp = _adaptive_row(batched), _adaptive_row(per_sample)
    conv_diff = max(abs(a["converged_error"] - b["converged_error"])
                    for a, b in zip(batched.rows, per_sample.rows, strict=True))
    return {
        "step_counts": steps,
        "seconds": {"fixed": t_fixed, "batched": t_batched, "per_sample": t_per_sample,
                    "dopri5_batched": t_dopri5, "dopri5_per_sample": t_per_sample - t_fixed},
        "nfev": {"fixed": sum(r["nfev"] for r in fixed.rows), "dopri5_batched": rb["nfev"],
                 "dopri5_per_sample_total": rp["nfev"], "dopri5_per_sample_mean": rp["nfev"] / x0.shape[0]},
        "endpoint_change_dopri5": {"batched": rb["endpoint_change"], "per_sample": rp["endpoint_change"],
                                   "abs_diff": abs(rb["endpoint_change"] - rp["endpoint_change"])},
        "max_abs_diff_converged_error": conv_diff,
        "fixed_rows": [{k: r[k] for k in ("method", "n_steps", "endpoint_change", "nfev")} for r in batched.rows],
    }


def growth_exponents(records: list[dict[str, Any]], key: str, sub: str) -> dict[str, dict[int, float]]:
    """Log-log slopes of ``record[key][sub]`` vs L at each width and vs width at each L."""
    Ls = sorted({r["layers"] for r in records})
    Ws = sorted({r["width"] for r in records})

    def val(L: int, w: int) -> float | None:
        return next((r[key][sub] for r in records if r["layers"] == L and r["width"] == w), None)

    vs_L = {w: loglog_slope(*zip(*[(L, val(L, w)) for L in Ls if val(L, w) is not None], strict=True))
            for w in Ws}
    vs_w = {L: loglog_slope(*zip(*[(w, val(L, w)) for w in Ws if val(L, w) is not None], strict=True))
            for L in Ls}
    return {"vs_layers_per_width": vs_L, "vs_width_per_layers": vs_w}


def print_tables(records: list[dict[str, Any]], exponents: dict[str, Any]) -> None:
    print(f"{'L':>3} {'width':>5} {'train':>6}  {'fixed':>7} {'dopri5':>7} {'batched':>8} {'per-sample':>10} "
          f"{'ps/b':>5}  {'nfev fixed':>10} {'dopri5 b':>8} {'dopri5 ps/sample':>16}  {'ec(dopri5) b':>12} "
          f"{'|Δ| b vs ps':>11}")
    for r in records:
        sec, nf, ec = r["seconds"], r["nfev"], r["endpoint_change_dopri5"]
        print(f"{r['layers']:>3} {r['width']:>5} {r['train_seconds']:5.1f}s  {sec['fixed']:6.3f}s "
              f"{sec['dopri5_batched']:6.3f}s "
              f"{sec['batched']:7.3f}s {sec['per_sample']:9.3f}s {sec['per_sample'] / sec['batched']:5.1f}  "
              f"{nf['fixed']:>10} "
              f"{nf['dopri5_batched']:>8} {nf['dopri5_per_sample_mean']:>16.1f}  {ec['batched']:12.4e} "
              f"{ec['abs_diff']:11.2e}")
    print("\ngrowth exponents (least-squares log-log slope):")
    for name, ex in exponents.items():
        per_w = "  ".join(f"w={w}: {v:5.2f}" for w, v in ex["vs_layers_per_width"].items())
        per_l = "  ".join(f"L={L}: {v:5.2f}" for L, v in ex["vs_width_per_layers"].items())
        print(f"  {name:<24} vs L    {per_w}")
        print(f"  {'':<24} vs width {per_l}")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int_list, default=[8, 16, 32, 64], help="depths L (multiples of 8)")
    ap.add_argument("--width", type=int_list, default=[32, 64, 128], help="branch widths")
    ap.add_argument("--n", type=int, default=32, help="initial states in the consistency sweep")
    ap.add_argument("--train-steps", type=int, default=40, help="Adam steps per student (0: untrained, seeded)")
    ap.add_argument("--repeats", type=int, default=3, help="best of this many runs (fixed and batched modes)")
    ap.add_argument("--system", default="van_der_pol", help="teacher system for training data and x0")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    ap.add_argument("--json", default=None, help="write the record here")
    return ap


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    if any(L % 8 for L in args.layers):
        raise SystemExit("--layers: every L must be a multiple of 8 (step counts down to L/8)")
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    system = systems.get_system(args.system)
    train_data, test_id, _ = make_splits(system, 256, args.n, 8)
    x0 = test_id.x0[: args.n]
    if args.train_steps > 0:
        trained_student(system, train_data, 8, 8, 1)  # warm-up: the first training call pays one-off set-up costs
    records: list[dict[str, Any]] = []
    for L in args.layers:
        for w in args.width:
            s, t_train = trained_student(system, train_data, L, w, args.train_steps)
            rec = {"layers": L, "width": w, "train_seconds": t_train, **bench_config(s, x0, args.repeats)}
            records.append(rec)
    exponents = {
        "seconds.batched": growth_exponents(records, "seconds", "batched"),
        "seconds.fixed": growth_exponents(records, "seconds", "fixed"),
        "seconds.dopri5_batched": growth_exponents(records, "seconds", "dopri5_batched"),
        "seconds.per_sample": growth_exponents(records, "seconds", "per_sample"),
        "nfev.fixed": growth_exponents(records, "nfev", "fixed"),
        "nfev.dopri5_batched": growth_exponents(records, "nfev", "dopri5_batched"),
    }
    print(f"solver consistency on {args.system}: euler at L/8, L/4, L/2, 2L, 4L, 8L (+ the L-step reference) + dopri5, "
          f"n={args.n}, train_steps={args.train_steps}, threads={torch.get_num_threads()}")
    print_tables(records, exponents)
    ratio = [r["seconds"]["per_sample"] / r["seconds"]["batched"] for r in records]
    nf_ratio = [r["nfev"]["dopri5_per_sample_total"] / r["nfev"]["dopri5_batched"] for r in records]
    diffs = [r["endpoint_change_dopri5"]["abs_diff"] for r in records]
    conv = [r["max_abs_diff_converged_error"] for r in records]
    print(f"\nper-sample / batched time: {min(ratio):.1f}–{max(ratio):.1f}x; dopri5 nfev per-sample total / batched: "
          f"{min(nf_ratio):.1f}–{max(nf_ratio):.1f}x; max |Δ endpoint_change(dopri5)| = {max(diffs):.2e}; "
          f"max |Δ converged_error| = {max(conv):.2e}")
    print("the library reports the batched mode (per_sample=False: evaluate_student, `testbed consistency`)")
    rec = {**benchmark_header("bench_consistency"),
           "system": args.system, "n": args.n,
           "train_steps": args.train_steps, "rtol": 1e-7, "atol": 1e-9, "library_reports": "batched",
           "records": records, "exponents": exponents, "wall_seconds": time.perf_counter() - t_start}
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rec, fh, indent=2, default=str)
    print(f"wall time {rec['wall_seconds']:.1f}s")
    return rec


if __name__ == "__main__":
    main()

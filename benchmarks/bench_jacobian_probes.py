"""Jacobian-matching term: dense Jacobians vs random-probe estimates — time per training step and final law error.

Part 1 (speed). One training step of the PDE law-recovery students (``poly`` and ``conv``, tied, float64) on
Burgers data (finite-difference teacher, batch 32, 8 observation intervals) under ``field+jacobian``: the dense
``jacobian`` term (``vmap(jacrev)``: d reverse passes per state) vs the unbiased k-probe estimate
(:mod:`testbed.field.probes`: k reverse passes), with ``field`` (no Jacobian term) as the floor. Steps of the
variants alternate (``testbed.timing``); the speed-up is the median of the per-round ratios dense / probe.
Target (issue 23): ≥ 5× at state dimension 128.

Part 2 (variance). What the estimator's noise does to the result: the ``pde-law-recovery`` study itself
(``field+jacobian``, ``--law-students`` on ``--law-system``, ``--law-steps`` Adam steps at its quick-mode learning
rate) trained with the dense term and with k probes on the same seeds; the in-distribution law error per seed, its
mean ± 95% CI, and the paired log10 ratio probe / dense with its CI (``testbed.stats``).

    python benchmarks/bench_jacobian_probes.py [--grid 32,128] [--students poly,conv] [--probes 1,4]
                                               [--law-seeds 3] [--law-steps 300] [--json out.json]
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from typing import Any

import torch

from testbed import stats
from testbed.config import parse_int_list as int_list
from testbed.experiments import pde_law_recovery as pde
from testbed.experiments.common import make_splits
from testbed.objectives import make_objective
from testbed.results import write_json
from testbed.timing import benchmark_header, paired_ratio, time_interleaved

TARGET_SPEEDUP = 5.0   # at state dimension TARGET_DIM
TARGET_DIM = 128


def step_fn(kind: str, n_grid: int, objective: str, probes: int, batch: int = 32, seed: int = 0):
    """One Adam step (objective, backward, update) of a fresh ``kind`` student on Burgers data at ``n_grid``."""
    cfg = pde.PDELawRecoveryConfig(n_grid=n_grid, systems=("burgers",))
    system = pde.teacher("burgers", n_grid, True)
    train, _, _ = make_splits(system, batch, 2, cfg.n_obs, with_jacobians=True)
    torch.manual_seed(seed)
    student = pde.build(cfg, kind, system, train.states)
    obj = make_objective(objective, probes={"jacobian": probes} if probes else None)
    opt = torch.optim.Adam(student.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(seed)

    def one_step() -> None:
        loss, _ = obj(student, train, generator=gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return one_step


def speed_rows(grids: list[int], students: list[str], probes: list[int], repeats: int) -> list[dict[str, Any]]:
    rows = []
    for n_grid in grids:
        for kind in students:
            fns = {"field": step_fn(kind, n_grid, "field", 0), "dense": step_fn(kind, n_grid, "field+jacobian", 0)}
            fns.update({f"probes={k}": step_fn(kind, n_grid, "field+jacobian", k) for k in probes})
            times = time_interleaved(fns, repeats)
            for name, ts in times.items():
                rows.append({"n_grid": n_grid, "student": kind, "variant": name, "seconds": min(ts),
                             "speedup_vs_dense": paired_ratio(times["dense"], ts),
                             "ratio_vs_field": paired_ratio(ts, times["field"])})
    return rows


def law_rows(system: str, students: list[str], probes: list[int], seeds: list[int], steps: int,
             n_train: int) -> list[dict[str, Any]]:
    """The study's rows (``field+jacobian`` only) for the dense term and each probe count."""
    rows = []
    for k in [0, *probes]:
        cfg = pde.quick_config(systems=(system,), students=tuple(students), objectives=("field+jacobian",),
                               seeds=tuple(seeds), steps=steps, n_train=n_train, jacobian_probes=k, progress=False)
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            out = pde.run(cfg, tmp)
            wall = time.perf_counter() - t0
        rows += [{"student": r["student"], "seed": r["seed"], "probes": k, "law_error_id": r["law_error_id"],
                  "endpoint_error": r["endpoint_error"], "train_seconds": r["train_seconds"], "run_seconds": wall}
                 for r in out]
    return rows


def law_summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for kind in dict.fromkeys(r["student"] for r in rows):
        dense = {r["seed"]: r["law_error_id"] for r in rows if r["student"] == kind and r["probes"] == 0}
        seeds = sorted(dense)
        for k in sorted({r["probes"] for r in rows}):
            vals = {r["seed"]: r["law_error_id"] for r in rows if r["student"] == kind and r["probes"] == k}
            s = stats.summarize([vals[i] for i in seeds])
            rec = {"student": kind, "probes": k, "n": s.n, "law_error_mean": s.mean, "law_error_lo": s.lo,
                   "law_error_hi": s.hi,
                   "train_seconds": sum(r["train_seconds"] for r in rows
                                        if r["student"] == kind and r["probes"] == k) / max(len(seeds), 1)}
            if k:
                p = stats.paired([math.log10(vals[i]) for i in seeds], [math.log10(dense[i]) for i in seeds])
                rec.update(log10_ratio_vs_dense=p.diff.mean, log10_ratio_lo=p.diff.lo, log10_ratio_hi=p.diff.hi)
            out.append(rec)
    return out


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grid", type=int_list, default=[32, 128], help="grid sizes = state dimensions d")
    ap.add_argument("--students", default="poly,conv", help="PDE students (comma-separated)")
    ap.add_argument("--probes", type=int_list, default=[1, 4], help="probe counts k")
    ap.add_argument("--repeats", type=int, default=5, help="timed rounds per variant (speed part)")
    ap.add_argument("--law-system", default="burgers")
    ap.add_argument("--law-students", default="poly", help="students of the law-error part ('' skips it)")
    ap.add_argument("--law-seeds", type=int, default=3)
    ap.add_argument("--law-steps", type=int, default=300)
    ap.add_argument("--law-n-train", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    ap.add_argument("--json", default=None, help="write the record here")
    return ap


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    students = [s for s in args.students.split(",") if s]
    t_start = time.perf_counter()
    rows = speed_rows(args.grid, students, args.probes, args.repeats)
    print("time per training step (field+jacobian), best of rounds; speed-up = median per-round dense / variant")
    print(f"{'d':>5} {'student':<8} {'variant':<10} {'ms/step':>9} {'vs dense':>9} {'vs field':>9}")
    for r in rows:
        print(f"{r['n_grid']:>5} {r['student']:<8} {r['variant']:<10} {r['seconds'] * 1e3:9.1f} "
              f"{r['speedup_vs_dense']:8.1f}× {r['ratio_vs_field']:8.2f}×")
    at_target = [r["speedup_vs_dense"] for r in rows if r["n_grid"] == TARGET_DIM and r["variant"].startswith("p")]
    rec: dict[str, Any] = {
        **benchmark_header("bench_jacobian_probes"),
        "speed": rows,
        "target": {"speedup": TARGET_SPEEDUP, "dim": TARGET_DIM,
                   "worst": min(at_target) if at_target else None,
                   "meets_target": (min(at_target) >= TARGET_SPEEDUP) if at_target else None}}
    law_students = [s for s in args.law_students.split(",") if s]
    if law_students and args.law_seeds > 0:
        lrows = law_rows(args.law_system, law_students, args.probes, list(range(args.law_seeds)), args.law_steps,
                         args.law_n_train)
        summ = law_summary(lrows)
        rec.update(law=lrows, law_summary=summ)
        print(f"\nfinal law error (ID), {args.law_system}, field+jacobian, {args.law_steps} steps, "
              f"n = {args.law_seeds} seeds: mean [95% CI]; paired log10(probe / dense) [95% CI]")
        for s in summ:
            extra = (f"  log10 ratio {s['log10_ratio_vs_dense']:+.3f} [{s['log10_ratio_lo']:+.3f}, "
                     f"{s['log10_ratio_hi']:+.3f}]") if s["probes"] else ""
            label = "dense" if s["probes"] == 0 else f"probes={s['probes']}"
            print(f"  {s['student']:<6} {label:<10} {s['law_error_mean']:.4g} [{s['law_error_lo']:.4g}, "
                  f"{s['law_error_hi']:.4g}]  train {s['train_seconds']:.0f} s{extra}")
    rec["wall_seconds"] = time.perf_counter() - t_start
    print(f"wall time {rec['wall_seconds']:.1f}s")
    if args.json:
        write_json(args.json, rec)
    return rec


if __name__ == "__main__":
    main()

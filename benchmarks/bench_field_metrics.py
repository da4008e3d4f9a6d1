"""Field metrics at depth: matrix-free spectral norms (testbed.field.spectral) vs the dense baseline.

Dense: per-layer ``vmap(jacrev)`` Jacobians (``layer_jacobians``) + ``torch.linalg.svdvals`` (``jacobian_spectra``)
for ``‖J_l‖₂`` and ``σ_max/σ_min``; ``path_sensitivity`` (Jacobians again, their products, ``matrix_norm(ord=2)``,
Frobenius, ``slogdet``) for ``‖∂h_L/∂h_l‖₂``, plus a spectral-only dense path route for a like-for-like figure.
Matrix-free: ``layer_spectral_norms`` / ``path_spectral_norms`` (batched Lanczos on closed-form Jacobian products).
Each pair runs side by side in one process: best of ``--repeats`` for the dense routes and of ``--repeats-fast``
for the matrix-free ones (a fraction of the time; the minimum filters noise from other load). The script prints
time ratios dense / ours (above 1 means the matrix-free route is faster), the max relative errors against the dense
values (per input and of the input means) and the peak memory of each route, measured in a fresh subprocess (peak
RSS growth over the set-up, large allocations forced through mmap so freed memory leaves the process;
``torch.cuda.max_memory_allocated`` with ``--device cuda``; ``tracemalloc`` does not see torch's allocations) and
estimated from the tensors each route materialises. Writes a JSON record with ``--json``.

    python benchmarks/bench_field_metrics.py [--layers 32] [--dim 64] [--width 64] [--batch 256] [--repeats 3]
        [--repeats-fast 10] [--hidden-layers 1] [--tol 1e-5] [--device cpu] [--no-memory] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import torch

from testbed.field import jacobian_spectra, layer_jacobians, path_jacobians, path_sensitivity
from testbed.field.spectral import layer_maps, layer_spectral_norms, path_spectral_norms
from testbed.results import write_json
from testbed.students import ResidualStudent
from testbed.timing import peak_extra_rss

Tensor = torch.Tensor


def _setup(args: argparse.Namespace) -> tuple[ResidualStudent, Tensor]:
    torch.manual_seed(0)
    s = ResidualStudent(dim=args.dim, n_layers=args.layers, width=args.width, hidden_layers=args.hidden_layers)
    s = s.to(args.device)
    x0 = torch.randn(args.batch, args.dim, device=args.device)
    return s, x0


def _routes(s: ResidualStudent, x0: Tensor, tol: float | None) -> dict[str, Callable[[], Any]]:
    """Every timed route; each returns what the comparison needs (``tol=None``: the library's defaults)."""
    kw: dict[str, Any] = {} if tol is None else {"tol": tol}

    def dense_layer() -> tuple[Tensor, Tensor]:
        _, jac = layer_jacobians(s, x0)
        return jacobian_spectra(jac)

    def dense_path_spectral() -> Tensor:
        _, jac = layer_jacobians(s, x0)
        return torch.linalg.matrix_norm(path_jacobians(jac).double(), ord=2)

    def dense_all() -> tuple[Tensor, Tensor]:
        _, jac = layer_jacobians(s, x0)
        smax, _ = jacobian_spectra(jac)
        return smax, torch.linalg.matrix_norm(path_jacobians(jac).double(), ord=2)

    def ours_all() -> tuple[Tensor, Tensor]:
        maps = layer_maps(s, x0)
        return (layer_spectral_norms(s, x0, maps=maps, **kw).spectral,
                path_spectral_norms(s, x0, maps=maps, **kw).spectral)

    return {
        "dense_layer": dense_layer,
        "ours_layer": lambda: layer_spectral_norms(s, x0, **kw),
        "ours_layer_cond": lambda: layer_spectral_norms(s, x0, condition=True, **kw),
        "dense_path": lambda: path_sensitivity(s, x0),
        "dense_path_spectral": dense_path_spectral,
        "ours_path": lambda: path_spectral_norms(s, x0, **kw),
        "ours_total": lambda: path_spectral_norms(s, x0, depths=[0], **kw),
        "dense_all": dense_all,
        "ours_all": ours_all,
    }


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _time(fn: Callable[[], Any], repeats: int, device: str) -> tuple[float, Any]:
    out = fn()  # warm-up (and the value compared)
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return best, out


def _measure_child(args: argparse.Namespace) -> None:
    """Run one route once in this (fresh) process and print its peak extra memory in bytes as JSON."""
    s, x0 = _setup(args)
    # initialise torch.func / LAPACK on a tiny problem so their one-time set-up is not counted
    tiny = ResidualStudent(dim=2, n_layers=2, width=2).to(args.device)
    for fn in _routes(tiny, torch.randn(2, 2, device=args.device), args.tol).values():
        fn()
    fn = _routes(s, x0, args.tol)[args.measure]
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        print(json.dumps({"peak_bytes": torch.cuda.max_memory_allocated() - base, "how": "cuda.max_memory_allocated"}))
        return
    peak, how = peak_extra_rss(fn)
    print(json.dumps({"peak_bytes": peak, "how": how}))


def _measure(args: argparse.Namespace, route: str) -> dict[str, Any]:
    cmd = [sys.executable, os.path.abspath(__file__), "--measure", route, "--layers", str(args.layers),
           "--dim", str(args.dim), "--width", str(args.width), "--batch", str(args.batch),
           "--hidden-layers", str(args.hidden_layers), "--device", args.device]
    if args.tol is not None:
        cmd += ["--tol", str(args.tol)]
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _estimates(args: argparse.Namespace, iters: dict[str, int]) -> dict[str, int]:
    """Bytes of the largest tensors each route holds at once (working dtype float32, float64 where cast)."""
    L, B, d, w, k = args.layers, args.batch, args.dim, args.width, max(1, args.hidden_layers)
    f32, f64 = 4, 8
    jac = L * B * d * d * f32  # layer_jacobians
    paths = (L + 1) * B * d * d
    factors = L * B * (w * k if args.hidden_layers else d) * f32 + (L + 1) * B * d * f32  # D_i + trajectory
    ours_layer = factors + 4 * L * B * d * f64 + 2 * iters["ours_layer"] * L * B * f64
    # d cotangent rows + their (B, d, d) copy + the Lanczos basis kept for the warm start
    ours_path = factors + 2 * B * d * d * f32 + (iters["ours_path_max"] + 4) * B * d * f64
    return {
        # J (f32) + J.double() + svdvals' workspace copy
        "dense_layer": jac + 2 * L * B * d * d * f64,
        "ours_layer": ours_layer,
        "ours_layer_cond": factors + 4 * L * B * d * f64 + 2 * iters["ours_layer_cond"] * L * B * f64,
        # J + P (f32) + P.double() + matrix_norm's SVD copy
        "dense_path": jac + paths * (f32 + 2 * f64),
        "dense_path_spectral": jac + paths * (f32 + 2 * f64),
        "ours_path": ours_path,
        "ours_total": factors + 4 * B * d * f64,
        "dense_all": jac + 2 * L * B * d * d * f64 + paths * (f32 + 2 * f64),
        "ours_all": max(ours_layer, ours_path),
    }


def _rel(a: Tensor, b: Tensor) -> float:
    a, b = a.double().cpu(), b.double().cpu()
    return float(((a - b) / b).abs().max())


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--dim", type=int, default=64, help="state (residual-stream) dimension d")
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--hidden-layers", type=int, default=1)
    ap.add_argument("--tol", type=float, default=None, help="Lanczos tolerance (default: the library's, 1e-5)")
    ap.add_argument("--repeats", type=int, default=3, help="best of N for the dense routes")
    ap.add_argument("--repeats-fast", type=int, default=10, help="best of N for the matrix-free routes")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-memory", action="store_true", help="skip the subprocess memory measurements")
    ap.add_argument("--json", default=None)
    ap.add_argument("--measure", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.measure:
        _measure_child(args)
        return {}
    s, x0 = _setup(args)
    routes = _routes(s, x0, args.tol)
    times: dict[str, float] = {}
    outs: dict[str, Any] = {}
    for name, fn in routes.items():
        times[name], outs[name] = _time(fn, args.repeats if name.startswith("dense") else args.repeats_fast,
                                        args.device)

    smax, cond = outs["dense_layer"]
    ps = outs["dense_path"]
    p_dense = outs["dense_path_spectral"]
    lay, layc, path, total = outs["ours_layer"], outs["ours_layer_cond"], outs["ours_path"], outs["ours_total"]
    errors = {
        "layer_spectral_max": _rel(lay.spectral, smax), "layer_spectral_mean": _rel(lay.mean, smax.mean(1)),
        "layer_condition_max": _rel(layc.condition, cond), "layer_condition_mean": _rel(layc.condition.mean(1),
                                                                                        cond.mean(1)),
        "path_spectral_max": _rel(path.spectral, p_dense), "path_curve": _rel(path.curve, ps.spectral),
        "path_frobenius_curve": _rel(path.frobenius.mean(1), ps.frobenius),
        "path_total": abs(total.total - ps.total) / ps.total,
        "all_layer_max": _rel(outs["ours_all"][0], outs["dense_all"][0]),
        "all_path_max": _rel(outs["ours_all"][1], outs["dense_all"][1]),
    }
    iters = {"ours_layer": lay.info.iterations, "ours_layer_cond": layc.info.iterations,
             "ours_path_max": min(path.info.max_iter, path.info.iterations), "ours_total": total.info.iterations}
    est = _estimates(args, iters)
    mem: dict[str, Any] = {}
    if not args.no_memory:
        for name in routes:
            mem[name] = _measure(args, name)

    pairs = [
        ("per-layer ‖J_l‖₂", "dense_layer", "ours_layer", "layer_spectral_max", "layer_spectral_mean"),
        ("per-layer ‖J_l‖₂ + cond", "dense_layer", "ours_layer_cond", "layer_condition_max", "layer_condition_mean"),
        ("path curve vs path_sensitivity", "dense_path", "ours_path", "path_spectral_max", "path_curve"),
        ("path curve vs dense spectral-only", "dense_path_spectral", "ours_path", "path_spectral_max", "path_curve"),
        ("path sensitivity E‖P_0‖ only", "dense_path", "ours_total", "path_total", "path_total"),
        ("all: layer + path (shared Jacobians/maps)", "dense_all", "ours_all", "all_layer_max", "all_path_max"),
    ]
    print(f"L={args.layers} d={args.dim} width={args.width} hidden_layers={args.hidden_layers} B={args.batch} "
          f"tol={args.tol or 'default'} device={args.device} threads={torch.get_num_threads()} "
          f"repeats={args.repeats}/{args.repeats_fast} (dense/matrix-free)")
    print(f"Lanczos steps: layer {lay.info.iterations} (cond {layc.info.iterations}), path {path.info.iterations} "
          f"over {len(path.depths)} depths ({path.method}), total {total.info.iterations} ({total.method}); "
          f"converged: {lay.info.converged and layc.info.converged and path.info.converged and total.info.converged}")
    rec: dict[str, Any] = {"benchmark": "bench_field_metrics", "layers": args.layers, "dim": args.dim,
                           "width": args.width, "batch": args.batch,
                           "hidden_layers": args.hidden_layers, "tol": args.tol, "device": args.device,
                           "threads": torch.get_num_threads(), "repeats": [args.repeats, args.repeats_fast],
                           "times_s": times, "errors": errors, "iterations": iters, "memory_estimate_bytes": est,
                           "memory_measured": mem, "comparisons": []}
    mib = 2.0**20
    for label, dense, ours, e1, e2 in pairs:
        ratio = times[dense] / times[ours]
        line = (f"{label:>42}: dense {times[dense]:7.3f} s  ours {times[ours]:6.3f} s  speed-up {ratio:6.1f}x  "
                f"rel.err {errors[e1]:.1e} / {errors[e2]:.1e}  "
                f"mem est {est[dense] / mib:6.1f} / {est[ours] / mib:5.1f} MiB")
        if mem:
            line += f"  measured {mem[dense]['peak_bytes'] / mib:6.1f} / {mem[ours]['peak_bytes'] / mib:5.1f} MiB"
        print(line)
        rec["comparisons"].append({"what": label, "dense": dense, "ours": ours, "dense_s": times[dense],
                                   "ours_s": times[ours], "speedup": ratio, "rel_err": [errors[e1], errors[e2]]})
    if mem:
        print(f"memory measured as {next(iter(mem.values()))['how']}; rel.err: max over inputs / of the input means")
    if args.json:
        write_json(args.json, rec)
    return rec


if __name__ == "__main__":
    main()

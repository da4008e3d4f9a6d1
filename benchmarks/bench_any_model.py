"""Field metrics of a model the testbed did not build: matrix-free vs dense on a TransformerEncoder.

The model: ``nn.TransformerEncoder`` with ``--layers`` blocks (default 12), ``d_model = --width`` (64), sequence
length ``--seq`` (16) — a per-sample state of dimension ``D = seq · width`` (1024) — on ``--batch`` (32) random
token sequences, float32, eval mode, recorded with :func:`testbed.field.record`. Two routes to the same numbers:

* ``dense``        every block Jacobian ``J_l`` formed by ``vmap(jacrev)`` (``D`` reverse passes per block), the
                   path Jacobians ``P_l = J_{L-1}⋯J_l`` by matrix products, ``svdvals`` for every ``‖J_l‖₂`` and
                   ``‖P_l‖₂``;
* ``matrix_free``  :func:`testbed.field.layer_spectral_norms` and :func:`testbed.field.path_spectral_norms` on the
                   recording: batched Lanczos on jvp/vjp products through the recorded blocks (``tol`` 1e-5), no
                   ``D × D`` matrix ever formed.

Printed: wall time of each route (best of ``--repeats`` for the matrix-free one, the dense one once — it is the
slow side), the speed-up, the largest relative error of the matrix-free norms against the dense ones (per block,
per depth, per input) and the peak memory each route adds, measured in a fresh subprocess (RSS high-water mark). Target
(issue 20): ≥ 10× faster at ≤ 1e-3 relative error.

    python benchmarks/bench_any_model.py [--layers 12] [--width 64] [--seq 16] [--batch 32] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from typing import Any

import torch
from torch import nn

from testbed.field import layer_jacobians, layer_spectral_norms, path_jacobians, path_spectral_norms, record
from testbed.results import write_json
from testbed.timing import benchmark_header

TARGET_SPEEDUP, TARGET_ERROR = 10.0, 1e-3


def model_and_inputs(layers: int, width: int, seq: int, batch: int, seed: int = 0):
    torch.manual_seed(seed)
    layer = nn.TransformerEncoderLayer(d_model=width, nhead=4, dim_feedforward=2 * width, dropout=0.0,
                                       batch_first=True)
    enc = nn.TransformerEncoder(layer, num_layers=layers, enable_nested_tensor=False).eval()
    return enc, torch.randn(batch, seq, width)


def dense_route(rec) -> tuple[torch.Tensor, torch.Tensor]:
    """``(‖J_l‖₂ (L, B), ‖P_l‖₂ (L+1, B))`` from dense Jacobians."""
    _, jacs = layer_jacobians(rec.student, rec.x0)
    layer = torch.linalg.svdvals(jacs)[..., 0]
    path = torch.linalg.svdvals(path_jacobians(jacs))[..., 0]
    return layer, path


def matrix_free_route(rec, tol: float) -> tuple[torch.Tensor, torch.Tensor]:
    layer = layer_spectral_norms(rec.student, rec.x0, tol=tol).spectral
    path = path_spectral_norms(rec.student, rec.x0, tol=tol).spectral
    return layer, path


def _peak_mib(route: str, args: argparse.Namespace) -> float:
    """Peak resident memory (MiB) that one route adds to a fresh interpreter holding the model, the inputs and
    the recording (:func:`testbed.timing.peak_extra_rss`)."""
    call = "b.dense_route(r)" if route == "dense" else f"b.matrix_free_route(r, {args.tol})"
    code = (f"import sys, json; sys.argv=['x']; import bench_any_model as b, torch; "
            f"from testbed.timing import peak_extra_rss; torch.set_num_threads({args.threads}); "
            f"m, x = b.model_and_inputs({args.layers}, {args.width}, {args.seq}, {args.batch}); "
            f"r = b.record(m, x); print(json.dumps(peak_extra_rss(lambda: {call})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=__file__.rsplit("/", 1)[0],
                         timeout=3600)
    if out.returncode != 0:
        return float("nan")
    return json.loads(out.stdout.strip().splitlines()[-1])[0] / 2**20


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--seq", type=int, default=16)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--tol", type=float, default=1e-5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-memory", action="store_true", help="skip the per-route memory subprocesses")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    return ap


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    model, x = model_and_inputs(args.layers, args.width, args.seq, args.batch)
    rec = record(model, x)
    t0 = time.perf_counter()
    d_layer, d_path = dense_route(rec)
    t_dense = time.perf_counter() - t0
    t_free = float("inf")
    for _ in range(max(args.repeats, 1)):
        t0 = time.perf_counter()
        f_layer, f_path = matrix_free_route(rec, args.tol)
        t_free = min(t_free, time.perf_counter() - t0)
    err_layer = float(((f_layer - d_layer).abs() / d_layer).max())
    err_path = float(((f_path - d_path).abs() / d_path).max())
    rec_out: dict[str, Any] = {
        **benchmark_header("bench_any_model"),
                "config": {"layers": args.layers, "width": args.width, "seq": args.seq, "batch": args.batch,
                   "dim": args.width * args.seq, "tol": args.tol},
        "seconds": {"dense": t_dense, "matrix_free": t_free}, "speedup": t_dense / t_free,
        "max_rel_error": {"layer": err_layer, "path": err_path},
        "meets_target": t_dense / t_free >= TARGET_SPEEDUP and max(err_layer, err_path) <= TARGET_ERROR,
    }
    if not args.no_memory:
        rec_out["peak_mib"] = {r: _peak_mib(r, args) for r in ("dense", "matrix_free")}
    rec_out["wall_seconds"] = time.perf_counter() - t_start
    print(f"TransformerEncoder: {args.layers} blocks, d_model {args.width}, sequence {args.seq} (D = "
          f"{args.width * args.seq}), batch {args.batch}, float32, {torch.get_num_threads()} thread(s)")
    print(f"dense {t_dense:.2f} s, matrix-free {t_free:.2f} s: {rec_out['speedup']:.1f}× "
          f"(target ≥ {TARGET_SPEEDUP:g}×); max rel. error per block {err_layer:.1e}, per depth {err_path:.1e} "
          f"(target ≤ {TARGET_ERROR:g})")
    if "peak_mib" in rec_out:
        print("peak memory (MiB): " + json.dumps({k: round(v) for k, v in rec_out["peak_mib"].items()}))
    if args.json:
        write_json(args.json, rec_out)
    return rec_out


if __name__ == "__main__":
    main()

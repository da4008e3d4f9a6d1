"""Residual-student forward (+ backward) with full trajectory capture vs torchdiffeq.odeint(euler).

Both integrate the same learned field with the same number of steps; the script prints the time ratio
ours / torchdiffeq (below 1.0 means the library's forward is faster) and writes a JSON record.

    python benchmarks/bench_forward.py [--layers 32] [--width 64] [--batch 256] [--repeats 20] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from torchdiffeq import odeint

from testbed.students import build_student


def _time(fn, repeats: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--dim", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.manual_seed(0)
    s = build_student("residual", dim=args.dim, n_layers=args.layers, width=args.width, hidden_layers=2)
    x0 = torch.randn(args.batch, args.dim)
    grid = s.layer_times.float()

    def ours_fwd():
        with torch.no_grad():
            s.trajectory(x0)

    def ref_fwd():
        with torch.no_grad():
            odeint(s.vector_field, x0, grid, method="euler")

    def ours_bwd():
        s.trajectory(x0).pow(2).sum().backward()

    def ref_bwd():
        odeint(s.vector_field, x0, grid, method="euler").pow(2).sum().backward()

    assert torch.allclose(s.trajectory(x0), odeint(s.vector_field, x0, grid, method="euler"), atol=1e-6)
    rec = {"layers": args.layers, "width": args.width, "batch": args.batch, "threads": torch.get_num_threads()}
    for name, a, b in (("forward", ours_fwd, ref_fwd), ("forward+backward", ours_bwd, ref_bwd)):
        ta, tb = _time(a, args.repeats), _time(b, args.repeats)
        rec[name] = {"ours_s": ta, "torchdiffeq_s": tb, "ratio": ta / tb}
        print(f"{name:>17}: ours {ta * 1e3:7.2f} ms   torchdiffeq euler {tb * 1e3:7.2f} ms   ratio {ta / tb:5.2f}x")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rec, fh, indent=2)


if __name__ == "__main__":
    main()

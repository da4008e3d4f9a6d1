"""Smoke tests for the benchmark scripts: each runs one tiny configuration so the scripts cannot rot.

Nothing here asserts on timings (they depend on the machine); only that the scripts run, agree with their
references and write well-formed records.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path
from types import ModuleType

import pytest

from testbed.experiments import get_experiment, list_experiments

BENCH_DIR = Path(__file__).resolve().parent.parent / "benchmarks"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", BENCH_DIR / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bench_forward_tiny(tmp_path: Path) -> None:
    bf = _load("bench_forward")
    out = tmp_path / "forward.json"
    rec = bf.main(["--layers", "4", "--width", "8", "--batch", "3", "--repeats", "1", "--json", str(out)])
    # 2 directions × (3 euler + 3 rk4 implementations)
    assert len(rec["rows"]) == 12
    assert all(r["seconds"] > 0 and math.isfinite(r["ratio_vs_torchdiffeq"]) for r in rec["rows"])
    assert set(rec["summary"]) >= {"euler/forward/student", "rk4/forward+backward/integrate", "rk4/forward/loop"}
    assert rec["summary"]["rk4/forward/loop"]["meets_target"] is None  # the reference loop is not judged
    assert json.loads(out.read_text())["benchmark"] == "bench_forward"


def test_bench_forward_rk4_loop_matches_torchdiffeq() -> None:
    import torch

    bf = _load("bench_forward")
    s = bf.build_student("residual", dim=2, n_layers=5, width=8, hidden_layers=2, tied=False).double()
    x0 = torch.randn(4, 2, dtype=torch.float64)
    bf.check_agreement(bf.implementations(s, x0))  # raises on disagreement


def test_bench_consistency_tiny(tmp_path: Path) -> None:
    bc = _load("bench_consistency")
    assert bc.six_step_counts(8) == [1, 2, 4, 16, 32, 64]
    assert bc.loglog_slope([1, 2, 4], [3, 6, 12]) == pytest.approx(1.0)
    out = tmp_path / "consistency.json"
    rec = bc.main(["--layers", "8", "--width", "8", "--n", "2", "--train-steps", "2", "--repeats", "1",
                   "--json", str(out)])
    (r,) = rec["records"]
    assert r["nfev"]["fixed"] == 8 + sum(bc.six_step_counts(8))
    assert r["nfev"]["dopri5_batched"] > 0 and r["nfev"]["dopri5_per_sample_total"] > 0
    assert r["endpoint_change_dopri5"]["abs_diff"] < 1e-4  # both modes solve to rtol = 1e-7
    assert rec["library_reports"] == "batched"
    json.loads(out.read_text())


def test_bench_scaling_tiny() -> None:
    bs = _load("bench_scaling")
    rec = bs.main(["--layers", "4,8", "--batch", "4", "--width", "8", "--fit-from", "4"])
    assert {(r["tie"], r["layers"]) for r in rec["rows"]} == {("tied", 4), ("tied", 8), ("untied", 4), ("untied", 8)}
    assert all(math.isfinite(s["slope_all"]) for s in rec["slopes"])


def test_bench_quick_modes_pieces() -> None:
    bq = _load("bench_quick_modes")
    for name in list_experiments():  # every registered experiment has a quick mode to run
        assert callable(get_experiment(name).quick_config)
    cmd = bq.quick_command("law-recovery", Path("/tmp/x"), 1)
    assert cmd[1:6] == ["-m", "testbed", "run", "law-recovery", "--quick"] and "--no-progress" in cmd
    res = bq.time_command([sys.executable, "-c", "import os; print(os.environ['OMP_NUM_THREADS'])"], threads=1)
    assert res["returncode"] == 0 and res["output_tail"].strip() == "1" and res["seconds"] > 0
    assert bq.verdict(10.0, 0) == "ok" and bq.verdict(1e4, 0) == "MISSED" and bq.verdict(1.0, None) == "TIMEOUT"
    assert bq.verdict(1.0, 2).startswith("FAILED")
    with pytest.raises(SystemExit):
        bq.main(["--only", "no-such-experiment"])


def test_bench_jacobian_probes_tiny() -> None:
    bj = _load("bench_jacobian_probes")
    rec = bj.main(["--grid", "16", "--students", "poly", "--probes", "1", "--repeats", "1", "--law-seeds", "2",
                   "--law-steps", "3", "--law-n-train", "8"])
    assert {r["variant"] for r in rec["speed"]} == {"field", "dense", "probes=1"}
    assert all(r["seconds"] > 0 and math.isfinite(r["speedup_vs_dense"]) for r in rec["speed"])
    assert rec["target"]["meets_target"] is None      # no run at the target dimension
    assert {(s["probes"], s["n"]) for s in rec["law_summary"]} == {(0, 2), (1, 2)}
    assert math.isfinite(rec["law_summary"][1]["log10_ratio_vs_dense"])


def test_bench_per_sample_tiny() -> None:
    bp = _load("bench_per_sample")
    rec = bp.main(["--batch", "4", "--fields", "oscillators,student", "--repeats", "1", "--loop-rows", "2",
                   "--check-rows", "2"])
    solvers = {r["solver"] for r in rec["rows"]}
    assert {"batched", "per_sample", "loop"} <= solvers
    per = [r for r in rec["rows"] if r["solver"] == "per_sample"]
    assert all(r["max_rel_error_vs_dop853"] < 1e-5 and r["nfev_row_min"] <= r["nfev_row_max"] for r in per)
    assert rec["target"]["meets_target"] is None       # not run at the target batch


def test_bench_any_model_tiny() -> None:
    ba = _load("bench_any_model")
    rec = ba.main(["--layers", "2", "--width", "8", "--seq", "3", "--batch", "2", "--repeats", "1", "--no-memory",
                   "--tol", "1e-7"])
    assert rec["config"]["dim"] == 24 and rec["seconds"]["dense"] > 0
    assert rec["max_rel_error"]["layer"] < 1e-4 and rec["max_rel_error"]["path"] < 1e-4


def test_peak_extra_rss_sees_what_the_call_allocates() -> None:
    """A call that touches 256 MiB adds at least ~240 MiB to the peak; one that allocates nothing adds little —
    measured on this process image (a fresh subprocess would not inherit its parent's peak)."""
    import numpy as np

    from testbed.timing import peak_extra_rss

    def touch() -> None:
        a = np.ones(256 * 2**20 // 8)   # written, so resident
        assert a[-1] == 1.0

    big, how = peak_extra_rss(touch)
    small, _ = peak_extra_rss(lambda: None)
    assert big >= 240 * 2**20 and small < 32 * 2**20, (big, small, how)

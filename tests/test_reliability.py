"""Hostile and careless input: every failure is one line ``testbed: error: …``, exit status 2, no results.csv;
checkpoints never run code; diverged fields never hang; sizes are refused before allocation; one run per folder.

Most cases call :func:`testbed.cli.main` in-process (fast); Ctrl-C runs the CLI in a subprocess.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import systems
from systems.data import make_trajectories
from testbed.cli import main
from testbed.config import ConfigError, apply_overrides, parse_value, shown
from testbed.errors import CheckpointError, DivergenceError, OutputLockedError, ResourceError
from testbed.experiments import get_experiment, list_experiments
from testbed.field.consistency import integrate
from testbed.limits import check_training_memory, estimate_module_bytes
from testbed.lock import LOCK_NAME, output_lock
from testbed.students import ResidualStudent, build_student
from testbed.sweep import load_spec
from testbed.train import CHECKPOINT_NAME, TrainConfig, load_student, read_checkpoint, train

# a law-recovery run of a few seconds
TINY = ["--system", "linear_spiral", "--no-progress", "--set", "steps=10", "n_train=16", "n_test=8", "n_layers=8",
        "width=8", "hidden_layers=1", "match_endpoint=0"]


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def assert_one_line_error(rc: int, err: str, *needles: str, status: int = 2) -> None:
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("testbed: warning:")]
    assert rc == status, err
    assert len(lines) == 1, err
    assert lines[0].startswith("testbed: error: ") and "Traceback" not in err
    for n in needles:
        assert n in lines[0], (n, lines[0])


class _Evil:
    """Unpickling this would run a shell command creating ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def tiny_checkpoint(tmp_path: Path) -> Path:
    """A real checkpoint of a small trained student (law-recovery layout: ``extra`` names the system)."""
    sys_ = systems.get_system("linear_spiral")
    data = make_trajectories(sys_, 16, 4, torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.manual_seed(0)
    student = ResidualStudent(2, n_layers=8, horizon=float(sys_.horizon), width=8).double()
    run = tmp_path / "run"
    train(student, "endpoint", data, TrainConfig(steps=5, batch_size=8, progress=False), run,
          extra={"system": "linear_spiral", "system_params": sys_.params(), "objective": "endpoint", "seed": 0})
    return run / CHECKPOINT_NAME


# ----------------------------------------------------------------------------------- 1. checkpoints are data
def _evil_checkpoint(path: Path, marker: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"student_kind": "residual", "student_state": {}, "payload": _Evil(marker)}, path)
    return path


def test_malicious_checkpoint_runs_nothing_in_consistency(tmp_path, capsys):
    marker = tmp_path / "pwned"
    ck = _evil_checkpoint(tmp_path / "evil" / CHECKPOINT_NAME, marker)
    rc, _, err = run_cli(capsys, "consistency", ck)
    assert_one_line_error(rc, err, str(ck), "refused")
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="refused"):
        load_student(ck)
    assert not marker.exists()


def test_malicious_checkpoint_runs_nothing_on_resume(tmp_path, capsys):
    marker = tmp_path / "pwned"
    out = tmp_path / "out"
    ck = _evil_checkpoint(out / "checkpoints" / "linear_spiral-residual-endpoint-L8-s0" / CHECKPOINT_NAME, marker)
    rc, _, err = run_cli(capsys, "run", "law-recovery", "--quick", "--out", out, *TINY, "objectives=endpoint")
    assert_one_line_error(rc, err, str(ck), "--fresh")
    assert not marker.exists() and not (out / "results.csv").exists()
    # --fresh recovers: the bad checkpoint is deleted and the run completes
    rc, _, err = run_cli(capsys, "run", "law-recovery", "--quick", "--out", out, "--fresh", *TINY,
                         "objectives=endpoint")
    assert rc == 0, err
    assert (out / "results.csv").exists() and not marker.exists()


def test_malicious_checkpoint_runs_nothing_in_plot(tmp_path, capsys):
    marker = tmp_path / "pwned"
    out = tmp_path / "out"
    rc, _, err = run_cli(capsys, "run", "law-recovery", "--quick", "--out", out, *TINY, "objectives=endpoint")
    assert rc == 0, err
    ck = _evil_checkpoint(out / "checkpoints" / "linear_spiral-residual-endpoint-L8-s0" / CHECKPOINT_NAME, marker)
    rc, _, err = run_cli(capsys, "plot", "law-recovery", "--out", out)
    assert_one_line_error(rc, err, str(ck))
    assert not marker.exists()


@pytest.mark.parametrize("kind", ["empty", "truncated", "text", "foreign_dict", "foreign_list"])
def test_broken_checkpoint_names_the_file_and_the_remedy(tiny_checkpoint, tmp_path, capsys, kind):
    ck = tmp_path / "broken" / CHECKPOINT_NAME
    ck.parent.mkdir()
    good = tiny_checkpoint.read_bytes()
    if kind == "empty":
        ck.write_bytes(b"")
    elif kind == "truncated":
        ck.write_bytes(good[: len(good) // 2])
    elif kind == "text":
        ck.write_text("this is not a checkpoint\n")
    elif kind == "foreign_dict":
        torch.save({"weights": torch.zeros(3)}, ck)
    else:
        torch.save([torch.zeros(3)], ck)
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(ck)
    assert str(ck) in str(info.value) and "--fresh" in str(info.value)
    rc, _, err = run_cli(capsys, "consistency", ck)
    assert_one_line_error(rc, err, str(ck), "delete it")


def test_real_checkpoint_still_loads_and_resumes(tiny_checkpoint, capsys):
    student, ck = load_student(tiny_checkpoint)
    assert ck["step"] == 5 and isinstance(student, ResidualStudent)
    rc, out, err = run_cli(capsys, "consistency", tiny_checkpoint, "--steps", "4,16", "--n", "8")
    assert rc == 0, err
    assert "teacher" in out


# ------------------------------------------------------------------------------------ 2. divergence never hangs
def test_adaptive_solve_of_a_blow_up_stops_on_the_state_bound():
    # dx/dt = x² from x0 = 1 blows up at t = 1: the solve must stop, not hang
    x0 = torch.ones(4, 1, dtype=torch.float64)
    t0 = time.perf_counter()
    with pytest.raises(DivergenceError, match="state max"):
        integrate(lambda t, x: x * x, x0, 2.0, "dopri5")
    assert time.perf_counter() - t0 < 10


def test_adaptive_solve_of_a_stiff_field_stops_on_its_budget():
    x0 = torch.ones(4, 2, dtype=torch.float64)
    with pytest.raises(DivergenceError, match="stalled|budget"):
        integrate(lambda t, x: -1e12 * x + torch.sin(1e9 * t), x0, 1.0, "dopri5", max_nfev=5_000)
    # an honest solve is untouched: exp(-t) to the tolerance
    sol, nfev = integrate(lambda t, x: -x, x0, 1.0, "dopri5")
    assert float((sol[-1] - torch.exp(torch.tensor(-1.0))).abs().max()) < 1e-7 and nfev < 200


def test_nan_state_stops_the_solve():
    x0 = torch.ones(2, 2, dtype=torch.float64)
    with pytest.raises(DivergenceError):
        integrate(lambda t, x: x * float("nan"), x0, 1.0, "dopri5")


def test_neural_ode_step_budget_is_a_divergence_error():
    from testbed.students import NeuralODEStudent

    torch.manual_seed(0)
    s = NeuralODEStudent(2, n_layers=2, method="dopri5", rtol=1e-12, atol=1e-14).double()
    with torch.no_grad():
        for p in s.parameters():
            p.mul_(1e4)
    import testbed.students.neural_ode as node

    old = node.MAX_ADAPTIVE_STEPS
    node.MAX_ADAPTIVE_STEPS = 20
    try:
        with pytest.raises(DivergenceError, match="dopri5"):
            s(torch.randn(4, 2, dtype=torch.float64))
    finally:
        node.MAX_ADAPTIVE_STEPS = old


def test_diverged_student_ends_the_run_naming_where(tmp_path, capsys):
    out = tmp_path / "out"
    t0 = time.perf_counter()
    rc, _, err = run_cli(capsys, "run", "law-recovery", "--quick", "--system", "linear_spiral", "--no-progress",
                         "--out", out, "--set", "steps=50", "lr=1e6", "objectives=endpoint")
    assert time.perf_counter() - t0 < 120
    assert_one_line_error(rc, err, "system linear_spiral", "objective endpoint", "seed 0", "training step 50",
                          "dopri5")
    assert not (out / "results.csv").exists()


def test_nan_loss_names_system_objective_seed(tmp_path, capsys):
    out = tmp_path / "out"
    rc, _, err = run_cli(capsys, "run", "law-recovery", "--quick", "--out", out, *TINY, "lr=1e300",
                         "objectives=field")
    assert_one_line_error(rc, err, "system linear_spiral", "objective field", "seed 0", "non-finite", "step 2")
    assert not (out / "results.csv").exists()


def test_large_error_rows_are_kept_and_flagged(tmp_path, capsys):
    from testbed.evaluate import quality_flag
    from testbed.results import read_csv

    assert quality_flag({"endpoint_error": 0.3}, "x") == "ok"
    assert quality_flag({"endpoint_error": 17.6}, "sys a") == "large_error"
    assert quality_flag({"endpoint_error": float("nan")}, "sys a") == "large_error"
    assert "testbed: warning: sys a: endpoint_error = 17.6" in capsys.readouterr().err
    out = tmp_path / "out"
    rc, _, err = run_cli(capsys, "run", "law-recovery", "--quick", "--system", "linear_spiral", "--no-progress",
                         "--out", out, "--set", "steps=50", "lr=1", "objectives=endpoint", "match_endpoint=0")
    assert rc == 0, err
    (row,) = read_csv(out / "results.csv")
    assert row["endpoint_error"] > 1 and row["flag"] == "large_error"
    assert "testbed: warning:" in err and "flagged 'large_error'" in err


# ------------------------------------------------------------------------------------------------- 3. devices
@pytest.mark.parametrize("device", ["cuda", "cuda:7", "bogus", "meta", ""])
@pytest.mark.parametrize("experiment", list_experiments())
def test_bad_device_is_one_line_for_every_experiment(experiment, device, tmp_path, capsys):
    if device.startswith("cuda") and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    out = tmp_path / "out"
    rc, _, err = run_cli(capsys, "run", experiment, "--quick", "--device", device, "--out", out)
    assert_one_line_error(rc, err, "device")
    assert not (out / "results.csv").exists()


def test_bad_device_in_figures_and_sweep_spec(tmp_path, capsys):
    rc, _, err = run_cli(capsys, "figures", "law-recovery", "--device", "bogus", "--out", tmp_path / "f")
    assert_one_line_error(rc, err, "bogus")
    spec = tmp_path / "spec.toml"
    spec.write_text('experiment = "law-recovery"\nquick = true\n[fixed]\ndevice = "cuda:99"\n')
    with pytest.raises(ConfigError, match="device"):
        load_spec(spec)


# ------------------------------------------------------------------------------------------ 4. file system
def _tiny_spec(tmp_path: Path) -> Path:
    spec = tmp_path / "spec.toml"
    spec.write_text('experiment = "law-recovery"\nquick = true\nseeds = [0]\n[fixed]\nsystems = ["linear_spiral"]\n'
                    "steps = 5\nn_train = 16\nn_test = 8\nn_layers = 8\nwidth = 8\n")
    return spec


@pytest.mark.parametrize("case", ["file", "under_file", "too_long", "read_only"])
def test_unusable_out_is_one_line_naming_the_path(case, tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    out = {"file": afile, "under_file": afile / "sub", "too_long": tmp_path / ("x" * 300),
           "read_only": Path("/sys/testbed-out")}[case]  # /sys: not writable, even for root
    for argv in (["run", "law-recovery", "--quick", *TINY, "--out", out],
                 ["sweep", _tiny_spec(tmp_path), "--sequential", "--out", out],
                 ["figures", "law-recovery", "--out", out]):
        rc, _, err = run_cli(capsys, *argv)
        assert_one_line_error(rc, err, str(out)[:60])


def test_sweep_spec_that_is_a_folder_or_binary(tmp_path, capsys):
    rc, _, err = run_cli(capsys, "sweep", tmp_path)
    assert_one_line_error(rc, err, str(tmp_path), "folder")
    binary = tmp_path / "spec.toml"
    binary.write_bytes(bytes(range(256)) * 4)
    rc, _, err = run_cli(capsys, "sweep", binary)
    assert_one_line_error(rc, err, str(binary))


def test_binary_results_csv_is_one_line(tmp_path, capsys):
    (tmp_path / "results.csv").write_bytes(b"\xff\xfe\x00binary" * 50)
    (tmp_path / "consistency.csv").write_bytes(b"\xff\xfe\x00binary" * 50)
    rc, _, err = run_cli(capsys, "plot", "law-recovery", "--out", tmp_path)
    assert_one_line_error(rc, err, "csv")


@pytest.mark.parametrize("argv", [["run", "law-recovery", "--quick", "--threads", "-1"],
                                  ["sweep", "SPEC", "--threads", "-1"], ["sweep", "SPEC", "--workers", "0"],
                                  ["figures", "--threads", "-1"]])
def test_non_positive_threads_are_refused(argv, tmp_path, capsys):
    argv = [str(_tiny_spec(tmp_path)) if a == "SPEC" else a for a in argv]
    rc, _, err = run_cli(capsys, *argv, "--out", tmp_path / "o")
    assert_one_line_error(rc, err, "must be a positive integer")


# ------------------------------------------------------------------------------------ 5. sizes before allocation
def test_huge_sweep_grid_is_refused_before_expanding(tmp_path, capsys):
    spec = tmp_path / "huge.toml"
    vals = ", ".join(str(i + 1) for i in range(100))
    spec.write_text('experiment = "law-recovery"\nquick = true\nseeds = [0, 1]\n[grid]\n'
                    f"n_train = [{vals}]\nn_test = [{vals}]\nwidth = [{vals}]\n")
    t0 = time.perf_counter()
    rc, _, err = run_cli(capsys, "sweep", spec, "--dry-run")
    assert time.perf_counter() - t0 < 5
    assert_one_line_error(rc, err, "2,000,000 cells", "--max-cells")
    small = tmp_path / "small.toml"
    small.write_text('experiment = "law-recovery"\nquick = true\nseeds = [0]\n[grid]\nwidth = [8, 16, 32]\n')
    rc, _, err = run_cli(capsys, "sweep", small, "--dry-run", "--max-cells", "2")
    assert_one_line_error(rc, err, "3 cells", "limit of 2")
    rc, out, err = run_cli(capsys, "sweep", small, "--dry-run", "--max-cells", "3", "--out", tmp_path / "o")
    assert rc == 0 and "3 cells" in out, err


@pytest.mark.parametrize("setting", ["width=1e12", "width=1000000", "n_layers=1e9"])
def test_oversized_students_are_refused_with_the_estimate(setting, tmp_path, capsys):
    extra = ["students=residual_untied"] if setting.startswith("n_layers") else ["hidden_layers=2"]
    out = tmp_path / "out"
    t0 = time.perf_counter()
    rc, _, err = run_cli(capsys, "run", "law-recovery", "--quick", "--system", "linear_spiral", "--no-progress",
                         "--out", out, "--set", setting, "n_obs=1", *extra)
    assert time.perf_counter() - t0 < 30
    assert_one_line_error(rc, err, "needs an estimated", "available")
    assert not (out / "results.csv").exists()


def test_memory_estimates_match_the_real_sizes():
    # parameters: a tied residual student's bytes are exact; the depth extrapolation is exact for untied ones
    kw = dict(dim=3, n_layers=40, horizon=1.0, width=16, hidden_layers=1, tied=False)
    real = build_student("residual", **kw)
    real_bytes = sum(p.numel() * p.element_size() for p in real.parameters())
    assert estimate_module_bytes(ResidualStudent, kw) == real_bytes
    # activations: a depth-L probe is L/2 times the 2-layer probe, so the estimate grows linearly in L
    torch.manual_seed(0)
    x = torch.randn(4, 3)
    e8 = check_training_memory(build_student("residual", **{**kw, "n_layers": 8, "tied": True}), x, 64)
    e80 = check_training_memory(build_student("residual", **{**kw, "n_layers": 80, "tied": True}), x, 64)
    params = 4 * sum(p.numel() * 4 for p in build_student("residual", **{**kw, "tied": True}).parameters())
    assert (e80 - params) == pytest.approx(10 * (e8 - params), rel=1e-9)
    with pytest.raises(ResourceError, match="training"):
        check_training_memory(build_student("residual", **{**kw, "n_layers": 10**9, "tied": True}), x, 128)


def test_consistency_with_absurd_step_count_is_refused(tiny_checkpoint, capsys):
    rc, _, err = run_cli(capsys, "consistency", tiny_checkpoint, "--steps", "100000000")
    assert_one_line_error(rc, err, "100,000,000 steps", "needs an estimated")


def _interrupt(argv: list[str], tmp_path: Path, started, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the CLI in its own process group and, once ``started()`` holds, press Ctrl-C (SIGINT to the whole
    group, as a terminal does: Dask workers get it too)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "testbed", *argv], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    t0 = time.time()
    while not started() and time.time() - t0 < timeout and proc.poll() is None:
        time.sleep(0.2)
    time.sleep(1.0)
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_ctrl_c_ends_a_run_with_one_line(tmp_path):
    out = tmp_path / "out"
    res = _interrupt(["run", "law-recovery", "--quick", "--no-progress", "--system", "linear_spiral", "--out",
                      str(out)], tmp_path, (out / "checkpoints").exists)
    assert_one_line_error(res.returncode, res.stderr, "interrupted", status=130)
    assert not (out / "results.csv").exists() and not (out / LOCK_NAME).exists()


@pytest.mark.slow
def test_ctrl_c_ends_a_distributed_sweep_with_one_line(tmp_path):
    spec = tmp_path / "spec.toml"
    spec.write_text('experiment = "law-recovery"\nquick = true\nseeds = [0, 1, 2, 3]\n[fixed]\n'
                    'systems = ["linear_spiral"]\nsteps = 400\n')
    out = tmp_path / "sw"
    res = _interrupt(["sweep", str(spec), "--no-progress", "--workers", "2", "--out", str(out)], tmp_path,
                     lambda: bool(list((out / "cells").glob(".tmp-*/run"))))
    assert_one_line_error(res.returncode, res.stderr, "interrupted", status=130)
    assert not (out / LOCK_NAME).exists()


# ----------------------------------------------------------------------------------- 7. one run per folder
def test_second_run_into_a_locked_folder_refuses(tmp_path, capsys):
    out = tmp_path / "out"
    with output_lock(out):
        holder = (out / LOCK_NAME).read_text().split()
        assert int(holder[0]) == os.getpid()
        rc, _, err = run_cli(capsys, "run", "law-recovery", "--quick", "--out", out, *TINY)
        assert_one_line_error(rc, err, "in use by another testbed run", f"pid {os.getpid()}")
        assert not (out / "results.csv").exists()
        with pytest.raises(OutputLockedError):
            with output_lock(out):
                pass
    assert not (out / LOCK_NAME).exists()


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (out / LOCK_NAME).write_text(f"{dead.pid} {os.uname().nodename} 2026-01-01T00:00:00\n")
    with output_lock(out):
        assert int((out / LOCK_NAME).read_text().split()[0]) == os.getpid()
    assert not (out / LOCK_NAME).exists()


# --------------------------------------------------------------------------------------------- 8. small ones
@pytest.mark.parametrize("argv,needle", [
    (["--seed", "0", "0"], "--seed lists 0 more than once"),
    (["--system", "linear_spiral", "linear_spiral"], "--system lists 'linear_spiral' more than once"),
    (["--set", "seeds=1,1"], "seeds lists 1 more than once"),
    (["--set", "systems=van_der_pol,van_der_pol"], "more than once"),
    (["--seed", "99999999999999999999"], "too large"),
    (["--set", "seeds=4294967296"], "too large"),
    (["--set", "steps=5", "steps=6"], "set twice"),
])
def test_duplicates_and_overflowing_seeds_are_refused(argv, needle, tmp_path, capsys):
    rc, _, err = run_cli(capsys, "run", "law-recovery", "--quick", "--out", tmp_path / "o", *argv)
    assert_one_line_error(rc, err, needle)


@pytest.mark.parametrize("argv", [["run"], ["run", "law-recovery", "--bogus-flag"], ["run", "law-recovery", "--seed",
                                  "abc"], ["frobnicate"], ["consistency"], ["sweep", "a.toml", "--workers", "x"]])
def test_argparse_errors_are_one_line(argv, capsys):
    rc, _, err = run_cli(capsys, *argv)
    assert_one_line_error(rc, err)


def test_very_long_bad_values_are_cut(tmp_path, capsys):
    long = "y" * 20_000
    for argv in (["--system", long], ["--set", f"width={long}"], ["--set", f"{long}=1"],
                 ["--set", f"objectives={long}"]):
        rc, _, err = run_cli(capsys, "run", "law-recovery", "--quick", "--out", tmp_path / "o", *argv)
        assert_one_line_error(rc, err)
        assert len(err) < 800
    assert shown("z" * 500).endswith("(502 characters)") and len(shown("z" * 500)) < 120


def test_train_seconds_include_time_before_a_resume(tmp_path):
    sys_ = systems.get_system("linear_spiral")
    data = make_trajectories(sys_, 16, 4, torch.Generator().manual_seed(0), dtype=torch.float64)
    cfg = TrainConfig(steps=20, batch_size=8, progress=False, log_every=5, checkpoint_every=5)

    def slow_then_stop(step, student):  # the first segment takes ≥ 0.6 s, then "the run is killed"
        time.sleep(0.3)
        return step >= 10

    torch.manual_seed(0)
    first = train(ResidualStudent(2, 8, float(sys_.horizon), 8).double(), "endpoint", data, cfg, tmp_path,
                  stop_when=slow_then_stop)
    assert first.steps == 10 and first.wall_time >= 0.6
    torch.manual_seed(0)
    resumed = train(ResidualStudent(2, 8, float(sys_.horizon), 8).double(), "endpoint", data, cfg, tmp_path)
    assert resumed.resumed_from == 10 and resumed.steps == 20
    assert resumed.wall_time >= first.wall_time  # the remaining 10 fast steps alone take far less than 0.6 s


# --------------------------------------------------------------------------------------- property-based parsers
_CONFIG = get_experiment("law-recovery").quick_config()
_KEYS = st.sampled_from(["width", "n_layers", "lr", "seeds", "systems", "objectives", "tied", "dtype", "device",
                         "grad_clip", "n_obs", "bogus", "steps", ""])
_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)
_VALUES = st.one_of(_TEXT, st.integers(-10**30, 10**30).map(str), st.floats(allow_nan=True).map(str),
                    st.lists(st.integers(-5, 2**33), max_size=4).map(lambda v: ",".join(map(str, v))),
                    st.sampled_from(["true", "no", "nan", "inf", "-0", "1e400", "[1, 2]", "(3,)", "none"]))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(_KEYS, _VALUES), max_size=3), st.lists(_TEXT, max_size=2))
def test_random_set_strings_parse_or_raise_config_error(pairs, raw):
    items = [f"{k}={v}" for k, v in pairs] + raw
    try:
        cfg = apply_overrides(_CONFIG, items)
    except (ConfigError, systems.SystemSpecError):
        return
    assert isinstance(cfg, type(_CONFIG))


@settings(max_examples=300, deadline=None)
@given(_TEXT, st.sampled_from([int, float, bool, str, tuple[int, ...], tuple[str, ...], int | None]))
def test_parse_value_raises_only_value_errors(text, annotation):
    try:
        parse_value(text, annotation)
    except ValueError:  # ConfigError is a ValueError; the CLI turns both into one line
        pass


_TOML_SCALARS = st.one_of(st.integers(-3, 10**12), st.floats(allow_nan=False, allow_infinity=False, width=32),
                          st.booleans(), st.sampled_from(['"endpoint"', '"linear_spiral"', '"cuda"', '"x"']))


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return str(v)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fixed=st.dictionaries(_KEYS.filter(bool), _TOML_SCALARS, max_size=3),
       grid=st.dictionaries(_KEYS.filter(bool), st.lists(_TOML_SCALARS, max_size=3), max_size=2),
       seeds=st.lists(st.integers(-2, 5), max_size=3), junk=_TEXT)
def test_random_sweep_specs_load_or_raise_config_error(tmp_path_factory, fixed, grid, seeds, junk):
    text = ['experiment = "law-recovery"', "quick = true"]
    if seeds:
        text.append(f"seeds = {_toml_value(seeds)}")
    text.append("[fixed]")
    text += [f"{k} = {_toml_value(v)}" for k, v in fixed.items()]
    if grid:
        text.append("[grid]")
        text += [f"{k} = {_toml_value(v)}" for k, v in grid.items()]
    text.append(junk)
    path = tmp_path_factory.mktemp("spec") / "spec.toml"
    path.write_text("\n".join(text), encoding="utf-8")
    try:
        spec = load_spec(path)
    except (ConfigError, systems.SystemSpecError):
        return
    assert spec.cells

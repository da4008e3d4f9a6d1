"""``testbed sweep``: spec validation, a sweep on a 2-worker LocalCluster (with a failing cell), resume after a
kill, the merged tables, and a smoke run of ``benchmarks/bench_sweep.py``.

Cells are tiny law-recovery runs (one system, 8 layers, 10 training steps: ~0.4 s each once a worker is warm);
one 2-worker LocalCluster is shared by the module (its address is passed as ``scheduler``), and the
kill-and-resume test starts its own through the CLI in a subprocess.
"""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from testbed.cli import main
from testbed.config import ConfigError
from testbed.sweep import apply_options, cell_status, flatten_options, load_spec, local_cluster, run_sweep

ROOT = Path(__file__).resolve().parent.parent
TINY = """\
experiment = "law-recovery"
quick = true
seeds = {seeds}

[fixed]
systems = ["linear_spiral"]
steps = 10
n_train = 16
n_test = 8
n_layers = 8
width = 8
hidden_layers = 1
match_endpoint = 0.0

[grid]
objectives = ["endpoint", "field"]
"""
FAILING_CELL = """
[[cells]]
objectives = ["field"]
lr = 1e300
"""
TIMING_COLUMNS = ("train_seconds",)  # prefixes: train_seconds, train_seconds_mean, train_seconds_std


def _spec(tmp_path: Path, text: str, name: str = "spec.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def _table(path: Path) -> list[dict[str, str]]:
    """A CSV as strings, wall-time columns dropped (the only ones that differ between identical runs)."""
    with open(path, newline="") as fh:
        return [{k: v for k, v in r.items() if not k.startswith(TIMING_COLUMNS)} for r in csv.DictReader(fh)]


@pytest.fixture(scope="module")
def cluster():
    """One 2-worker LocalCluster (single-threaded worker processes) for the module."""
    c = local_cluster(2, 1)
    yield c
    c.close()


@pytest.fixture(scope="module")
def failing_sweep(cluster, tmp_path_factory):
    """4 good cells (2 objectives × 2 seeds) and 2 failing ones ([[cells]] with lr = 1e300: NaN loss at step 2)."""
    tmp = tmp_path_factory.mktemp("sweep")
    spec = load_spec(_spec(tmp, TINY.format(seeds="[0, 1]") + FAILING_CELL))
    res = run_sweep(spec, tmp / "out", scheduler=cluster.scheduler_address, threads=1, progress=False)
    return spec, res


# --------------------------------------------------------------------------------------------- spec
def test_spec_cells_ids_and_coercion(tmp_path: Path) -> None:
    spec = load_spec(_spec(tmp_path, TINY.format(seeds="[0, 1, 2]") + "\n[[cells]]\nobjectives = \"field\"\n"
                           "lr = \"1e-3\"\n"))
    assert spec.experiment == "law-recovery" and spec.quick and spec.seeds == (0, 1, 2)
    assert len(spec.cells) == 2 * 3 + 3  # grid × seeds, then the extra cell × seeds
    assert spec.swept == ["objectives", "lr", "seed"]
    first, extra = spec.cells[0], spec.cells[-1]
    assert first.config.objectives == ("endpoint",) and first.config.seeds == (0,) and first.config.systems == (
        "linear_spiral",)
    assert extra.config.objectives == ("field",) and extra.config.lr == 1e-3 and extra.config.seeds == (2,)
    assert first.config.progress is False
    ids = [c.cell_id for c in spec.cells]
    assert len(set(ids)) == len(ids) and all(len(i) == 12 for i in ids)
    again = load_spec(spec.path)
    assert [c.cell_id for c in again.cells] == ids  # stable
    # the id depends on the resolved config, not on how the spec spells it (option order, seed order, "1e-3")
    text = TINY.format(seeds="[2, 0]").replace("n_train = 16\nn_test = 8", "n_test = 8\nn_train = 16")
    other = load_spec(_spec(tmp_path, text, "b.toml"))
    assert {c.cell_id for c in other.cells} == {c.cell_id for c in spec.cells[:6] if c.options["seed"] in (0, 2)}


@pytest.mark.parametrize("text, match", [
    (TINY.format(seeds="[0]") + "\n[[cells]]\nwidht = 4\n", r"unknown option 'widht' \(did you mean 'width'\?\)"),
    (TINY.format(seeds="[0]").replace("steps = 10", "stpes = 10"), r"\[fixed\]: unknown option 'stpes'"),
    (TINY.format(seeds="[0]") + "width = []\n", r"\[grid\]: option 'width' is an empty list"),
    (TINY.format(seeds="[0]").replace('objectives = ["endpoint", "field"]', ""), r"\[grid\] is empty"),
    (TINY.format(seeds="[0]").replace("law-recovery", "law-recover"), r"unknown experiment 'law-recover'"),
    (TINY.format(seeds="[]"), r"`seeds` must be a non-empty list"),
    (TINY.format(seeds="[0, -1]"), r"`seeds` must hold non-negative integers"),
    (TINY.format(seeds="[0]") + "n_layers = [8, 12]\n", r"'n_layers' is in both \[fixed\] and \[grid\]"),
    (TINY.format(seeds="[0]").replace("n_layers = 8", "n_layers = 12"), r"multiple of n_obs"),
    (TINY.format(seeds="[0]") + "seeds = [1]\n", r"set seeds with the top-level"),
    ("experimnt = 'law-recovery'\n", r"unknown top-level key 'experimnt'"),
    ("experiment = 'law-recovery'\nquick = true\n[grid\n", r"not valid TOML"),
])
def test_bad_spec_clear_error(tmp_path: Path, text: str, match: str) -> None:
    path = _spec(tmp_path, text)
    with pytest.raises(ConfigError, match=match) as info:
        load_spec(path)
    assert str(path) in str(info.value)  # names the spec file


def test_cli_bad_spec_exit_2(tmp_path: Path, capsys) -> None:
    path = _spec(tmp_path, TINY.format(seeds="[0]") + "bogus_option = [1, 2]\n")
    assert main(["sweep", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("testbed: error:") and "bogus_option" in err and str(path) in err
    assert not (tmp_path / "out").exists()
    assert main(["sweep", str(tmp_path / "missing.toml")]) == 2
    assert "not found" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------- the sweep
def test_sweep_on_local_cluster_with_failing_cell(failing_sweep) -> None:
    spec, res = failing_sweep
    out = res.sweep_dir
    assert res.n_cells == 6 and res.ran == 6 and res.skipped == 0 and not res.missing
    bad = [c.cell_id for c in spec.cells if c.config.lr == 1e300]
    assert sorted(res.failed) == sorted(bad) and len(bad) == 2
    for cid in bad:
        st = json.loads((out / "cells" / cid / "status.json").read_text())
        assert st["status"] == "failed" and "non-finite" in st["error"] and "Traceback" in st["traceback"]
    for c in spec.cells:
        if c.cell_id not in bad:
            assert cell_status(out, c.cell_id) == "ok"
            assert (out / "cells" / c.cell_id / "run" / "results.csv").exists()
            assert not (out / "cells" / c.cell_id / "run" / "law_recovery.png").exists()  # no per-cell figure
    assert not list((out / "cells").glob(".tmp-*"))
    # one tidy table: a column per swept option, then the experiment's columns; spec order
    rows = _table(out / "results.csv")
    assert len(rows) == 4
    assert list(rows[0])[:4] == ["cell_id", "objectives", "lr", "seed"]
    assert [(r["objectives"], r["seed"]) for r in rows] == [("endpoint", "0"), ("endpoint", "1"), ("field", "0"),
                                                           ("field", "1")]
    assert all(r["system"] == "linear_spiral" and float(r["endpoint_error"]) > 0 for r in rows)
    summary = _table(out / "summary.csv")
    assert [(r["objectives"], r["n"]) for r in summary] == [("endpoint", "2"), ("field", "2")]
    e = [float(r["endpoint_error"]) for r in rows[:2]]
    mean = sum(e) / 2
    assert float(summary[0]["endpoint_error_mean"]) == pytest.approx(mean)
    assert float(summary[0]["endpoint_error_std"]) == pytest.approx(abs(e[0] - e[1]) / 2 ** 0.5)
    cells = _table(out / "cells.csv")
    assert [r["status"] for r in cells] == ["ok"] * 4 + ["failed"] * 2 and "non-finite" in cells[-1]["error"]
    meta = json.loads((out / "sweep.json").read_text())
    assert meta["experiment"] == "law-recovery" and len(meta["cells"]) == 6
    assert (out / "spec.toml").read_text() == spec.path.read_text()


def test_rerun_skips_finished_and_retries_failed(failing_sweep) -> None:
    spec, first = failing_sweep
    before = _table(first.sweep_dir / "results.csv")
    kept = run_sweep(spec, first.sweep_dir, sequential=True, threads=1, rerun_failed=False, progress=False)
    assert kept.ran == 0 and kept.skipped == 6
    again = run_sweep(spec, first.sweep_dir, sequential=True, threads=1, progress=False)
    assert again.skipped == 4 and again.ran == 2 and sorted(again.failed) == sorted(first.failed)
    assert _table(first.sweep_dir / "results.csv") == before


def test_kill_and_resume_gives_the_uninterrupted_table(cluster, tmp_path: Path) -> None:
    spec = _spec(tmp_path, TINY.format(seeds="[0, 1, 2, 3]"))
    n = 8
    reference = run_sweep(spec, tmp_path / "reference", scheduler=cluster.scheduler_address, threads=1,
                          progress=False)
    assert reference.ran == n and not reference.failed
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "testbed.cli", "sweep", str(spec), "--out", str(out), "--workers", "2",
           "--threads", "1", "--no-progress"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            # a published cell (its status is written inside .tmp-ID-… first, then the folder is renamed)
            if any(not s.parent.name.startswith(".tmp-") for s in (out / "cells").glob("*/status.json")):
                break
            time.sleep(0.02)
        assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
        os.killpg(proc.pid, signal.SIGKILL)  # the sweep and its LocalCluster (same new session)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    spec_obj = load_spec(spec)
    done = [c.cell_id for c in spec_obj.cells if cell_status(out, c.cell_id) == "ok"]
    assert 1 <= len(done) < n  # interrupted mid-sweep
    assert not (out / "results.csv").exists()
    resumed = run_sweep(spec_obj, out, scheduler=cluster.scheduler_address, threads=1, progress=False)
    assert resumed.skipped == len(done) and resumed.ran == n - len(done) and not resumed.failed
    assert not list((out / "cells").glob(".tmp-*"))
    assert _table(out / "results.csv") == _table(reference.results)
    assert _table(out / "summary.csv") == _table(reference.summary)


def test_parquet_table_when_pyarrow_installed(failing_sweep) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    _, res = failing_sweep
    table = pq.read_table(res.sweep_dir / "results.parquet")
    assert table.num_rows == 4 and "endpoint_error" in table.column_names


def test_dry_run_lists_cells(failing_sweep, capsys) -> None:
    spec, res = failing_sweep
    assert main(["sweep", str(spec.path), "--out", str(res.sweep_dir), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "6 cells" in out and out.count(" ok") == 4 and out.count("failed") == 2


# --------------------------------------------------------------------------------------------- benchmark
def test_bench_sweep_smoke(cluster, tmp_path: Path) -> None:
    path = ROOT / "benchmarks" / "bench_sweep.py"
    mod_spec = importlib.util.spec_from_file_location("_bench_sweep", path)
    assert mod_spec is not None and mod_spec.loader is not None
    bench = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(bench)
    out = tmp_path / "bench.json"
    rec = bench.main(["--smoke", "--scheduler", cluster.scheduler_address, "--dir", str(tmp_path / "b"),
                      "--json", str(out)])
    assert rec["cells"] >= 2 and rec["sequential_seconds"] > 0 and rec["distributed_seconds"] > 0
    assert rec["speedup"] == pytest.approx(rec["sequential_seconds"] / rec["distributed_seconds"])
    assert rec["tables_identical"] is True and rec["concurrency"] > 0
    assert json.loads(out.read_text())["benchmark"] == "bench_sweep"


# --------------------------------------------------------------------------------------------- nested options
@dataclasses.dataclass
class _Inner:
    depths: tuple[int, ...] = (4, 8)
    width: int = 16

    def __post_init__(self) -> None:
        if self.width <= 0:
            raise ConfigError(f"width must be positive, got {self.width}")


@dataclasses.dataclass
class _Outer:
    lr: float = 1e-3
    convergence: _Inner = dataclasses.field(default_factory=_Inner)


def test_dotted_options_build_sub_configs() -> None:
    """``"convergence.depths"`` replaces one field of the sub-config (its other fields keep their values); TOML
    sub-tables flatten to dotted names; unknown names get a "did you mean"."""
    base = _Outer(convergence=_Inner(width=32))
    table = {"lr": 0.1, "convergence": {"depths": [16, 32]}, "other.x": 1}
    assert flatten_options(table) == {"lr": 0.1, "convergence.depths": [16, 32], "other.x": 1}
    cfg = apply_options(base, {"lr": 0.1, "convergence.depths": (16, 32)})
    assert cfg == _Outer(lr=0.1, convergence=_Inner(depths=(16, 32), width=32))
    assert base.convergence.depths == (4, 8)  # not modified in place
    with pytest.raises(ConfigError, match=r"unknown option 'convergence\.dpths' \(did you mean 'convergence\.depths'"):
        apply_options(base, {"convergence.dpths": (1,)})
    with pytest.raises(ConfigError, match=r"did you mean 'convergence\.width'"):
        apply_options(base, {"convergense.width": 3})
    with pytest.raises(ConfigError, match=r"'lr' has no sub-options"):
        apply_options(base, {"lr.x": 3})
    with pytest.raises(ConfigError, match=r"set both whole and by its fields"):
        apply_options(base, {"convergence": _Inner(), "convergence.width": 3})
    with pytest.raises(ConfigError, match=r"width must be positive"):  # the sub-config validates itself
        apply_options(base, {"convergence.width": -1})


@pytest.mark.parametrize("text, match", [
    (TINY.format(seeds="[0]") + '"lr.x" = [1, 2]\n', r"\[grid\]: unknown option 'lr\.x' \('lr' has no sub-options\)"),
    (TINY.format(seeds="[0]") + "[fixed.n_layer]\ndepths = [4]\n", r"did you mean 'n_layers\.depths'"),
    (TINY.format(seeds="[0]").replace("steps = 10", 'steps = "ten"'), r"bad value 'ten' for option 'steps'"),
    (TINY.format(seeds="[0]").replace("steps = 10", "steps = true"), r"bad value True for option 'steps'"),
])
def test_nested_and_bad_values_in_spec(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_spec(_spec(tmp_path, text))


def test_cell_with_figures_draws_from_its_run_folder(tmp_path: Path) -> None:
    """``figures = true``: the cell calls the experiment's ``plot(run_dir)`` after ``run``."""
    text = TINY.format(seeds="[0]").replace("quick = true", "quick = true\nfigures = true").replace(
        'objectives = ["endpoint", "field"]', 'objectives = ["endpoint"]')
    res = run_sweep(load_spec(_spec(tmp_path, text)), tmp_path / "out", sequential=True, threads=1, progress=False)
    assert res.ran == 1 and not res.failed
    run = next((tmp_path / "out" / "cells").glob("*/run"))
    assert (run / "law_recovery.png").exists() and (run / "results.csv").exists()


# --------------------------------------------------------------------------------------------- start-up
def _worker_modules(cluster) -> list[tuple[bool, bool]]:
    from distributed import Client

    with Client(cluster) as client:
        seen = client.run(lambda: ("torch" in sys.modules, "testbed.experiments.law_recovery" in sys.modules))
    return list(seen.values())


def test_local_cluster_forks_workers_from_a_preloaded_server() -> None:
    """Forked workers start with torch and the experiment already imported (the fork server's preload); spawned
    ones (Dask's default, ``fork=False``) have imported neither before their first task."""
    from testbed.sweep.runner import WORKER_PRELOAD, start_worker_server

    start_worker_server(1, (*WORKER_PRELOAD, "testbed.experiments.law_recovery"))  # as the CLI does
    forked = local_cluster(1, 1)
    try:
        assert _worker_modules(forked) == [(True, True)]
    finally:
        forked.close()
    spawned = local_cluster(1, 1, fork=False)
    try:
        assert _worker_modules(spawned) == [(False, False)]
    finally:
        spawned.close()


def test_cli_and_package_import_without_torch() -> None:
    """``testbed sweep`` can start its workers before the client pays for torch: the package, the CLI, the sweep
    modules and the experiment registry import without it; ``testbed.train`` stays the function."""
    code = ("import sys, testbed, testbed.cli, testbed.sweep, testbed.experiments as e; "
            "assert 'torch' not in sys.modules and 'scipy.stats' not in sys.modules, sorted(sys.modules); "
            "assert e.module_name('law_recovery') == 'testbed.experiments.law_recovery'; "
            "import testbed.train; from testbed.train import TrainConfig; "
            "assert callable(testbed.train) and testbed.train.__module__ == 'testbed.train'; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_spec_experiment_reads_only_the_name(tmp_path: Path) -> None:
    from testbed.sweep.spec import spec_experiment

    assert spec_experiment(_spec(tmp_path, TINY.format(seeds="[0]"))) == "law-recovery"
    assert spec_experiment(_spec(tmp_path, "experiment = [\n", "bad.toml")) is None  # load_spec reports it
    assert spec_experiment(tmp_path / "missing.toml") is None


def test_experiment_registry_is_lazy_and_checks_names(monkeypatch) -> None:
    import testbed.experiments as experiments

    reg = experiments._Experiments({"law-benchmark": "testbed.experiments.law_recovery"})  # NAME mismatch
    assert list(reg) == ["law-benchmark"] and len(reg) == 1
    with pytest.raises(RuntimeError, match="declares NAME = 'law-recovery', registered as 'law-benchmark'"):
        reg["law-benchmark"]
    assert experiments.get_experiment("law_recovery").NAME == "law-recovery"
    assert experiments.module_name("no-such") is None
    with pytest.raises(ConfigError, match="unknown experiment 'law-recovry' \\(did you mean 'law-recovery'"):
        experiments.get_experiment("law-recovry")


def _sleep_then_touch(seconds: float, path: str) -> None:
    time.sleep(seconds)
    Path(path).write_text("done")


def test_fork_server_is_reused_only_when_it_fits(tmp_path: Path) -> None:
    """Same threads and a preload it already has: reused; other threads or more modules: restarted (never a
    server pinned to the wrong BLAS threads or missing a module the caller asked for)."""
    from multiprocessing import forkserver

    from testbed.sweep.runner import start_worker_server, stop_worker_server

    stop_worker_server()
    try:
        assert start_worker_server(1, ("json",)) is True
        pid = forkserver._forkserver._forkserver_pid
        assert start_worker_server(1, ("json",)) is False and forkserver._forkserver._forkserver_pid == pid
        assert start_worker_server(2, ("json",)) is True and forkserver._forkserver._forkserver_pid != pid
        assert start_worker_server(2, ("json", "csv")) is True
        assert start_worker_server(2, ("csv",)) is False
        # a process forked from the server keeps it alive; letting go of the server must not wait for it
        import multiprocessing

        done = tmp_path / "done"
        child = multiprocessing.get_context("forkserver").Process(target=_sleep_then_touch, args=(2.0, str(done)))
        child.start()
        t0 = time.perf_counter()
        stop_worker_server()
        assert time.perf_counter() - t0 < 1.0 and child.is_alive()
        assert start_worker_server(1, ("json",)) is True      # a fresh one, while the old one's child still runs
        child.join(10)
        # the child finished its work (its exit code may read 255: the old server exits with its last child and
        # can miss reporting it — harmless for a Dask worker, which reports its results itself)
        assert done.read_text() == "done" and not child.is_alive()
    finally:
        stop_worker_server()


def test_package_pickles_by_name() -> None:
    """The lazy package (a ModuleType subclass) still pickles — Dask ships closures that name it."""
    import pickle

    import cloudpickle

    import testbed

    assert pickle.loads(pickle.dumps(testbed)) is testbed
    assert cloudpickle.loads(cloudpickle.dumps(lambda: testbed.__version__))() == testbed.__version__

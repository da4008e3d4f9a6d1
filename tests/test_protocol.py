"""The experiment contract and the shared pieces behind it: registration checks, the config base, flags from
field metadata, canonical names, run/plot separation, progress lines, typed result tables, data containers,
seeds and the public API."""

from __future__ import annotations

import dataclasses
import io
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

import systems
import testbed
from testbed.cli import main
from testbed.config import ConfigError, apply_overrides
from testbed.experiments import EXPERIMENTS, get_experiment
from testbed.experiments.protocol import ExperimentConfig, check_experiment, flag_fields
from testbed.progress import LineProgress
from testbed.results import load, write_csv
from testbed.seeding import SEED_STRIDE, derived_seed, generator


# ------------------------------------------------------------------------------------------------ contract
def test_every_registered_experiment_meets_the_contract():
    for name, module in EXPERIMENTS.items():
        assert check_experiment(module) is module and module.NAME == name
        assert issubclass(module.Config, ExperimentConfig)
        assert isinstance(module.quick_config(), module.Config)
        assert module.CAPTIONS and all(len(c) > 40 for c in module.CAPTIONS.values())
        assert module.SUMMARY_COLUMNS and isinstance(list(module.GROUP_KEYS), list)
        assert len(module.Config().seeds) >= 5 and len(module.quick_config().seeds) == 1  # full: ≥ 5 seeds


def test_a_module_missing_a_hook_is_refused_with_its_name():
    law = get_experiment("law-recovery")
    mod = types.ModuleType("half_experiment")
    for attr in ("NAME", "Config", "quick_config", "run", "plot", "SUMMARY_COLUMNS"):
        setattr(mod, attr, getattr(law, attr))
    with pytest.raises(TypeError, match="CAPTIONS, GROUP_KEYS"):
        check_experiment(mod)
    mod.CAPTIONS, mod.GROUP_KEYS = {}, []
    mod.NAME = "law_recovery"  # names are hyphenated
    with pytest.raises(TypeError, match="NAME"):
        check_experiment(mod)


def test_flags_map_to_fields_through_metadata():
    law = flag_fields(get_experiment("law-recovery").Config)
    assert law["--system"].name == "systems" and law["--seed"].name == "seeds" and law["--device"].name == "device"
    assert flag_fields(get_experiment("endpoint-equivalence").Config)["--system"].name == "system"
    cont = flag_fields(get_experiment("continual").Config)
    assert cont["--benchmark"].name == "benchmarks" and cont["--data-dir"].name == "data_dir"
    assert flag_fields(get_experiment("depth-scaling").Config)["--study"].name == "studies"
    assert "--system" not in flag_fields(get_experiment("multipath").Config)


def test_config_base_normalises_and_validates_once():
    Law = get_experiment("law-recovery").Config
    cfg = Law(systems=["van-der-pol"], seeds=[2, 0])
    assert cfg.systems == ("van_der_pol",) and cfg.seeds == (2, 0)
    with pytest.raises(ConfigError, match="seeds lists 0 more than once"):
        Law(seeds=(0, 0))
    with pytest.raises(ConfigError, match="device"):
        Law(device="bogus")
    with pytest.raises(ConfigError, match="systems lists 'linear_spiral' more than once"):
        Law(systems=("linear_spiral", "linear-spiral"))


def test_either_spelling_is_accepted_and_the_canonical_one_is_kept(tmp_path, capsys):
    assert get_experiment("law_recovery").NAME == "law-recovery"
    assert systems.canonical_name("Van-Der-Pol") == "van_der_pol"
    assert get_experiment("continual").quick_config(benchmarks=("split-digits",)).benchmarks == ("split_digits",)
    assert get_experiment("multipath").quick_config(tasks=("spiral-twist",)).tasks == ("spiral_twist",)
    rc = main(["run", "law_recovery", "--quick", "--system", "linear-spiral", "--no-progress", "--out",
               str(tmp_path), "--set", "steps=5", "n_train=16", "n_test=8", "n_layers=8", "width=8",
               "objectives=endpoint", "match_endpoint=0"])
    out = capsys.readouterr().out
    assert rc == 0 and out.startswith("law-recovery: wrote 1 rows") and "linear_spiral" in out


@dataclasses.dataclass
class Inner:
    depths: tuple[int, ...] = (4, 8)
    width: int = 8


@dataclasses.dataclass
class Outer:
    inner: Inner = dataclasses.field(default_factory=Inner)
    lr: float = 1.0


def test_nested_overrides_reach_sub_configs():
    cfg = apply_overrides(Outer(), ["inner.depths=16,32", "lr=0.5", "inner.width=1e2"])
    assert cfg.inner == Inner((16, 32), 100) and cfg.lr == 0.5
    with pytest.raises(ConfigError, match="inner: unknown config key 'widht'.*did you mean 'width'"):
        apply_overrides(Outer(), ["inner.widht=3"])


def test_run_computes_and_plot_draws(tmp_path):
    law = get_experiment("law-recovery")
    cfg = law.quick_config(systems=("linear_spiral",), objectives=("endpoint",), steps=5, n_train=16, n_test=8,
                           n_layers=8, width=8, match_endpoint=0.0, progress=False)
    rows = law.run(cfg, tmp_path)
    assert len(rows) == 1 and (tmp_path / "results.csv").exists()
    assert not list(tmp_path.glob("*.png"))  # run() never draws
    paths = law.plot(tmp_path)
    assert tmp_path / "law_recovery.png" in paths and (tmp_path / "law_recovery.pdf").exists()


def test_importing_plotting_chooses_no_backend():
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    code = ("import matplotlib; import testbed.plotting; "
            "print(matplotlib.rcParams._get_backend_or_none())")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "None"


# ------------------------------------------------------------------------------------------------ progress
def test_line_progress_prints_a_line_every_ten_percent():
    buf = io.StringIO()
    bar = LineProgress(range(200), desc="train", file=buf)
    assert sum(1 for _ in bar) == 200
    bar.close()
    lines = buf.getvalue().splitlines()
    assert len(lines) == 10 and lines[0].startswith("train: 20/200 (10%)") and "200/200 (100%)" in lines[-1]
    buf = io.StringIO()
    bar = LineProgress(total=100, desc="x", initial=50, file=buf)
    bar.set_postfix(loss="1e-3")
    bar.update(7)
    bar.close()  # stopped early: one closing line says where
    assert buf.getvalue().splitlines() == [buf.getvalue().splitlines()[0]]
    assert "57/100 (57%)" in buf.getvalue() and "loss=1e-3" in buf.getvalue()


def test_redirected_run_log_is_small(tmp_path):
    """A quick law-recovery training of 300 steps logs a handful of lines when stderr is a file."""
    log = tmp_path / "log.txt"
    with open(log, "w") as fh:
        subprocess.run([sys.executable, "-m", "testbed", "run", "law-recovery", "--quick", "--system",
                        "linear_spiral", "--out", str(tmp_path / "o"), "--set", "steps=300", "n_train=16",
                        "n_test=8", "n_layers=8", "width=8", "objectives=endpoint"], stderr=fh, stdout=fh,
                       check=True, cwd=tmp_path)
    text = log.read_text()
    assert "\r" not in text and text.count("train[endpoint]") == 10 and len(text) < 5000


# ------------------------------------------------------------------------------------------------ results
def test_load_keeps_identifiers_as_strings(tmp_path):
    path = write_csv(tmp_path / "results.csv", [{"cell_id": "012345678901", "seed": 0, "err": 0.5},
                                                {"cell_id": "0000000000e5", "seed": 1, "err": ""}])
    rows = load(tmp_path, frame=False)
    assert rows[0]["cell_id"] == "012345678901" and rows[1]["cell_id"] == "0000000000e5" and rows[0]["seed"] == 0
    pd = pytest.importorskip("pandas")
    df = load(path)
    assert isinstance(df, pd.DataFrame) and list(df["cell_id"]) == ["012345678901", "0000000000e5"]
    assert str(df["err"].dtype) == "float64" and df["err"].isna().tolist() == [False, True]
    assert load(path, types={"seed": str}, frame=False)[1]["seed"] == "1"


# ------------------------------------------------------------------------------------------------ data and seeds
def test_containers_share_subset_and_to():
    from systems.data import TrajectoryData
    from testbed.datasets import LabeledData
    from testbed.path_data import PathData

    g = torch.Generator().manual_seed(0)
    states = torch.randn(3, 5, 2, generator=g, dtype=torch.float64)
    td = TrajectoryData(torch.linspace(0, 1, 3, dtype=torch.float64), states, -states, meta={"a": 1})
    idx = torch.tensor([4, 1])
    sub = td.subset(idx)
    assert torch.equal(sub.states, states[:, idx]) and torch.equal(sub.velocities, -states[:, idx])
    assert sub.meta == {"a": 1} and sub.meta is not td.meta and sub.jacobians is None
    ld = LabeledData(torch.randn(5, 3, generator=g), torch.tensor([0, 1, 2, 1, 0]), 3)
    moved = ld.to(dtype=torch.float64)
    assert moved.x.dtype == torch.float64 and moved.y.dtype == torch.long
    assert torch.equal(ld.subset(idx).y, torch.tensor([0, 1]))
    pdata = PathData(torch.randn(5, 2, generator=g), torch.tensor([1, 2]), torch.randn(5, 2, 2, generator=g),
                     torch.ones(5, 2), y=torch.tensor([0, 1, 0, 1, 1]), n_classes=2)
    psub = pdata.subset(idx).to(dtype=torch.float64)
    assert psub.path_targets.shape == (2, 2, 2) and psub.path_layers.dtype == torch.long
    assert psub.y.tolist() == [1, 1] and psub.x.dtype == torch.float64


def test_derived_seeds_are_distinct_streams():
    assert derived_seed(2, 5) == 2 * SEED_STRIDE + 5 and derived_seed(3, 4, stride=1) == 7
    seeds = {derived_seed(s, salt) for s in range(50) for salt in range(50)}
    assert len(seeds) == 2500
    assert torch.equal(torch.rand(3, generator=generator(1, 2)), torch.rand(3, generator=generator(1, 2)))


def test_public_api_resolves():
    for name in testbed.__all__:
        assert getattr(testbed, name) is not None, name
    from testbed.students import build_student
    from testbed.train import train

    assert testbed.build_student is build_student and testbed.load_results is load
    assert testbed.train is train  # the function, though a submodule has the same name
    with pytest.raises(AttributeError):
        testbed.no_such_name  # noqa: B018
    assert Path(testbed.__file__).name == "__init__.py"


def test_is_true_reads_booleans_as_written_and_as_read_back(tmp_path):
    """``is_true``: a Python or NumPy ``True`` and the string ``read_csv`` returns for it; nothing else (``1``,
    ``"true"``, empty cells are not a written ``True``)."""
    import numpy as np

    from testbed.results import is_true, read_csv, write_csv

    write_csv(tmp_path / "t.csv", [{"a": True, "b": np.True_, "c": False, "d": ""}])
    back = read_csv(tmp_path / "t.csv")[0]
    assert [is_true(back[k]) for k in "abcd"] == [True, True, False, False]
    assert [is_true(v) for v in (True, np.True_, "True")] == [True] * 3
    assert not any(is_true(v) for v in (False, np.False_, 1, 1.0, "true", "False", None, ""))

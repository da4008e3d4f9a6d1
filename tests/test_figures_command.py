"""``testbed figures``: regenerate figures with caption files and the index, run experiments whose results are
missing, and draw a sweep with error bars (``--from SWEEP_DIR``).

A tiny stand-in experiment (registered for the test) keeps ``testbed figures --quick`` fast; law-recovery is
exercised on a 10-step run (its real figure) and through a small sequential sweep.
"""

from __future__ import annotations

import dataclasses
import types
from pathlib import Path
from typing import Any

import pytest

import testbed.experiments as experiments
from testbed.cli import main
from testbed.experiments.law_recovery import CAPTIONS as LAW_CAPTIONS
from testbed.figures import describe
from testbed.plotting import PALETTE, STYLE, color_for
from testbed.results import read_csv, run_metadata, write_csv, write_json
from testbed.sweep import run_sweep

TINY_LAW = dict(systems=("linear_spiral",), steps=10, n_train=16, n_test=8, n_layers=8, width=8, hidden_layers=1,
                progress=False)
TINY_LAW_TOML = """[fixed]
systems = ["linear_spiral"]
steps = 10
n_train = 16
n_test = 8
n_layers = 8
width = 8
hidden_layers = 1
"""


@dataclasses.dataclass
class FakeConfig:
    seeds: tuple[int, ...] = (0, 1, 2)
    scale: float = 1.0
    progress: bool = True


def _fake_run(cfg: FakeConfig, out: str | Path) -> list[dict[str, Any]]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = [{"x": x, "seed": s, "error": cfg.scale * 10.0 ** (-x) * (1 + 0.1 * s)} for x in range(4)
            for s in cfg.seeds]
    write_json(out / "results.json", run_metadata(cfg, cfg.seeds, experiment="fake-exp"))
    _fake_plot(out, rows)
    write_csv(out / "results.csv", rows)
    return rows


def _fake_plot(out: str | Path, rows: list[dict[str, Any]] | None = None) -> list[Path]:
    import matplotlib.pyplot as plt
    import numpy as np

    from testbed.plotting import save_figure, use_style

    out = Path(out)
    rows = rows if rows is not None else read_csv(out / "results.csv")
    use_style()
    fig, ax = plt.subplots(figsize=(3.3, 2.2))
    xs = sorted({r["x"] for r in rows})
    vals = [[r["error"] for r in rows if r["x"] == x] for x in xs]
    ax.errorbar(xs, [np.mean(v) for v in vals], yerr=[np.std(v) for v in vals], marker="o")
    ax.set_yscale("log")
    ax.set_xlabel("x (steps)")
    ax.set_ylabel("error (relative L2)")
    return save_figure(fig, out / "fake_figure")


def _fake_module() -> types.ModuleType:
    mod = types.ModuleType("fake_experiment", "A stand-in experiment: an error that falls by a decade per step.\n\n"
                                              "More text that is not part of the caption.")
    mod.NAME = "fake-exp"
    mod.Config = FakeConfig
    mod.quick_config = lambda **kw: FakeConfig(seeds=(0, 1), **kw)
    mod.run = _fake_run
    mod.plot = _fake_plot
    mod.CAPTIONS, mod.SUMMARY_COLUMNS, mod.GROUP_KEYS = {}, ["seed", "error"], []
    return mod


@pytest.fixture
def fake_registry(monkeypatch):
    """The registry holding only the stand-in experiment (as ``testbed figures`` with no names sees it)."""
    monkeypatch.setattr(experiments, "EXPERIMENTS", {"fake-exp": _fake_module()})


def test_palette_is_okabe_ito() -> None:
    okabe_ito = {"#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#000000"}
    assert set(PALETTE) == okabe_ito
    assert color_for("field") in okabe_ito and color_for("unknown", 3) == PALETTE[3]
    assert STYLE["pdf.fonttype"] == 42 and STYLE["font.size"] <= 9  # embedded fonts, single-column text size


def test_figures_quick_runs_missing_and_writes_every_file(fake_registry, tmp_path: Path, capsys) -> None:
    out = tmp_path / "figs"
    assert main(["figures", "--quick", "--out", str(out), "--no-progress"]) == 0
    folder = out / "fake-exp"
    for name in ("results.csv", "results.json", "fake_figure.png", "fake_figure.pdf", "fake_figure.caption.txt"):
        assert (folder / name).exists(), name
    assert "running quick config" in capsys.readouterr().out
    cap = (folder / "fake_figure.caption.txt").read_text()
    assert cap.startswith("fake-exp: fake_figure\n\nA stand-in experiment: an error that falls by a decade per step.")
    for key in ("command: ", "seeds: 0, 1", "commit: ", "date: ", "drawn by: "):
        assert key in cap
    index = (out / "README.md").read_text()
    assert "## fake-exp" in index and "![fake_figure](fake-exp/fake_figure.png)" in index
    assert "[caption](fake-exp/fake_figure.caption.txt)" in index and "seeds 0, 1" in index
    # results present: redrawn, not re-run
    stamp = (folder / "results.csv").stat().st_mtime_ns
    assert main(["figures", "fake-exp", "--quick", "--out", str(out)]) == 0
    assert (folder / "results.csv").stat().st_mtime_ns == stamp
    assert "running" not in capsys.readouterr().out


def test_figures_law_recovery_from_existing_results(monkeypatch, tmp_path: Path) -> None:
    from testbed.experiments import law_recovery

    monkeypatch.setattr(experiments, "EXPERIMENTS", {"law-recovery": law_recovery, "fake-exp": _fake_module()})
    out = tmp_path / "figs"
    with monkeypatch.context() as m:  # results only: the figure is drawn by `testbed figures`
        m.setattr(law_recovery, "plot", lambda *a, **k: [])
        law_recovery.run(law_recovery.quick_config(**TINY_LAW), out / "law-recovery")
    assert not (out / "law-recovery" / "law_recovery.png").exists()
    assert main(["figures", "--quick", "--out", str(out)]) == 0
    for stem in ("law-recovery/law_recovery", "fake-exp/fake_figure"):
        for ext in (".png", ".pdf", ".caption.txt"):
            assert (out / f"{stem}{ext}").exists(), stem + ext
    cap = (out / "law-recovery" / "law_recovery.caption.txt").read_text()
    assert LAW_CAPTIONS["law_recovery"] in cap and "seeds: 0" in cap
    index = (out / "README.md").read_text()
    assert index.index("## fake-exp") < index.index("## law-recovery")  # sorted, as `testbed list` shows them
    assert "![law_recovery](law-recovery/law_recovery.png)" in index


def test_describe_falls_back_to_docstring() -> None:
    mod = _fake_module()
    assert describe(mod, "fake_figure") == "A stand-in experiment: an error that falls by a decade per step."
    mod.CAPTIONS = {"fake_figure": "own caption"}
    assert describe(mod, "fake_figure") == "own caption"


def test_figures_errors_exit_2(fake_registry, tmp_path: Path, capsys) -> None:
    assert main(["figures", "no-such-experiment", "--out", str(tmp_path)]) == 2
    assert "unknown experiment 'no-such-experiment'" in capsys.readouterr().err
    assert main(["figures", "--from", str(tmp_path / "nothing")]) == 2
    assert "testbed: error:" in capsys.readouterr().err
    assert main(["figures", "fake-exp", "--from", str(tmp_path)]) == 2
    assert main(["figures", "--metric", "error"]) == 2


def _sweep(tmp_path: Path, grid: str, seeds: str = "[0, 1]") -> Path:
    spec = tmp_path / "spec.toml"
    spec.write_text(f'experiment = "law-recovery"\nquick = true\nseeds = {seeds}\n{TINY_LAW_TOML}\n{grid}')
    res = run_sweep(spec, tmp_path / "sweep", sequential=True, threads=1, progress=False)
    assert not res.failed and res.results is not None
    return res.sweep_dir


def test_figures_from_sweep_error_bars(tmp_path: Path) -> None:
    sweep = _sweep(tmp_path, '[grid]\nobjectives = ["endpoint", "field"]\nlr = [1e-3, 3e-3]\n')
    assert main(["figures", "--from", str(sweep)]) == 0
    figs = sweep / "figures"
    for opt in ("objectives", "lr"):
        for ext in (".png", ".pdf", ".caption.txt"):
            assert (figs / f"sweep_{opt}{ext}").exists()
    cap = (figs / "sweep_lr.caption.txt").read_text()
    assert "mean ± 95% CI over 2 seeds" in cap and "seeds: 0, 1" in cap
    assert not (figs / "merged").exists()  # options vary: no pooled experiment figure
    out = tmp_path / "chosen"
    assert main(["figures", "--from", str(sweep), "--out", str(out), "--metric", "law_error_id"]) == 0
    assert (out / "sweep_lr.png").exists()
    assert main(["figures", "--from", str(sweep), "--metric", "no_such_metric"]) == 2


def test_figures_from_seeds_only_sweep_draws_the_experiment_figure(tmp_path: Path) -> None:
    sweep = _sweep(tmp_path, "", seeds="[0, 1, 2]")
    assert main(["figures", "--from", str(sweep)]) == 0
    figs = sweep / "figures"
    assert (figs / "sweep_metrics.png").exists() and (figs / "sweep_metrics.caption.txt").exists()
    assert (figs / "merged" / "law_recovery.png").exists() and (figs / "merged" / "law_recovery.pdf").exists()
    merged = read_csv(figs / "merged" / "consistency.csv")
    assert {r["seed"] for r in merged} >= {0, 1, 2}


def _sweep_and_merge(tmp_path: Path, spec_text: str) -> Path:
    """Run the sweep ``spec_text`` sequentially, then ``testbed figures --from`` it; returns the merged folder."""
    spec = tmp_path / "spec.toml"
    spec.write_text(spec_text)
    res = run_sweep(spec, tmp_path / "sweep", sequential=True, threads=1, progress=False)
    assert not res.failed
    assert main(["figures", "--from", str(res.sweep_dir)]) == 0
    return res.sweep_dir / "figures" / "merged"


def test_a_sweep_over_partition_fields_keeps_the_rows_own_columns_and_draws_the_study(tmp_path: Path) -> None:
    """law-recovery declares n_layers and match_endpoint partition fields (every row names its depth; one band per
    system): a sweep over depth still gets the study's merged folder, whose rows keep their own n_layers column,
    derive()'s tables and the consistency-vs-depth figure."""
    merged = _sweep_and_merge(
        tmp_path, 'experiment = "law-recovery"\nquick = true\nseeds = [0, 1]\n[fixed]\nsystems = ["linear_spiral"]\n'
                  'objectives = ["endpoint", "field"]\nsteps = 10\nn_train = 16\nn_test = 8\nwidth = 8\n'
                  'hidden_layers = 1\nn_obs = 4\n[grid]\nn_layers = [4, 8]\n')
    rows = read_csv(merged / "results.csv")
    assert {r["n_layers"] for r in rows} == {4, 8} and {r["seed"] for r in rows} == {0, 1}
    summary = read_csv(merged / "summary.csv")
    assert {(s["n_layers"], s["n"]) for s in summary if s["regime"] == "budget"} == {(4, 2), (8, 2)}
    for stem in ("consistency_vs_depth", "law_error", "aliasing"):
        assert (merged / f"{stem}.png").exists(), stem


def test_redrawing_one_experiment_keeps_the_other_sections_of_the_index(tmp_path: Path) -> None:
    """`testbed figures EXP` rewrites EXP's section of the index and keeps the others verbatim, in name order."""
    from testbed.figures import FigureRecord, write_index

    out = tmp_path / "figs"
    (out / "b-exp").mkdir(parents=True)
    (out / "README.md").write_text("# Figures (quick mode)\n\nintro\n\n## a-exp\n\nold a text\n\n## c-exp\n\nc text\n"
                                   "with two lines\n")
    png = out / "b-exp" / "fig.png"
    png.write_bytes(b"png")
    rec = FigureRecord("b-exp", png, None, png.with_suffix(".caption.txt"), "new b caption",
                       {"command": "x", "seeds": [0], "commit": "abc", "date": "today"})
    text = write_index(out, [rec], keep_others=True).read_text()
    assert text.index("## a-exp") < text.index("## b-exp") < text.index("## c-exp")
    assert "old a text" in text and "c text\nwith two lines" in text and "new b caption" in text
    alone = write_index(out, [rec]).read_text()           # a full redraw: only what was drawn
    assert "## a-exp" not in alone and "## b-exp" in alone


def test_sweep_metrics_keep_columns_a_failed_row_leaves_empty() -> None:
    """A failed cell's row has empty metrics (the law benchmark records a failed teacher as a row): the column is
    still a metric when every filled value is a number; a column with no number at all is not."""
    from testbed.sweep.figures import _sweep_metrics

    rows = [{"system": "a", "seed": 0, "law_error_id": 0.1, "note": ""},
            {"system": "b", "seed": 0, "law_error_id": "", "note": ""},
            {"system": "c", "seed": 0, "law_error_id": 0.3, "note": ""}]
    assert _sweep_metrics(rows, ["system"], None) == ["law_error_id"]
    assert _sweep_metrics([{"system": "b", "seed": 0, "law_error_id": ""}], ["system"], None) == []


def test_a_continual_sweep_whose_cells_split_the_gamma_grid_still_selects_gamma_and_draws_the_study(
        tmp_path: Path) -> None:
    """continual declares gammas a partition field (every row names its γ): cells that each run part of the γ grid
    (how the domain-incremental specs extend a grid) merge into one study — γ chosen on validation over the union,
    paired FP − host tables and both figures."""
    merged = _sweep_and_merge(
        tmp_path, 'experiment = "continual"\nquick = true\nseeds = [0, 1]\n[fixed]\nbenchmarks = ["split_digits"]\n'
                  'buffer_sizes = [20]\nepochs = 1\nn_retention = 8\nmax_train_per_class = 20\n'
                  '[[cells]]\nmethods = ["er"]\n[[cells]]\nmethods = ["er_fp"]\ngammas = [0.3]\n'
                  '[[cells]]\nmethods = ["er_fp"]\ngammas = [1.0]\n')
    assert {float(r["gamma"]) for r in read_csv(merged / "selection.csv")} == {0.3, 1.0}
    assert len(read_csv(merged / "selected.csv")) == 4               # er and er_fp at the chosen γ, 2 seeds each
    assert {p["n"] for p in read_csv(merged / "paired.csv")} == {2}
    for stem in ("continual", "continual_paired"):
        assert (merged / f"{stem}.png").exists(), stem

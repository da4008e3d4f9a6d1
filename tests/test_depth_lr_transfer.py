"""Learning-rate transfer across depth (depth-scaling sub-study ``lr_transfer``): pure helpers against hand-computed
numbers, the batched lane trainer against the library training loop, and a tiny end-to-end run."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from testbed.experiments.depth import lr_transfer as lt
from testbed.experiments.depth_scaling import DepthScalingConfig
from testbed.results import read_csv

DIVERGING_LR = 1e20  # Adam moves every weight by ~η per step: float32 outputs overflow after one step
TINY = dict(seeds=(0,), lr_transfer=lt.Config(depths=(2, 4), lr_grid=(1e-2, 1e-1, DIVERGING_LR),
                                              tasks=("flow", "digits")),
            parameterizations=("standard", "depth_mup"), block_depths=(1, 2), width=8, steps=10, batch_size=16,
            n_train=64, n_test=32, progress=False)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("lr_transfer")
    cfg = DepthScalingConfig(**TINY)
    rows = lt.run(cfg, out)
    lt.plot(out)
    return cfg, out, rows


# ----------------------------------------------------------------------------------------------- pure helpers
def test_parabola_vertex_hand_numbers():
    # y = (x − 1)²: points (0, 1), (1, 0), (3, 4) → vertex (1, 0); unequal spacing on purpose
    assert lt.parabola_vertex([0, 1, 3], [1, 0, 4]) == pytest.approx((1.0, 0.0))
    # y = 2(x + 1.5)² + 3 at x = −3, −2, −1: 7.5, 3.5, 3.5 → vertex (−1.5, 3)
    assert lt.parabola_vertex([-3, -2, -1], [7.5, 3.5, 3.5]) == pytest.approx((-1.5, 3.0))
    # no curvature: the middle point is kept
    assert lt.parabola_vertex([0, 1, 2], [3, 2, 1]) == (1.0, 2.0)


def test_refine_optimum_recovers_parabola_in_log_lr():
    """ln loss = 0.5·(log₂η + 4.3)² − 2 on a grid of octaves: the refined optimum is η* = 2^−4.3 exactly."""
    lrs = [2.0 ** k for k in range(-8, -1)]
    losses = [math.exp(0.5 * (math.log2(lr) + 4.3) ** 2 - 2.0) for lr in lrs]
    opt = lt.refine_optimum(lrs[::-1], losses[::-1])  # order of the table does not matter
    assert opt["grid_lr"] == 2.0 ** -4
    assert opt["optimal_lr"] == pytest.approx(2.0 ** -4.3, rel=1e-12)
    assert opt["optimal_loss"] == pytest.approx(math.exp(-2.0), rel=1e-12)
    assert opt["at_edge"] is False


def test_refine_optimum_edges_and_divergence():
    # minimum on the grid edge: kept on the grid, flagged
    edge = lt.refine_optimum([1e-3, 1e-2, 1e-1], [0.3, 0.2, 0.1])
    assert edge["optimal_lr"] == 1e-1 and edge["at_edge"] is True
    # a diverged (inf / nan) lr is never the optimum, and its neighbour cannot be refined through it
    div = lt.refine_optimum([1e-3, 1e-2, 1e-1, 1.0], [0.5, 0.3, 0.2, float("inf")])
    assert div["grid_lr"] == 1e-1 and div["optimal_lr"] == 1e-1 and div["at_edge"] is True
    nan = lt.refine_optimum([1e-3, 1e-2, 1e-1], [float("nan"), 0.4, 0.5])
    assert nan["grid_lr"] == 1e-2 and nan["at_edge"] is True
    # everything diverged: no optimum
    none = lt.refine_optimum([1e-3, 1e-2], [float("inf"), float("inf")])
    assert math.isnan(none["optimal_lr"]) and none["optimal_loss"] == math.inf


def test_spread_and_drift_hand_numbers():
    depths = [4, 16, 64]  # log₂L = 2, 4, 6
    # η* = 2^−3, 2^−5, 2^−7: spread 4 octaves, η* ∝ L^−1
    assert lt.octave_spread([2 ** -3, 2 ** -5, 2 ** -7]) == pytest.approx(4.0)
    assert lt.drift_exponent(depths, [2 ** -3, 2 ** -5, 2 ** -7]) == pytest.approx(-1.0)
    # v = −3, −3, −5: slope = Σ(u−ū)(v−v̄)/Σ(u−ū)² = (−2·⅔ + 0 + 2·(−4/3)) / 8 = −0.5
    assert lt.octave_spread([2 ** -3, 2 ** -3, 2 ** -5]) == pytest.approx(2.0)
    assert lt.drift_exponent(depths, [2 ** -3, 2 ** -3, 2 ** -5]) == pytest.approx(-0.5)
    # perfect transfer; NaN optima (all runs diverged) are skipped
    assert lt.drift_exponent(depths, [0.01, 0.01, float("nan")]) == pytest.approx(0.0)
    assert lt.octave_spread([0.01, float("nan"), 0.04]) == pytest.approx(2.0)
    assert math.isnan(lt.drift_exponent([8], [0.1]))


def test_aggregate_loss_is_geometric_mean_and_inf_on_divergence():
    assert lt.aggregate_loss([0.01, 1.0]) == pytest.approx(0.1)
    assert lt.aggregate_loss([0.01, float("inf")]) == math.inf


def test_transfer_on_hand_table():
    """η tuned on validation at L=4 (grid optimum 1e-2) used at L=16, where validation picks 1e-3; test losses are
    read at those two choices only — the test table's own optimum (1e-1 at L=4) is never used."""
    base = {"task": "flow", "variant": "standard", "parameterization": "standard", "block_depth": 1,
            "correction": 0.0, "diverged": False}
    val = {4: {1e-3: 0.4, 1e-2: 0.1, 1e-1: 0.3}, 16: {1e-3: 0.1, 1e-2: 0.25, 1e-1: math.inf}}
    test = {4: {1e-3: 0.5, 1e-2: 0.2, 1e-1: 0.05}, 16: {1e-3: 0.2, 1e-2: 0.3, 1e-1: math.inf}}
    rows = [{**base, "n_layers": L, "lr": lr, "seed": 0, "val_loss": v, "test_loss": test[L][lr],
             "diverged": not math.isfinite(v)} for L, t in val.items() for lr, v in t.items()]
    opt = {r["n_layers"]: r for r in lt.optima(rows)}
    assert opt[4]["grid_lr"] == 1e-2 and opt[4]["at_edge"] is False
    assert opt[16]["grid_lr"] == 1e-3 and opt[16]["at_edge"] is True and opt[16]["n_diverged"] == 1
    (t,) = lt.transfer(rows)
    assert t["lr_tuned_at_min_depth"] == 1e-2 and (t["min_depth"], t["max_depth"]) == (4, 16)
    assert t["lr_tuned_at_max_depth"] == 1e-3
    assert t["loss_transferred"] == pytest.approx(0.3) and t["loss_best_at_max_depth"] == pytest.approx(0.2)
    assert t["transfer_regret"] == pytest.approx(1.5)
    # L=4 vertex in log₂η: x = log₂(1e-3..1e-1), y = ln(0.4, 0.1, 0.3); L=16 stays at 1e-3
    x, _ = lt.parabola_vertex([math.log2(1e-3), math.log2(1e-2), math.log2(1e-1)],
                              [math.log(0.4), math.log(0.1), math.log(0.3)])
    assert t["spread_octaves"] == pytest.approx(x - math.log2(1e-3))
    assert t["drift_exponent"] == pytest.approx((math.log2(1e-3) - x) / 2.0)  # two depths: slope over log₂16 − log₂4


# ----------------------------------------------------------------------------------------------- lanes
@pytest.mark.parametrize("task, optimizer", [("flow", "adam"), ("digits", "adam"), ("flow", "sgd")])
def test_lanes_reproduce_the_library_training_loop(task, optimizer):
    """Each (seed, η) lane = testbed.train.train with param_groups(...) on the same network (float64); SP with
    block depth 1 and Depth-μP block depth 2 + correction cover every learning-rate group (Adam: η, η/√L,
    η·L^γ/√L; SGD: η, η·L^γ), for Adam and for plain SGD."""
    cfg = DepthScalingConfig(**{**TINY, "steps": 6, "optimizers": (optimizer,)})
    data = lt.task_data(task, cfg)
    vs = lt.variants(cfg)
    assert {v["optimizer"] for v in vs} == {optimizer}
    for v in (vs[0], vs[-1]):
        rows = lt.train_lanes(task, data, v, 3, (1e-2, 1e-1), (0, 1), cfg, dtype=torch.float64)
        for r in rows:
            _, ref = lt.train_reference(task, data, v, 3, r["lr"], r["seed"], cfg)
            assert r["test_loss"] == pytest.approx(ref, rel=1e-9), (v, r["lr"], r["seed"])


def _synthetic_rows(drift: float, seeds=range(6), spread: float = 0.3, depths=(4, 16, 64, 256)):
    """Validation losses ln ℓ = (log₂η − m_s(L))² on a √2 grid, seed optimum m_s(L) = −5 + drift·log₂L + ε_s,L
    (ε ~ N(0, spread²)): the true drift exponent is ``drift``."""
    rng = np.random.default_rng(3)
    grid = [2.0 ** (k / 2) for k in range(-22, 2)]
    rows = []
    for sd in seeds:
        for L in depths:
            m = -5 + drift * math.log2(L) + spread * rng.standard_normal()
            for lr in grid:
                loss = math.exp((math.log2(lr) - m) ** 2)
                rows.append({"task": "flow", "variant": "depth_mup", "parameterization": "depth_mup", "block_depth": 1,
                             "correction": 0.0, "n_layers": L, "lr": lr, "seed": sd, "diverged": False,
                             "val_loss": loss, "test_loss": loss})
    return rows


@pytest.mark.parametrize("drift, verdict", [(0.0, "reproduced"), (0.5, "not reproduced")])
def test_bootstrap_interval_of_the_drift_and_the_declared_verdict(drift, verdict):
    """Six seeds whose own optima scatter by 0.3 octave around a drift of ``drift``: the seed bootstrap gives α an
    interval around its estimate, which is near the truth, narrower than ±0.15 for no drift, and the declared rule
    for Depth-μP b=1 ("η* transfers") says reproduced for α = 0 and not reproduced for α = ½; per-L intervals of
    log₂η* hold the aggregate optimum."""
    rows = _synthetic_rows(drift)
    boot = lt.bootstrap(rows, n_boot=400)
    b = boot[("flow", "depth_mup", 1)]
    assert b["log2_eta"].shape == (400, 4) and b["n_seeds"] == 6
    lo, hi = np.quantile(b["alpha"], [0.025, 0.975])
    (t,) = lt.transfer(rows)
    assert lo < t["drift_exponent"] < hi and hi - lo < 0.25       # the interval brackets the sample's estimate …
    assert t["drift_exponent"] == pytest.approx(drift, abs=0.1)    # … which is near the truth (sd ≈ 0.03 here)
    opt = lt.attach_optimum_intervals(lt.optima(rows), boot)
    for o in opt:
        assert o["log2_optimal_lr_lo"] <= o["log2_optimal_lr"] <= o["log2_optimal_lr_hi"]
    (row,) = [r for r in lt.summary(rows) if r["key"].endswith("drift exponent α (η* ∝ L^α)")]
    assert row["verdict"] == verdict and row["n"] == 6


def test_run_with_summary_bootstraps_once_with_the_outputs_of_run_then_summary(tmp_path, monkeypatch):
    """The depth-scaling driver's path: one seed bootstrap shared by the tables and the summary, giving the same
    files as :func:`run` and the same summary rows as :func:`summary` of the run's rows (training stubbed out)."""
    rows = _synthetic_rows(0.5, seeds=range(3))

    def fake_train_all(cfg, out):
        out.mkdir(parents=True, exist_ok=True)
        return rows

    calls = []
    real = lt.bootstrap
    monkeypatch.setattr(lt, "_train_all", fake_train_all)
    monkeypatch.setattr(lt, "bootstrap", lambda r, *a, **kw: calls.append(1) or real(r, *a, **kw))
    assert lt.run(None, tmp_path / "a") is rows
    expected = lt.summary(rows)
    calls.clear()
    got, summ = lt.run_with_summary(None, tmp_path / "b")
    assert got is rows and len(calls) == 1
    assert repr(summ) == repr(expected)  # bit-identical (repr: NaN-safe)
    for name in ("optima.csv", "transfer.csv", "results.csv"):
        assert (tmp_path / "b" / name).read_bytes() == (tmp_path / "a" / name).read_bytes(), name


def test_sgd_lane_step_is_plain_sgd():
    """One SGD lane step moves every parameter by −rate·grad, rate = η·(role factor)·scale (Depth-μP + SGD: the
    branches keep η, so every factor is 1 without a correction)."""
    cfg = DepthScalingConfig(**{**TINY, "optimizers": ("sgd",), "parameterizations": ("depth_mup",),
                                "block_depths": (1,)})
    (v,) = lt.variants(cfg)
    data = lt.task_data("flow", cfg)
    from testbed.experiments.depth.lr_transfer_lanes import build_model

    model = build_model("flow", data, v, 3, 8, 0).double()
    lanes = lt.Lanes([model, model], [0.1, 0.3], "depth_mup", None, "sgd")
    assert set(lanes.factors.values()) == {1.0}
    before = {k: p.detach().clone() for k, p in lanes.params.items()}
    lanes.forward(data.x_train[:4].double()).pow(2).sum().backward()
    grads = {k: p.grad.clone() for k, p in lanes.params.items()}
    lanes.step(0.5, torch.tensor([True, False]))
    for k, p in lanes.params.items():
        assert torch.allclose(p[0], before[k][0] - 0.1 * 0.5 * grads[k][0], rtol=0, atol=1e-15)
        assert torch.equal(p[1], before[k][1])  # a dead lane stays put


def test_variants_include_the_corrected_block_depth_2():
    cfg = DepthScalingConfig(**TINY)
    names = [(v["variant"], v["block_depth"]) for v in lt.variants(cfg)]
    assert names == [("standard", 1), ("standard", 2), ("depth_mup", 1), ("depth_mup", 2), ("depth_mup+corr", 2)]
    assert lt.variants(DepthScalingConfig(**{**TINY, "block_depths": (1,)}))[-1]["variant"] == "depth_mup"


# ----------------------------------------------------------------------------------------------- end to end
def test_tiny_run_outputs(tiny_run):
    cfg, out, rows = tiny_run
    for name in ("results.csv", "optima.csv", "transfer.csv", "lr_curves.png", "lr_curves.pdf", "optimal_lr.png",
                 "optimal_lr.pdf"):
        assert (out / name).exists(), name
    disk = read_csv(out / "results.csv")
    assert list(disk[0]) == lt.RESULT_COLUMNS
    assert list(read_csv(out / "optima.csv")[0]) == lt.OPTIMA_COLUMNS
    assert list(read_csv(out / "transfer.csv")[0]) == lt.TRANSFER_COLUMNS
    n_variants = 5
    assert len(rows) == len(disk) == 2 * n_variants * 2 * 3  # tasks × variants × depths × lrs (one seed)
    assert len(read_csv(out / "transfer.csv")) == 2 * n_variants
    digits = [r for r in rows if r["task"] == "digits" and not r["diverged"]]
    assert digits and all(0.0 <= r["test_accuracy"] <= 1.0 for r in digits)


def test_diverging_lr_is_inf_and_never_optimal(tiny_run):
    _, out, rows = tiny_run
    bad = [r for r in rows if r["lr"] == DIVERGING_LR]
    assert bad and all(r["diverged"] and r["test_loss"] == math.inf and r["diverged_step"] >= 1 for r in bad)
    assert all(not r["diverged"] and math.isfinite(r["test_loss"]) for r in rows if r["lr"] == 1e-2)
    # the module's rule (lr_transfer_lanes.train_lanes): a run is diverged exactly when a training minibatch loss
    # or the final evaluation turns non-finite, and then both losses are recorded as inf. On this grid that is
    # exactly the η = 1e20 runs: Adam's first update moves a weight by η·m̂/(√v̂ + ε) = η·g/(|g| + ε) ≈ ±η, so the
    # step-1 loss (at the initial weights) is finite and the step-2 loss overflows float32: diverged_step is 2.
    for r in rows:
        key = (r["task"], r["variant"], r["block_depth"], r["n_layers"], r["lr"])
        assert type(r["diverged"]) is bool, key
        assert r["diverged"] is (r["lr"] == DIVERGING_LR), key
        assert r["diverged"] is (r["test_loss"] == math.inf) is (r["train_loss"] == math.inf), key
        assert r["diverged_step"] == (2 if r["diverged"] else 0), key
        if not r["diverged"]:
            assert 0.0 < r["test_loss"] < math.inf and 0.0 < r["train_loss"] < math.inf, key
    for o in read_csv(out / "optima.csv"):
        assert o["grid_lr"] < DIVERGING_LR and o["optimal_lr"] < DIVERGING_LR
        assert o["n_diverged"] == 1
    assert all(r["test_loss"] == math.inf for r in read_csv(out / "results.csv") if r["lr"] == DIVERGING_LR)


def test_deterministic_given_seed(tiny_run):
    cfg, _, rows = tiny_run
    data = lt.task_data("flow", cfg)
    v = lt.variants(cfg)[3]
    again = lt.train_lanes("flow", data, v, 4, cfg.lr_transfer.lr_grid, cfg.seeds, cfg)
    first = [r for r in rows if r["task"] == "flow" and r["variant"] == v["variant"] and r["block_depth"] == 2
             and r["n_layers"] == 4]
    key = ("lr", "seed", "diverged", "train_loss", "test_loss")
    assert [[r[k] for k in key] for r in again] == [[r[k] for k in key] for r in first]


def test_plot_redraws_from_csv(tiny_run):
    _, out, _ = tiny_run
    for p in out.glob("*.p*"):
        p.unlink()
    paths = lt.plot(out)
    assert {p.name for p in paths} == {"lr_curves.png", "lr_curves.pdf", "optimal_lr.png", "optimal_lr.pdf"}
    assert all(p.exists() and p.stat().st_size > 0 for p in paths)


def test_summary_rows(tiny_run):
    _, out, rows = tiny_run
    summ = lt.summary(rows)
    assert summ and all(set(r) <= {"key", "value", "lo", "hi", "n", "verdict", "claim"} for r in summ)
    keys = [r["key"] for r in summ]
    assert "flow Depth-μP, b=1: spread of log2 η* across L [octaves]" in keys
    assert "digits: Depth-μP b=2 uncorrected − corrected: |drift exponent α|" in keys
    assert "flow: SP − Depth-μP (b=1): |drift exponent α|" in keys
    # one seed: no interval (every bootstrap replicate would be that seed), so no verdict either
    for r in summ:
        if "lo" in r:
            assert math.isnan(r["lo"]) and math.isnan(r["hi"]), r["key"]
            assert r.get("verdict", "") in ("", "no estimate"), r["key"]
    assert sum(k.endswith("drift exponent α (η* ∝ L^α)") for k in keys) == 10  # one per task × variant
    # the same summary from the CSV on disk
    again = lt.summary(read_csv(out / "results.csv"))
    assert [r["key"] for r in again] == keys
    assert [r["value"] for r in again] == pytest.approx([r["value"] for r in summ], nan_ok=True)


@pytest.mark.parametrize("task", ["flow", "digits"])
def test_validation_split_is_carved_from_the_training_data(task):
    """20% of the training data (stratified for digits) is held out; the rest trains; test data is untouched."""
    cfg = DepthScalingConfig(**TINY)
    d = lt.task_data(task, cfg)
    n_val, n_tr = d.x_val.shape[0], d.x_train.shape[0]
    assert n_val == pytest.approx(0.2 * (n_val + n_tr), abs=10)
    both = torch.cat([d.x_train, d.x_val])
    assert torch.unique(both, dim=0).shape[0] == n_val + n_tr                # disjoint
    if task == "digits":
        assert set(d.y_val.tolist()) == set(range(10))
    rows = lt.train_lanes(task, d, lt.variants(cfg)[0], 3, (1e-2,), (0,), cfg, dtype=torch.float64)
    assert math.isfinite(rows[0]["val_loss"]) and rows[0]["val_loss"] != rows[0]["test_loss"]

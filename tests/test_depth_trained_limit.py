"""Depth-scaling sub-study ``trained_limit``: trained networks across depth, their order of convergence in L."""

from __future__ import annotations

import math

import pytest
import torch

from testbed.experiments.depth import trained_limit as tl
from testbed.experiments.depth.convergence import relative_distance
from testbed.experiments.depth_scaling import DepthScalingConfig
from testbed.results import read_csv
from testbed.stats import loglog_fit_clustered

TINY = dict(studies=("trained_limit",), seeds=(0, 1), trained_limit=tl.Config(depths=(2, 4, 8)), width=8, steps=10,
            batch_size=16, n_train=32, n_test=16, lr=1e-2, progress=False)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("limit")
    rows = tl.run(DepthScalingConfig(**TINY), out)
    tl.plot(out)
    return out, rows


def test_initialisations_are_one_brownian_weight_path():
    """Depth L's branch weights are the depth-2L ones summed in pairs over √2 (so each depth is an exact
    N(0, 1/n) draw in law); embedding and read-out are identical at every depth."""
    cfg = DepthScalingConfig(**TINY)
    nets = tl.coupled_networks(cfg, "depth_mup", seed=3)

    def weights(net):
        return torch.stack([b.get_submodule(b.linear_names()[-1]).weight.detach().double() for b in net.flow.blocks])

    w2, w4, w8 = weights(nets[2]), weights(nets[4]), weights(nets[8])
    assert torch.allclose(w4, (w8[0::2] + w8[1::2]) / math.sqrt(2), atol=1e-6)
    assert torch.allclose(w2, (w4[0::2] + w4[1::2]) / math.sqrt(2), atol=1e-6)
    assert torch.equal(nets[2].embed.weight, nets[8].embed.weight) and torch.equal(nets[2].head.bias,
                                                                                    nets[8].head.bias)
    assert nets[8].flow.multiplier == pytest.approx(1 / math.sqrt(8))       # Depth-μP branch multiplier


def test_successive_differences_recover_a_known_order_and_richardson_the_limit():
    """f_L = f_∞ + c/L exactly: every successive difference ∝ 1/L (fitted order 1 to rounding) and the Richardson
    limit at order 1 is f_∞ itself, so fn_rich is the exact distance to it."""
    gen = torch.Generator().manual_seed(0)
    f_inf, c = torch.randn(16, 2, generator=gen, dtype=torch.float64), torch.randn(16, 2, generator=gen,
                                                                                    dtype=torch.float64)
    fs = {L: f_inf + c / L for L in (4, 8, 16, 32)}
    rows = tl.measure({L: (f, f) for L, f in fs.items()})
    step = [r for r in rows if r["quantity"] == "fn_step"]
    fitted = loglog_fit_clustered([r["L"] for r in step], [r["value"] for r in step], [0] * len(step))
    assert fitted.slope == pytest.approx(-1.0, abs=0.02)     # ‖c/L − c/2L‖/‖f_∞ + c/2L‖: 1/L up to the denominator
    rich = {r["L"]: r["value"] for r in tl.richardson(fs, 1.0)}
    for L, f in fs.items():
        assert rich[L] == pytest.approx(relative_distance(f, f_inf), rel=1e-9)
    assert tl.richardson(fs, 0.0) == [] and tl.richardson(fs, float("nan")) == []


@pytest.mark.parametrize("param, lo, hi, expected", [
    ("depth_mup", 0.7, 1.3, "reproduced"),
    ("depth_mup", 0.3, 0.8, "converges at order 1/2 (Euler-Maruyama), not 1/L"),
    ("depth_mup", 0.3, 1.2, "converges; CI holds both order 1/2 and 1 (undecided)"),
    ("depth_mup", 1.2, 2.5, "converges, faster than 1/L"),
    ("depth_mup", 0.55, 0.9, "converges, slower than 1/L"),
    ("depth_mup", -0.1, 1.5, "no convergence shown"),
    ("standard", -0.5, 0.2, "no limit (as expected)"),
    ("standard", 0.1, 0.4, "converges (unexpected)"),
    ("standard", float("nan"), 0.4, "no fit"),
])
def test_verdict_rule(param, lo, hi, expected):
    assert tl.verdict(param, lo, hi) == expected


def test_tiny_run_tables_figure_and_determinism(tiny_run, tmp_path):
    out, rows = tiny_run
    assert (out / "results.csv").exists() and (out / "trained_limit.png").exists()
    quantities = {(r["parameterization"], r["stage"], r["quantity"]) for r in rows}
    for p in ("depth_mup", "standard"):
        for q in ("fn_step", "feat_step", "fn_dist"):
            assert (p, "init", q) in quantities and (p, "trained", q) in quantities
        assert (p, "trained", "test_loss") in quantities
    steps = [r for r in rows if r["quantity"] == "fn_step"]
    assert {r["L"] for r in steps} == {2, 4} and all(r["value"] > 0 for r in steps)
    fits = read_csv(out / "fits.csv")
    row = next(f for f in fits if f["parameterization"] == "depth_mup" and f["stage"] == "trained"
               and f["quantity"] == "fn_step")
    assert row["n_points"] == 4 and row["verdict"] == tl.verdict("depth_mup", row["order_lo"], row["order_hi"])
    assert row["order_lo"] <= row["order"] <= row["order_hi"]
    again = tl.run(DepthScalingConfig(**{**TINY, "seeds": (1,)}), tmp_path)     # same seed → same numbers on CPU
    pick = {(r["parameterization"], r["stage"], r["quantity"], r["L"]): r["value"] for r in again
            if r["quantity"] != "fn_rich"}
    for r in rows:
        if r["seed"] == 1 and r["quantity"] != "fn_rich":
            assert pick[(r["parameterization"], r["stage"], r["quantity"], r["L"])] == r["value"]


def test_config_rejects_depths_that_do_not_double():
    with pytest.raises(ValueError, match="must double"):
        tl.Config(depths=(4, 8, 32))
    with pytest.raises(ValueError, match="at least three"):
        tl.Config(depths=(4, 8))


def test_smooth_initialisation_is_euler_for_one_ode_and_converges_at_order_one():
    """init = "smooth", ODE scaling: depth L's weights are W(l/L) of one piecewise-linear W(t) (checked against
    the anchors), and the untrained networks' successive differences fall as 1/L (fitted order within 0.15 of 1)."""
    cfg = DepthScalingConfig(**{**TINY, "trained_limit": tl.Config(depths=(8, 16, 32, 64, 128), init="smooth",
                                                                   parameterizations=("ode",))})
    nets = tl.coupled_networks(cfg, "ode", seed=0)
    anchors = torch.stack([torch.ones(2, 2), 3 * torch.ones(2, 2)]).double()
    assert torch.allclose(tl.smooth_path(anchors, 4)[:, 0, 0], torch.tensor([1.0, 1.5, 2.0, 2.5], dtype=torch.float64))
    assert nets[64].flow.multiplier == pytest.approx(1 / 64)
    w8 = nets[8].flow.blocks[4].get_submodule(nets[8].flow.blocks[4].linear_names()[-1]).weight
    w16 = nets[16].flow.blocks[8].get_submodule(nets[16].flow.blocks[8].linear_names()[-1]).weight
    assert torch.allclose(w8, w16)                                       # both are W(1/2)
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(1))
    rows = tl.measure({L: tl.outputs(net, x.to(net.embed.weight.dtype), 8) for L, net in nets.items()})
    step = [r for r in rows if r["quantity"] == "fn_step"]
    fitted = loglog_fit_clustered([r["L"] for r in step], [r["value"] for r in step], [0] * len(step))
    assert -fitted.slope == pytest.approx(1.0, abs=0.15)

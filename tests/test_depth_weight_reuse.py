"""Weight-reuse sub-study (depth scaling): the decoupled autograd Function, the network, the closed-form coupling
estimator, the slope helper and the run / plot / summary contract."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from testbed.config import ConfigError
from testbed.experiments.depth import weight_reuse as wr
from testbed.experiments.depth_scaling import quick_config
from testbed.results import read_csv

TOL = 1e-12


def _tiny_cfg(**kw):
    base = dict(seeds=(0,), weight_reuse=wr.Config(widths=(8, 16), depths=(2, 4), steps=3), width=8, n_train=32,
                n_test=16, batch_size=8, progress=False, studies=("weight_reuse",))
    base.update(kw)
    return quick_config(**base)


# ------------------------------------------------------------------------------------------ autograd Function
def test_decoupled_linear_with_own_weight_is_autograd() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(5, 3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    W = torch.randn(6, 4, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(6, generator=g, dtype=torch.float64, requires_grad=True)
    gy = torch.randn(5, 3, 6, generator=g, dtype=torch.float64)
    y = wr.DecoupledLinear.apply(x, W, b, W)
    ref = x @ W.T + b
    assert torch.allclose(y, ref, rtol=0, atol=TOL)
    grads = torch.autograd.grad(y, (x, W, b), gy)
    grads_ref = torch.autograd.grad(ref, (x, W, b), gy)
    for a, r in zip(grads, grads_ref, strict=True):
        assert torch.allclose(a, r, rtol=0, atol=TOL)
    assert torch.autograd.gradcheck(lambda x_, W_, b_: wr.DecoupledLinear.apply(x_, W_, b_, W_),
                                    (x[:2, :1].detach().requires_grad_(), W, b))


def test_decoupled_linear_input_gradient_uses_the_copy() -> None:
    g = torch.Generator().manual_seed(2)
    x = torch.randn(7, 4, generator=g, dtype=torch.float64, requires_grad=True)
    W = torch.randn(3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, generator=g, dtype=torch.float64, requires_grad=True)
    W_back = torch.randn(3, 4, generator=g, dtype=torch.float64)
    gy = torch.randn(7, 3, generator=g, dtype=torch.float64)
    y = wr.decoupled_linear(x, W, b, W_back)
    assert torch.allclose(y, x @ W.T + b, rtol=0, atol=TOL)
    gx, gW, gb = torch.autograd.grad(y, (x, W, b), gy)
    assert torch.allclose(gx, gy @ W_back, rtol=0, atol=TOL)          # grad_x = grad_y · W_back
    assert torch.allclose(gW, gy.T @ x, rtol=0, atol=TOL)             # weight gradient unchanged
    assert torch.allclose(gb, gy.sum(0), rtol=0, atol=TOL)
    assert not torch.allclose(gx, gy @ W.detach())
    with pytest.raises(ValueError):
        wr.decoupled_linear(x, W, b, W_back.T)


# ------------------------------------------------------------------------------------------------- the network
def _plain_forward(net: wr.ReuseNet, x: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
    h = x @ params["W_in"].T
    for l in range(net.n_layers):
        h = h + net.multiplier * (torch.tanh(h) @ params[f"blocks.{l}.W"].T + params[f"blocks.{l}.b"])
    return h @ params["W_out"].T + params["b_out"]


def test_reuse_net_true_backward_equals_autograd() -> None:
    net = wr.ReuseNet(2, 2, width=6, n_layers=3, seed=4)
    with torch.no_grad():                               # non-zero biases so every gradient is exercised
        for blk in net.blocks:
            blk.b.normal_()
    x = torch.randn(5, 2, dtype=torch.float64, requires_grad=True)
    y = torch.randn(5, 2, dtype=torch.float64)
    params = {k: p.detach().clone().requires_grad_() for k, p in net.named_parameters()}
    loss = (net(x) - y).pow(2).sum()
    grads = torch.autograd.grad(loss, [x, *net.parameters()])
    x2 = x.detach().clone().requires_grad_()
    loss_ref = (_plain_forward(net, x2, params) - y).pow(2).sum()
    grads_ref = torch.autograd.grad(loss_ref, [x2, *params.values()])
    assert abs(float((loss - loss_ref).detach())) < TOL
    for a, r in zip(grads, grads_ref, strict=True):
        assert torch.allclose(a, r, rtol=0, atol=TOL)


def test_decoupled_net_shares_forward_and_differs_only_in_backward() -> None:
    true = wr.ReuseNet(2, 2, width=8, n_layers=4, seed=3)
    dec = wr.ReuseNet(2, 2, width=8, n_layers=4, seed=3, decoupled=True)
    x = torch.randn(6, 2, dtype=torch.float64, requires_grad=True)
    assert torch.equal(true(x), dec(x))
    gt = torch.autograd.grad(true(x).sum(), [x, *true.parameters()])
    gd = torch.autograd.grad(dec(x).sum(), [x, *dec.parameters()])
    names = [n for n, _ in true.named_parameters()]
    by = dict(zip(["x", *names], zip(gt, gd, strict=True), strict=True))
    # read-out and last block see the same backward signal g_L; everything below it differs
    for k in ("W_out", "b_out", "blocks.3.W", "blocks.3.b"):
        assert torch.allclose(*by[k], rtol=0, atol=TOL)
    for k in ("x", "W_in", "blocks.0.W"):
        assert not torch.allclose(*by[k])
    blk = dec.blocks[0]
    assert torch.allclose(blk.back_matrix(), blk.copy, rtol=0, atol=TOL)   # at init W_back is the copy W̃
    with torch.no_grad():
        blk.W.add_(1.0)
    assert torch.allclose(blk.back_matrix(), blk.copy + 1.0, rtol=0, atol=TOL)   # tracking copy follows updates
    frozen = wr.ReuseNet(2, 2, width=8, n_layers=4, seed=3, decoupled=True, frozen_copy=True)
    with torch.no_grad():
        frozen.blocks[0].W.add_(1.0)
    assert torch.equal(frozen.blocks[0].back_matrix(), frozen.blocks[0].copy)


def test_closed_form_coupling_matches_the_autograd_network() -> None:
    """The batched closed-form pass of coupling_from_weights equals ReuseNet + autograd (plain and mirrored)."""
    n, L, d = 6, 4, 2
    true = wr.ReuseNet(d, d, n, L, seed=5)
    dec = wr.ReuseNet(d, d, n, L, seed=5, decoupled=True)
    x = torch.randn(3, d, dtype=torch.float64)
    y = torch.randn(3, d, dtype=torch.float64)
    weights = {"W_in": true.W_in.detach()[None], "W_out": true.W_out.detach()[None],
               "W": torch.stack([b.W.detach() for b in true.blocks])[:, None],
               "W_copy": torch.stack([b.copy for b in dec.blocks])[:, None]}
    layers = [1, 3]
    c = wr.coupling_from_weights(x, y, weights, layers)

    def mirror(net: wr.ReuseNet, layer: int) -> None:
        """Negate layer ``layer``'s forward matrix and its backward matrix (an involution)."""
        blk = net.blocks[layer - 1]
        with torch.no_grad():
            blk.W.neg_()
            if blk.decoupled:
                blk.copy.neg_()
                blk.offset.neg_()

    def autograd_dots(net: wr.ReuseNet) -> tuple[list[float], torch.Tensor]:
        """``Σ_i⟨m_l, s_{l−1}⟩`` for every layer (``m_l = (∂loss/∂s_{l−1})/ε``) and ``∂loss/∂h_0`` by autograd."""
        h0 = (x @ net.W_in.T).detach().requires_grad_()
        h, ss = h0, []
        for blk in net.blocks:
            s = torch.tanh(h)
            s.retain_grad()
            ss.append(s)
            h = h + net.multiplier * wr.decoupled_linear(s, blk.W, blk.b, blk.back_matrix())
        loss = 0.5 * (h @ net.W_out.T + net.b_out - y).pow(2).sum() / x.shape[0]
        loss.backward()
        return [float((s.grad / net.multiplier * s.detach()).sum()) for s in ss], h0.grad

    for name, net in (("true", true), ("control", dec)):
        plain, g0 = autograd_dots(net)
        for j, l in enumerate(layers):
            assert abs(float(c[f"{name}_raw"][j, 0]) - plain[l - 1]) < 1e-12
            mirror(net, l)
            mirrored, _ = autograd_dots(net)
            mirror(net, l)
            assert abs(float(c[f"{name}_dot"][j, 0]) - 0.5 * (plain[l - 1] + mirrored[l - 1])) < 1e-12
        if name == "true":
            g0_true = g0
        else:
            cos = (g0_true * g0).sum() / (g0_true.norm() * g0.norm())
            assert abs(float(c["overlap"][0]) - float(cos)) < 1e-12


def test_coupling_stats_and_draws_are_deterministic() -> None:
    x, y = torch.randn(4, 2, dtype=torch.float64), torch.randn(4, 2, dtype=torch.float64)
    a = wr.coupling_stats(wr.coupling_draws(8, 4, x, y, seed=0, n_draws=4))
    b = wr.coupling_stats(wr.coupling_draws(8, 4, x, y, seed=0, n_draws=4))
    assert a == b
    assert set(a) >= {"coupling_true", "coupling_control", "coupling_excess", "coupling_excess_se",
                      "coupling_fluctuation", "backward_overlap"}
    assert all(math.isfinite(v) for v in a.values())
    assert wr.n_draws_for(8) == wr.MIN_DRAWS and wr.n_draws_for(4 * wr.MIN_DRAWS) == 4 * wr.MIN_DRAWS


# ---------------------------------------------------------------------------------------------------- helpers
def test_loglog_slope_recovers_the_exponent() -> None:
    xs = [2.0, 4.0, 8.0, 16.0, 32.0]
    for p in (-2.0, -1.0, -0.5, 0.0, 1.3):
        assert abs(wr.loglog_slope(xs, [3.7 * v ** p for v in xs]) - p) < 1e-12
    assert abs(wr.loglog_slope([*xs, 64.0], [*(v ** -1 for v in xs), -1.0]) + 1.0) < 1e-12   # y ≤ 0 ignored
    assert math.isnan(wr.loglog_slope([1.0], [1.0]))
    assert math.isnan(wr.loglog_slope([2.0, 2.0], [1.0, 3.0]))


# ---------------------------------------------------------------------------------------------- run contract
def test_run_plot_summary_and_determinism(tmp_path, monkeypatch) -> None:
    """Through the depth-scaling dispatcher: outputs and CSVs exist, plot() redraws, summary keys, and a second
    run (figure drawing skipped) writes the identical results.csv."""
    from testbed.experiments import depth_scaling

    cfg = _tiny_cfg()
    summ = depth_scaling.run(cfg, tmp_path / "a")
    depth_scaling.plot(tmp_path / "a")
    out = tmp_path / "a" / "weight_reuse"
    csv = out / "results.csv"
    assert csv.exists() and (tmp_path / "a" / "summary.csv").exists()
    assert (out / "weight_reuse.png").exists() and (out / "weight_reuse.pdf").exists()
    assert summ and all(r["study"] == "weight_reuse" for r in summ)
    back = read_csv(csv)
    assert list(back[0]) == wr.COLUMNS
    qs = {r["quantity"] for r in back}
    assert {"coupling_excess", "coupling_fluctuation", "backward_overlap", "func_dist_tracking",
            "loss_dist_tracking", "func_dist_frozen", "func_dist_reinit", "test_loss_true"} <= qs
    # width sweep at L_w = 2 (lower median of (2, 4)), depth sweeps at n = cfg.width = 8
    assert {(r["width"], r["depth"]) for r in back if r["quantity"] == "coupling_excess"} == {(8, 2), (16, 2), (8, 4)}
    assert {r["depth"] for r in back if r["quantity"] == "func_dist_tracking"} == {2, 4}
    (out / "weight_reuse.png").unlink()
    paths = depth_scaling.plot(tmp_path / "a")
    assert (out / "weight_reuse.png") in paths and (out / "weight_reuse.png").exists()
    rows = wr.summary(back)
    assert rows and all(set(r) == {"key", "value", "lo", "hi", "n", "verdict", "claim"} for r in rows)
    keys = {r["key"] for r in rows}
    assert {"slope_coupling_excess_vs_width_depth2", "slope_coupling_excess_vs_depth_width8",
            "slope_func_dist_tracking_vs_depth_width8", "slope_loss_dist_tracking_vs_depth_width8",
            "decoupled_over_other_init_width8_L4"} <= keys
    assert (out / "fits.csv").exists()
    monkeypatch.setattr(wr, "_draw", lambda rows, out: [])
    wr.run(cfg, tmp_path / "b")
    assert (tmp_path / "b" / "results.csv").read_text() == csv.read_text()


def _synthetic_dynamics(exponent: float, widths=(16, 64), seeds=range(6), noise: float = 0.05) -> list[dict]:
    """func_dist_tracking = c_seed · L^exponent · (1 + noise·ε) per (width, depth, seed); reinit at a fixed 0.05."""
    rng = np.random.default_rng(0)
    rows = []
    for n in widths:
        for sd in seeds:
            c = 0.1 * math.exp(0.3 * rng.standard_normal())
            for L in (4, 8, 16, 32, 64):
                v = c * L ** exponent * (1 + noise * rng.standard_normal())
                for q, val in (("func_dist_tracking", v), ("func_dist_reinit", 0.05), ("test_loss_true", 1.0)):
                    rows.append({"quantity": q, "width": n, "depth": L, "seed": sd, "value": val})
    return rows


@pytest.mark.parametrize("exponent, verdict", [(-2.0, "reproduced"), (0.0, "not reproduced")])
def test_fit_table_applies_the_declared_depth_rule(exponent, verdict) -> None:
    """A 1/L² effect over 6 seeds is fitted near −2 with a seed-bootstrap interval that holds −2 and not 0
    ("reproduced"); a flat one gets an interval around 0 that excludes −2 ("not reproduced"), at every width."""
    fits = [f for f in wr.fit_table(_synthetic_dynamics(exponent)) if f["quantity"] == "func_dist_tracking"]
    assert {f["fixed"] for f in fits} == {"width=16", "width=64"}
    for f in fits:
        assert f["slope"] == pytest.approx(exponent, abs=0.1)
        assert f["lo"] < f["slope"] < f["hi"] and f["hi"] - f["lo"] < 0.5
        assert f["n_points"] == 30 and f["n_seeds"] == 6 and f["verdict"] == verdict


def test_floor_comparison_is_a_paired_ratio_at_the_largest_depth() -> None:
    """At L = 64 the 1/L² twin is ≈ c·64⁻² ≪ the 0.05 floor: the paired ratio is the geometric mean of
    c_seed·64⁻²/0.05 and its interval lies below 1."""
    rows = _synthetic_dynamics(-2.0, widths=(16,), noise=0.0)
    (c,) = wr.floor_comparisons(rows)
    vals = [float(r["value"]) / 0.05 for r in rows if r["quantity"] == "func_dist_tracking" and r["depth"] == 64]
    assert (c["width"], c["depth"], c["n"]) == (16, 64, 6)
    assert c["ratio"] == pytest.approx(math.exp(np.mean(np.log(vals))), rel=1e-9)
    assert c["hi"] < 1
    summ = {r["key"]: r for r in wr.summary(rows)}
    assert summ["decoupled_over_other_init_width16_L64"]["verdict"] == "below the floor"


def test_config_validates_dynamics_settings() -> None:
    with pytest.raises(ConfigError, match="dynamics_variants"):
        wr.Config(dynamics_variants=("reinit",))
    with pytest.raises(ConfigError, match="dynamics_variants"):
        wr.Config(dynamics_variants=("tracking", "bogus"))
    with pytest.raises(ConfigError, match="dynamics_widths"):
        wr.Config(dynamics_widths=(0,))


def test_run_sweeps_several_coupling_depths_and_dynamics_widths(tmp_path, monkeypatch) -> None:
    """coupling_depths / dynamics_widths / dynamics_variants select exactly the (width, depth) cells run."""
    monkeypatch.setattr(wr, "_draw", lambda rows, out: [])
    c = wr.Config(widths=(8, 16), depths=(2, 4), steps=2, coupling_depths=(2, 4), dynamics_widths=(8, 12),
                  dynamics_variants=("tracking", "reinit"))
    rows = wr.run(_tiny_cfg(weight_reuse=c), tmp_path)
    cells = {(r["width"], r["depth"]) for r in rows if r["quantity"] == "coupling_excess"}
    assert cells == {(8, 2), (16, 2), (8, 4), (16, 4)}
    assert {(r["width"], r["depth"]) for r in rows if r["quantity"] == "func_dist_tracking"} == {
        (8, 2), (8, 4), (12, 2), (12, 4)}
    assert not any(r["quantity"] == "func_dist_frozen" for r in rows)
    assert wr.coupling_width_depths(rows) == [2, 4] and wr.dynamics_widths_of(rows) == [8, 12]
    fixed = {(f["quantity"], f["fixed"]) for f in read_csv(tmp_path / "fits.csv")}
    assert {("coupling_excess", "depth=2"), ("coupling_excess", "depth=4"), ("func_dist_tracking", "width=8"),
            ("func_dist_tracking", "width=12")} <= fixed

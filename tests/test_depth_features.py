"""Depth-scaling sub-study ``features``: per-layer feature/weight changes after training, across depth."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

import systems
from testbed.experiments.common import make_splits
from testbed.experiments.depth import features as feat
from testbed.experiments.depth_scaling import DepthScalingConfig
from testbed.results import read_csv
from testbed.students.classifier import ResidualNet

TINY = dict(studies=("features",), seeds=(0,), features=feat.Config(depths=(2, 4)), width=8, steps=12, batch_size=16,
            n_train=32, n_test=16, parameterizations=("standard", "depth_mup"), block_depths=(1, 2), lr=1e-2,
            progress=False)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("feat")
    rows = feat.run(DepthScalingConfig(**TINY), out)
    feat.plot(out)
    return out, rows


def _hand_net(block_depth: int, a: float) -> ResidualNet:
    """dim 2, one block, identity embedding, ReLU branch with weights ``a·I`` and zero biases (SP: m = 1)."""
    net = ResidualNet(2, 2, dim=2, n_layers=1, width=2, hidden_layers=block_depth - 1, branch_scaling="standard",
                      activation="relu").double()
    with torch.no_grad():
        net.embed.weight.copy_(torch.eye(2))
        net.embed.bias.zero_()
        for lin in feat.linears(net.flow.blocks[0]):
            lin.weight.copy_(a * torch.eye(2))
            lin.bias.zero_()
    return net


def _get(rows, quantity, layer):
    return next(r["value"] for r in rows if r["quantity"] == quantity and r["layer"] == layer)


def test_rms_relative_change_formula():
    old = torch.tensor([[[3.0, 4.0], [0.0, 0.0]]], dtype=torch.float64)  # (layers=1, inputs=2, dim=2)
    new = old + torch.tensor([[[0.0, 0.0], [0.0, 5.0]]], dtype=torch.float64)
    # sqrt(Σ_i ‖Δ‖²) / sqrt(Σ_i ‖old‖²) = 5 / 5
    assert float(feat.rms_relative_change(new, old)[0]) == pytest.approx(1.0)
    assert feat.weight_change(torch.ones(2, 2) * 3, torch.ones(2, 2) * 2) == pytest.approx(0.5)


def test_changes_of_a_model_against_itself_are_zero():
    torch.manual_seed(0)
    net = ResidualNet(2, 2, dim=6, n_layers=3, width=5, hidden_layers=1, branch_scaling="depth_mup")
    x = torch.randn(7, 2)
    rows = feat.layer_changes(net, copy.deepcopy(net), x)
    assert {r["quantity"] for r in rows} == set(feat.LAYER_QUANTITIES)
    assert all(r["value"] == 0.0 for r in rows)
    assert sorted({r["layer"] for r in rows if r["quantity"] == "feature_change"}) == [0, 1, 2, 3]


def test_hand_checkable_one_layer_linear_block():
    """ReLU on positive inputs is linear: h_1 = (1 + a) x, and W → W + εI moves it by ε x."""
    a, eps = 0.5, 0.1
    x = torch.tensor([[1.0, 2.0], [0.5, 3.0], [2.0, 0.25]], dtype=torch.float64)
    net0, net = _hand_net(1, a), _hand_net(1, a)
    with torch.no_grad():
        net.flow.blocks[0].net[-1].weight.add_(eps * torch.eye(2))
    rows = feat.layer_changes(net, net0, x)
    assert _get(rows, "feature_change", 0) == pytest.approx(0.0)
    assert _get(rows, "feature_change", 1) == pytest.approx(eps / (1 + a))
    assert _get(rows, "weight_change_last", 1) == pytest.approx(eps / a)  # ‖εI‖_F / ‖aI‖_F
    assert not any(r["quantity"] == "weight_change_first" for r in rows)
    # block depth 2: change only W₁ (a → a + ε): pre-activations z = W₁ h_0 move by ε h_0 (input h_0 unchanged),
    # h_1 = h_0 + a·(a + ε)·h_0 moves by a·ε·h_0 against (1 + a²)·h_0
    net0, net = _hand_net(2, a), _hand_net(2, a)
    with torch.no_grad():
        net.flow.blocks[0].net[0].weight.add_(eps * torch.eye(2))
    rows = feat.layer_changes(net, net0, x)
    assert _get(rows, "weight_change_first", 1) == pytest.approx(eps / a)
    assert _get(rows, "weight_change_last", 1) == pytest.approx(0.0)
    assert _get(rows, "preact_own_change", 1) == pytest.approx(eps / a)
    assert _get(rows, "preact_change", 1) == pytest.approx(eps / a)
    assert _get(rows, "feature_change", 1) == pytest.approx(a * eps / (1 + a * a))


def _direct_changes(net: ResidualNet, net0: ResidualNet, x: torch.Tensor, scaling: str) -> dict:
    """The module docstring's quantities computed by hand in numpy float64 from the weights alone:
    h_0 = E x + e, h_l = h_{l−1} + m·(W₂ tanh(W₁ h_{l−1} + b₁) + b₂) (block depth 2) or m·(W tanh(h_{l−1}) + b)
    (block depth 1) with m = 1 (SP) or 1/√L (Depth-μP); changes are Frobenius norms over inputs × coordinates."""
    L = net.flow.n_layers
    m = 1.0 if scaling == "standard" else 1.0 / math.sqrt(L)

    def weights(model):
        emb = (model.embed.weight.detach().double().numpy(), model.embed.bias.detach().double().numpy())
        blocks = [[(lin.weight.detach().double().numpy(), lin.bias.detach().double().numpy())
                   for lin in blk.modules() if isinstance(lin, torch.nn.Linear)] for blk in model.flow.blocks]
        return emb, blocks

    def states(emb, blocks):
        hs = [x.double().numpy() @ emb[0].T + emb[1]]
        for blk in blocks:
            h = hs[-1]
            if len(blk) == 1:
                (W, b), = blk
                g = np.tanh(h) @ W.T + b
            else:
                (W1, b1), (W2, b2) = blk
                g = np.tanh(h @ W1.T + b1) @ W2.T + b2
            hs.append(h + m * g)
        return hs

    def rel(new, old):
        return float(np.linalg.norm(new - old) / np.linalg.norm(old))

    (e, B), (e0, B0) = weights(net), weights(net0)
    h, h0 = states(e, B), states(e0, B0)
    out = {("feature_change", l): rel(h[l], h0[l]) for l in range(L + 1)}
    for l in range(1, L + 1):
        out["weight_change_last", l] = rel(B[l - 1][-1][0], B0[l - 1][-1][0])
        if len(B[l - 1]) == 2:
            (W1, b1), (W10, b10) = B[l - 1][0], B0[l - 1][0]
            z0 = h0[l - 1] @ W10.T + b10
            out["weight_change_first", l] = rel(W1, W10)
            out["preact_change", l] = rel(h[l - 1] @ W1.T + b1, z0)
            out["preact_own_change", l] = rel(h0[l - 1] @ W1.T + b1, z0)
    return out


@pytest.mark.parametrize("variant", [("standard", 1, None), ("depth_mup", 2, 0.5)])
def test_layer_changes_of_a_trained_net_match_a_direct_computation(variant):
    """Train a depth-3 net with the sub-study's own trainer, then compare every per-layer row of layer_changes
    with the definitions evaluated by hand (numpy, from the weights only; no trajectory/multiplier code)."""
    param, bd, corr = variant
    cfg = DepthScalingConfig(**{**TINY, "steps": 8})
    train_data, test_data, _ = make_splits(systems.get_system(cfg.flow_system), 32, 16, 1)
    net = feat.build_model(cfg, param, bd, 3, 0)
    net0 = copy.deepcopy(net)
    assert feat.train_one(cfg, net, param, corr, train_data, 0)
    net, net0 = net.double(), net0.double()
    x = test_data.x0.double()
    rows = feat.layer_changes(net, net0, x)
    direct = _direct_changes(net, net0, x, param)
    assert {(r["quantity"], r["layer"]) for r in rows} == set(direct)
    for r in rows:
        assert r["value"] == pytest.approx(direct[r["quantity"], r["layer"]], rel=1e-9, abs=1e-15), r
    assert min(v for (q, _), v in direct.items() if q != "feature_change") > 1e-4  # training moved every matrix
    assert direct["feature_change", 3] > 1e-3


def test_variants_add_the_corrected_family_only_for_depth_mup_block_depth_2():
    cfg = DepthScalingConfig(**TINY)
    names = [v[0] for v in feat.variants(cfg)]
    assert names == ["standard", "standard", "depth_mup", "depth_mup", "depth_mup+corr"]
    assert feat.variants(cfg)[-1] == ("depth_mup+corr", "depth_mup", 2, 0.5, "adam")
    assert [v[0] for v in feat.variants(DepthScalingConfig(**{**TINY, "block_depths": (1,)}))] == \
        ["standard", "depth_mup"]
    both = feat.variants(DepthScalingConfig(**{**TINY, "parameterizations": ("depth_mup",), "block_depths": (2,),
                                               "optimizers": ("adam", "sgd")}))
    assert both == [("depth_mup", "depth_mup", 2, None, "adam"), ("depth_mup+corr", "depth_mup", 2, 0.5, "adam"),
                    ("depth_mup+sgd", "depth_mup", 2, None, "sgd"), ("depth_mup+corr+sgd", "depth_mup", 2, 0.5, "sgd")]
    assert feat.base_variant("depth_mup+corr+sgd") == "depth_mup+corr"


def test_vanishing_flag_and_exponent_on_synthetic_rows():
    rows = []
    for L, scale in ((4, 1.0), (16, 0.5), (64, 0.25)):  # ∝ L^{-1/2}: falls 4× from L = 4 to 64
        for l in range(1, L + 1):
            for q, v in (("preact_own_change", scale), ("feature_change", 0.7)):
                rows.append({"variant": "v", "block_depth": 2, "L": L, "seed": 0, "layer": l, "quantity": q,
                             "value": v})
    van = {(r["quantity"], r["l_over_L"]): r for r in feat.vanishing_table(rows)}
    assert van[("preact_own_change", "all")]["vanishing"] is True
    assert van[("preact_own_change", "all")]["ratio"] == pytest.approx(4.0)
    assert van[("feature_change", "all")]["vanishing"] is False
    assert van[("preact_own_change", 0.5)]["value_L_max"] == pytest.approx(0.25)
    exps = {r["quantity"]: r["exponent"] for r in feat.exponent_table(rows)}
    assert exps["preact_own_change"] == pytest.approx(-0.5)
    assert exps["feature_change"] == pytest.approx(0.0)


@pytest.mark.parametrize("variant, exponent, verdict", [
    ("depth_mup", -0.5, "reproduced"), ("depth_mup", 0.0, "not reproduced"),
    ("depth_mup+corr+sgd", 0.0, "reproduced"), ("depth_mup+corr+sgd", -0.5, "not reproduced")])
def test_exponent_interval_and_declared_verdict(variant, exponent, verdict):
    """Six seeds of layer means c_seed·L^exponent·(1 + 3% noise): the seed-bootstrap interval is tight around the
    exponent and the declared rule decides — first layer of Depth-μP b=2 "decays" (holds −½, excludes 0), with
    the correction (any optimizer) "flat" (inside ±FLAT_TOL)."""
    rng = np.random.default_rng(1)
    rows = []
    for sd in range(6):
        c = math.exp(0.2 * rng.standard_normal())
        for L in (4, 16, 64, 256):
            for l in (1, 2):
                rows.append({"variant": variant, "block_depth": 2, "L": L, "seed": sd, "layer": l,
                             "quantity": "preact_own_change",
                             "value": c * L ** exponent * (1 + 0.03 * rng.standard_normal())})
    (r,) = feat.exponent_table(rows)
    assert r["exponent"] == pytest.approx(exponent, abs=0.05)
    assert r["lo"] < r["exponent"] < r["hi"] and r["hi"] - r["lo"] < 0.2
    assert (r["n_points"], r["n_seeds"]) == (24, 6)
    assert r["verdict"] == verdict


def test_tiny_run_outputs(tiny_run):
    out, rows = tiny_run
    for name in ("results.csv", "vanishing.csv", "exponents.csv", "feature_change_per_layer.png",
                 "feature_change_per_layer.pdf", "update_vs_depth.png", "update_vs_depth.pdf"):
        assert (out / name).exists(), name
    disk = read_csv(out / "results.csv")
    assert list(disk[0]) == feat.COLUMNS and len(disk) == len(rows)
    assert {r["variant"] for r in disk} == {"standard", "depth_mup", "depth_mup+corr"}
    assert all(float(r["value"]) == 0.0 for r in disk if r["quantity"] == "diverged")
    vals = [float(r["value"]) for r in disk if r["quantity"] in feat.LAYER_QUANTITIES]
    assert vals and all(math.isfinite(v) and v >= 0 for v in vals)
    trained = [float(r["value"]) for r in disk if r["quantity"] == "weight_change_last"]
    assert min(trained) > 0  # every block moved
    bd2 = {r["quantity"] for r in disk if r["block_depth"] == 2}
    assert {"weight_change_first", "preact_change", "preact_own_change"} <= bd2
    assert not {"weight_change_first", "preact_own_change"} & {r["quantity"] for r in disk if r["block_depth"] == 1}
    # vanishing.csv recomputed from the per-layer values in results.csv: the mean over blocks l ≥ 1 at the smallest
    # and at the largest depth, their ratio, and the flag ratio > VANISH_FACTOR repeated on the results rows
    van = {(r["variant"], r["block_depth"], r["quantity"]): r for r in read_csv(out / "vanishing.csv")
           if r["l_over_L"] == "all"}
    fams = {(r["variant"], r["block_depth"]) for r in disk}
    assert set(van) == {(v, bd, q) for v, bd in fams for q in feat.FEATURE_QUANTITIES
                        if bd == 2 or q == "feature_change"}
    for (v, bd, q), row in van.items():
        def mean_at(L, v=v, bd=bd, q=q):
            vals = [float(r["value"]) for r in disk if (r["variant"], r["block_depth"], r["quantity"], r["L"]) ==
                    (v, bd, q, L) and r["layer"] >= 1]
            assert len(vals) == L
            return sum(vals) / L
        a, b = mean_at(2), mean_at(4)
        assert (row["L_min"], row["L_max"]) == (2, 4)
        assert row["value_L_min"] == pytest.approx(a, rel=1e-12) and row["value_L_max"] == pytest.approx(b, rel=1e-12)
        assert row["ratio"] == pytest.approx(a / b, rel=1e-12)
        flag = a / b > feat.VANISH_FACTOR
        assert str(row["vanishing"]) == str(flag)
        assert {str(r["vanishing"]) for r in disk if (r["variant"], r["block_depth"], r["quantity"]) == (v, bd, q)} \
            == {str(flag)}
    # with the L^{1/2} correction the first internal layer takes bigger steps than under plain Depth-μP
    mean_first = {v: sum(vs) / len(vs) for v in ("depth_mup", "depth_mup+corr")
                  for vs in [[float(r["value"]) for r in disk if r["variant"] == v and r["L"] == 4
                              and r["quantity"] == "weight_change_first"]]}
    assert mean_first["depth_mup+corr"] > 1.5 * mean_first["depth_mup"]


def test_summary_keys_and_replot(tiny_run):
    out, rows = tiny_run
    summ = {r["key"]: r for r in feat.summary(read_csv(out / "results.csv"))}
    for key in ("exponent_weight_change_first_depth_mup_bd2", "exponent_weight_change_first_depth_mup+corr_bd2",
                "exponent_preact_own_change_depth_mup_bd2", "exponent_feature_change_standard_bd1",
                "exponent_weight_change_last_depth_mup_bd1", "vanishing_preact_own_change_depth_mup_bd2",
                "vanishing_feature_change_depth_mup_bd1"):
        assert key in summ, key
        assert math.isfinite(summ[key]["value"]) and summ[key]["claim"]
    assert all(summ[k]["value"] in (0.0, 1.0) for k in summ if k.startswith("vanishing_"))
    for p in out.glob("*.png"):
        p.unlink()
    paths = feat.plot(out)
    assert {p.name for p in paths} == {"feature_change_per_layer.png", "feature_change_per_layer.pdf",
                                       "update_vs_depth.png", "update_vs_depth.pdf"}
    assert all(p.exists() for p in paths)


def test_sgd_variants_train_with_the_sgd_rate(tmp_path):
    """optimizers=("sgd",): every family is trained by SGD at ``sgd_lr`` (rows say so) and moves its weights; the
    corrected family's first layer moves more than the uncorrected one's (its rate is L^½ larger)."""
    cfg = DepthScalingConfig(**{**TINY, "parameterizations": ("depth_mup",), "block_depths": (2,),
                                "optimizers": ("sgd",), "sgd_lr": 0.05})
    rows = feat.run(cfg, tmp_path)
    assert {r["variant"] for r in rows} == {"depth_mup+sgd", "depth_mup+corr+sgd"}
    assert {r["optimizer"] for r in rows} == {"sgd"}
    first = {v: np.mean([r["value"] for r in rows if r["variant"] == v and r["L"] == 4
                         and r["quantity"] == "weight_change_first"]) for v in ("depth_mup+sgd", "depth_mup+corr+sgd")}
    assert first["depth_mup+sgd"] > 0 and first["depth_mup+corr+sgd"] > 1.5 * first["depth_mup+sgd"]

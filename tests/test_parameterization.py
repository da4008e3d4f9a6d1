"""Depth parameterizations (learning-rate rules), one-matrix blocks, the continuous weight function, ResidualNet."""

from __future__ import annotations

import math

import pytest
import torch

from testbed.config import ConfigError
from testbed.objectives import make_objective
from testbed.parameterization import param_groups
from testbed.students import ResidualStudent, SmoothResidualStudent, build_student
from testbed.train import TrainConfig, load_student, save_checkpoint, train

pytestmark = pytest.mark.usefixtures("float64_default")


def _net(L=16, hidden_layers=1, scaling="depth_mup"):
    return build_student("residual_net", input_dim=3, output_dim=2, dim=8, n_layers=L, width=8,
                         hidden_layers=hidden_layers, branch_scaling=scaling)


def _rates(groups):
    return {g["group"]: g["lr"] for g in groups}


@pytest.mark.parametrize("L", [4, 16, 64])
def test_depth_mup_adam_rule(L):
    m = _net(L)
    groups = param_groups(m, 0.1, "depth_mup", "adam")
    assert _rates(groups) == {"embedding/read-out": 0.1, "branch": pytest.approx(0.1 / math.sqrt(L))}
    ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in m.parameters())  # every parameter exactly once
    branch = next(g for g in groups if g["group"] == "branch")
    assert sum(p.numel() for p in branch["params"]) == sum(p.numel() for p in m.flow.blocks.parameters())


def test_sgd_and_standard_rules_use_one_rate():
    m = _net(16)
    assert set(_rates(param_groups(m, 0.1, "depth_mup", "sgd")).values()) == {0.1}
    assert set(_rates(param_groups(m, 0.1, "standard", "adam")).values()) == {0.1}


def test_first_layer_correction_only_on_two_matrix_blocks():
    L = 16
    m = _net(L, hidden_layers=1)
    r = _rates(param_groups(m, 0.1, "depth_mup", "adam", first_layer_correction=0.5))
    assert r["branch first layer"] == pytest.approx(0.1)  # η/√L · L^{1/2}
    assert r["branch"] == pytest.approx(0.1 / 4)
    first = next(g for g in param_groups(m, 0.1, "depth_mup", "adam", 0.5) if g["group"] == "branch first layer")
    assert sum(p.numel() for p in first["params"]) == L * (8 * 8 + 8)  # W1 and b1 of every block
    one = _net(L, hidden_layers=0)
    assert "branch first layer" not in _rates(param_groups(one, 0.1, "depth_mup", "adam", 0.5))
    with pytest.raises(ConfigError, match="parameterization"):
        param_groups(m, 0.1, "ntk")
    with pytest.raises(ConfigError, match="optimizer"):
        param_groups(m, 0.1, "depth_mup", "lbfgs")


def test_first_layer_names_come_from_the_student_or_a_clear_error():
    from torch import nn

    from testbed.parameterization import branch_first_layer_names

    m = _net(4, hidden_layers=2)
    assert branch_first_layer_names(m.flow) == {f"blocks.{i}.net.0.{k}" for i in range(4) for k in ("weight", "bias")}
    conv = ResidualStudent(8, n_layers=4, branch="conv", width=4, branch_scaling="depth_mup")
    with pytest.raises(ConfigError, match="first internal layer.*StencilField"):
        param_groups(conv, 0.1, "depth_mup", "adam", first_layer_correction=0.5)
    assert _rates(param_groups(conv, 0.1, "depth_mup", "adam")) == {"branch": pytest.approx(0.05)}

    class Plain(nn.Module):  # not a student: blocks and a depth, no first-layer names
        def __init__(self):
            super().__init__()
            self.n_layers, self.blocks = 4, nn.ModuleList(nn.Linear(2, 2) for _ in range(4))

    assert _rates(param_groups(Plain(), 0.1, "depth_mup", "adam")) == {"branch": pytest.approx(0.05)}
    with pytest.raises(ConfigError, match="Plain does not name it"):
        param_groups(Plain(), 0.1, "depth_mup", "adam", first_layer_correction=0.5)


def test_param_groups_drive_adam_step_sizes():
    """Adam's first step moves every parameter by ≈ its group's lr (sign of the gradient), so a branch weight
    moves √L times less than the read-out under Depth-μP."""
    torch.manual_seed(0)
    L = 16
    m = _net(L, hidden_layers=0)
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    opt = torch.optim.Adam(param_groups(m, 1e-3, "depth_mup", "adam"))
    x = torch.randn(32, 3)
    m(x).pow(2).sum().backward()
    opt.step()
    head = (m.head.weight - before["head.weight"]).abs().max()
    branch = (m.flow.blocks[3].net[1].weight - before["flow.blocks.3.net.1.weight"]).abs().max()
    assert float(head.detach()) == pytest.approx(1e-3, rel=1e-3)
    assert float(branch.detach()) == pytest.approx(1e-3 / math.sqrt(L), rel=1e-3)


def _endpoint_data(n=8):
    """Two-point 'trajectories' x0 → y in R²: all the endpoint objective needs."""
    from systems.data import TrajectoryData

    states = torch.randn(2, n, 2)
    return TrajectoryData(torch.tensor([0.0, 1.0]), states, torch.zeros_like(states))


def test_sgd_optimizer_option_is_plain_gradient_descent():
    torch.manual_seed(0)
    data = _endpoint_data()
    m = build_student("residual_net", input_dim=2, output_dim=2, dim=4, n_layers=4, hidden_layers=0)
    before = [p.detach().clone() for p in m.parameters()]
    loss, _ = make_objective("endpoint")(m, data)
    grads = torch.autograd.grad(loss, list(m.parameters()))
    train(m, "endpoint", data, TrainConfig(steps=1, batch_size=8, lr=0.05, optimizer="sgd", lr_schedule="constant",
                                           progress=False))
    for p0, g, p in zip(before, grads, m.parameters(), strict=True):
        assert torch.allclose(p, p0 - 0.05 * g, atol=1e-14)


# ----------------------------------------------------------------------------------------------- blocks
def test_one_matrix_block_is_w_sigma_h():
    s = ResidualStudent(5, n_layers=3, hidden_layers=0, activation="tanh")
    lin = s.blocks[0].net[1]
    h = torch.randn(4, 5)
    assert torch.allclose(s.blocks[0](0.0, h), torch.tanh(h) @ lin.weight.T + lin.bias, atol=1e-15)


def test_residual_net_endpoint_objective_uses_the_read_out(tmp_path):
    data = _endpoint_data(6)
    # the objective feeds x0 (the teacher's initial state) through embed → flow → head
    m2 = build_student("residual_net", input_dim=2, output_dim=2, dim=8, n_layers=4)
    loss, _ = make_objective("endpoint")(m2, data)
    pred = m2(data.x0)
    expected = (pred - data.endpoints).pow(2).sum() / data.endpoints.pow(2).sum()
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-12)
    with pytest.raises(ConfigError, match="hidden states"):
        make_objective("field")(m2, data)
    save_checkpoint(tmp_path / "c.pt", m2)
    m3, _ = load_student(tmp_path / "c.pt")
    assert torch.equal(m3(data.x0), pred)


# ----------------------------------------------------------------------------------------------- smooth weights
def test_hat_weights_interpolate_the_anchors():
    s = SmoothResidualStudent(3, n_layers=8, horizon=2.0, width=4, n_anchors=5)
    for k in range(5):
        w = s.hat_weights(k * 2.0 / 4)
        assert w == pytest.approx([1.0 if j == k else 0.0 for j in range(5)])
    w = s.hat_weights(0.75)  # between anchor 1 (t=0.5) and anchor 2 (t=1.0)
    assert w == pytest.approx([0.0, 0.5, 0.5, 0.0, 0.0]) and sum(w) == pytest.approx(1.0)
    p = s.weights_at(0.75)
    a1, a2 = dict(s.anchors[1].named_parameters()), dict(s.anchors[2].named_parameters())
    for n in p:
        assert torch.allclose(p[n], 0.5 * a1[n] + 0.5 * a2[n])


def test_smooth_student_is_euler_and_converges_at_order_one():
    torch.manual_seed(0)
    fine = SmoothResidualStudent(6, n_layers=256, width=16, n_anchors=3, init_scale=1.0)
    x = torch.randn(16, 6)
    ref = fine(x)
    errs = []
    depths = [4, 8, 16, 32]
    for L in depths:
        s = fine.with_depth(L)
        h = x
        for l in range(L):
            h = h + (1.0 / L) * s.vector_field(l / L, h)
        assert torch.allclose(s(x), h, atol=1e-13)
        errs.append(float((s(x) - ref).norm() / ref.norm()))
    slope = -(math.log(errs[-1]) - math.log(errs[0])) / (math.log(depths[-1]) - math.log(depths[0]))
    assert slope == pytest.approx(1.0, abs=0.15)
    assert fine.n_layers == 256  # with_depth copies


def test_single_anchor_equals_a_tied_residual_student():
    torch.manual_seed(0)
    s = SmoothResidualStudent(4, n_layers=8, width=8, n_anchors=1)
    r = ResidualStudent(4, n_layers=8, width=8, tied=True)
    r.blocks[0].load_state_dict(s.anchors[0].state_dict())
    x = torch.randn(5, 4)
    assert torch.allclose(s(x), r(x), atol=1e-14)
    s2 = build_student("smooth_residual", **s.spec())
    assert s2.spec() == s.spec()

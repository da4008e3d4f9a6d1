"""Students: residual networks are forward Euler on their own field; neural ODEs are their solver.

Everything in float64 with small widths; hand cases replace a branch by a linear map so the endpoint has a
closed form ((I + m A)^L for a residual net, R(hA)^L with R the solver's stability polynomial for a neural ODE).
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from torchdiffeq import odeint

from testbed.config import ConfigError
from testbed.students import STUDENTS, NeuralODEStudent, ResidualStudent, build_student

pytestmark = pytest.mark.usefixtures("float64_default")

SCALINGS = ("ode", "depth_mup", "standard")


def max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def apply(M: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``M x`` for each row of ``x``."""
    return x @ M.transpose(-1, -2)


def residual(tied=True, tc=False, scaling="ode", L=7, T=0.3, dim=3, width=8, **kw) -> ResidualStudent:
    return ResidualStudent(dim=dim, n_layers=L, horizon=T, width=width, tied=tied, time_conditioned=tc,
                           branch_scaling=scaling, branch_multiplier=1.7, **kw)


# ---------------------------------------------------------------------------------------------- residual
@pytest.mark.parametrize("scaling", SCALINGS)
@pytest.mark.parametrize("tc", [False, True], ids=["autonomous", "time_cond"])
@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
def test_residual_is_forward_euler_on_its_field(tied, tc, scaling):
    # L=7, T=0.3: grid times l·T/L are not exactly representable, so block_index has to be robust
    s = residual(tied, tc, scaling, L=7, T=0.3, hidden_layers=2)
    x0 = torch.randn(5, 3)
    with torch.no_grad():
        traj = s.trajectory(x0)
        euler = odeint(s.vector_field, x0, s.layer_times, method="euler")
        out = s(x0)
    assert traj.shape == (8, 5, 3)
    assert torch.equal(traj[0], x0)
    assert max_err(euler, traj) <= 1e-12
    assert torch.equal(out, traj[-1])
    # the field is not trivial (the test would be vacuous for g ≡ 0)
    assert float((traj[-1] - x0).abs().max()) > 1e-3


@pytest.mark.parametrize("scaling", SCALINGS)
def test_residual_linear_branch_hand_case(scaling, linear_field):
    L, T, a = 5, 0.8, 1.7
    s = residual(True, False, scaling, L=L, T=T, dim=2)
    expected_m = {"ode": T / L, "depth_mup": a / math.sqrt(L), "standard": 1.0}[scaling]
    assert s.multiplier == pytest.approx(expected_m, rel=1e-15)
    assert s.dt == pytest.approx(T / L, rel=1e-15)
    A = torch.tensor([[-0.3, -1.1], [0.9, 0.2]])
    s.blocks[0] = linear_field(A)
    x0 = torch.randn(4, 2)
    M = torch.eye(2) + expected_m * A
    with torch.no_grad():
        assert rel_err(s(x0), apply(torch.linalg.matrix_power(M, L), x0)) <= 1e-14
        traj = s.trajectory(x0)
        for l in range(L + 1):
            assert rel_err(traj[l], apply(torch.linalg.matrix_power(M, l), x0)) <= 1e-14
        # implied ODE field (m/Δt)·g
        assert rel_err(s.vector_field(0.1, x0), apply((expected_m / (T / L)) * A, x0)) <= 1e-14


def test_untied_linear_branches_compose_in_layer_order(linear_field):
    L, T = 4, 2.0
    s = residual(False, False, "ode", L=L, T=T, dim=2)
    As = [torch.randn(2, 2) for _ in range(L)]
    for l in range(L):
        s.blocks[l] = linear_field(As[l])
    x0 = torch.randn(3, 2)
    h = T / L
    P = torch.eye(2)
    for l in range(L):
        P = (torch.eye(2) + h * As[l]) @ P
    with torch.no_grad():
        assert rel_err(s(x0), apply(P, x0)) <= 1e-13
        # the field in [l·h, (l+1)·h) is block l
        for l in range(L):
            for t in (l * h, (l + 0.5) * h, (l + 1) * h - 1e-3 * h):
                assert rel_err(s.vector_field(t, x0), apply(As[l], x0)) <= 1e-15


def test_residual_time_conditioned_step_uses_layer_time():
    L, T = 6, 1.5
    s = residual(True, True, "depth_mup", L=L, T=T, dim=2, width=5)
    net = s.blocks[0].net
    x = torch.randn(4, 2)
    with torch.no_grad():
        for l in range(L):
            tl = torch.full((4, 1), l * T / L)
            expected = x + s.multiplier * net(torch.cat([x, tl], dim=1))
            assert max_err(s.step(l, x), expected) <= 1e-15
        # the field at a non-grid time uses that time, scaled by m/Δt
        expected = (s.multiplier / (T / L)) * net(torch.cat([x, torch.full((4, 1), 0.37)], dim=1))
        assert max_err(s.vector_field(0.37, x), expected) <= 1e-14
        # time actually matters
        assert max_err(s.vector_field(0.0, x), s.vector_field(1.0, x)) > 1e-4


def test_residual_constant_branch_and_zero_init():
    L, T = 5, 2.0
    s = residual(True, False, "ode", L=L, T=T, dim=2)
    last = s.blocks[0].net[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.tensor([0.5, -2.0]))
        x0 = torch.randn(3, 2)
        # g ≡ b: h_L = x0 + L·(T/L)·b = x0 + T·b
        assert max_err(s(x0), x0 + T * torch.tensor([0.5, -2.0])) <= 1e-14
    z = residual(False, True, "standard", L=L, T=T, dim=2, init_scale=0.0)
    for blk in z.blocks:
        assert torch.count_nonzero(blk.net[-1].weight) == 0 and torch.count_nonzero(blk.net[-1].bias) == 0
        assert torch.count_nonzero(blk.net[0].weight) > 0  # only the output layer is scaled
    with torch.no_grad():
        assert torch.equal(z(x0), x0)


@pytest.mark.parametrize("L,T", [(7, 0.3), (10, 1.0), (3, 0.1), (49, 0.7), (16, 5.0)])
def test_block_index_on_grid_and_clamped(L, T):
    s = residual(False, False, "ode", L=L, T=T, dim=2, width=2)
    grid = s.layer_times
    dt = T / L
    for l in range(L):
        assert s.block_index(l * T / L) == l
        assert s.block_index(l * dt) == l
        assert s.block_index(grid[l]) == l  # 0-d tensor from linspace
        assert s.block_index(float(grid[l])) == l
        assert s.block_index((l + 0.5) * dt) == l
        assert s.block_index((l + 1 - 1e-3) * dt) == l
    assert s.block_index(T) == L - 1
    assert s.block_index(grid[-1]) == L - 1
    assert s.block_index(2 * T) == L - 1
    assert s.block_index(-0.5 * dt) == 0
    tied = residual(True, False, "ode", L=L, T=T, dim=2, width=2)
    assert all(tied.block_index(t) == 0 for t in (0.0, 0.5 * T, T))


# ---------------------------------------------------------------------------------------------- neural ODE
def node(method="rk4", L=8, T=0.9, dim=3, width=8, **kw) -> NeuralODEStudent:
    return NeuralODEStudent(dim=dim, n_layers=L, horizon=T, width=width, method=method, **kw)


@pytest.mark.parametrize("tc", [False, True], ids=["autonomous", "time_cond"])
def test_neural_ode_trajectory_is_odeint_on_its_field(tc):
    s = node("rk4", L=7, T=0.3, time_conditioned=tc)
    x0 = torch.randn(4, 3)
    with torch.no_grad():
        traj = s.trajectory(x0)
        ref = odeint(s.vector_field, x0, s.layer_times, method="rk4", options={"step_size": 0.3 / 7})
        assert traj.shape == (8, 4, 3)
        assert max_err(traj, ref) <= 1e-12
        assert max_err(s(x0), traj[-1]) <= 1e-12
        # one layer = one solver step; the steps compose to the trajectory
        h = x0
        for l in range(s.n_layers):
            h = s.step(l, h)
            assert max_err(h, traj[l + 1]) <= 1e-12
        # sub-grids of the layer grid (also not starting at 0) are read off the same solve
        sub = s.trajectory(x0, s.layer_times[[0, 3, 7]])
        assert max_err(sub, traj[[0, 3, 7]]) <= 1e-12
        late = s.trajectory(x0, s.layer_times[[2, 5]])
        assert max_err(late, traj[[2, 5]]) <= 1e-12
        assert float((traj[-1] - x0).abs().max()) > 1e-3


@pytest.mark.parametrize("method", ["euler", "midpoint", "rk4"])
def test_neural_ode_linear_field_stability_polynomial(method, linear_field):
    L, T = 6, 1.2
    s = node(method, L=L, T=T, dim=2)
    A = torch.tensor([[-0.5, -2.0], [1.5, -0.1]])
    s.field = linear_field(A)
    Z = (T / L) * A
    eye = torch.eye(2)
    R = {"euler": eye + Z, "midpoint": eye + Z + Z @ Z / 2,
         "rk4": eye + Z + Z @ Z / 2 + Z @ Z @ Z / 6 + Z @ Z @ Z @ Z / 24}[method]
    x0 = torch.randn(3, 2)
    with torch.no_grad():
        assert rel_err(s(x0), apply(torch.linalg.matrix_power(R, L), x0)) <= 1e-13
        traj = s.trajectory(x0)
        for l in range(L + 1):
            assert rel_err(traj[l], apply(torch.linalg.matrix_power(R, l), x0)) <= 1e-13


def test_neural_ode_adaptive_solver_approximates_exact_flow(linear_field):
    T = 1.0
    s = node("dopri5", L=4, T=T, dim=2, rtol=1e-10, atol=1e-12)
    A = torch.tensor([[-0.5, -2.0], [1.5, -0.1]])
    s.field = linear_field(A)
    x0 = torch.randn(3, 2)
    with torch.no_grad():
        exact = torch.stack([apply(torch.linalg.matrix_exp(t * A), x0) for t in s.layer_times])
        assert rel_err(s.trajectory(x0), exact) <= 1e-8
        assert rel_err(s(x0), exact[-1]) <= 1e-8


def test_neural_ode_adjoint_gradients_match_backprop():
    x0 = torch.randn(5, 3)
    grads, outs = [], []
    for adjoint in (False, True):
        torch.manual_seed(1)
        s = node("rk4", L=16, T=1.0, adjoint=adjoint, time_conditioned=True)
        x = x0.clone().requires_grad_(True)
        out = s(x)
        loss = (out - 0.3).pow(2).sum() + out[:, 0].sin().sum()
        grads.append(torch.autograd.grad(loss, [x, *s.parameters()]))
        outs.append(out.detach())
    assert max_err(outs[0], outs[1]) <= 1e-12
    assert len(grads[0]) == len(grads[1]) == 1 + 4
    for g0, g1 in zip(grads[0], grads[1], strict=True):
        assert g0.abs().max() > 1e-3  # a real gradient, not zero
        assert max_err(g0, g1) <= 1e-6 * max(1.0, float(g0.abs().max()))


# ---------------------------------------------------------------------------------------------- grid, builder
@pytest.mark.parametrize("make", [lambda: residual(True, False, "ode", L=8, T=2.0), lambda: node(L=8, T=2.0)],
                         ids=["residual", "neural_ode"])
def test_time_indices(make):
    s = make()
    assert s.time_indices(torch.tensor([0.0, 0.5, 1.0, 2.0])).tolist() == [0, 2, 4, 8]
    assert s.time_indices([0.25, 1.75]).tolist() == [1, 7]
    # round-off in the times is tolerated
    assert s.time_indices(torch.tensor([0.75 + 1e-12])).tolist() == [3]
    for bad in ([0.3], [0.0, 1.1], [-0.25], [2.25], [2.0 + 1e-3]):
        with pytest.raises(ValueError, match="layer grid"):
            s.time_indices(torch.tensor(bad))
    with pytest.raises(ValueError, match="layer grid"):
        s.trajectory(torch.zeros(1, 3), torch.tensor([0.0, 0.3]))


def test_build_student_and_spec_round_trip():
    for kind, kwargs in (("residual", dict(dim=2, n_layers=5, width=4, tied=False, time_conditioned=True,
                                            branch_scaling="depth_mup", branch_multiplier=0.5, init_scale=0.3)),
                         ("neural_ode", dict(dim=2, n_layers=5, width=4, method="midpoint", init_scale=0.3))):
        s = build_student(kind, **kwargs)
        assert isinstance(s, STUDENTS[kind]) and s.kind == kind
        spec = s.spec()
        assert json.loads(json.dumps(spec)) == spec
        for k, v in kwargs.items():
            assert spec[k] == v
        s2 = build_student(kind, **spec)
        assert s2.spec() == spec
        s2.load_state_dict(s.state_dict())
        x0 = torch.randn(3, 2)
        with torch.no_grad():
            assert torch.equal(s2(x0), s(x0))
            assert torch.equal(s2.trajectory(x0), s.trajectory(x0))
        assert "n_layers=5" in repr(s)


@pytest.mark.parametrize("kind,kwargs,needle", [
    ("residul", {"dim": 2}, "residul"),
    ("resnet", {"dim": 2}, "resnet"),
    ("residual", {"dim": 2, "depth": 4}, "depth"),
    ("neural_ode", {"dim": 2, "tied": True}, "tied"),
    ("residual", {"dim": 2, "n_layers": 0}, "n_layers"),
    ("residual", {"dim": 2, "n_layers": -3}, "-3"),
    ("residual", {"dim": 2, "n_layers": 2.5}, "2.5"),
    ("neural_ode", {"dim": 2, "n_layers": 0}, "n_layers"),
    ("residual", {"dim": 0}, "dim"),
    ("residual", {"dim": 2, "width": 0}, "width"),
    ("residual", {"dim": 2, "horizon": 0.0}, "horizon"),
    ("residual", {"dim": 2, "horizon": float("nan")}, "horizon"),
    ("residual", {"dim": 2, "branch_scaling": "mup"}, "mup"),
    ("residual", {"dim": 2, "activation": "sigmoid"}, "sigmoid"),
    ("residual", {"dim": 2, "branch_multiplier": -1.0}, "branch_multiplier"),
    ("residual", {"dim": 2, "init_scale": -0.1}, "init_scale"),
    ("residual", {"dim": 2, "tied": "yes"}, "tied"),
    ("neural_ode", {"dim": 2, "method": "rk5"}, "rk5"),
    ("neural_ode", {"dim": 2, "rtol": 0.0}, "rtol"),
])
def test_build_student_rejects_bad_config(kind, kwargs, needle):
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        build_student(kind, **kwargs)


def test_build_student_suggests_close_kind():
    with pytest.raises(ConfigError, match="did you mean 'residual'"):
        build_student("residul", dim=2)
    assert issubclass(ConfigError, ValueError)


# ---------------------------------------------------------------------------------------------- float32 round-off
def test_float32_untied_student_is_euler_on_its_field():
    # float32 grid times sit up to ~L·eps/2 (index units) below l·Δt: block l must still be picked
    L, T = 40, 3.0
    s = ResidualStudent(dim=2, n_layers=L, horizon=T, width=8, tied=False, time_conditioned=True).float()
    grid32 = s.layer_times.float()
    assert [s.block_index(grid32[l]) for l in range(L)] == list(range(L))
    assert s.block_index(grid32[-1]) == L - 1
    x0 = torch.randn(4, 2, dtype=torch.float32)
    with torch.no_grad():
        traj = s.trajectory(x0)
        euler = odeint(s.vector_field, x0, grid32, method="euler")
    assert traj.dtype == euler.dtype == torch.float32
    assert max_err(euler, traj) <= 1e-5
    assert float((traj[-1] - x0).abs().max()) > 1e-2


def test_time_indices_accept_float32_grid_times():
    s = residual(True, False, "ode", L=64, T=0.3, dim=2)
    t32 = torch.linspace(0.0, 0.3, 5, dtype=torch.float64).float()
    assert s.time_indices(t32).tolist() == [0, 16, 32, 48, 64]
    with pytest.raises(ValueError, match="layer grid"):
        s.time_indices(torch.tensor([0.3 / 128], dtype=torch.float32))  # half a layer: still off the grid


# ------------------------------------------------------------------ any model's residual stages
def test_residual_stages_adapter_on_linear_stages():
    """Stages ``s_l(h) = h + Δt·A_l h``: the adapter's layer Jacobians are exactly ``I + Δt A_l``, its path
    Jacobian the ordered product, its vector field ``A_l x``, and its trajectory the model's own."""
    from torch import nn

    from testbed.field import layer_jacobians, path_jacobians, path_sensitivity
    from testbed.students import ResidualStages

    torch.manual_seed(0)
    L, d, T = 5, 3, 2.0
    dt = T / L
    mats = [torch.randn(d, d, dtype=torch.float64) for _ in range(L)]

    class Stage(nn.Module):
        def __init__(self, a):
            super().__init__()
            self.a = nn.Parameter(a.clone())

        def forward(self, h):
            return h + dt * h @ self.a.T

    stages = nn.ModuleList(Stage(a) for a in mats)
    field = ResidualStages(stages, dim=d, horizon=T)
    x0 = torch.randn(4, d, dtype=torch.float64)
    h = x0
    for s in stages:
        h = s(h)
    assert torch.allclose(field(x0), h, atol=0)
    _, jacs = layer_jacobians(field, x0)
    eye = torch.eye(d, dtype=torch.float64)
    for l in range(L):
        assert torch.allclose(jacs[l], (eye + dt * mats[l]).expand(4, d, d), atol=1e-13)
    prod = eye
    for l in range(L):
        prod = (eye + dt * mats[l]) @ prod
    assert torch.allclose(path_jacobians(jacs)[0], prod.expand(4, d, d), atol=1e-12)
    assert path_sensitivity(field, x0).total == pytest.approx(float(torch.linalg.matrix_norm(prod, ord=2)), rel=1e-10)
    assert torch.allclose(field.vector_field(2 * dt, x0), x0 @ mats[2].T, atol=1e-12)
    field.vector_field(0.0, x0).sum().backward()          # gradients reach the wrapped model
    assert stages[0].a.grad is not None
    with pytest.raises(ConfigError):
        ResidualStages([], dim=d)


# ----------------------------------------------------------------------------------------------- optional structure
def test_branch_layers_spell_out_the_residual_step():
    """``step(l, h) = h + m·g([h, t_l])`` with ``g`` the chain of ``branch_layers(l)``; tied layers share weights."""
    from testbed.students import SmoothResidualStudent
    from testbed.students.base import Affine

    def apply(branch, h):
        x = h if branch.time is None else torch.cat([h, torch.full_like(h[..., :1], branch.time)], -1)
        for layer in branch.layers:
            x = x @ layer.weight.T + (0 if layer.bias is None else layer.bias) if isinstance(layer, Affine) \
                else layer(x)
        return h + branch.multiplier * x

    h = torch.randn(4, 3)
    for s in (ResidualStudent(3, n_layers=5, hidden_layers=2, tied=False, time_conditioned=True),
              ResidualStudent(3, n_layers=5, hidden_layers=0, branch_scaling="depth_mup"),
              SmoothResidualStudent(3, n_layers=5, n_anchors=3)):
        for l in range(5):
            assert torch.allclose(apply(s.branch_layers(l), h), s.step(l, h), atol=1e-14)
    tied = ResidualStudent(3, n_layers=4)
    assert tied.branch_layers(0).layers[0].weight is tied.branch_layers(3).layers[0].weight
    assert tied.layers_similar and not ResidualStudent(3, n_layers=4, tied=False).layers_similar
    assert ResidualStudent(8, n_layers=4, branch="conv", width=4).branch_layers(0) is None
    assert NeuralODEStudent(3, n_layers=4).branch_layers(0) is None


def test_branch_first_layer_names_come_from_the_student():
    two, one = ResidualStudent(3, n_layers=3, tied=False), ResidualStudent(3, n_layers=3, hidden_layers=0)
    assert two.branch_first_layer_names() == {f"blocks.{i}.net.0.{k}" for i in range(3) for k in ("weight", "bias")}
    assert one.branch_first_layer_names() == set()
    assert [two.blocks[0].get_submodule(n).weight.shape for n in two.blocks[0].linear_names()] == [(64, 3), (3, 64)]
    with pytest.raises(NotImplementedError, match="StencilField"):
        ResidualStudent(8, n_layers=2, branch="conv", width=4).branch_first_layer_names()
    with pytest.raises(NotImplementedError, match="NeuralODEStudent"):
        NeuralODEStudent(3, n_layers=2).branch_first_layer_names()


def test_one_solver_table():
    """The neural ODE and the consistency metric take their solver names from testbed.solvers, all torchdiffeq's."""
    from torchdiffeq._impl.odeint import SOLVERS

    from testbed.field.consistency import integrate
    from testbed.solvers import ADAPTIVE_METHODS, FIXED_STEP_METHODS, LOOP_METHODS

    assert set(FIXED_STEP_METHODS + ADAPTIVE_METHODS) <= set(SOLVERS) and set(LOOP_METHODS) <= set(FIXED_STEP_METHODS)
    for method in FIXED_STEP_METHODS + ADAPTIVE_METHODS:
        assert NeuralODEStudent(2, n_layers=2, width=4, method=method).method == method
    f = lambda t, x: -x  # noqa: E731
    x0 = torch.ones(1, 2, dtype=torch.float64)
    for method in ADAPTIVE_METHODS:
        sol, _ = integrate(f, x0, 1.0, method)
        assert torch.allclose(sol[-1], x0 * math.exp(-1.0), rtol=1e-4)
    with pytest.raises(ConfigError, match="step loop"):
        integrate(f, x0, 1.0, "explicit_adams", 4)

"""Field metrics: layer / path Jacobians against closed forms ((I + hA)^{L-l} for a linear residual branch)
and central finite differences, path-sensitivity norms, law / endpoint / trajectory errors on hand cases."""

from __future__ import annotations

import math

import pytest
import torch

import systems
from systems.data import TrajectoryData, make_trajectories
from testbed.field import (
    endpoint_error,
    flow_jacobian_error,
    law_error,
    layer_jacobians,
    path_jacobians,
    path_sensitivity,
    relative_l2,
    trajectory_error,
    vector_field_jacobian,
)
from testbed.students import NeuralODEStudent, ResidualStudent

pytestmark = [pytest.mark.usefixtures("float64_default"),
              pytest.mark.filterwarnings("ignore:The following arguments have no effect:UserWarning")]


def max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


def linear_residual(A: torch.Tensor, L: int, T: float, linear_field) -> ResidualStudent:
    s = ResidualStudent(dim=A.shape[0], n_layers=L, horizon=T, width=2, tied=True)
    s.blocks[0] = linear_field(A)
    return s


# ---------------------------------------------------------------------------------------------- linear hand cases
def test_linear_residual_layer_and_path_jacobians(linear_field):
    L, T = 6, 1.2
    h = T / L
    A = torch.tensor([[-0.4, 1.3, 0.0], [-0.7, 0.1, 0.5], [0.2, 0.0, -1.0]])
    s = linear_residual(A, L, T, linear_field)
    x0 = torch.randn(4, 3)
    M = torch.eye(3) + h * A
    traj, J = layer_jacobians(s, x0)
    assert traj.shape == (L + 1, 4, 3) and J.shape == (L, 4, 3, 3)
    with torch.no_grad():
        assert torch.equal(traj, s.trajectory(x0))
    assert max_err(J, M.expand(L, 4, 3, 3)) <= 1e-15
    P = path_jacobians(J)
    assert P.shape == (L + 1, 4, 3, 3)
    for l in range(L + 1):
        assert max_err(P[l], torch.linalg.matrix_power(M, L - l).expand(4, 3, 3)) <= 1e-13
    assert torch.equal(P[L], torch.eye(3).expand(4, 3, 3))

    ps = path_sensitivity(s, x0)
    for l in range(L + 1):
        Pl = torch.linalg.matrix_power(M, L - l)
        assert float(ps.spectral[l]) == pytest.approx(float(torch.linalg.svdvals(Pl)[0]), rel=1e-12)
        assert float(ps.frobenius[l]) == pytest.approx(float(Pl.pow(2).sum().sqrt()), rel=1e-12)
        assert float(ps.logdet[l]) == pytest.approx((L - l) * math.log(abs(float(torch.linalg.det(M)))),
                                                    rel=1e-12, abs=1e-14)
    assert ps.total == pytest.approx(float(ps.spectral[0]), rel=0)
    assert max_err(ps.endpoint_jacobian, torch.linalg.matrix_power(M, L).expand(4, 3, 3)) <= 1e-13


@pytest.mark.parametrize("w", [0.5, 3.0])
def test_rotation_path_sensitivity_closed_form(w, linear_field):
    L, T = 8, 2.0
    h = T / L
    s = linear_residual(torch.tensor([[0.0, -w], [w, 0.0]]), L, T, linear_field)
    ps = path_sensitivity(s, torch.randn(5, 2))
    q = 1 + h * h * w * w  # I + hA = sqrt(q)·rotation
    for l in range(L + 1):
        assert float(ps.spectral[l]) == pytest.approx(q ** ((L - l) / 2), rel=1e-12)
        assert float(ps.frobenius[l]) == pytest.approx(math.sqrt(2) * q ** ((L - l) / 2), rel=1e-12)
        assert float(ps.logdet[l]) == pytest.approx((L - l) * math.log(q), rel=1e-12, abs=1e-14)


def test_path_jacobians_multiply_in_layer_order():
    L, B, d = 4, 2, 3
    J = torch.randn(L, B, d, d)
    P = path_jacobians(J)
    for b in range(B):
        for l in range(L + 1):
            expected = torch.eye(d)
            for k in range(l, L):
                expected = J[k, b] @ expected  # P_l = J_{L-1} ⋯ J_l
            assert max_err(P[l, b], expected) <= 1e-13


# ---------------------------------------------------------------------------------------------- nonlinear students
STUDENTS = {
    "tied_tc": lambda: ResidualStudent(dim=3, n_layers=6, horizon=1.5, width=8, tied=True, time_conditioned=True),
    "untied_mup": lambda: ResidualStudent(dim=3, n_layers=5, horizon=1.0, width=8, tied=False,
                                          branch_scaling="depth_mup", hidden_layers=2),
    "wide": lambda: ResidualStudent(dim=10, n_layers=3, horizon=1.0, width=8, tied=True),  # d > 8: jacrev path
    "neural_ode": lambda: NeuralODEStudent(dim=3, n_layers=4, horizon=1.0, width=8, method="rk4"),
}


@pytest.mark.parametrize("case", list(STUDENTS))
def test_nonlinear_path_jacobians_match_finite_differences(case, fd_jacobian):
    s = STUDENTS[case]()
    x0 = torch.randn(3, s.dim)
    traj, J = layer_jacobians(s, x0)
    L = s.n_layers
    with torch.no_grad():
        for l in range(L):
            Jfd = fd_jacobian(lambda h, l=l: s.step(l, h), traj[l])
            assert max_err(J[l], Jfd) <= 1e-7
        P = path_jacobians(J)

        def tail(h, start):
            for k in range(start, L):
                h = s.step(k, h)
            return h

        for l in (0, L // 2, L - 1):
            Pfd = fd_jacobian(lambda h, l=l: tail(h, l), traj[l])
            assert max_err(P[l], Pfd) <= 1e-6
        endpoint_fd = fd_jacobian(s, x0)
    ps = path_sensitivity(s, x0)
    assert max_err(ps.endpoint_jacobian, endpoint_fd) <= 1e-6
    # the endpoint map is not the identity (a vacuous comparison otherwise)
    assert max_err(endpoint_fd, torch.eye(s.dim).expand_as(endpoint_fd)) > 1e-3
    spec = torch.linalg.matrix_norm(endpoint_fd, ord=2).mean()
    assert float(ps.spectral[0]) == pytest.approx(float(spec), rel=1e-6)
    logdet = torch.linalg.slogdet(endpoint_fd).logabsdet.mean()
    assert float(ps.logdet[0]) == pytest.approx(float(logdet), rel=1e-5, abs=1e-6)


# ---------------------------------------------------------------------------------------------- errors
def test_relative_l2_hand_values():
    assert relative_l2(torch.tensor([0.0, 3.0]), torch.tensor([4.0, 0.0])) == pytest.approx(1.25, rel=1e-15)
    assert relative_l2(torch.tensor([[2.0, 0.0]]), torch.tensor([[1.0, 0.0]])) == pytest.approx(1.0, rel=1e-15)
    a = torch.tensor([[1.0, 2.0], [2.0, 4.0]])
    assert relative_l2(1.1 * a, a) == pytest.approx(0.1, rel=1e-12)
    assert relative_l2(a, a) == 0.0
    # float32 inputs are accumulated in float64
    assert relative_l2(a.float() * 0.5, a.float()) == pytest.approx(0.5, rel=1e-7)


@pytest.mark.parametrize("name", ["van_der_pol", "double_gyre", "lorenz63"])
def test_law_error_of_teacher_and_scaled_teacher(name):
    sys = systems.get_system(name)
    data = make_trajectories(sys, 6, 3, generator=torch.Generator().manual_seed(1))
    assert law_error(sys.vector_field, data) == 0.0
    for c in (0.25, -0.4):
        def scaled(t, x, c=c):
            return (1 + c) * sys.vector_field(t, x)

        assert law_error(scaled, data) == pytest.approx(abs(c), rel=1e-12)
    # an additive error δ: sqrt(Σ‖δ‖² / Σ‖f*‖²)
    delta = torch.zeros(sys.dim)
    delta[0] = 0.3
    expected = math.sqrt(0.09 * data.states.shape[0] * data.n / float(data.velocities.pow(2).sum()))
    assert law_error(lambda t, x: sys.vector_field(t, x) + delta, data) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("case", ["tied_tc", "untied_mup", "neural_ode"])
def test_errors_vanish_on_self_generated_data(case, student_data):
    s = STUDENTS[case]()
    data = student_data(s, torch.randn(5, s.dim), n_obs=s.n_layers)
    assert endpoint_error(s, data) <= 1e-15
    assert trajectory_error(s, data) <= 1e-15
    assert law_error(s.vector_field, data) <= 1e-15
    c = 0.2
    states = data.states.clone()
    states[-1] = (1 + c) * states[-1]
    moved = TrajectoryData(data.t, states, data.velocities)
    assert endpoint_error(s, moved) == pytest.approx(c / (1 + c), rel=1e-12)
    num = c**2 * data.states[-1].pow(2).sum()
    den = states[1:].pow(2).sum()
    assert trajectory_error(s, moved) == pytest.approx(math.sqrt(float(num / den)), rel=1e-12)


def test_flow_jacobian_error_hand_value(linear_field):
    sys = systems.get_system("linear_spiral", a=0.2, w=1.5, horizon=2.0)
    A = sys.matrix_tensor()
    L = 10
    s = linear_residual(A, L, 2.0, linear_field)
    x0 = torch.randn(4, 2)
    ps = path_sensitivity(s, x0)
    teacher = sys.flow_jacobian(x0, torch.tensor([0.0, 2.0]))[-1]
    exact = torch.linalg.matrix_exp(2.0 * A)
    assert max_err(teacher, exact.expand(4, 2, 2)) <= 1e-9
    euler = torch.linalg.matrix_power(torch.eye(2) + 0.2 * A, L)
    expected = float((euler - exact).pow(2).sum().sqrt() / exact.pow(2).sum().sqrt())
    assert flow_jacobian_error(ps, exact.expand(4, 2, 2)) == pytest.approx(expected, rel=1e-12)
    assert expected > 1e-2


# ---------------------------------------------------------------------------------------------- ∂f/∂x
@pytest.mark.parametrize("name", systems.list_systems())
def test_vector_field_jacobian_matches_analytic_teacher(name):
    sys = systems.get_system(name)
    x = sys.sample_id(5, generator=torch.Generator().manual_seed(2))
    for t in ((0.0,) if sys.autonomous else (0.0, 1.3, 4.1)):
        J = vector_field_jacobian(sys.vector_field, t, x)
        assert J.shape == (5, sys.dim, sys.dim)
        assert max_err(J, sys.jacobian(t, x)) <= 1e-12 * max(1.0, float(J.abs().max()))


def test_vector_field_jacobian_wide_field_uses_reverse_mode():
    d = 12  # > 8: the jacrev branch
    W = torch.randn(d, d) / math.sqrt(d)
    x = torch.randn(4, d)

    def f(t, z):
        return torch.tanh(z @ W.T) * (1 + t)

    J = vector_field_jacobian(f, 0.5, x)
    sech2 = 1 - torch.tanh(x @ W.T) ** 2
    expected = 1.5 * sech2.unsqueeze(-1) * W
    assert max_err(J, expected) <= 1e-14


def test_aliased_spiral_law_is_detected():
    """x' = A x with rotation rate w and the aliased rate w − 2π/T share the flow map φ_T exactly; the aliased
    law's exact flow fits every endpoint (error at round-off) but not the interior states or the law, and is
    flagged; the true law is not."""
    from testbed.field import interior_error, is_aliased
    from testbed.students.constructed import ExactFlowStudent

    teacher = systems.get_system("linear_spiral")
    T, w = float(teacher.horizon), float(teacher.w)
    alias = systems.get_system("linear_spiral", w=w - 2 * math.pi / T)
    data = make_trajectories(teacher, 64, 8, torch.Generator().manual_seed(0), "id", dtype=torch.float64)
    for sys_, aliased in ((teacher, False), (alias, True)):
        student = ExactFlowStudent(sys_, 32)
        end = endpoint_error(student, data)
        inner = interior_error(student, data)
        assert end < 1e-10
        assert (inner > 0.5) is aliased and is_aliased(end, inner) is aliased
        lerr = law_error(student.vector_field, data)
        assert (lerr > 0.5) is aliased
    assert not is_aliased(0.2, 5.0) and not is_aliased(0.05, 0.1) and is_aliased(0.05, 0.16)

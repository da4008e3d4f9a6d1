"""Solver consistency: ``integrate`` against hand recursions and stability polynomials, and
``solver_consistency`` on the scalar linear law x' = λx where every row has a closed form."""

from __future__ import annotations

import math

import pytest
import torch

from testbed.config import ConfigError
from testbed.field import ConsistencyResult, default_step_counts, integrate, solver_consistency
from testbed.students import ResidualStudent

pytestmark = pytest.mark.usefixtures("float64_default")

LAM, T, L = -1.0, 1.0, 16


def lin(t, x):
    return LAM * x


def euler_factor(n: int, frac: float = 1.0) -> float:
    """``(1 + λT/n)^{n·frac}``: n-step forward Euler on x' = λx up to time frac·T."""
    return (1 + LAM * T / n) ** round(n * frac)


def rk4_factor(n: int) -> float:
    z = LAM * T / n
    return (1 + z + z**2 / 2 + z**3 / 6 + z**4 / 24) ** n


@pytest.fixture
def x0() -> torch.Tensor:
    return torch.tensor([[1.0, -2.0], [0.5, 3.0], [-1.5, 0.25]])


# ---------------------------------------------------------------------------------------------- integrate
def test_integrate_euler_is_the_hand_recursion():
    def f(t, x):
        return torch.sin(x) * (1 + t) - 0.3 * x.flip(-1)

    x0 = torch.randn(4, 2)
    N, horizon = 12, 1.7
    times = torch.tensor([0.0, horizon / 3, horizon / 2, horizon])
    sol, nfev = integrate(f, x0, horizon, "euler", N, times)
    h = horizon / N
    states = [x0]
    x = x0
    for k in range(N):
        x = x + h * f(k * h, x)
        states.append(x)
    expected = torch.stack([states[0], states[4], states[6], states[12]])
    assert float((sol - expected).abs().max()) <= 1e-13
    assert nfev == N
    # default output times are [0, T]
    sol2, _ = integrate(f, x0, horizon, "euler", N)
    assert sol2.shape == (2, 4, 2) and float((sol2[-1] - states[-1]).abs().max()) <= 1e-13


@pytest.mark.parametrize("N", [1, 3, 10])
def test_integrate_rk4_stability_polynomial(N, x0):
    for lam in (-1.0, 2.5, -7.0):
        sol, nfev = integrate(lambda t, x, lam=lam: lam * x, x0, 1.0, "rk4", N)
        z = lam / N
        R = (1 + z + z**2 / 2 + z**3 / 6 + z**4 / 24) ** N
        assert float((sol[-1] - R * x0).abs().max()) <= 1e-12 * max(1.0, abs(R)) * 3
        assert nfev == 4 * N
    # midpoint: R(z) = 1 + z + z²/2
    sol, _ = integrate(lin, x0, T, "midpoint", 5)
    z = LAM * T / 5
    assert float((sol[-1] - (1 + z + z * z / 2) ** 5 * x0).abs().max()) <= 1e-14


def test_integrate_rotation_with_rk4_matches_matrix_polynomial():
    w = 2.0
    A = torch.tensor([[0.0, -w], [w, 0.0]])
    x0 = torch.randn(3, 2)
    N, horizon = 7, 1.3
    sol, _ = integrate(lambda t, x: x @ A.T, x0, horizon, "rk4", N)
    Z = horizon / N * A
    R = torch.eye(2) + Z + Z @ Z / 2 + Z @ Z @ Z / 6 + Z @ Z @ Z @ Z / 24
    assert float((sol[-1] - x0 @ torch.linalg.matrix_power(R, N).T).abs().max()) <= 1e-13


def test_integrate_adaptive_and_errors(x0):
    sol, nfev = integrate(lin, x0, T, "dopri5", rtol=1e-10, atol=1e-12)
    assert float((sol[-1] - math.exp(LAM * T) * x0).abs().max()) <= 1e-9
    assert nfev > 6
    with pytest.raises(ConfigError, match="unknown solver 'rk45'"):
        integrate(lin, x0, T, "rk45", 4)
    for bad in (None, 0, -2, 2.5, True):
        with pytest.raises(ConfigError, match="step count"):
            integrate(lin, x0, T, "euler", bad)
    with pytest.raises(ConfigError, match="not on the 4-step grid"):
        integrate(lin, x0, T, "euler", 4, torch.tensor([0.0, 0.3, 1.0]))


# ---------------------------------------------------------------------------------------------- solver_consistency
def test_default_step_counts():
    assert default_step_counts(16) == [4, 8, 32, 64]
    assert default_step_counts(6) == [3, 12, 24]
    assert default_step_counts(2) == [1, 4, 8]
    assert default_step_counts(1) == [2, 4]


def test_solver_consistency_on_linear_law(x0):
    target = math.exp(LAM * T) * x0
    res = solver_consistency(lin, x0, T, L, methods=("euler", "rk4"), target=target)
    assert isinstance(res, ConsistencyResult)
    rL = euler_factor(L)
    steps = [4, 8, 32, 64]
    assert res.reference["n_steps"] == L and res.reference["method"] == "euler"
    assert res.reference["grid_points"] == 4  # gcd(16, 4, 8, 32, 64)
    assert res.reference["nfev"] == L

    ref = res.rows[0]
    assert ref["is_reference"] and ref["method"] == "euler" and ref["n_steps"] == L
    assert ref["endpoint_change"] == 0.0 and ref["trajectory_change"] == 0.0
    assert ref["target_error"] == pytest.approx(abs(rL - math.exp(LAM * T)) / math.exp(LAM * T), rel=1e-12)
    assert sum(r["is_reference"] for r in res.rows) == 1
    assert len(res.rows) == 1 + 2 * len(steps) + 1

    for n in steps:
        expected = abs(euler_factor(n) - rL) / abs(rL)
        assert res.change("euler", n) == pytest.approx(expected, rel=1e-12, abs=1e-15)
        # trajectory change over the common grid t_k = k/4
        num = sum((euler_factor(n, k / 4) - euler_factor(L, k / 4)) ** 2 for k in range(1, 5))
        den = sum(euler_factor(L, k / 4) ** 2 for k in range(1, 5))
        row = next(r for r in res.rows if r["method"] == "euler" and r["n_steps"] == n and not r["is_reference"])
        assert row["trajectory_change"] == pytest.approx(math.sqrt(num / den), rel=1e-12)
        assert row["nfev"] == n and row["step_ratio"] == n / L
        assert row["target_error"] == pytest.approx(abs(euler_factor(n) - math.exp(LAM)) / math.exp(LAM), rel=1e-12)
        assert res.change("rk4", n) == pytest.approx(abs(rk4_factor(n) - rL) / abs(rL), rel=1e-12)

    dopri = abs(math.exp(LAM * T) - rL) / abs(rL)
    assert res.change("dopri5") == pytest.approx(dopri, abs=1e-6)
    assert res.summary == res.change("dopri5")
    adaptive_row = res.rows[-1]
    assert adaptive_row["n_steps"] is None and math.isnan(adaptive_row["step_ratio"])

    # Euler converges at order 1 to the exact flow, RK4 at order 4
    e = {n: next(r["target_error"] for r in res.rows if r["method"] == "euler" and r["n_steps"] == n)
         for n in (32, 64)}
    assert math.log2(e[32] / e[64]) == pytest.approx(1.0, abs=0.1)
    e4 = {n: next(r["target_error"] for r in res.rows if r["method"] == "rk4" and r["n_steps"] == n) for n in (4, 8)}
    assert math.log2(e4[4] / e4[8]) == pytest.approx(4.0, abs=0.2)

    # the reference row is excluded from the aggregates
    changes = res.endpoint_changes()
    assert len(changes) == 2 * len(steps) + 1 and all(c > 0 for c in changes)
    assert res.mean_change() == pytest.approx(sum(changes) / len(changes), rel=1e-15)
    with pytest.raises(KeyError):
        res.change("midpoint", 4)
    with pytest.raises(KeyError):
        res.change("euler", L)  # the reference is not a re-integration


def test_summary_without_adaptive_and_per_sample(x0):
    res = solver_consistency(lin, x0, T, L, step_counts=[8, 32], adaptive=())
    assert res.summary == res.change("euler", 32)
    assert res.reference["grid_points"] == 8
    batch = solver_consistency(lin, x0, T, L, step_counts=[8])
    single = solver_consistency(lin, x0, T, L, step_counts=[8], per_sample=True)
    assert single.change("dopri5") == pytest.approx(batch.change("dopri5"), abs=1e-6)
    assert single.change("euler", 8) == batch.change("euler", 8)
    assert single.rows[-1]["nfev"] > batch.rows[-1]["nfev"]  # three separate solves


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "8"])
def test_solver_consistency_rejects_bad_step_counts(bad, x0):
    with pytest.raises(ConfigError, match="step counts must be positive integers"):
        solver_consistency(lin, x0, T, L, step_counts=[8, bad])


@pytest.mark.parametrize("bad", [0, -4, 16.0])
def test_solver_consistency_rejects_bad_depth(bad, x0):
    with pytest.raises(ConfigError, match="n_layers"):
        solver_consistency(lin, x0, T, bad)


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
def test_reference_is_the_ode_scaled_residual_network(tied):
    s = ResidualStudent(dim=2, n_layers=6, horizon=0.7, width=8, tied=tied, time_conditioned=True)
    x0 = torch.randn(5, 2)
    with torch.no_grad():
        out = s(x0)
        traj = s.trajectory(x0)
    res = solver_consistency(s.vector_field, x0, 0.7, 6, step_counts=[3, 12], target=out)
    ref = res.rows[0]
    assert ref["is_reference"] and ref["endpoint_change"] == 0.0
    assert ref["target_error"] <= 1e-12
    # the reference trajectory is the network's on the common grid (gcd(6, 3, 12) = 3 → layers 2, 4, 6)
    row12 = next(r for r in res.rows if r["n_steps"] == 12)
    assert row12["endpoint_change"] > 1e-6 and row12["target_error"] == pytest.approx(row12["endpoint_change"],
                                                                                      rel=1e-9)
    with torch.no_grad():
        sol, _ = integrate(s.vector_field, x0, 0.7, "euler", 6, s.layer_times)
    assert float((sol - traj).abs().max()) <= 1e-12


def test_float32_student_consistency_reference_is_the_network():
    L, horizon = 40, 3.0
    s = ResidualStudent(dim=2, n_layers=L, horizon=horizon, width=8, tied=False).float()
    x0 = torch.randn(4, 2, dtype=torch.float32)
    with torch.no_grad():
        out = s(x0)
    res = solver_consistency(s.vector_field, x0, horizon, L, step_counts=[20, 80], adaptive=(), target=out)
    assert res.rows[0]["is_reference"] and res.rows[0]["target_error"] <= 1e-6
    assert res.change("euler", 80) > 1e-4


def test_converged_error_and_observed_order_match_solver_orders():
    """On dx/dt = A x (a damped rotation) the distance to the converged solve falls like L'^-p with p the
    solver's order: 1 (Euler), 2 (midpoint), 4 (RK4)."""
    from testbed.field.consistency import observed_order

    A = torch.tensor([[-0.1, 1.0], [-1.0, -0.1]], dtype=torch.float64)
    x0 = torch.tensor([[1.0, 0.5], [-0.3, 2.0]], dtype=torch.float64)
    res = solver_consistency(lambda t, x: x @ A.T, x0, 2.0, 16, step_counts=[16, 32, 64, 128],
                             methods=("euler", "midpoint", "rk4"), rtol=1e-12, atol=1e-14)
    for r in res.rows:
        assert "converged_error" in r
    adaptive = [r for r in res.rows if r["n_steps"] is None]
    assert adaptive[0]["converged_error"] == 0.0
    # the converged solve is the exact flow expm(2A) x0 to the tolerance
    exact = x0 @ torch.linalg.matrix_exp(2.0 * A).T
    euler128 = next(r for r in res.rows if r["method"] == "euler" and r["n_steps"] == 128)
    x128 = x0.clone()
    for _ in range(128):
        x128 = x128 + (2.0 / 128) * x128 @ A.T
    assert euler128["converged_error"] == pytest.approx(float((x128 - exact).norm() / exact.norm()), rel=1e-6)
    assert observed_order(res.rows, "euler") == pytest.approx(1.0, abs=0.08)
    assert observed_order(res.rows, "midpoint") == pytest.approx(2.0, abs=0.08)
    assert observed_order(res.rows, "rk4") == pytest.approx(4.0, abs=0.15)
    assert math.isnan(observed_order(res.rows, "bosh3"))


@pytest.mark.parametrize("method", ["euler", "midpoint", "rk4"])
def test_fixed_step_solve_is_torchdiffeq_arithmetic(method):
    """The plain loop reproduces torchdiffeq's fixed-grid solvers bit for bit (rk4 = its 3/8 rule), also for an
    untied, time-conditioned student whose field jumps between layers."""
    from torchdiffeq import odeint

    from testbed.field.consistency import fixed_step_solve

    torch.manual_seed(0)
    s = ResidualStudent(3, n_layers=8, width=8, tied=False, time_conditioned=True)
    x0 = torch.randn(5, 3)
    grid = torch.linspace(0.0, 1.0, 13)
    with torch.no_grad():
        assert torch.equal(fixed_step_solve(s.vector_field, x0, grid, method),
                           odeint(s.vector_field, x0, grid, method=method))

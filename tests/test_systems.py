"""Tests of the analytic teacher flows in ``systems/flows`` (float64, small batches, CPU)."""

from __future__ import annotations

import math

import pytest
import torch

import systems
from systems import SystemSpecError, get_system, list_systems

# base.reference_flow passes ``jac=`` to solve_ivp with DOP853, an explicit method that ignores it and
# warns on every call; the warning is harmless for these tests (reported separately).
pytestmark = pytest.mark.filterwarnings("ignore:The following arguments have no effect:UserWarning")

ALL = [
    "linear_spiral", "harmonic_oscillator", "van_der_pol", "duffing", "damped_pendulum",
    "lotka_volterra", "lorenz63", "double_gyre",
]
F64 = torch.float64


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


def times_for(sys) -> list[float]:
    """Times at which to test the law: one for autonomous systems, several for the double gyre."""
    return [0.0] if sys.autonomous else [0.0, 1.3, 2.5, 7.9]


# ---------------------------------------------------------------------------------------------- registry
def test_registry_lists_all_systems():
    names = list_systems()
    for name in ALL:
        assert name in names
    for name in ALL:
        sys = get_system(name)
        assert sys.name == name
        assert len(sys.id_low) == len(sys.id_high) == len(sys.ood_low) == len(sys.ood_high) == sys.dim
        # the OOD box contains the ID box, and both are non-degenerate
        assert all(ol <= il < ih <= oh for ol, il, ih, oh in
                   zip(sys.ood_low, sys.id_low, sys.id_high, sys.ood_high, strict=True))
        assert sys.horizon > 0
        # the parameters rebuild an equal system
        assert get_system(name, **sys.params()) == sys
        assert sys.closed_form == (name in ("linear_spiral", "harmonic_oscillator"))
        assert sys.autonomous == (name != "double_gyre")


def test_unknown_system_and_parameter():
    with pytest.raises(SystemSpecError, match="van_der_pool"):
        get_system("van_der_pool")
    with pytest.raises(SystemSpecError, match="nu"):
        get_system("van_der_pol", nu=1.0)


@pytest.mark.parametrize("name, params, bad", [
    ("van_der_pol", {"horizon": -1.0}, "horizon"),
    ("harmonic_oscillator", {"omega": 0.0}, "omega"),
    ("harmonic_oscillator", {"omega": float("nan")}, "omega"),
    ("van_der_pol", {"mu": -0.5}, "mu"),
    ("duffing", {"delta": -0.1}, "delta"),
    ("duffing", {"beta": float("inf")}, "beta"),
    ("damped_pendulum", {"g_over_l": 0.0}, "g_over_l"),
    ("damped_pendulum", {"gamma": -1.0}, "gamma"),
    ("lotka_volterra", {"gamma": -3.0}, "gamma"),
    ("lorenz63", {"sigma": 0.0}, "sigma"),
    ("double_gyre", {"omega": -1.0}, "omega"),
    ("double_gyre", {"epsilon": -0.1}, "epsilon"),
    ("linear_spiral", {"matrix": [[1.0, 2.0, 3.0]]}, "matrix"),
    ("linear_spiral", {"a": "fast"}, "'a'"),
])
def test_bad_parameter_values_raise(name, params, bad):
    with pytest.raises(SystemSpecError, match=bad):
        get_system(name, **params)


# ---------------------------------------------------------------------------------------------- closed forms
@pytest.mark.parametrize("name, params", [
    ("linear_spiral", {}),
    ("linear_spiral", {"matrix": ((0.3, -1.2), (0.7, -0.5))}),
    ("harmonic_oscillator", {}),
    ("harmonic_oscillator", {"omega": 2.5}),
])
def test_closed_form_matches_reference(name, params):
    sys = get_system(name, **params)
    x0 = sys.sample_id(8, gen(1))
    t = torch.linspace(0.3, 0.3 + sys.horizon, 11, dtype=F64)     # the flow starts at t[0] = 0.3
    exact = sys.flow(x0, t)
    ref = sys.reference_flow(x0, t)
    assert exact.shape == ref.shape == (11, 8, 2)
    assert torch.equal(exact[0], x0)
    assert max_err(exact, ref) <= 1e-8


def test_closed_form_batches_and_grads():
    sys = get_system("linear_spiral")
    x0 = sys.sample_id(6, gen(2)).reshape(2, 3, 2).requires_grad_(True)
    out = sys.flow(x0, [0.0, 1.0, 2.0])
    assert out.shape == (3, 2, 3, 2)
    out[-1].sum().backward()
    assert x0.grad is not None and torch.isfinite(x0.grad).all()


def test_harmonic_oscillator_energy_exact():
    sys = get_system("harmonic_oscillator", omega=1.7)
    x0 = sys.sample_id(8, gen(3))
    traj = sys.flow(x0, torch.linspace(0.0, 50.0, 201, dtype=F64))
    e = sys.energy(traj)
    assert torch.allclose(e, sys.energy(x0).expand_as(e), rtol=1e-13, atol=0)
    w = 1.7
    assert torch.allclose(e, w * w * traj[..., 0] ** 2 + traj[..., 1] ** 2, rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------- Jacobians
def fd_jacobian(sys, t, x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    cols = []
    for j in range(sys.dim):
        e = torch.zeros(sys.dim, dtype=x.dtype)
        e[j] = eps
        cols.append((sys.vector_field(t, x + e) - sys.vector_field(t, x - e)) / (2 * eps))
    return torch.stack(cols, dim=-1)


@pytest.mark.parametrize("name", ALL)
def test_jacobian_matches_finite_differences_and_autodiff(name):
    sys = get_system(name)
    x = torch.cat([sys.sample_id(8, gen(4)), sys.sample_ood(4, gen(5))])
    for t in times_for(sys):
        J = sys.jacobian(t, x)
        assert J.shape == (12, sys.dim, sys.dim)
        scale = max(1.0, float(J.abs().max()))
        assert max_err(J, fd_jacobian(sys, t, x)) <= 1e-6 * scale
        Jr = torch.func.vmap(torch.func.jacrev(lambda xi, t=t: sys.vector_field(t, xi)))(x)
        assert max_err(J, Jr) <= 1e-12 * scale


@pytest.mark.parametrize("name", ALL)
def test_law_is_batched_over_leading_dims(name):
    sys = get_system(name)
    x = sys.sample_id(12, gen(6))
    t = times_for(sys)[-1]
    f, J = sys.vector_field(t, x), sys.jacobian(t, x)
    x3 = x.reshape(2, 3, 2, sys.dim)
    assert torch.allclose(sys.vector_field(t, x3), f.reshape(2, 3, 2, sys.dim), rtol=1e-15, atol=0)
    assert torch.allclose(sys.jacobian(t, x3), J.reshape(2, 3, 2, sys.dim, sys.dim), rtol=1e-15, atol=0)
    # a single unbatched state
    assert sys.vector_field(t, x[0]).shape == (sys.dim,)
    assert sys.jacobian(t, x[0]).shape == (sys.dim, sys.dim)


def test_double_gyre_time_forms():
    sys = get_system("double_gyre")
    x = sys.sample_id(8, gen(7))
    ref = sys.vector_field(2.5, x)
    assert torch.equal(sys.vector_field(torch.tensor(2.5, dtype=F64), x), ref)
    assert torch.equal(sys.vector_field(torch.tensor(2.5, dtype=torch.float32).item(), x), ref)
    # per-sample times broadcast against x[..., 0]
    ts = torch.linspace(0.0, 10.0, 8, dtype=F64)
    per = sys.vector_field(ts, x)
    Jper = sys.jacobian(ts, x)
    for i in range(8):
        assert torch.allclose(per[i], sys.vector_field(float(ts[i]), x[i]), rtol=1e-14, atol=1e-16)
        assert torch.allclose(Jper[i], sys.jacobian(float(ts[i]), x[i]), rtol=1e-14, atol=1e-16)
    # the field depends on time; divergence free; no flux through the domain walls
    assert max_err(sys.vector_field(0.0, x), sys.vector_field(2.5, x)) > 1e-3
    J = sys.jacobian(1.7, x)
    assert float((J[..., 0, 0] + J[..., 1, 1]).abs().max()) <= 1e-14
    wall = torch.tensor([[0.0, 0.3], [2.0, 0.6], [0.7, 0.0], [1.4, 1.0]], dtype=F64)
    fw = sys.vector_field(3.3, wall)
    assert float(fw[:2, 0].abs().max()) <= 1e-15 and float(fw[2:, 1].abs().max()) <= 1e-15


# ---------------------------------------------------------------------------------------------- flow maps
@pytest.mark.parametrize("name", ALL)
def test_flow_composition(name):
    sys = get_system(name)
    x0 = sys.sample_id(8, gen(8))
    t1, t2 = 0.4 * sys.horizon, 0.6 * sys.horizon
    direct = sys.flow(x0, [0.0, t1 + t2])[-1]
    mid = sys.flow(x0, [0.0, t1])[-1]
    composed = sys.flow(mid, [t1, t1 + t2])[-1]
    assert max_err(direct, composed) <= 1e-8
    assert max_err(direct, x0) > 1e-2          # the dynamics do something over the horizon
    assert torch.isfinite(direct).all()


@pytest.mark.parametrize("name", ALL)
def test_flow_shapes_and_start(name):
    sys = get_system(name)
    x0 = sys.sample_id(6, gen(9)).reshape(2, 3, sys.dim)
    out = sys.flow(x0, [0.0, 0.5 * sys.horizon, sys.horizon])
    assert out.shape == (3, 2, 3, sys.dim) and out.dtype == F64
    assert max_err(out[0], x0) == 0.0
    # OOD states stay finite over the horizon too
    assert torch.isfinite(sys.flow(sys.sample_ood(8, gen(10)), [0.0, sys.horizon])).all()


def test_double_gyre_flow_depends_on_start_time():
    sys = get_system("double_gyre")
    x0 = sys.sample_id(8, gen(11))
    a = sys.flow(x0, [0.0, 2.0])[-1]
    b = sys.flow(x0, [3.0, 5.0])[-1]
    assert max_err(a, b) > 1e-4


def test_flow_jacobian_van_der_pol_matches_finite_differences():
    sys = get_system("van_der_pol")
    x0 = sys.sample_id(4, gen(12))
    t = [0.0, 0.5 * sys.horizon, sys.horizon]
    M = sys.flow_jacobian(x0, t)
    assert M.shape == (3, 4, 2, 2)
    assert max_err(M[0], torch.eye(2, dtype=F64).expand(4, 2, 2)) == 0.0
    eps = 1e-5
    d = sys.dim
    # all perturbed states in one batch so that they share the integrator's steps
    pert = torch.cat([x0 + s * eps * torch.eye(d, dtype=F64)[j] for j in range(d) for s in (1.0, -1.0)])
    traj = sys.reference_flow(pert, t).reshape(len(t), d, 2, 4, d)
    fd = ((traj[:, :, 0] - traj[:, :, 1]) / (2 * eps)).permute(0, 2, 3, 1)   # (K, batch, i, j)
    scale = float(M.abs().max())
    assert max_err(M, fd) <= 1e-6 * scale


def test_flow_jacobian_linear_spiral_is_matrix_exponential():
    sys = get_system("linear_spiral", a=0.3, w=2.0)
    x0 = sys.sample_id(3, gen(13))
    t = torch.linspace(0.0, sys.horizon, 6, dtype=F64)
    M = sys.flow_jacobian(x0, t)
    A = sys.matrix_tensor()
    expm = torch.linalg.matrix_exp(t[:, None, None] * A)[:, None].expand(6, 3, 2, 2)
    assert max_err(M, expm) <= 1e-8


@pytest.mark.parametrize("name", ["lorenz63", "double_gyre"])
def test_liouville_volume_change(name):
    """det ∂φ_t/∂x0 = exp(∫ tr J dt): constant contraction for Lorenz, area preservation for the gyre."""
    sys = get_system(name)
    x0 = sys.sample_id(4, gen(14))
    t = torch.linspace(0.0, sys.horizon, 5, dtype=F64)
    det = torch.linalg.det(sys.flow_jacobian(x0, t))
    if name == "lorenz63":
        expected = torch.exp(-(sys.sigma + 1.0 + sys.beta) * t)[:, None].expand_as(det)
    else:
        expected = torch.ones_like(det)
    assert torch.allclose(det, expected, rtol=1e-7, atol=0)


# ---------------------------------------------------------------------------------------------- samplers
@pytest.mark.parametrize("name", ALL)
def test_samplers(name):
    sys = get_system(name)
    n = 64
    for dtype in (torch.float64, torch.float32):
        lo, hi = torch.tensor(sys.id_low, dtype=dtype), torch.tensor(sys.id_high, dtype=dtype)
        olo, ohi = torch.tensor(sys.ood_low, dtype=dtype), torch.tensor(sys.ood_high, dtype=dtype)
        xi = sys.sample_id(n, gen(15), dtype=dtype)
        assert xi.shape == (n, sys.dim) and xi.dtype == dtype
        assert torch.equal(xi, sys.sample_id(n, gen(15), dtype=dtype))
        assert not torch.equal(xi, sys.sample_id(n, gen(16), dtype=dtype))
        assert ((xi >= lo) & (xi <= hi)).all()
        xo = sys.sample_ood(n, gen(17), dtype=dtype)
        assert xo.shape == (n, sys.dim) and xo.dtype == dtype
        assert torch.equal(xo, sys.sample_ood(n, gen(17), dtype=dtype))
        assert ((xo >= olo) & (xo <= ohi)).all()
        assert not ((xo >= lo) & (xo <= hi)).all(-1).any()
    if name == "lotka_volterra":
        assert (sys.sample_ood(256, gen(18)) > 0).all()


# ---------------------------------------------------------------------------------------------- physics
def test_lotka_volterra_conserves_invariant():
    sys = get_system("lotka_volterra")
    x0 = torch.cat([sys.sample_id(8, gen(19)), sys.sample_ood(4, gen(20))])
    traj = sys.reference_flow(x0, torch.linspace(0.0, 2 * sys.horizon, 41, dtype=F64))
    assert (traj > 0).all()
    V = sys.invariant(traj)
    a, b, d, g = sys.alpha, sys.beta, sys.delta, sys.gamma
    u, v = traj[..., 0], traj[..., 1]
    assert torch.allclose(V, d * u - g * torch.log(u) + b * v - a * torch.log(v), rtol=1e-15, atol=0)
    assert float(((V - V[0]) / V[0]).abs().max()) <= 1e-8


@pytest.mark.parametrize("name", ["damped_pendulum", "duffing"])
def test_damped_energy_decreases(name):
    sys = get_system(name)
    x0 = sys.sample_id(8, gen(21))
    traj = sys.reference_flow(x0, torch.linspace(0.0, sys.horizon, 101, dtype=F64))
    E = sys.energy(traj)
    assert float((E[1:] - E[:-1]).max()) <= 1e-10          # non-increasing (dE/dt = -γ ω² <= 0)
    assert (E[-1] < E[0] - 1e-3).all()
    # undamped: energy conserved
    undamped = get_system(name, **({"gamma": 0.0} if name == "damped_pendulum" else {"delta": 0.0}))
    E0 = undamped.energy(undamped.reference_flow(x0, torch.linspace(0.0, sys.horizon, 11, dtype=F64)))
    assert max_err(E0, E0[0].expand_as(E0)) <= 1e-9


def test_van_der_pol_limit_cycle():
    sys = get_system("van_der_pol", mu=1.0)
    x0 = sys.sample_id(8, gen(22))
    t = torch.linspace(0.0, 30.0, 3001, dtype=F64)
    traj = sys.reference_flow(x0, t)
    last = traj[t >= 30.0 - 6.7]                               # the last period (≈ 6.663 for μ = 1)
    amp = last[..., 0].abs().amax(0)
    assert ((amp > 1.9) & (amp < 2.1)).all(), amp


# ---------------------------------------------------------------------------------------------- dtypes
@pytest.mark.parametrize("name", ALL)
def test_float32_in_float32_out(name):
    sys = get_system(name)
    x = sys.sample_id(8, gen(23), dtype=torch.float32)
    t = times_for(sys)[-1]
    f = sys.vector_field(t, x)
    J = sys.jacobian(t, x)
    assert f.dtype == J.dtype == torch.float32
    x64 = x.to(F64)
    assert torch.allclose(f.to(F64), sys.vector_field(t, x64), rtol=1e-5, atol=1e-5)
    assert torch.allclose(J.to(F64), sys.jacobian(t, x64), rtol=1e-5, atol=1e-5)
    if not sys.autonomous:
        assert sys.vector_field(torch.tensor(t), x).dtype == torch.float32
    out = sys.flow(x, [0.0, sys.horizon])
    assert out.dtype == torch.float32 and out.shape == (2, 8, sys.dim)
    ref = sys.flow(x64, [0.0, sys.horizon])
    assert float(((out.to(F64) - ref).abs() / (1 + ref.abs())).max()) <= 1e-4


def test_package_exports():
    from systems import flows
    for cls in (flows.LinearSpiral, flows.HarmonicOscillator, flows.VanDerPol, flows.Duffing,
                flows.DampedPendulum, flows.LotkaVolterra, flows.Lorenz63, flows.DoubleGyre):
        assert systems.system_class(cls.name) is cls
        assert issubclass(cls, systems.TeacherFlow)
        assert cls.__doc__ and "'" not in cls.name


def test_math_constants():
    assert get_system("double_gyre").omega == pytest.approx(2 * math.pi / 10)


@pytest.mark.parametrize("name, t, x, f", [
    ("linear_spiral", 0.0, [1.0, 2.0], [-0.1 - 2.0, 1.0 - 0.2]),
    ("harmonic_oscillator", 0.0, [1.0, 2.0], [2.0, -1.0]),
    ("van_der_pol", 0.0, [2.0, 1.0], [1.0, -3.0 - 2.0]),
    ("duffing", 0.0, [2.0, 1.0], [1.0, -0.2 + 2.0 - 8.0]),
    ("damped_pendulum", 0.0, [math.pi / 2, 1.0], [1.0, -1.0 - 0.2]),
    ("lotka_volterra", 0.0, [2.0, 1.0], [3.0 - 2.0, 2.0 - 3.0]),
    ("lorenz63", 0.0, [1.0, 2.0, 3.0], [10.0, 25.0 - 2.0, 2.0 - 8.0]),
    ("double_gyre", 0.0, [0.5, 0.25], [-0.1 * math.pi * math.cos(math.pi / 4), 0.0]),
    # t = 2.5: sin(ωt) = 1, a = 0.25, b = 0.5; at x = 1: f = 0.75, ∂f/∂x = 1
    ("double_gyre", 2.5, [1.0, 0.5], [0.0, 0.1 * math.pi * math.cos(0.75 * math.pi)]),
])
def test_vector_field_spot_values(name, t, x, f):
    sys = get_system(name)
    out = sys.vector_field(t, torch.tensor(x, dtype=F64))
    assert torch.allclose(out, torch.tensor(f, dtype=F64), rtol=1e-14, atol=1e-15)


def test_double_gyre_time_gradient():
    sys = get_system("double_gyre")
    t = torch.tensor(1.1, dtype=F64, requires_grad=True)
    x = sys.sample_id(4, gen(24))
    sys.vector_field(t, x).sum().backward()
    h = 1e-6
    fd = (sys.vector_field(1.1 + h, x).sum() - sys.vector_field(1.1 - h, x).sum()) / (2 * h)
    assert abs(float(t.grad) - float(fd)) <= 1e-8

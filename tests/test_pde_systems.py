"""Tests of the method-of-lines PDE teachers in ``systems/pdes`` (float64, CPU, small grids).

Every check is against independent numbers: closed-form solutions (Fourier decay, phase shift, Cole–Hopf),
DOP853 integrations of the law, finite differences, autodiff, and observed convergence orders.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

import systems
from systems import SystemSpecError, get_system
from systems.data import make_trajectories
from systems.pdes import PDESystem, ResolutionWarning, StabilityWarning
from systems.pdes.etdrk4 import etdrk4_coefficients
from systems.pdes.operators import (
    dealias_cutoff,
    fourier_interpolate,
    spectral_derivative,
    stencil_apply,
    stencil_symbol,
)

F64 = torch.float64
PDES = ["heat", "advection", "burgers", "allen_cahn"]
# every scheme of every PDE (name, params)
VARIANTS = [
    ("heat", {}), ("heat", {"scheme": "spectral"}), ("advection", {}), ("advection", {"scheme": "upwind"}),
    ("advection", {"scheme": "upwind", "c": -0.7}), ("burgers", {}), ("allen_cahn", {}), ("kuramoto_sivashinsky", {}),
]
IDS = [f"{n}-{p.get('scheme', 'default')}{'-neg' if p.get('c', 1) < 0 else ''}" for n, p in VARIANTS]


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


def trig_series(a: torch.Tensor, b: torch.Tensor, x: torch.Tensor, length: float = 2 * math.pi) -> torch.Tensor:
    """``Σ_{k=1..K} a_k cos(2πkx/ℓ) + b_k sin(2πkx/ℓ)`` at the points ``x``."""
    k = torch.arange(1, a.shape[-1] + 1, dtype=F64)
    ph = (2 * math.pi / length) * k[:, None] * x[None, :]
    return a @ torch.cos(ph) + b @ torch.sin(ph)


def observed_orders(errors: list[float]) -> np.ndarray:
    """``log2(e_i / e_{i+1})`` for errors at steps halved each time."""
    e = np.asarray(errors)
    return np.log2(e[:-1] / e[1:])


# ---------------------------------------------------------------------------------------------- registry
def test_registry_and_parameters():
    names = systems.list_systems()
    for name in PDES:
        assert name in names
        sys = get_system(name)
        assert isinstance(sys, PDESystem) and sys.name == name
        assert sys.dim == sys.n_grid == 32
        assert get_system(name, **sys.params()) == sys
        assert len(sys.id_low) == len(sys.id_high) == len(sys.ood_low) == len(sys.ood_high) == sys.dim
        params = systems.system_parameters(name)
        assert {"horizon", "n_grid", "length", "id_k_max", "id_amplitude", "ood_k_max", "ood_amplitude"} <= set(params)
        assert "dim" not in params
    heat = get_system("heat", n_grid=32)
    assert heat.dim == 32 and heat.dx == pytest.approx(2 * math.pi / 32, rel=1e-15)
    assert torch.equal(heat.grid(), torch.arange(32, dtype=F64) * heat.dx)
    assert get_system("heat", n_grid=48).dim == 48
    with pytest.raises(SystemSpecError, match="'viscosity'"):
        get_system("heat", viscosity=0.1)
    with pytest.raises(SystemSpecError, match="valid parameters: .*n_grid"):
        get_system("burgers", grid=64)
    assert systems.pdes.Heat.__doc__ and "ν u_xx" in systems.pdes.Heat.__doc__


@pytest.mark.parametrize("name, params, bad", [
    ("heat", {"nu": 0.0}, "'nu'"),
    ("heat", {"nu": -0.1}, "'nu'"),
    ("burgers", {"nu": -0.05}, "'nu'"),
    ("allen_cahn", {"eps": 0.0}, "'eps'"),
    ("heat", {"nu": float("nan")}, "'nu'"),
    ("advection", {"c": 0.0}, "'c'"),
    ("heat", {"n_grid": 4}, "'n_grid'"),
    ("heat", {"n_grid": 32.0}, "'n_grid'"),
    ("heat", {"n_grid": True}, "'n_grid'"),
    ("burgers", {"n_grid": 33}, "'n_grid' must be even"),
    ("allen_cahn", {"n_grid": 31}, "'n_grid' must be even"),
    ("heat", {"scheme": "spectral", "n_grid": 33}, "'n_grid' must be even"),
    ("advection", {"n_grid": 33}, "'n_grid' must be even"),
    ("heat", {"scheme": "implicit"}, "'scheme'"),
    ("advection", {"scheme": "central"}, "'scheme'"),
    ("heat", {"length": -1.0}, "'length'"),
    ("heat", {"id_k_max": 0}, "'id_k_max'"),
    ("heat", {"ood_k_max": 2}, "'ood_k_max'"),                     # below id_k_max = 3
    ("heat", {"n_grid": 8, "ood_k_max": 6}, "'ood_k_max'"),        # above the highest resolved mode 3
    ("burgers", {"ood_k_max": 11}, "'ood_k_max'"),                 # above the 2/3-rule cutoff 10 on 32 points
    ("heat", {"ood_k_max": 3}, "'ood_k_max' and 'ood_amplitude'"),  # OOD would equal ID
    ("heat", {"id_amplitude": -1.0}, "'id_amplitude'"),
    ("allen_cahn", {"ood_amplitude": 0.0}, "'ood_amplitude'"),
    ("burgers", {"horizon": 0.0}, "horizon"),
])
def test_bad_parameters_raise_naming_the_parameter(name, params, bad):
    with pytest.raises(SystemSpecError, match=bad):
        get_system(name, **params)


def test_valid_edge_parameters():
    assert get_system("heat", n_grid=33).dim == 33                 # FD needs no even grid
    assert get_system("advection", scheme="upwind", n_grid=9, ood_k_max=4).dim == 9
    assert get_system("heat", ood_k_max=3, ood_amplitude=2.0).ood_k_max == 3   # OOD by amplitude only
    assert dealias_cutoff(32) == 10 and dealias_cutoff(30) == 9    # 2k_c < N - k_c: no aliasing onto kept modes


def test_burgers_grid_reynolds_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sys = get_system("burgers")                                 # Re_h = 1.5·(2π/32)/0.1 = 2.95
    assert sys.grid_reynolds() == pytest.approx(1.5 * (2 * math.pi / 32) / 0.1, rel=1e-14)
    with pytest.warns(ResolutionWarning, match="grid Reynolds number .* 29.5"):
        get_system("burgers", nu=0.01)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        get_system("burgers", nu=0.01, n_grid=256)                  # refined: Re_h = 3.7


# ---------------------------------------------------------------------------------------------- operators
def test_fd_laplacian_stencil_and_second_order():
    sys = get_system("heat", nu=0.3)
    st = sys.stencil()
    c = 0.3 / sys.dx ** 2
    assert st.offsets == (-1, 0, 1)
    assert st.coefficients == pytest.approx((c, -2 * c, c), rel=1e-15)
    # its symbol is the modified wavenumber -(4ν/dx²) sin²(k dx/2), also the heat symbol used by the flow
    k = torch.arange(17, dtype=F64)
    expected = -(4 * 0.3 / sys.dx ** 2) * torch.sin(k * sys.dx / 2) ** 2
    sym = stencil_symbol(32, 2 * math.pi, st.offsets, st.coefficients)
    assert max_err(sym.real, expected) <= 1e-12 * c and float(sym.imag.abs().max()) <= 1e-12 * c
    assert max_err(sys.symbol().real, expected) <= 1e-12 * c
    # second order in dx: u = exp(sin x), u'' = (cos²x - sin x) exp(sin x)
    errs = []
    for n in (16, 32, 64, 128):
        x = torch.arange(n, dtype=F64) * (2 * math.pi / n)
        u = torch.exp(torch.sin(x))
        h = 2 * math.pi / n
        lap = stencil_apply(u, (-1, 0, 1), (1 / h ** 2, -2 / h ** 2, 1 / h ** 2))
        errs.append(max_err(lap, (torch.cos(x) ** 2 - torch.sin(x)) * u))
    orders = observed_orders(errs)
    assert np.all(np.abs(orders - 2.0) < 0.1), orders
    # the spectral derivative is exact for trigonometric polynomials of degree < N/2
    x = torch.arange(32, dtype=F64) * (2 * math.pi / 32)
    u = torch.sin(3 * x) + 0.5 * torch.cos(7 * x)
    assert max_err(spectral_derivative(u, 2 * math.pi), 3 * torch.cos(3 * x) - 3.5 * torch.sin(7 * x)) <= 1e-12
    assert max_err(spectral_derivative(u, 2 * math.pi, 2), -9 * torch.sin(3 * x) - 24.5 * torch.cos(7 * x)) <= 1e-11
    fine = fourier_interpolate(u, 96)
    xf = torch.arange(96, dtype=F64) * (2 * math.pi / 96)
    assert max_err(fine, torch.sin(3 * xf) + 0.5 * torch.cos(7 * xf)) <= 1e-13


def test_stencils_reproduce_the_law():
    for name, params in VARIANTS:
        if name not in ("heat", "advection"):
            continue
        sys = get_system(name, **params)
        u = sys.sample_id(4, gen(1))
        st = sys.stencil()
        assert max_err(st.apply(u), sys.vector_field(0.0, u)) <= 1e-11 * max(1.0, max(map(abs, st.coefficients)))
        assert abs(sum(st.coefficients)) <= 1e-12 * max(map(abs, st.coefficients))   # annihilates constants
    upwind = get_system("advection", scheme="upwind", c=2.0)
    assert upwind.stencil().offsets == (-1, 0)
    assert upwind.stencil().coefficients == pytest.approx((2.0 / upwind.dx, -2.0 / upwind.dx), rel=1e-15)
    assert get_system("advection", scheme="upwind", c=-2.0).stencil().offsets == (0, 1)
    spec = get_system("heat", scheme="spectral").stencil()
    row = dict(zip(spec.offsets, spec.coefficients, strict=True))
    assert len(row) == 32 and all(abs(row[m] - row[-m]) <= 1e-12 for m in range(1, 16))   # symmetric


def test_etdrk4_coefficients_match_closed_forms():
    h = 0.1
    lam = torch.tensor([-50.0, -20.0, -3.0, 5.0, 0.0, 1e-9], dtype=F64).to(torch.complex128)
    c = etdrk4_coefficients(lam, h)
    z = (h * lam)[:4]
    ez = torch.exp(z)
    assert max_err(c.Q[:4], h * (torch.exp(z / 2) - 1) / z) <= 1e-14
    assert max_err(c.f1[:4], h * (-4 - z + ez * (4 - 3 * z + z ** 2)) / z ** 3) <= 1e-14
    assert max_err(c.f2[:4], h * (2 + z + ez * (z - 2)) / z ** 3) <= 1e-14
    assert max_err(c.f3[:4], h * (-4 - 3 * z - z ** 2 + ez * (4 - z)) / z ** 3) <= 1e-14
    # z -> 0 limits, where the closed forms cancel catastrophically: Q = h/2, f1 = f2 = f3 = h/6 at z = 0,
    # and (z = 1e-10) within h·|z|/6 of them
    for k, tol in ((4, 1e-16), (5, 1e-11)):
        assert abs(complex(c.Q[k]) - h / 2) <= tol
        for f in (c.f1, c.f2, c.f3):
            assert abs(complex(f[k]) - h / 6) <= tol


# ---------------------------------------------------------------------------------------------- exact flows
@pytest.mark.parametrize("name, params", [p for p in VARIANTS if p[0] in ("heat", "advection")],
                         ids=[i for i, p in zip(IDS, VARIANTS, strict=True) if p[0] in ("heat", "advection")])
def test_linear_exact_flow_matches_dop853(name, params):
    sys = get_system(name, **params)
    x0 = torch.cat([sys.sample_id(4, gen(2)), sys.sample_ood(2, gen(3))])
    t = torch.linspace(0.3, 0.3 + sys.horizon, 6, dtype=F64)      # the flow starts at t[0] = 0.3
    exact = sys.flow(x0, t)
    assert exact.shape == (6, 6, 32) and torch.equal(exact[0], x0)
    assert max_err(exact, sys.reference_flow(x0, t, rtol=1e-12, atol=1e-13)) <= 1e-8
    # the propagator is exp(t A) of the dense law matrix, and the flow Jacobian
    A = sys.jacobian(0.0, x0[0])
    M = sys.flow_jacobian(x0[:2], t)
    expm = torch.linalg.matrix_exp((t - 0.3)[:, None, None] * A)
    assert M.shape == (6, 2, 32, 32)
    assert max_err(M, expm[:, None].expand_as(M)) <= 1e-12
    assert max_err(exact, torch.einsum("kij,bj->kbi", expm, x0)) <= 1e-12


def test_heat_spectral_equals_continuous_solution_and_fd_converges_at_second_order():
    a = torch.tensor([[0.3, -0.7, 0.2, 0.5, -0.1]], dtype=F64)
    b = torch.tensor([[1.0, 0.4, -0.6, 0.1, 0.25]], dtype=F64)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=F64)
    sys = get_system("heat", scheme="spectral", nu=0.1)
    u = sys.flow(trig_series(a, b, sys.grid()), t)
    for k in range(3):
        assert max_err(u[k], sys.exact_solution(a, b, float(t[k]))) <= 1e-13
    # the FD semi-discrete solution differs from the PDE by O(dx²)
    errs = []
    for n in (16, 32, 64, 128):
        fd = get_system("heat", n_grid=n, nu=0.1)
        uT = fd.flow(trig_series(a, b, fd.grid()), [0.0, 1.0])[-1]
        errs.append(max_err(uT, fd.exact_solution(a, b, 1.0)))
    orders = observed_orders(errs)
    assert np.all(np.abs(orders - 2.0) < 0.1), (errs, orders)


def test_advection_spectral_is_the_exact_shift():
    a = torch.tensor([[0.5, -0.2, 0.3, 0.1]], dtype=F64)
    b = torch.tensor([[-0.4, 0.6, 0.05, -0.3]], dtype=F64)
    sys = get_system("advection", c=1.3)
    t = torch.tensor([0.0, 0.7, 2.0, 10.0], dtype=F64)
    u = sys.flow(trig_series(a, b, sys.grid()), t)
    for k in range(4):
        assert max_err(u[k], trig_series(a, b, sys.grid() - 1.3 * float(t[k]))) <= 1e-12
    # a shift by one period returns the initial state; negative speed shifts the other way
    period = sys.flow(u[0], [0.0, 2 * math.pi / 1.3])[-1]
    assert max_err(period, u[0]) <= 1e-12
    back = get_system("advection", c=-1.3).flow(u[0], [0.0, 0.7])[-1]
    assert max_err(back, trig_series(a, b, sys.grid() + 1.3 * 0.7)) <= 1e-12


# ---------------------------------------------------------------------------------------------- conservation
def test_heat_conserves_the_mean_and_decays_the_norm():
    for scheme in ("fd", "spectral"):
        sys = get_system("heat", scheme=scheme)
        x0 = sys.sample_id(8, gen(4)) + torch.linspace(-1.0, 1.0, 8, dtype=F64)[:, None]   # non-zero means
        traj = sys.flow(x0, torch.linspace(0.0, 5.0, 21, dtype=F64))
        assert max_err(sys.mean(traj), sys.mean(x0).expand(21, 8)) <= 1e-14
        norms = sys.l2_norm(traj - sys.mean(traj)[..., None])
        assert (norms[1:] < norms[:-1]).all()
        # the slowest mode decays at the rate of the k = 1 eigenvalue
        lam1 = 4 * sys.nu / sys.dx ** 2 * math.sin(sys.dx / 2) ** 2 if scheme == "fd" else sys.nu
        decay = sys.mode_amplitudes(traj[-1])[:, 1] / sys.mode_amplitudes(x0)[:, 1]
        assert torch.allclose(decay, torch.full_like(decay, math.exp(-5.0 * lam1)), rtol=1e-10)


def test_advection_conserves_the_l2_norm_and_upwind_dissipates():
    sys = get_system("advection")
    x0 = sys.sample_ood(8, gen(5))
    traj = sys.flow(x0, torch.linspace(0.0, 7.0, 15, dtype=F64))
    assert max_err(sys.l2_norm(traj), sys.l2_norm(x0).expand(15, 8)) <= 1e-13
    assert max_err(sys.mean(traj), sys.mean(x0).expand(15, 8)) <= 1e-14
    up = get_system("advection", scheme="upwind")
    tr = up.flow(x0, torch.linspace(0.0, 7.0, 15, dtype=F64))
    e = up.energy(tr)
    assert (e[1:] < e[:-1]).all()
    # d/dt ½‖u‖² = -(c/2) Σ (u_j - u_{j-1})² for the upwind scheme
    dudt = up.vector_field(0.0, x0)
    rate = up.dx * (x0 * dudt).sum(-1)
    assert max_err(rate, -(up.c / 2) * ((x0 - torch.roll(x0, 1, -1)) ** 2).sum(-1)) <= 1e-12


def test_burgers_conserves_the_mean_and_dissipates_energy():
    sys = get_system("burgers")
    x0 = sys.sample_id(8, gen(6)) + 0.3
    traj = sys.flow(x0, torch.linspace(0.0, sys.horizon, 9, dtype=F64))
    assert max_err(sys.mean(traj), sys.mean(x0).expand(9, 8)) <= 1e-13
    e = sys.energy(traj)
    assert (e[1:] < e[:-1]).all()
    fluct = sys.energy(traj - sys.mean(traj)[..., None])           # the mean's share ½ℓ·mean² is conserved
    assert (fluct[-1] < 0.8 * fluct[0]).all()
    # energy identity of the dealiased law: dE/dt = ⟨u, f(u)⟩ = -ν ‖D u‖² exactly (the flux is energy neutral)
    rate = sys.dx * (traj * sys.vector_field(0.0, traj)).sum(-1)
    diss = -sys.nu * sys.dx * (spectral_derivative(traj, sys.length) ** 2).sum(-1)
    assert max_err(rate, diss) <= 1e-12 * float(diss.abs().max())
    # and the energy curve follows it: E(T) - E(0) = ∫ rate dt (Simpson on 9 points, ~1e-5 accurate)
    w = torch.tensor([1, 4, 2, 4, 2, 4, 2, 4, 1], dtype=F64) * (sys.horizon / 8 / 3)
    assert max_err(e[-1] - e[0], (w[:, None] * rate).sum(0)) <= 1e-4 * float(e[0].max())


# ---------------------------------------------------------------------------------------------- ETDRK4 flows
def test_burgers_matches_cole_hopf_on_a_fine_grid():
    """u = -2ν φ_x/φ, φ = 1.1 + e^{-νt} cos x + 0.1 e^{-4νt} sin 2x: error ≤ 1e-6 at N = 128 (spectral in N)."""
    cos_c = torch.tensor([1.0, 0.0], dtype=F64)
    sin_c = torch.tensor([0.0, 0.1], dtype=F64)
    t = torch.tensor([0.0, 0.4, 0.8], dtype=F64)
    errs = {}
    for n in (64, 128):
        sys = get_system("burgers", n_grid=n, nu=0.1)
        u0 = sys.cole_hopf(1.1, cos_c, sin_c, 0.0)
        u = sys.flow(u0, t)
        exact = torch.stack([sys.cole_hopf(1.1, cos_c, sin_c, float(s)) for s in t])
        errs[n] = max_err(u, exact)
        assert float(u0.abs().max()) > 0.5 and max_err(exact[-1], exact[0]) > 0.2   # a real nonlinear test
    assert errs[128] <= 1e-6
    assert errs[128] <= 1e-3 * errs[64]                             # spectral convergence in the grid


@pytest.mark.parametrize("name", ["burgers", "allen_cahn"])
def test_etdrk4_flow_matches_dop853_and_converges_at_fourth_order(name):
    sys = get_system(name)
    x0 = torch.cat([sys.sample_id(6, gen(7)), sys.sample_ood(2, gen(8))])
    t = torch.linspace(0.0, sys.horizon, 3, dtype=F64)
    ref = sys.reference_flow(x0, t, rtol=1e-13, atol=1e-14)
    assert max_err(sys.flow(x0, t), ref) <= 1e-8                    # default substeps: ~1e-9
    T = sys.horizon
    errs = [max_err(sys.flow(x0, t, max_step=T / m), ref) for m in (20, 40, 80)]
    orders = observed_orders(errs)
    assert np.all(np.abs(orders - 4.0) < 0.25), (errs, orders)


def test_allen_cahn_grid_convergence():
    """Spectral collocation: the error against N = 128 falls by orders of magnitude per grid doubling."""
    fine = get_system("allen_cahn", n_grid=128)
    coarse = get_system("allen_cahn", n_grid=16, ood_k_max=5)
    x0 = coarse.sample_id(4, gen(9))
    t = [0.0, fine.horizon]
    uf = fine.flow(fourier_interpolate(x0, 128), t)[-1]
    errs = []
    for n in (16, 32, 64):
        sys = get_system("allen_cahn", n_grid=n, ood_k_max=5)
        un = sys.flow(fourier_interpolate(x0, n), t)[-1]
        errs.append(max_err(un, uf[..., :: 128 // n]))
    assert errs[0] > 1e-2 and errs[1] < errs[0] / 20 and errs[2] < errs[1] / 1000 and errs[2] < 1e-6, errs


def test_etdrk4_flow_composition_batching_and_dtypes():
    sys = get_system("burgers")
    x0 = sys.sample_id(6, gen(10))
    T = sys.horizon
    direct = sys.flow(x0, [0.0, T])[-1]
    mid = sys.flow(x0, [0.0, 0.35 * T])[-1]
    assert max_err(sys.flow(mid, [0.35 * T, T])[-1], direct) <= 1e-8
    assert max_err(direct, x0) > 0.1
    out = sys.flow(x0.reshape(2, 3, 32), [0.0, 0.5 * T, T])
    assert out.shape == (3, 2, 3, 32)
    assert max_err(out[-1].reshape(6, 32), direct) <= 1e-14
    out32 = sys.flow(x0.float(), [0.0, T])
    assert out32.dtype == torch.float32 and max_err(out32[-1].double(), direct) <= 1e-5
    assert sys.vector_field(0.0, x0.float()).dtype == torch.float32


def test_kuramoto_sivashinsky_etdrk4():
    sys = get_system("kuramoto_sivashinsky")
    assert sys.dim == 64 and sys.length == 22.0
    x0 = torch.cat([sys.sample_id(3, gen(30)), sys.sample_ood(1, gen(31))])
    # short horizon: against classical RK4 with h = 1e-4 (h·max|λ| = 0.69, inside RK4's stability region)
    u, h = x0.clone(), 1e-4
    for _ in range(1000):
        k1 = sys.vector_field(0.0, u)
        k2 = sys.vector_field(0.0, u + h / 2 * k1)
        k3 = sys.vector_field(0.0, u + h / 2 * k2)
        k4 = sys.vector_field(0.0, u + h * k3)
        u = u + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    assert max_err(sys.flow(x0, [0.0, 0.1])[-1], u) <= 5e-9                # default substeps: a few 1e-9
    # full horizon: default substeps within 1e-8 of a 4x finer ETDRK4 solve; order ≈ 3.5 (stiff order reduction)
    t = [0.0, sys.horizon]
    fine = sys.flow(x0, t, max_step=sys.max_step() / 4)[-1]
    assert max_err(sys.flow(x0, t)[-1], fine) <= 1e-8
    errs = [max_err(sys.flow(x0, t, max_step=sys.horizon / m)[-1], fine) for m in (40, 80, 160)]
    orders = observed_orders(errs)
    assert np.all((orders > 3.0) & (orders < 4.3)), (errs, orders)
    assert max_err(sys.mean(fine), sys.mean(x0)) <= 1e-13
    assert (sys.rms(fine) > 0.5).all()                               # the instability keeps the field alive
    # linear instability: a tiny k = 1 mode grows at λ_1 = κ² - κ⁴, κ = 2π/22
    kappa = 2 * math.pi / 22
    tiny = 1e-7 * torch.cos(kappa * sys.grid())
    grown = sys.mode_amplitudes(sys.flow(tiny, [0.0, 2.0])[-1])[1]
    assert float(grown) == pytest.approx(1e-7 * math.exp(2.0 * (kappa ** 2 - kappa ** 4)), rel=1e-6)
    with pytest.raises(SystemSpecError, match="n_steps >= 17233"):
        sys.check_stability(16)


# ---------------------------------------------------------------------------------------------- Jacobians
@pytest.mark.parametrize("name, params", VARIANTS, ids=IDS)
def test_jacobian_and_jvp(name, params):
    sys = get_system(name, **params)
    x = torch.cat([sys.sample_id(3, gen(11)), sys.sample_ood(2, gen(12))])
    d = sys.dim
    J = sys.jacobian(0.0, x)
    assert J.shape == (5, d, d)
    scale = max(1.0, float(J.abs().max()))
    Jr = torch.func.vmap(torch.func.jacrev(lambda u: sys.vector_field(0.0, u)))(x)
    assert max_err(J, Jr) <= 1e-12 * scale
    eps = 1e-6
    eye = torch.eye(d, dtype=F64)
    fd = torch.stack([(sys.vector_field(0.0, x + eps * eye[j]) - sys.vector_field(0.0, x - eps * eye[j])) / (2 * eps)
                      for j in range(d)], dim=-1)
    assert max_err(J, fd) <= 1e-7 * scale
    v = torch.randn(5, d, dtype=F64, generator=gen(13))
    assert max_err(sys.jvp(0.0, x, v), (J @ v[..., None])[..., 0]) <= 1e-12 * scale
    # batched over leading dimensions, and a single state
    assert max_err(sys.jacobian(0.0, x[:4].reshape(2, 2, d)), J[:4].reshape(2, 2, d, d)) <= 1e-14 * scale
    assert sys.vector_field(0.0, x[0]).shape == (d,) and sys.jacobian(0.0, x[0]).shape == (d, d)


@pytest.mark.parametrize("name", ["burgers", "allen_cahn"])
def test_flow_jacobian_matches_finite_differences_of_the_flow(name):
    sys = get_system(name)
    x0 = sys.sample_id(2, gen(14))
    t = [0.0, 0.5 * sys.horizon, sys.horizon]
    M = sys.flow_jacobian(x0, t)
    assert M.shape == (3, 2, 32, 32)
    assert max_err(M[0], torch.eye(32, dtype=F64).expand(2, 32, 32)) == 0.0
    eps, d = 1e-6, 32
    eye = torch.eye(d, dtype=F64)
    pert = torch.cat([x0 + s * eps * eye[j] for j in range(d) for s in (1.0, -1.0)])   # (2·d·2, d)
    traj = sys.flow(pert, t).reshape(3, d, 2, 2, d)
    fd = ((traj[:, :, 0] - traj[:, :, 1]) / (2 * eps)).permute(0, 2, 3, 1)               # (K, batch, i, j)
    assert max_err(M, fd) <= 1e-7 * float(M.abs().max())
    # the gradient of a scalar of the flow (reverse mode through ETDRK4) is a row sum of the Jacobian
    x = x0.clone().requires_grad_(True)
    sys.flow(x, t)[-1].sum().backward()
    assert max_err(x.grad, M[-1].sum(-2)) <= 1e-11


def test_flow_jacobian_equals_jacfwd_through_the_flow():
    sys = get_system("burgers")
    x0 = sys.sample_id(2, gen(15))
    t = torch.tensor([0.0, 0.05, 0.1], dtype=F64)
    M = sys.flow_jacobian(x0, t, max_step=0.025)
    jf = torch.func.vmap(torch.func.jacfwd(lambda u: sys.flow(u, t, max_step=0.025)))(x0).movedim(0, 1)
    assert max_err(M, jf) <= 1e-13


# ---------------------------------------------------------------------------------------------- samplers
@pytest.mark.parametrize("name", PDES)
def test_samplers_are_deterministic_and_cast(name):
    sys = get_system(name)
    for sample in (sys.sample_id, sys.sample_ood):
        a = sample(16, gen(16))
        assert a.shape == (16, 32) and a.dtype == F64
        assert torch.equal(a, sample(16, gen(16)))
        assert not torch.equal(a, sample(16, gen(17)))
        a32 = sample(16, gen(16), dtype=torch.float32)
        assert a32.dtype == torch.float32 and torch.equal(a32, a.float())


def test_id_sampler_bandwidth_and_amplitude():
    sys = get_system("heat", id_k_max=4, id_amplitude=1.7, ood_k_max=10, ood_amplitude=2.5)
    u = sys.sample_id(4000, gen(18))
    amps = sys.mode_amplitudes(u)
    assert float(amps[:, 0].max()) <= 1e-13                        # zero mean
    assert float(amps[:, 5:].max()) <= 1e-13                       # no modes above id_k_max
    assert bool((amps[:, 1:5] > 0).all())
    ms = (sys.rms(u) ** 2).mean()                                    # E[mean square] = amplitude²
    assert float(ms) == pytest.approx(1.7 ** 2, rel=0.05)
    per_mode = (amps[:, 1:5] ** 2).mean(0)                           # E[a_k² + b_k²] = 2 amplitude²/K, flat
    assert torch.allclose(per_mode, torch.full_like(per_mode, 2 * 1.7 ** 2 / 4), rtol=0.08)
    # pointwise u(x) ~ N(0, amplitude²)
    assert float(u.std()) == pytest.approx(1.7, rel=0.03)


def test_ood_sampler_differs_as_documented():
    sys = get_system("burgers", id_k_max=3, ood_k_max=9, ood_amplitude=0.6)
    ui, uo = sys.sample_id(4000, gen(19)), sys.sample_ood(4000, gen(20))
    ai, ao = sys.mode_amplitudes(ui), sys.mode_amplitudes(uo)
    assert float(ai[:, 4:].max()) <= 1e-13
    high = (ao[:, 4:10] ** 2).sum(-1)
    assert bool((high > 1e-8).all())                                 # every OOD sample leaves the ID span
    assert float(ao[:, 10:].max()) <= 1e-13                          # nothing above ood_k_max
    frac = float(high.mean() / (ao ** 2).sum(-1).mean())             # expected (9 - 3)/9 of the energy
    assert frac == pytest.approx(6 / 9, rel=0.05)
    assert float((sys.rms(uo) ** 2).mean()) == pytest.approx(0.6 ** 2, rel=0.05)
    assert float((sys.rms(ui) ** 2).mean()) == pytest.approx(0.5 ** 2, rel=0.05)


# ---------------------------------------------------------------------------------------------- data sets
@pytest.mark.parametrize("name", PDES)
def test_make_trajectories(name):
    sys = get_system(name)
    data = make_trajectories(sys, 4, 8, generator=gen(21), with_jacobians=True)
    assert data.states.shape == (9, 4, 32) and data.jacobians.shape == (9, 4, 32, 32)
    assert data.t[-1] == pytest.approx(sys.horizon)
    assert torch.equal(data.x0, sys.sample_id(4, gen(21)))
    assert max_err(data.states, sys.flow(data.x0, data.t)) == 0.0
    assert max_err(data.velocities[3], sys.vector_field(data.t[3], data.states[3])) == 0.0
    assert max_err(data.jacobians[5], sys.jacobian(data.t[5], data.states[5])) == 0.0
    assert data.meta["system"] == name and data.meta["params"]["n_grid"] == 32
    ood = make_trajectories(sys, 3, 4, generator=gen(22), split="ood", dtype=torch.float32)
    assert ood.states.dtype == torch.float32 and ood.states.shape == (5, 3, 32)


# ---------------------------------------------------------------------------------------------- stability
def test_check_stability_heat_euler_matches_explicit_iteration():
    sys = get_system("heat")                                          # fd: max|λ| = 4ν/dx² = 10.38
    rho = 4 * sys.nu / sys.dx ** 2
    rep = sys.check_stability(16)
    assert rep.stable and rep.bound == 2.0
    assert rep.max_abs_eig == pytest.approx(rho, rel=1e-12)
    assert rep.stiffness == pytest.approx(rho / 16, rel=1e-12)
    assert rep.min_steps == math.ceil(sys.horizon * rho / 2) == 6
    with pytest.raises(SystemSpecError, match=r"n_steps = 5 .*stiffness h·max\|λ\| = 2.07.*bound 2.*n_steps >= 6"):
        sys.check_stability(5)
    with pytest.warns(StabilityWarning, match="CFL/stiffness"):
        rep5 = sys.check_stability(5, action="warn")
    assert not rep5.stable and rep5.amplification == pytest.approx(abs(1 - sys.horizon / 5 * rho), rel=1e-12)
    # forward Euler on the law itself: the Nyquist mode (-1)^j grows at L = 5 and decays at L = 6
    u0 = torch.tensor([(-1.0) ** j for j in range(32)], dtype=F64)
    for n_steps, grows in ((5, True), (6, False)):
        u, h = u0.clone(), sys.horizon / n_steps
        for _ in range(n_steps):
            u = u + h * sys.vector_field(0.0, u)
        assert (float(u.abs().max()) > 1.0) == grows
        assert float(u.abs().max()) == pytest.approx(abs(1 - h * rho) ** n_steps, rel=1e-10)
    # RK4 has the larger real stability interval 2.785: spectral heat (ρ = 25.6) needs L ≥ 10
    spec = get_system("heat", scheme="spectral")
    assert spec.check_stability(10, method="rk4").stable
    with pytest.raises(SystemSpecError, match="rk4"):
        spec.check_stability(9, method="rk4")
    with pytest.raises(SystemSpecError, match="method"):
        spec.check_stability(16, method="backward_euler")


def test_check_stability_nonlinear_and_transport():
    for name, min_steps in (("burgers", 11), ("allen_cahn", 9)):
        sys = get_system(name)
        assert sys.check_stability(16).stable and sys.check_stability(16).stiffness < 1.5
        assert sys.check_stability(16).min_steps == min_steps
        with pytest.raises(SystemSpecError, match="stability bound"):
            sys.check_stability(min_steps - 1)
    # transport: forward Euler is never absolutely stable on a purely imaginary spectrum (max|λ| = 15)
    adv = get_system("advection")
    with pytest.raises(SystemSpecError, match="implicit or exponential"):
        adv.check_stability(16)
    rep = adv.check_stability(16, max_growth=200.0)
    assert rep.stable and rep.growth == pytest.approx((1 + (15 / 16) ** 2) ** 8, rel=1e-10)
    assert adv.check_stability(16, max_growth=2.0, action="ignore").min_steps > 16
    # upwind: CFL |c| h/dx ≤ 1
    up = get_system("advection", scheme="upwind")
    assert up.check_stability(16).min_steps == math.ceil(up.horizon / up.dx)


def test_burgers_fd_scheme_is_the_conservative_central_stencil():
    """``scheme="fd"``: f(u)_j = −(u_{j+1}² − u_{j−1}²)/(4dx) + ν(u_{j+1} − 2u_j + u_{j−1})/dx² to rounding; its
    Jacobian and JVP agree with autograd; the ETDRK4 flow agrees with a tight dopri5 solve of that field and
    conserves the mean; it is a different (local) law from the pseudo-spectral default."""
    from torchdiffeq import odeint

    b = systems.get_system("burgers", scheme="fd")
    u = b.sample_id(3, torch.Generator().manual_seed(0))
    up, um = torch.roll(u, -1, -1), torch.roll(u, 1, -1)
    ref = -(up**2 - um**2) / (4 * b.dx) + b.nu * (up - 2 * u + um) / b.dx**2
    assert torch.allclose(b.vector_field(0.0, u), ref, atol=1e-12, rtol=0)
    J = torch.autograd.functional.jacobian(lambda x: b.vector_field(0.0, x), u[0])
    assert torch.allclose(b.jacobian(0.0, u[0]), J, atol=1e-12, rtol=0)
    v = torch.randn_like(u)
    assert torch.allclose(b.jvp(0.0, u, v), torch.einsum("bij,bj->bi", b.jacobian(0.0, u), v), atol=1e-12)
    t = torch.tensor([0.0, float(b.horizon)], dtype=u.dtype)
    ref_flow = odeint(lambda _t, x: b.vector_field(_t, x), u, t, rtol=1e-11, atol=1e-12)[-1]
    out = b.flow(u, t)[-1]
    assert torch.allclose(out, ref_flow, atol=1e-7, rtol=0)
    assert torch.allclose(out.mean(-1), u.mean(-1), atol=1e-14)
    spectral = systems.get_system("burgers")
    assert float((spectral.vector_field(0.0, u) - ref).norm() / ref.norm()) > 0.01
    with pytest.raises(SystemSpecError, match="scheme"):
        systems.get_system("burgers", scheme="upwind")

"""The local polynomial field (``branch="poly"``): exact finite-difference laws, and the least-squares floor that
diagnoses which teacher laws a local student can represent at all."""

from __future__ import annotations

import pytest
import torch

import systems
from testbed.config import ConfigError
from testbed.experiments.common import make_splits
from testbed.students import build_student
from testbed.students.poly_stencil import PolynomialStencil, features, least_squares_floor, window


def test_window_is_the_periodic_neighbourhood():
    u = torch.arange(7.0).unsqueeze(0)
    w = window(u, 2)[0]
    assert w.shape == (7, 5)
    for j in range(7):
        assert w[j].tolist() == [float((j + o) % 7) for o in range(-2, 3)]
    f = features(u, 1)
    assert f.shape == (1, 7, 3 + 6 + 1)          # 3 window values, 6 products u_a u_b (a ≤ b), u_j³


def test_finite_difference_burgers_and_allen_cahn_laws_are_one_coefficient_vector():
    """g_j = −(u_{j+1}² − u_{j−1}²)/(4Δx) + ν(u_{j+1} − 2u_j + u_{j−1})/Δx² (conservative FD Burgers) and
    ε(u_{j+1} − 2u_j + u_{j−1})/Δx² + u_j − u_j³ (FD Allen–Cahn), written as PolynomialStencil coefficients,
    reproduce the hand-written stencils to rounding."""
    n, dx, nu, eps = 16, 0.3, 0.1, 0.04
    u = torch.randn(4, n, dtype=torch.float64)
    up, um = torch.roll(u, -1, -1), torch.roll(u, 1, -1)
    field = PolynomialStencil(n, kernel_size=3).double()
    # monomial order: u_{j-1}, u_j, u_{j+1}; products (−1,−1), (−1,0), (−1,1), (0,0), (0,1), (1,1); u_j³
    with torch.no_grad():
        field.coef.copy_(torch.tensor([nu / dx**2, -2 * nu / dx**2, nu / dx**2,
                                       1 / (4 * dx), 0, 0, 0, 0, -1 / (4 * dx), 0], dtype=torch.float64))
        field.bias.zero_()
    burgers = -(up**2 - um**2) / (4 * dx) + nu * (up - 2 * u + um) / dx**2
    assert torch.allclose(field(0.0, u), burgers, atol=1e-12, rtol=0)
    with torch.no_grad():
        field.coef.copy_(torch.tensor([eps / dx**2, -2 * eps / dx**2 + 1, eps / dx**2, 0, 0, 0, 0, 0, 0, -1],
                                      dtype=torch.float64))
    assert torch.allclose(field(0.0, u), eps * (up - 2 * u + um) / dx**2 + u - u**3, atol=1e-12, rtol=0)
    assert field.effective_stencil().tolist() == pytest.approx([eps / dx**2, -2 * eps / dx**2 + 1, eps / dx**2])
    # linearised at states u: ∂g_j/∂u_{j+o} averaged over j and the rows — here ε/Δx² ± 0 off-centre and
    # −2ε/Δx² + 1 − 3 mean(u²) at the centre
    c = field.effective_stencil(u)
    assert c.tolist() == pytest.approx([eps / dx**2, -2 * eps / dx**2 + 1 - 3 * float((u**2).mean()), eps / dx**2],
                                       rel=1e-10)


def test_least_squares_floor_separates_local_from_spectral_laws():
    """The heat teacher is a second-order finite-difference law (radius 1): a radius-1 polynomial field fits it
    exactly. The Burgers teacher is pseudo-spectral with 2/3-rule dealiasing (non-local): no radius-r polynomial
    field fits it, and the floor falls as the window widens — the capacity limit that kept the conv student's
    Burgers law error near 0.1 in every run."""
    heat = systems.get_system("heat")
    assert heat.params()["scheme"] == "fd"
    tr, te, _ = make_splits(heat, 32, 16, 4)
    fit, test = least_squares_floor(tr.states, tr.velocities, 3, tests=[(te.states, te.velocities)])
    assert fit < 1e-10 and test < 1e-10
    burgers = systems.get_system("burgers")
    tr, te, _ = make_splits(burgers, 64, 32, 8)
    floors = [least_squares_floor(tr.states, tr.velocities, k)[0] for k in (5, 9, 15)]
    assert floors[0] > 0.05 and floors[0] > floors[1] > floors[2]
    assert len(least_squares_floor(tr.states, tr.velocities, 5, tests=[(te.states, te.velocities)])) == 2


def test_poly_branch_in_a_residual_student():
    s = build_student("residual", dim=12, n_layers=4, horizon=1.0, branch="poly", kernel_size=5, init_scale=0.0)
    assert isinstance(s.blocks[0], PolynomialStencil)
    assert torch.equal(s.vector_field(0.0, torch.randn(2, 12)), torch.zeros(2, 12))   # init_scale 0: g ≡ 0
    assert s.blocks[0].n_features == 5 + 15 + 1
    with pytest.raises(ConfigError, match="autonomous"):
        build_student("residual", dim=12, branch="poly", time_conditioned=True)
    with pytest.raises(ConfigError, match="kernel_size"):
        build_student("residual", dim=12, branch="poly", kernel_size=4)


def test_preconditioning_whitens_the_monomials_and_keeps_the_function_class():
    """After ``precondition(states)`` the monomials the optimiser sees, ``(φ − μ)P``, have identity covariance on
    ``states`` (every eigenvalue above the floor), the field starts at 0, and any raw-basis field ``b + φ·a`` is
    the same function in the new coordinates with ``θ = P⁻¹a``, ``b' = b + μ·a`` (to rounding)."""
    heat = systems.get_system("heat")
    tr, te, _ = make_splits(heat, 24, 8, 4)
    field = PolynomialStencil(heat.dim, kernel_size=3).double()
    a = torch.randn(field.n_features, dtype=torch.float64)
    u = te.states.reshape(-1, heat.dim)
    with torch.no_grad():
        field.coef.copy_(a)
        field.bias.fill_(0.3)
    raw = field(0.0, u)
    field.precondition(tr.states, rcond=1e-12)
    assert torch.equal(field(0.0, u), torch.zeros_like(u))
    phi = features(tr.states.reshape(-1, heat.dim), 1).reshape(-1, field.n_features)
    cov = torch.cov(((phi - field.shift) @ field.transform).T)
    assert torch.allclose(cov, torch.eye(field.n_features, dtype=torch.float64), atol=1e-6)
    with torch.no_grad():
        field.coef.copy_(torch.linalg.solve(field.transform, a))
        field.bias.fill_(0.3 + float(field.shift @ a))
    assert torch.allclose(field(0.0, u), raw, atol=1e-8, rtol=1e-8)


def _adam_regression(field: PolynomialStencil, states: torch.Tensor, target: torch.Tensor, steps: int) -> float:
    """Law error ``‖g − F*‖/‖F*‖`` after ``steps`` Adam steps (lr 1e-2) on ``‖g − F*‖²/‖F*‖²``."""
    opt = torch.optim.Adam(field.parameters(), lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        loss = ((field(0.0, states) - target) ** 2).sum() / (target ** 2).sum()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return float((field(0.0, states) - target).norm() / target.norm())


def test_preconditioning_is_what_lets_a_first_order_optimiser_reach_an_exact_law():
    """Conditioning, not capacity: the finite-difference Burgers law is exactly one coefficient vector of a
    5-point polynomial field (least-squares floor ~1e-14), yet 300 Adam steps on the raw monomials (collinear on
    smooth data; coefficients of order ν/Δx² ≈ 2.6) stay at law error ≈ 0.1, while the same steps on the whitened
    monomials reach it to < 1e-6."""
    burgers = systems.get_system("burgers", scheme="fd")
    tr, _, _ = make_splits(burgers, 32, 8, 4)
    x, y = tr.states.reshape(-1, burgers.dim), tr.velocities.reshape(-1, burgers.dim)
    assert least_squares_floor(x, y, 5)[0] < 1e-10
    torch.manual_seed(0)
    raw = PolynomialStencil(burgers.dim, kernel_size=5, init_scale=0.0).double()
    whitened = PolynomialStencil(burgers.dim, kernel_size=5, init_scale=0.0).double()
    whitened.precondition(tr.states)
    err_raw, err_white = _adam_regression(raw, x, y, 300), _adam_regression(whitened, x, y, 300)
    assert err_raw > 0.05
    assert err_white < 1e-6


def test_a_checkpoint_written_before_preconditioning_loads_as_the_identity_map():
    """State dicts from before ``shift``/``transform`` existed load (as ``shift = 0``, ``transform = I``) and give the
    same field as the raw-monomial formula ``b + φ·a``."""
    field = PolynomialStencil(12, kernel_size=3).double()
    old = {k: v for k, v in field.state_dict().items() if k not in ("shift", "transform")}
    old["coef"] = torch.randn_like(old["coef"])
    fresh = PolynomialStencil(12, kernel_size=3).double()
    fresh.precondition(torch.randn(2, 5, 12, dtype=torch.float64))
    fresh.load_state_dict(old)
    assert torch.equal(fresh.transform, torch.eye(fresh.n_features, dtype=torch.float64))
    u = torch.randn(3, 12, dtype=torch.float64)
    assert torch.allclose(fresh(0.0, u), features(u, 1) @ old["coef"] + old["bias"], atol=1e-12)

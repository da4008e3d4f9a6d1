"""Endpoint-equivalent models: each construction keeps ``h_L(x0)`` to round-off while its field metrics move by a
predicted amount, and each wrapped continuous law, integrated with dopri5, lands on the same endpoint.

Reference: the damped linear spiral ``x' = A x``, ``A = [[-a, -w], [w, -a]]``, whose flow is complex
multiplication by ``e^{λt}``, ``λ = −a + iw``. So for ``h_l = φ_{τ_l}(x0)`` every chord is exactly
``‖h_{l+1} − h_l‖ = |e^{λ(τ_{l+1} − τ_l)} − 1|·e^{−aτ_l}·‖x0‖`` and the continuum limits are
``Λ = |λ|‖x0‖(1 − e^{−aT})/a`` (any clock) and ``E = |λ|²‖x0‖² ∫ τ'(t)² e^{−2aτ(t)} dt``.
"""

from __future__ import annotations

import cmath
import json
import math

import pytest
import torch

import systems
from testbed.field import field_geometry, integrate, layer_jacobians
from testbed.students import (
    Conjugated,
    Detour,
    ExactFlowStudent,
    LinearConjugacy,
    PowerWarp,
    Reparameterized,
    ResidualStudent,
    Shear,
    SineWarp,
    Translation,
)

pytestmark = pytest.mark.usefixtures("float64_default")

A_DECAY, OMEGA, T = 0.1, 1.0, 5.0
LAM = complex(-A_DECAY, OMEGA)
RTOL, ATOL = 1e-9, 1e-11             # dopri5 tolerances for the continuous-law checks


@pytest.fixture
def spiral():
    return systems.get_system("linear_spiral", a=A_DECAY, w=OMEGA, horizon=T)


@pytest.fixture
def exact(spiral):
    return ExactFlowStudent(spiral, n_layers=20)


@pytest.fixture
def x0():
    return torch.randn(12, 2)


def endpoint_gap(model, base, x0) -> float:
    """``max |h'_L − h_L| / max |h_L|``."""
    with torch.no_grad():
        ref = base(x0)
        return float((model(x0) - ref).abs().max() / ref.abs().max())


def ode_endpoint(model, x0) -> torch.Tensor:
    with torch.no_grad():
        return integrate(model.vector_field, x0, model.horizon, "dopri5", rtol=RTOL, atol=ATOL)[0][-1]


def chords(taus: list[float]) -> list[float]:
    """``|e^{λΔτ_l} − 1|·e^{−aτ_l}`` (the chord length per unit ‖x0‖) for the spiral."""
    return [abs(cmath.exp(LAM * (taus[l + 1] - taus[l])) - 1) * math.exp(-A_DECAY * taus[l])
            for l in range(len(taus) - 1)]


# ---------------------------------------------------------------------------------------------- the exact flow
def test_exact_flow_student(spiral, exact, x0):
    L = exact.n_layers
    with torch.no_grad():
        traj = exact.trajectory(x0)
    assert torch.allclose(traj, spiral.flow(x0, exact.layer_times), rtol=0, atol=1e-13)
    _, J = layer_jacobians(exact, x0)
    step = torch.linalg.matrix_exp(spiral.matrix_tensor() * (T / L))
    assert torch.allclose(J, step.expand_as(J), rtol=0, atol=1e-14)
    assert torch.equal(exact.vector_field(0.3, x0), spiral.vector_field(0.3, x0))
    g = field_geometry(exact, x0)
    r = x0.norm(dim=-1)
    c = chords([float(t) for t in exact.layer_times])
    assert torch.allclose(g.trajectory_length, r * sum(c), rtol=1e-12)
    assert torch.allclose(g.kinetic_energy, r**2 * sum(x * x for x in c) / (T / L), rtol=1e-12)
    assert g.summary()["jac_condition_max"] == pytest.approx(1.0, rel=1e-12)      # a scaled rotation
    assert g.summary()["logdet"] == pytest.approx(-2 * A_DECAY * T, rel=1e-12)   # log det e^{AT} = tr(A)·T
    assert torch.allclose(ode_endpoint(exact, x0), spiral.flow(x0, T)[-1], rtol=0, atol=1e-8)


# ---------------------------------------------------------------------------------------------- reparameterization
@pytest.mark.parametrize("tau", [PowerWarp(8.0, T), SineWarp(0.95, T)], ids=["power8", "sine0.95"])
def test_reparameterized_flow(spiral, x0, tau):
    L = 64
    exact = ExactFlowStudent(spiral, n_layers=L)
    rep = Reparameterized(exact, tau)
    assert endpoint_gap(rep, exact, x0) <= 1e-12
    taus = rep.warped_times
    assert taus[0] == 0.0 and taus[-1] == T
    with torch.no_grad():
        assert torch.allclose(rep.trajectory(x0), spiral.flow(x0, torch.tensor(taus)), rtol=0, atol=1e-13)

    g, g0 = field_geometry(rep, x0), field_geometry(exact, x0)
    r = x0.norm(dim=-1)
    c = chords(taus)
    # exact discrete formulas
    assert torch.allclose(g.trajectory_length, r * sum(c), rtol=1e-12)
    assert torch.allclose(g.kinetic_energy, r**2 * sum(x * x for x in c) / (T / L), rtol=1e-12)
    # length is clock-invariant (up to chord-vs-arc discretisation), kinetic energy is not
    length_cont = abs(LAM) * r * (1 - math.exp(-A_DECAY * T)) / A_DECAY
    assert torch.allclose(g.trajectory_length, length_cont, rtol=1e-2)
    assert torch.allclose(g0.trajectory_length, length_cont, rtol=1e-3)
    t = torch.linspace(0.0, T, 4001)
    rate = torch.tensor([tau.rate(float(s)) for s in t])
    warped = torch.tensor([tau(float(s)) for s in t])
    weight = torch.trapezoid(rate**2 * torch.exp(-2 * A_DECAY * warped), t)              # ∫ τ'² e^{−2aτ} dt
    weight0 = (1 - math.exp(-2 * A_DECAY * T)) / (2 * A_DECAY)                           # same with τ = id
    predicted = float(weight / weight0)
    ratio = float(g.kinetic_energy.mean() / g0.kinetic_energy.mean())
    assert ratio == pytest.approx(predicted, rel=3e-2)
    assert ratio > 1.4
    # endpoint quantities do not move
    s, s0 = g.summary(), g0.summary()
    assert s["logdet"] == pytest.approx(s0["logdet"], rel=1e-12)
    assert s["path_sensitivity"] == pytest.approx(s0["path_sensitivity"], rel=1e-12)
    # the warped law f'(t, y) = τ'(t) f*(y) integrates to the same endpoint
    assert torch.allclose(ode_endpoint(rep, x0), spiral.flow(x0, T)[-1], rtol=0, atol=1e-8)


# ---------------------------------------------------------------------------------------------- linear conjugation
def test_linear_conjugation(spiral, exact, x0):
    strength = 3.0
    conj = Conjugated.linear(exact, strength)
    L, psi = exact.n_layers, conj.psi
    assert isinstance(psi, LinearConjugacy)
    assert endpoint_gap(conj, exact, x0) <= 1e-12
    times = [float(t) for t in exact.layer_times]
    M = [psi.matrix(t) for t in times]
    assert torch.equal(M[0], torch.eye(2)) and torch.equal(M[-1], torch.eye(2))
    with torch.no_grad():
        traj, base_traj = conj.trajectory(x0), exact.trajectory(x0)
    for l in range(L + 1):                                               # h'_l = M(t_l) h_l
        assert torch.allclose(traj[l], base_traj[l] @ M[l].mT, rtol=0, atol=1e-11)
    _, J = layer_jacobians(conj, x0)
    step = torch.linalg.matrix_exp(spiral.matrix_tensor() * (T / L))
    for l in range(L):                                                   # J'_l = M_{l+1} J_l M_l^{-1}
        assert torch.allclose(J[l], (M[l + 1] @ step @ torch.linalg.inv(M[l])).expand_as(J[l]), rtol=1e-10)

    g, g0 = field_geometry(conj, x0), field_geometry(exact, x0)
    s, s0 = g.summary(), g0.summary()
    cond_m = float(torch.linalg.cond(psi.matrix(T / 2)))                 # e^{2·strength} for B = diag(1, −1)
    assert cond_m == pytest.approx(math.exp(2 * strength), rel=1e-12)
    # mid-path J' ≈ e^{-aΔt}[[cos, −e^{2s} sin], [e^{−2s} sin, cos]] (wΔt rotation): cond ≈ cond(M)²·sin²(wΔt)
    predicted = cond_m**2 * math.sin(OMEGA * T / L) ** 2
    assert s["jac_condition_max"] / s0["jac_condition_max"] > 100
    assert s["jac_condition_max"] == pytest.approx(predicted, rel=0.25)
    assert s["kinetic_energy"] > 10 * s0["kinetic_energy"]
    assert s["trajectory_length"] > 3 * s0["trajectory_length"]
    # the endpoint map, hence log|det ∂h_L/∂h_0| and ‖∂h_L/∂h_0‖, is untouched
    assert s["logdet"] == pytest.approx(s0["logdet"], rel=1e-10)
    assert s["path_sensitivity"] == pytest.approx(s0["path_sensitivity"], rel=1e-10)
    assert torch.allclose(ode_endpoint(conj, x0), spiral.flow(x0, T)[-1], rtol=0, atol=1e-7)


# ---------------------------------------------------------------------------------------------- detours
@pytest.mark.parametrize("amplitude", [5.0, 40.0])
def test_translation_detour(exact, x0, amplitude):
    c = torch.tensor([0.6, 0.8])
    det = Detour(exact, amplitude, direction=c)
    assert isinstance(det.psi, Translation)
    assert endpoint_gap(det, exact, x0) <= 1e-12
    g, g0 = field_geometry(det, x0), field_geometry(exact, x0)
    L = exact.n_layers                                                   # even: a(t) peaks on the grid
    a = [det.psi.a(float(t)) for t in exact.layer_times]
    assert max(a) == amplitude and a[0] == 0.0 and a[-1] == 0.0
    # |Λ' − 2·amplitude·‖c‖| ≤ Λ (triangle inequality), |√E' − √E_a| ≤ √E (Minkowski)
    assert bool(((g.trajectory_length - 2 * amplitude).abs() <= g0.trajectory_length * (1 + 1e-12)).all())
    e_a = sum((a[l + 1] - a[l]) ** 2 for l in range(L)) / (T / L)
    assert bool(((g.kinetic_energy.sqrt() - math.sqrt(e_a)).abs() <= g0.kinetic_energy.sqrt() * (1 + 1e-12)).all())
    # a translation leaves every layer Jacobian unchanged
    assert torch.allclose(g.jac_spectral, g0.jac_spectral, rtol=1e-12)
    assert torch.allclose(g.jac_condition, g0.jac_condition, rtol=1e-10)
    assert torch.allclose(ode_endpoint(det, x0), ode_endpoint(exact, x0), rtol=0, atol=1e-7)


def test_shear_detour(exact, x0):
    lengths = []
    for amplitude in (0.0, 1.0, 4.0):
        det = Detour(exact, amplitude, mode="shear")
        assert isinstance(det.psi, Shear)
        assert endpoint_gap(det, exact, x0) <= 1e-12
        lengths.append(field_geometry(det, x0, with_jacobians=False).summary()["trajectory_length"])
    assert lengths[0] == pytest.approx(field_geometry(exact, x0).summary()["trajectory_length"], rel=1e-14)
    assert lengths[0] < lengths[1] < lengths[2]
    det = Detour(exact, 4.0, mode="shear")
    g, g0 = field_geometry(det, x0).summary(), field_geometry(exact, x0).summary()
    assert g["jac_condition_max"] > 5 * g0["jac_condition_max"]
    assert g["logdet"] == pytest.approx(g0["logdet"], rel=1e-10)
    assert torch.allclose(ode_endpoint(det, x0), ode_endpoint(exact, x0), rtol=0, atol=1e-7)


@pytest.mark.parametrize("make", [
    lambda base: Conjugated.linear(base, 1.5),
    lambda base: Conjugated.linear(base, 0.8, B=torch.tensor([[0.5, 1.0], [-0.3, -0.5]])),
    lambda base: Detour(base, 2.0),
    lambda base: Detour(base, 1.5, mode="shear"),
    lambda base: Detour(base, 1.5, mode="shear", g=lambda h1: h1**2 + torch.tanh(h1)),
], ids=["linear_diag", "linear_full", "translation", "shear", "shear_custom_g"])
def test_conjugated_law_is_the_velocity_of_the_conjugated_flow(spiral, exact, x0, make):
    """``f'(t, y(t)) = d/dt ψ_t(φ_t(x0))`` (central differences of the exact conjugated solution)."""
    model = make(exact)
    eps = 1e-5
    for t in (0.0 + 1e-3, 1.3, 2.5, 4.1):
        def y(s: float) -> torch.Tensor:
            return model.psi(s, spiral.flow(x0, s)[-1])
        fd = (y(t + eps) - y(t - eps)) / (2 * eps)
        assert torch.allclose(model.vector_field(torch.tensor(t), y(t)), fd, rtol=1e-7, atol=1e-7)


def test_linear_conjugacy_fast_path_matches_matrix_exp():
    B = torch.diag(torch.tensor([0.7, -0.2, -0.5]))
    psi = LinearConjugacy(3, T, 2.0, B)
    assert psi.diagonal and not LinearConjugacy(3, T, 2.0, B + 0.1).diagonal
    for t in (0.0, 1.1, 2.5, T):
        assert torch.allclose(psi.matrix(t), torch.linalg.matrix_exp(psi.s(t) * B), rtol=1e-14, atol=0)
        assert torch.allclose(psi.matrix(t) @ psi.matrix(t, -1.0), torch.eye(3), rtol=0, atol=1e-14)


# ---------------------------------------------------------------------------------------- generic bases, composition
def test_wrappers_on_a_residual_student(x0):
    base = ResidualStudent(dim=2, n_layers=16, horizon=T, width=16, tied=False)
    for model in (Conjugated.linear(base, 2.0), Detour(base, 10.0), Detour(base, 3.0, mode="shear")):
        assert endpoint_gap(model, base, x0) <= 1e-12
        assert set(dict(model.named_parameters())) == {f"base.{k}" for k, _ in base.named_parameters()}
    g, g0 = field_geometry(Conjugated.linear(base, 2.0), x0).summary(), field_geometry(base, x0).summary()
    # near-identity layers: J' = M_{l+1}(I + Δt·∂g)M_l^{-1}, only the off-diagonal Δt·∂g part is amplified by cond(M)²
    assert g["jac_condition_max"] > 3 * g0["jac_condition_max"]
    assert g["logdet"] == pytest.approx(g0["logdet"], rel=1e-9)
    assert g["path_sensitivity"] == pytest.approx(g0["path_sensitivity"], rel=1e-9)


def test_composition_and_specs(spiral, exact, x0):
    model = Detour(Conjugated.linear(Reparameterized(exact, 3.0), 1.0), 2.0, mode="shear")
    assert endpoint_gap(model, exact, x0) <= 1e-12
    assert torch.allclose(ode_endpoint(model, x0), spiral.flow(x0, T)[-1], rtol=0, atol=1e-7)
    spec = model.spec()
    assert json.loads(json.dumps(spec)) == spec
    assert spec["kind"] == "detour" and spec["rebuildable"] is False
    assert spec["base"]["kind"] == "conjugated" and spec["base"]["base"]["kind"] == "reparameterized"
    assert spec["base"]["base"]["tau"] == {"warp": "power", "p": 3.0}
    assert spec["base"]["base"]["base"]["system"] == "linear_spiral"
    assert "psi=" in repr(model)


def test_validation(spiral, exact):
    with pytest.raises(ValueError, match="closed-form"):
        ExactFlowStudent(systems.get_system("van_der_pol"), 4)
    with pytest.raises(TypeError, match="ExactFlowStudent"):
        Reparameterized(ResidualStudent(dim=2, n_layers=4, horizon=T), 2.0)
    with pytest.raises(ValueError, match="< 1"):
        SineWarp(1.0, T)
    with pytest.raises(ValueError, match="p must be > 0"):
        PowerWarp(0.0, T)
    with pytest.raises(ValueError, match="horizon"):
        Reparameterized(exact, PowerWarp(2.0, 2 * T))
    with pytest.raises(ValueError, match="horizon"):
        Conjugated(exact, LinearConjugacy(2, 2 * T))
    with pytest.raises(ValueError, match="mode"):
        Detour(exact, 1.0, mode="spiral")
    with pytest.raises(ValueError, match="split"):
        Shear(2, T, split=2)


def test_constructions_are_students():
    import testbed.field
    import testbed.students.constructed as new
    from testbed.students import Student

    for cls in (Conjugated, Detour, ExactFlowStudent, Reparameterized):
        assert issubclass(cls, Student) and cls is getattr(new, cls.__name__)
        assert not hasattr(testbed.field, cls.__name__)  # field holds metrics only

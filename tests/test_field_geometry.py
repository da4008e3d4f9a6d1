"""Field geometry against hand-computed cases: a straight constant-velocity path, a pure rotation, a diagonal
linear map, the zero-increment convention of the turning angles, and a small ResidualStudent checked against
direct formulas and finite-difference Jacobians."""

from __future__ import annotations

import math

import pytest
import torch

from testbed.field import (
    SUMMARY_KEYS,
    field_geometry,
    geometry_from_tensors,
    jacobian_spectra,
    kinetic_energy,
    layer_jacobians,
    mean_curvature,
    path_logdet,
    path_sensitivity,
    total_curvature,
    trajectory_length,
    turning_angles,
)
from testbed.students import ResidualStudent
from testbed.students.base import Student

pytestmark = pytest.mark.usefixtures("float64_default")


class AffineStudent(Student):
    """``h_{l+1} = M h_l + b`` (same map at every layer); its law is the Euler-consistent ``((M − I)x + b)/Δt``."""

    kind = "affine_test"

    def __init__(self, M: torch.Tensor, n_layers: int, horizon: float, b: torch.Tensor | None = None) -> None:
        super().__init__()
        self.M, self.b = M, torch.zeros(M.shape[0]) if b is None else b
        self.dim, self.n_layers, self.horizon = M.shape[0], n_layers, horizon

    def step(self, l: int, h: torch.Tensor) -> torch.Tensor:
        return h @ self.M.mT + self.b

    def vector_field(self, t, x: torch.Tensor) -> torch.Tensor:
        return ((x @ self.M.mT + self.b) - x) * (self.n_layers / self.horizon)

    def spec(self) -> dict:
        return {}


def rotation(theta: float) -> torch.Tensor:
    c, s = math.cos(theta), math.sin(theta)
    return torch.tensor([[c, -s], [s, c]])


# ---------------------------------------------------------------------------------------------- straight line
def test_straight_line_constant_velocity():
    L, T, B, d = 10, 2.5, 6, 3
    x0, v = torch.randn(B, d), torch.randn(B, d)
    t = torch.linspace(0.0, T, L + 1)
    traj = x0 + t[:, None, None] * v                                     # h_l = x0 + v·t_l
    speed = v.norm(dim=-1)
    assert torch.allclose(trajectory_length(traj), speed * T, rtol=1e-13, atol=0)
    assert torch.allclose(kinetic_energy(traj, T), speed**2 * T, rtol=1e-13, atol=0)
    angles = turning_angles(traj)
    assert angles.shape == (L - 1, B)
    assert float(angles.abs().max()) <= 1e-13                             # 2·atan2(‖u−v‖, ‖u+v‖): round-off only
    assert float(total_curvature(traj).abs().max()) <= 1e-12
    assert float(mean_curvature(traj).abs().max()) <= 1e-12


def test_straight_line_student_geometry():
    L, T = 8, 2.0
    v = torch.tensor([0.6, -0.8])                                         # ‖v‖ = 1
    s = AffineStudent(torch.eye(2), L, T, b=v * (T / L))
    g = field_geometry(s, torch.randn(5, 2))
    summ = g.summary()
    assert summ["trajectory_length"] == pytest.approx(T, rel=1e-13)
    assert summ["kinetic_energy"] == pytest.approx(T, rel=1e-13)
    assert summ["total_curvature"] == pytest.approx(0.0, abs=1e-12)
    for key in ("jac_spectral_max", "jac_spectral_mean", "jac_condition_max", "jac_condition_mean",
                "path_sensitivity"):
        assert summ[key] == pytest.approx(1.0, rel=1e-13)
    assert summ["logdet"] == pytest.approx(0.0, abs=1e-14)


# ---------------------------------------------------------------------------------------------- rotation
@pytest.mark.parametrize("theta", [0.3, 1.1, 3.0])
def test_pure_rotation(theta):
    L, T, B = 12, 3.0, 7
    s = AffineStudent(rotation(theta), L, T)
    x0 = torch.randn(B, 2)
    traj = s.trajectory(x0)
    for l in range(L + 1):                                                # h_l = R(lθ) x0
        assert torch.allclose(traj[l], x0 @ rotation(l * theta).mT, atol=1e-13)
    r = x0.norm(dim=-1)
    chord = 2 * r * math.sin(theta / 2)
    g = field_geometry(s, x0)
    assert torch.allclose(g.trajectory_length, L * chord, rtol=1e-12)
    assert torch.allclose(g.kinetic_energy, L * chord**2 / (T / L), rtol=1e-12)
    assert torch.allclose(g.turning_angles, torch.full((L - 1, B), theta), atol=1e-12)
    assert torch.allclose(g.total_curvature, torch.full((B,), (L - 1) * theta), atol=1e-11)
    assert torch.allclose(g.mean_curvature, (L - 1) * theta / (L * chord), rtol=1e-12)
    assert torch.allclose(g.jac_spectral, torch.ones(L), rtol=1e-13)
    assert torch.allclose(g.jac_condition, torch.ones(L), rtol=1e-13)
    assert float(g.logdet.abs().max()) <= 1e-13
    assert g.path_sensitivity == pytest.approx(1.0, rel=1e-12)
    summ = g.summary()
    assert summ["mean_curvature"] == pytest.approx(float(((L - 1) * theta / (L * chord)).mean()), rel=1e-12)


# ---------------------------------------------------------------------------------------------- diagonal map
@pytest.mark.parametrize(("a", "b"), [(1.5, -0.4), (0.3, 0.9)])
def test_diagonal_linear_map(a, b):
    L, T, B = 5, 1.0, 4
    s = AffineStudent(torch.diag(torch.tensor([a, b])), L, T)
    x0 = torch.randn(B, 2)
    g = field_geometry(s, x0)
    assert torch.allclose(g.jac_spectral, torch.full((L,), max(abs(a), abs(b))), rtol=1e-14)
    cond = max(abs(a), abs(b)) / min(abs(a), abs(b))
    assert torch.allclose(g.jac_condition, torch.full((L,), cond), rtol=1e-13)
    assert torch.allclose(g.logdet, torch.full((B,), L * math.log(abs(a * b))), rtol=1e-13)
    assert g.path_sensitivity == pytest.approx(max(abs(a), abs(b)) ** L, rel=1e-13)
    # h_l = (a^l x1, b^l x2): direct sums
    length = torch.zeros(B)
    energy = torch.zeros(B)
    for l in range(L):
        step = torch.stack([(a ** (l + 1) - a**l) * x0[:, 0], (b ** (l + 1) - b**l) * x0[:, 1]], dim=-1)
        length += step.norm(dim=-1)
        energy += step.pow(2).sum(-1) / (T / L)
    assert torch.allclose(g.trajectory_length, length, rtol=1e-13)
    assert torch.allclose(g.kinetic_energy, energy, rtol=1e-13)
    summ = g.summary()
    assert summ["jac_condition_max"] == pytest.approx(cond, rel=1e-13)
    assert summ["jac_condition_mean"] == pytest.approx(cond, rel=1e-13)
    assert summ["logdet"] == pytest.approx(L * math.log(abs(a * b)), rel=1e-13)


def test_singular_jacobian_gives_infinite_condition_and_logdet():
    J = torch.tensor([[[[2.0, 0.0], [0.0, 0.0]]]])                        # (L=1, B=1, 2, 2)
    spectral, cond = jacobian_spectra(J)
    assert float(spectral) == 2.0 and math.isinf(float(cond))
    assert float(path_logdet(J)) == -math.inf


# ---------------------------------------------------------------------------------------------- zero increments
def test_turning_angles_zero_increment_convention():
    e = torch.tensor([1.0, 0.0])
    n = torch.tensor([0.0, 1.0])
    z = torch.zeros(2)

    def path(*pts):
        return torch.stack(pts)[:, None, :]                               # (L+1, B=1, 2)

    # a pause on a straight line costs nothing
    assert torch.equal(turning_angles(path(z, e, e, 2 * e)), torch.zeros(2, 1))
    # a pause at a corner: the π/2 turn is recorded where motion resumes (vertex h_2, entry 1)
    ang = turning_angles(path(z, e, e, e + n))
    assert float(ang[0]) == 0.0 and float(ang[1]) == pytest.approx(math.pi / 2, rel=1e-15)
    # stop and reverse still turns by π
    assert float(total_curvature(path(z, e, e, z))) == pytest.approx(math.pi, rel=1e-15)
    # a path that never moves: zero length, zero curvature, zero mean curvature (no 0/0)
    still = path(z, z, z)
    assert float(trajectory_length(still)) == 0.0
    assert float(total_curvature(still)) == 0.0 and float(mean_curvature(still)) == 0.0
    # one layer: no interior vertex
    assert turning_angles(path(z, e)).shape == (0, 1)
    # a reversal is π, a U-turn in two right angles is π too
    assert float(total_curvature(path(z, e, z))) == pytest.approx(math.pi, rel=1e-15)
    assert float(total_curvature(path(z, e, e + n, n))) == pytest.approx(math.pi, rel=1e-15)


def test_kinetic_energy_bounds_length():
    """Cauchy–Schwarz: ``E ≥ Λ²/T``, with equality exactly for constant speed."""
    T = 1.7
    traj = torch.randn(9, 5, 3).cumsum(0)
    assert bool((kinetic_energy(traj, T) >= trajectory_length(traj) ** 2 / T).all())


# ---------------------------------------------------------------------------------------------- a residual student
def test_residual_student_against_direct_formulas(fd_jacobian):
    L, T, B, d = 6, 1.5, 5, 3
    s = ResidualStudent(dim=d, n_layers=L, horizon=T, width=8, tied=False)
    x0 = torch.randn(B, d)
    with torch.no_grad():
        traj = s.trajectory(x0)
    g = field_geometry(s, x0)

    length, energy, angles = torch.zeros(B), torch.zeros(B), []
    for l in range(L):
        dl = traj[l + 1] - traj[l]
        length += dl.norm(dim=-1)
        energy += dl.pow(2).sum(-1) * L / T
        if l > 0:
            dp = traj[l] - traj[l - 1]
            cos = (dp * dl).sum(-1) / (dp.norm(dim=-1) * dl.norm(dim=-1))
            angles.append(torch.arccos(cos.clamp(-1, 1)))
    angles = torch.stack(angles)
    assert torch.allclose(g.trajectory_length, length, rtol=1e-13)
    assert torch.allclose(g.kinetic_energy, energy, rtol=1e-13)
    assert torch.allclose(g.turning_angles, angles, atol=1e-7)
    assert torch.allclose(g.mean_curvature, angles.sum(0) / length, atol=1e-7)

    fd = torch.stack([fd_jacobian(lambda h, l=l: s.step(l, h), traj[l]) for l in range(L)])   # (L, B, d, d)
    sv = torch.linalg.svdvals(fd)
    assert torch.allclose(g.jac_spectral, sv[..., 0].mean(1), rtol=1e-7)
    assert torch.allclose(g.jac_condition, (sv[..., 0] / sv[..., -1]).mean(1), rtol=1e-7)
    prod = torch.eye(d).expand(B, d, d)
    for l in range(L):
        prod = fd[l] @ prod
    assert torch.allclose(g.logdet, torch.linalg.slogdet(prod).logabsdet, rtol=1e-7, atol=1e-9)
    assert g.path_sensitivity == pytest.approx(float(torch.linalg.matrix_norm(prod, ord=2).mean()), rel=1e-7)
    assert g.path_sensitivity == pytest.approx(path_sensitivity(s, x0).total, rel=1e-13)

    summ = g.summary()
    assert tuple(summ) == SUMMARY_KEYS
    assert all(isinstance(v, float) for v in summ.values())
    assert summ["jac_spectral_max"] == pytest.approx(float(g.jac_spectral.max()), rel=0)
    assert summ["jac_condition_mean"] == pytest.approx(float(g.jac_condition.mean()), rel=0)


def test_precomputed_inputs_and_skipping_jacobians():
    s = ResidualStudent(dim=2, n_layers=4, horizon=1.0, width=8)
    x0 = torch.randn(3, 2)
    traj, jacs = layer_jacobians(s, x0)
    full = field_geometry(s, x0).summary()
    assert geometry_from_tensors(traj, s.horizon, jacs).summary() == full
    assert field_geometry(s, x0, trajectory=traj, jacobians=jacs).summary() == full
    light = field_geometry(s, x0, with_jacobians=False).summary()
    for key in ("trajectory_length", "kinetic_energy", "total_curvature", "mean_curvature"):
        assert light[key] == full[key]
    for key in ("jac_spectral_max", "jac_spectral_mean", "jac_condition_max", "jac_condition_mean", "logdet",
                "path_sensitivity"):
        assert math.isnan(light[key])
    with pytest.raises(ValueError, match="do not match"):
        geometry_from_tensors(traj, s.horizon, jacs[:-1])
    with pytest.raises(ValueError, match="L >= 1"):
        trajectory_length(traj[:1])

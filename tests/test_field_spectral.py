"""Matrix-free spectral norms (testbed.field.spectral) against the dense route (vmap(jacrev) Jacobians + SVD):
the closed-form residual-MLP Jacobian products against vmap(jacrev), per-layer and per-depth norms (tight and
default tolerances), hand cases with known singular values, the Lanczos diagnostics and the result shapes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from testbed.field import layer_jacobians, path_jacobians, path_sensitivity
from testbed.field.lanczos import lanczos_extremes
from testbed.field.spectral import layer_maps, layer_spectral_norms, path_spectral_norms
from testbed.students import NeuralODEStudent, ResidualStudent, SmoothResidualStudent, Student
from testbed.students.base import Affine, BranchLayers
from testbed.students.mlp import FieldMLP

pytestmark = pytest.mark.usefixtures("float64_default")

CONFIGS = [
    dict(hidden_layers=0),
    dict(hidden_layers=1),
    dict(hidden_layers=2, activation="gelu"),
    dict(hidden_layers=1, tied=False, time_conditioned=True, activation="softplus"),
    dict(hidden_layers=0, time_conditioned=True, activation="silu"),
    dict(hidden_layers=2, tied=False, activation="relu", branch_scaling="depth_mup", branch_multiplier=2.0),
]


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a - b) / b).abs().max())


def dense(student, x0):
    _, J = layer_jacobians(student, x0)
    P = path_jacobians(J)
    sv = torch.linalg.svdvals(J)
    return J, sv[..., 0], sv[..., 0] / sv[..., -1], torch.linalg.matrix_norm(P, ord=2)


# ---------------------------------------------------------------------------------------------- closed form
@pytest.mark.parametrize("kw", CONFIGS)
def test_structured_products_match_vmap_jacrev(kw):
    L, B, d = 5, 4, 3
    s = ResidualStudent(dim=d, n_layers=L, width=6, **kw)
    x0 = torch.randn(B, d)
    maps = layer_maps(s, x0, structured=True)
    assert maps.structured
    J, *_ = dense(s, x0)  # (L, B, d, d) by vmap(jacrev)
    v = torch.randn(L, B, d)
    assert float((maps.jvp(v) - torch.einsum("lbij,lbj->lbi", J, v)).abs().max()) <= 1e-12
    assert float((maps.vjp(v) - torch.einsum("lbji,lbj->lbi", J, v)).abs().max()) <= 1e-12
    block = torch.randn(2, 7, B, d)  # extra leading dims through a single layer
    for l in range(L):
        assert float((maps.jvp(block, l) - torch.einsum("bij,knbj->knbi", J[l], block)).abs().max()) <= 1e-12
        assert float((maps.vjp(block, l) - torch.einsum("bji,knbj->knbi", J[l], block)).abs().max()) <= 1e-12


def test_structured_smooth_student_and_fallbacks(linear_field):
    x0 = torch.randn(4, 3)
    smooth = SmoothResidualStudent(dim=3, n_layers=5, width=6, n_anchors=3)
    maps = layer_maps(smooth, x0)
    J, *_ = dense(smooth, x0)
    v = torch.randn(5, 4, 3)
    assert maps.structured
    assert float((maps.jvp(v) - torch.einsum("lbij,lbj->lbi", J, v)).abs().max()) <= 1e-12
    s = ResidualStudent(dim=3, n_layers=4)
    s.blocks[0] = linear_field(torch.randn(3, 3))
    assert not layer_maps(s, x0).structured
    with pytest.raises(ValueError, match="closed-form"):
        layer_maps(s, x0, structured=True)
    assert not layer_maps(ResidualStudent(dim=3, n_layers=4), x0, structured=False).structured


class _TwoLayerTanh(Student):
    """Not a ResidualStudent: ``h + m·W₂ tanh(W₁ h + b₁)`` per layer, untied, spelled out by ``branch_layers``."""

    kind = "two_layer_tanh"

    def __init__(self, dim: int, n_layers: int, width: int, spell_out: bool = True) -> None:
        super().__init__()
        self.dim, self.n_layers, self.horizon, self.spell_out = dim, n_layers, 1.0, spell_out
        self.w1 = nn.Parameter(torch.randn(n_layers, width, dim) / dim**0.5)
        self.b1 = nn.Parameter(torch.randn(n_layers, width))
        self.w2 = nn.Parameter(torch.randn(n_layers, dim, width) / width**0.5)

    def step(self, l, h):
        return h + 0.3 * torch.tanh(h @ self.w1[l].T + self.b1[l]) @ self.w2[l].T

    def vector_field(self, t, x):
        return self.step(min(int(float(t) * self.n_layers), self.n_layers - 1), x) - x

    def branch_layers(self, l):
        if not self.spell_out:
            return None
        return BranchLayers(0.3, (Affine(self.w1[l], self.b1[l]), torch.tanh, Affine(self.w2[l], None)))

    @property
    def layers_similar(self):
        return False

    def spec(self):
        return {}


def test_any_student_spelling_out_its_branch_gets_the_closed_form():
    """The closed form depends only on ``Student.branch_layers`` (no dispatch on student classes), and students
    without it (or subclasses that change ``step``) take the torch.func route."""
    L, B, d = 4, 3, 3
    s = _TwoLayerTanh(d, L, 5)
    x0 = torch.randn(B, d)
    maps = layer_maps(s, x0, structured=True)
    assert maps.structured and not maps.layers_similar
    J, smax, *_ = dense(s, x0)
    v = torch.randn(L, B, d)
    assert float((maps.jvp(v) - torch.einsum("lbij,lbj->lbi", J, v)).abs().max()) <= 1e-12
    assert float((maps.vjp(v) - torch.einsum("lbji,lbj->lbi", J, v)).abs().max()) <= 1e-12
    assert rel(layer_spectral_norms(s, x0, tol=1e-10).spectral, smax) <= 1e-6
    assert not layer_maps(_TwoLayerTanh(d, L, 5, spell_out=False), x0).structured

    class Shifted(ResidualStudent):
        def step(self, l, h):
            return super().step(l, h) + 0.1

    assert Shifted(dim=d, n_layers=L).branch_layers(0) is None
    assert not layer_maps(Shifted(dim=d, n_layers=L), x0).structured


# ---------------------------------------------------------------------------------------------- against dense SVD
@pytest.mark.parametrize("kw", CONFIGS[:4])
def test_layer_norms_and_condition_match_dense_svd(kw):
    s = ResidualStudent(dim=6, n_layers=7, width=10, **kw)
    x0 = torch.randn(9, 6)
    _, smax, cond, _ = dense(s, x0)
    tight = layer_spectral_norms(s, x0, tol=1e-10, condition=True)
    assert tight.spectral.shape == tight.condition.shape == (7, 9)
    assert tight.info.converged and tight.info.iterations <= tight.info.max_iter
    assert rel(tight.spectral, smax) <= 1e-6 and rel(tight.condition, cond) <= 1e-6
    default = layer_spectral_norms(s, x0)
    assert default.condition is None and rel(default.spectral, smax) <= 1e-3
    assert rel(default.mean, smax.mean(1)) <= 1e-3
    autograd = layer_spectral_norms(s, x0, tol=1e-10, structured=False)
    assert not autograd.structured and rel(autograd.spectral, smax) <= 1e-6


@pytest.mark.parametrize("student", ["tied", "smooth", "neural_ode"])
def test_two_stage_warm_start_over_layers(student):
    """Anchor layers first, the rest warm-started from their nearest anchor (students with similar layers)."""
    L = 12
    s = {"tied": lambda: ResidualStudent(dim=5, n_layers=L, width=8, hidden_layers=2),
         "smooth": lambda: SmoothResidualStudent(dim=5, n_layers=L, width=8, n_anchors=3),
         "neural_ode": lambda: NeuralODEStudent(dim=5, n_layers=L, width=8, method="euler")}[student]()
    x0 = torch.randn(6, 5)
    _, smax, cond, _ = dense(s, x0)
    tight = layer_spectral_norms(s, x0, tol=1e-10, condition=True)
    assert tight.info.problems == L * 6 and tight.info.converged
    assert rel(tight.spectral, smax) <= 1e-6 and rel(tight.condition, cond) <= 1e-6
    assert rel(layer_spectral_norms(s, x0, warm_start=None, tol=1e-10).spectral, smax) <= 1e-6
    assert rel(layer_spectral_norms(s, x0).spectral, smax) <= 1e-3
    untied = ResidualStudent(dim=5, n_layers=L, width=8, tied=False)
    assert not layer_maps(untied, x0).layers_similar and layer_maps(s, x0).layers_similar


@pytest.mark.parametrize("method", ["accumulate", "chain"])
@pytest.mark.parametrize("kw", CONFIGS[1:4])
def test_path_norms_match_path_sensitivity(method, kw):
    s = ResidualStudent(dim=5, n_layers=8, width=8, **kw)
    x0 = torch.randn(6, 5)
    ps = path_sensitivity(s, x0)
    tight = path_spectral_norms(s, x0, tol=1e-10, method=method)
    assert tight.method == method and tight.depths == list(range(9)) and tight.spectral.shape == (9, 6)
    assert rel(tight.curve, ps.spectral) <= 1e-6
    assert tight.total == pytest.approx(ps.total, rel=1e-6)
    if method == "accumulate":
        assert rel(tight.frobenius.mean(1), ps.frobenius) <= 1e-12
    else:
        assert tight.frobenius is None
    default = path_spectral_norms(s, x0, method=method)
    assert rel(default.curve, ps.spectral) <= 1e-3 and default.total == pytest.approx(ps.total, rel=1e-3)


def test_path_norms_per_input_and_depth_subsets():
    s = ResidualStudent(dim=4, n_layers=6, width=8, hidden_layers=2, tied=False)
    x0 = torch.randn(5, 4)
    *_, pnorm = dense(s, x0)
    for depths in ([0], [2, 5], [6], [0, 3, 6]):
        for method in ("accumulate", "chain"):
            out = path_spectral_norms(s, x0, depths=depths, tol=1e-10, method=method)
            assert out.depths == sorted(depths) and out.spectral.shape == (len(depths), 5)
            assert rel(out.spectral, pnorm[out.depths]) <= 1e-6
    assert path_spectral_norms(s, x0, depths=[0]).method == "accumulate"  # d = 4: chains do not pay
    with pytest.raises(ValueError, match="depth 0"):
        _ = path_spectral_norms(s, x0, depths=[3]).total
    with pytest.raises(ValueError, match="depths"):
        path_spectral_norms(s, x0, depths=[7])
    with pytest.raises(ValueError, match="method"):
        path_spectral_norms(s, x0, method="dense")
    with pytest.raises(ValueError, match="tol"):
        layer_spectral_norms(s, x0, tol=0.0)


def test_wide_state_float32_default_settings():
    """The benchmark's regime in miniature: float32 student, d = width = 32, default tolerances."""
    torch.set_default_dtype(torch.float32)
    s = ResidualStudent(dim=32, n_layers=8, width=32)
    x0 = torch.randn(64, 32)
    _, smax, _, pnorm = dense(s, x0)
    layer = layer_spectral_norms(s, x0)
    path = path_spectral_norms(s, x0)
    chain = path_spectral_norms(s, x0, depths=[0], method="chain")
    assert layer.spectral.dtype == torch.float64 and layer.info.converged and path.info.converged
    assert rel(layer.spectral, smax.double()) <= 1e-4 and rel(layer.mean, smax.double().mean(1)) <= 1e-5
    assert rel(path.spectral, pnorm.double()) <= 1e-4 and rel(path.curve, pnorm.double().mean(1)) <= 1e-5
    assert chain.method == "chain" and chain.total == pytest.approx(float(pnorm[0].double().mean()), rel=1e-5)


def test_neural_ode_falls_back_to_torch_func():
    s = NeuralODEStudent(dim=3, n_layers=3, width=6, method="rk4")
    x0 = torch.randn(4, 3)
    _, smax, _, pnorm = dense(s, x0)
    layer = layer_spectral_norms(s, x0, tol=1e-10)
    assert not layer.structured and rel(layer.spectral, smax) <= 1e-6
    assert rel(path_spectral_norms(s, x0, tol=1e-10).spectral, pnorm) <= 1e-6


# ---------------------------------------------------------------------------------------------- hand cases
def test_diagonal_linear_branch_known_singular_values(linear_field):
    L, T = 5, 1.0
    a = torch.tensor([-2.0, 0.5, 3.0, -0.25])
    s = ResidualStudent(dim=4, n_layers=L, horizon=T, tied=True)
    s.blocks[0] = linear_field(torch.diag(a))
    x0 = torch.randn(3, 4)
    sv = (1 + (T / L) * a).abs()  # J = I + hA: singular values |1 + h a_i| = (0.6, 1.1, 1.6, 0.95)
    out = layer_spectral_norms(s, x0, tol=1e-12, condition=True)
    assert not out.structured
    assert torch.allclose(out.spectral, torch.full((L, 3), float(sv.max())), rtol=1e-12, atol=0)
    assert torch.allclose(out.condition, torch.full((L, 3), float(sv.max() / sv.min())), rtol=1e-12, atol=0)
    path = path_spectral_norms(s, x0, tol=1e-12)
    expect = torch.tensor([float(sv.max()) ** (L - l) for l in range(L + 1)])
    assert torch.allclose(path.curve, expect, rtol=1e-12, atol=0)


def test_path_warm_start_survives_a_crossing(linear_field):
    """Untied diagonal layers whose path Jacobian's top singular direction jumps from e_1 to e_2 at depth 1: the
    previous depth's direction, pulled back, is then exactly orthogonal to the new top one."""
    L, T = 8, 1.0
    h = T / L
    s = ResidualStudent(dim=3, n_layers=L, horizon=T, tied=False)
    for l in range(L):
        j = torch.tensor([1.5, 1.0, 0.9]) if l >= 4 else torch.tensor([1.0, 2.0, 0.9])
        s.blocks[l] = linear_field(torch.diag((j - 1) / h))  # J_l = I + h·A_l = diag(j)
    x0 = torch.randn(4, 3)
    expect = torch.tensor([max(1.5 ** (L - max(l, 4)), 2.0 ** max(4 - l, 0)) for l in range(L + 1)])
    for kw in ({"tol": 1e-10}, {}):
        out = path_spectral_norms(s, x0, method="accumulate", **kw)
        assert torch.allclose(out.curve, expect, rtol=1e-10 if kw else 1e-3, atol=0)


def test_structured_hand_case_relu_diagonal_branch():
    """``g(h) = W relu(h)`` with ``W = diag(w)`` on positive states: ``J = I + m·diag(w)`` exactly."""
    L, w = 4, torch.tensor([0.5, 2.0, 1.0])
    s = ResidualStudent(dim=3, n_layers=L, hidden_layers=0, activation="relu", branch_scaling="standard")
    block = s.blocks[0]
    assert isinstance(block, FieldMLP) and isinstance(block.net[-1], nn.Linear)
    with torch.no_grad():
        block.net[-1].weight.copy_(torch.diag(w))
        block.net[-1].bias.zero_()
    x0 = torch.rand(5, 3) + 0.1
    out = layer_spectral_norms(s, x0, tol=1e-12, condition=True)
    assert out.structured
    assert torch.allclose(out.spectral, torch.full((L, 5), 3.0), rtol=1e-12, atol=0)
    assert torch.allclose(out.condition, torch.full((L, 5), 2.0), rtol=1e-12, atol=0)
    path = path_spectral_norms(s, x0, tol=1e-12, method="chain")
    assert torch.allclose(path.curve, torch.tensor([3.0 ** (L - l) for l in range(L + 1)]), rtol=1e-12, atol=0)


def test_identity_layers_break_down_exactly():
    s = ResidualStudent(dim=5, n_layers=3, init_scale=0.0)  # g ≡ 0: J = I, Krylov space of dimension 1
    x0 = torch.randn(4, 5)
    out = layer_spectral_norms(s, x0, condition=True)
    one = torch.ones(3, 4)
    assert torch.allclose(out.spectral, one, rtol=1e-14, atol=0) and torch.allclose(out.condition, one, rtol=1e-14)
    assert out.info.converged and out.info.iterations == 2
    assert torch.allclose(path_spectral_norms(s, x0).spectral, torch.ones(4, 4), rtol=1e-14, atol=0)


# ---------------------------------------------------------------------------------------------- the Lanczos core
def test_lanczos_extremes_on_explicit_spectra():
    d = 12
    eig = torch.stack([torch.linspace(0.1, 2.0, d), torch.logspace(-2, 1, d), torch.ones(d)])  # 3 problems
    q, _ = torch.linalg.qr(torch.randn(3, d, d))
    m = q @ torch.diag_embed(eig) @ q.mT

    def matvec(v: torch.Tensor) -> torch.Tensor:
        return (m @ v[..., None])[..., 0]

    lmax, lmin, vec, info = lanczos_extremes(matvec, torch.randn(3, d), tol=1e-12, max_iter=40, want_min=True,
                                             return_vector=True)
    assert info.converged and info.problems == 3 and info.rel_change <= 1e-12
    assert torch.allclose(lmax, eig.amax(1), rtol=1e-12, atol=0)
    assert torch.allclose(lmin, eig.amin(1), rtol=1e-10, atol=0)
    top = q[..., -1]  # eigenvector of the largest eigenvalue (problems 0 and 1)
    assert torch.allclose((vec[:2] * top[:2]).sum(-1).abs(), torch.ones(2), atol=1e-8)
    # a cap below what the tolerance needs: not converged, the cap is reported and the values are lower bounds
    lmax, _, _, info = lanczos_extremes(matvec, torch.randn(3, d), tol=1e-12, max_iter=3)
    assert not info.converged and info.iterations == 3 and info.rel_change > 1e-12
    assert bool((lmax <= eig.amax(1) * (1 + 1e-12)).all())

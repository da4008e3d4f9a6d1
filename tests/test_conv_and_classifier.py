"""Local stencil students (PDEs), the residual classifier, labelled data and the field regularisers.

Hand cases: a purely linear stencil set to the second-order Laplacian reproduces the closed form
``−(4/Δx²) sin²(kΔx/2) sin(kx)`` on a Fourier mode; a constant field has kinetic energy ``T²‖c‖²B/Σ‖x₀‖²``;
a linear stencil's Jacobian is circulant with ``‖J‖_F² = n Σ a_o²``.
"""

from __future__ import annotations

import math

import pytest
import torch

from testbed.config import ConfigError
from testbed.datasets import LabeledData, load_digits, stratified_split
from testbed.objectives import TERMS, _Cache, make_objective
from testbed.students import ResidualClassifier, ResidualStudent, build_student
from testbed.students.conv import StencilField, periodic_pad
from testbed.train import TrainConfig, load_student, train

pytestmark = pytest.mark.usefixtures("float64_default")


# ----------------------------------------------------------------------------------------------- stencil field
def test_periodic_pad_wraps():
    u = torch.arange(5.0)
    assert periodic_pad(u, 2).tolist() == [3, 4, 0, 1, 2, 3, 4, 0, 1]
    assert periodic_pad(u, 0).tolist() == u.tolist()


def test_linear_stencil_is_the_fd_laplacian_on_a_fourier_mode():
    n, length, nu = 32, 2 * math.pi, 0.3
    dx = length / n
    g = StencilField(n, width=0, kernel_size=3)
    with torch.no_grad():
        g.stencil.copy_(torch.tensor([1.0, -2.0, 1.0]) * nu / dx**2)
    x = torch.arange(n) * dx
    for k in (1, 3, 7):
        u = torch.sin(k * x)
        expected = -nu * 4 / dx**2 * math.sin(k * dx / 2) ** 2 * u
        assert torch.allclose(g(0.0, u), expected, atol=1e-12)
    assert torch.allclose(g.effective_stencil(), g.stencil.detach(), atol=1e-14)


@pytest.mark.parametrize("time_conditioned", [False, True])
def test_stencil_field_is_translation_equivariant_and_local(time_conditioned):
    n, k = 24, 5
    g = StencilField(n, width=8, hidden_layers=2, kernel_size=k, time_conditioned=time_conditioned)
    u = torch.randn(3, n)
    for shift in (1, 5, 11):
        assert torch.allclose(g(0.4, torch.roll(u, shift, -1)), torch.roll(g(0.4, u), shift, -1), atol=1e-12)
    jac = torch.func.jacrev(lambda v: g(0.4, v))(u[0]).detach()  # (n, n)
    dist = (torch.arange(n)[:, None] - torch.arange(n)[None, :]).abs()
    dist = torch.minimum(dist, n - dist)
    assert float(jac[dist > k // 2].abs().max()) == 0.0
    assert float(jac[dist <= k // 2].abs().min()) > 0.0


def test_stencil_field_batch_shapes_and_errors():
    g = StencilField(16, width=4)
    assert g(0.0, torch.randn(16)).shape == (16,)
    assert g(0.0, torch.randn(2, 3, 16)).shape == (2, 3, 16)
    with pytest.raises(ValueError, match="last dimension 16"):
        g(0.0, torch.randn(4, 15))
    with pytest.raises(ConfigError, match="kernel_size"):
        StencilField(16, kernel_size=4)
    with pytest.raises(ConfigError, match="kernel_size"):
        StencilField(4, kernel_size=7)
    with pytest.raises(ConfigError, match="width"):
        StencilField(16, width=-1)


def test_conv_residual_student_is_euler_and_round_trips(tmp_path):
    s = build_student("residual", dim=16, n_layers=6, horizon=0.5, width=4, branch="conv", kernel_size=5)
    assert s.spec()["branch"] == "conv" and s.spec()["kernel_size"] == 5
    u0 = torch.randn(4, 16)
    h = u0
    for l in range(6):
        h = h + (0.5 / 6) * s.vector_field(l * 0.5 / 6, h)
    assert torch.allclose(s(u0), h, atol=1e-13)
    from testbed.train import save_checkpoint

    save_checkpoint(tmp_path / "c.pt", s)
    s2, _ = load_student(tmp_path / "c.pt")
    assert torch.equal(s2(u0), s(u0))
    with pytest.raises(ConfigError, match="branch"):
        ResidualStudent(4, branch="fourier")


# ----------------------------------------------------------------------------------------------- regularisers
def test_kinetic_term_of_a_constant_field():
    T, L, d = 2.0, 8, 3
    s = ResidualStudent(d, n_layers=L, horizon=T, width=4, init_scale=0.0)
    c = torch.tensor([0.5, -1.0, 2.0])
    with torch.no_grad():
        s.blocks[0].net[-1].bias.copy_(c)
    x0 = torch.randn(5, d)

    class Batch:
        pass

    b = Batch()
    b.x0 = x0
    val = float(TERMS["kinetic"](_Cache(s, b)).detach())
    assert val == pytest.approx(T**2 * float(c @ c) * 5 / float(x0.pow(2).sum()), rel=1e-12)


def test_jacobian_norm_term_of_a_linear_stencil():
    n, T, L = 12, 1.5, 4
    s = ResidualStudent(n, n_layers=L, horizon=T, width=0, branch="conv", kernel_size=3)
    a = torch.tensor([0.3, -1.1, 0.7])
    with torch.no_grad():
        s.blocks[0].stencil.copy_(a)

    class Batch:
        pass

    b = Batch()
    b.x0 = torch.randn(3, n)
    val = float(TERMS["jacobian_norm"](_Cache(s, b)).detach())
    assert val == pytest.approx(T**2 * float(a @ a), rel=1e-12)


# ----------------------------------------------------------------------------------------------- classification
def _toy_labeled(n=120, d=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    centres = torch.randn(3, d, generator=g) * 3
    x = centres[y] + 0.3 * torch.randn(n, d, generator=g)
    return LabeledData(x, y, 3)


def test_labeled_data_validation_and_subset():
    data = _toy_labeled()
    sub = data.subset(torch.tensor([0, 5, 7]))
    assert sub.n == 3 and torch.equal(sub.y, data.y[[0, 5, 7]])
    assert data.to(dtype=torch.float32).x.dtype == torch.float32 and data.to(dtype=torch.float32).y.dtype == torch.long
    with pytest.raises(ValueError, match="labels must lie"):
        LabeledData(torch.zeros(2, 3), torch.tensor([0, 3]), 3)
    with pytest.raises(ValueError, match="rows"):
        LabeledData(torch.zeros(2, 3), torch.tensor([0]), 3)
    with pytest.raises(ValueError, match="NaN"):
        LabeledData(torch.full((1, 3), float("nan")), torch.tensor([0]), 3)


def test_stratified_split_keeps_class_proportions():
    import numpy as np

    y = np.repeat(np.arange(4), [40, 20, 20, 20])
    tr, te = stratified_split(y, 0.25, seed=3)
    assert len(set(tr) & set(te)) == 0 and len(tr) + len(te) == 100
    assert np.bincount(y[te]).tolist() == [10, 5, 5, 5]
    tr2, te2 = stratified_split(y, 0.25, seed=3)
    assert np.array_equal(te, te2)


def test_load_digits_offline():
    tr, te = load_digits(test_fraction=0.2, seed=1)
    assert tr.n + te.n == 1797 and tr.input_dim == 64 and tr.n_classes == 10
    assert float(tr.x.min()) == 0.0 and float(tr.x.max()) == 1.0
    assert te.n == pytest.approx(0.2 * 1797, abs=10)


def test_cross_entropy_term_and_classifier_training(tmp_path):
    data = _toy_labeled()
    torch.manual_seed(0)
    m = build_student("residual_classifier", input_dim=6, n_classes=3, dim=4, n_layers=4, width=8)
    assert isinstance(m, ResidualClassifier)
    loss, terms = make_objective("classify")(m, data)
    assert float(loss.detach()) == pytest.approx(float(torch.nn.functional.cross_entropy(m(data.x), data.y).detach()),
                                                 rel=1e-12)
    before = m.accuracy(data.x, data.y)
    res = train(m, "cross_entropy=1,kinetic=0.01", data,
                TrainConfig(steps=150, batch_size=32, lr=1e-2, progress=False), tmp_path)
    assert m.accuracy(data.x, data.y) == 1.0 > before
    m2, _ = load_student(tmp_path)
    assert torch.allclose(m2(data.x), m(data.x))
    assert set(res.history[-1]["terms"]) == {"cross_entropy", "kinetic"}


def test_train_stop_when_stops_at_the_first_true_check():
    data = _toy_labeled()
    m = build_student("residual_classifier", input_dim=6, n_classes=3, dim=4, n_layers=4, width=8)
    calls = []

    def stop(step, model):
        calls.append(step)
        return model.accuracy(data.x, data.y) >= 0.9

    res = train(m, "classify", data, TrainConfig(steps=400, batch_size=32, lr=1e-2, log_every=10, progress=False),
                stop_when=stop)
    assert res.steps == calls[-1] < 400
    assert m.accuracy(data.x, data.y) >= 0.9
    assert calls == list(range(10, res.steps + 1, 10))

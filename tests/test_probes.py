"""Random-probe Jacobian estimators: exact when averaged over every sign vector (value and gradient), unbiased with
the stated variance under Monte Carlo, and wired into the ``jacobian`` / ``jacobian_norm`` objective terms."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from systems.data import TrajectoryData
from testbed.config import ConfigError
from testbed.field.probes import frobenius_sq_estimate, probe_vjps, rademacher
from testbed.objectives import TERMS, Objective, _Cache, make_objective
from testbed.students import ResidualStudent

pytestmark = pytest.mark.usefixtures("float64_default")


def small_map(d: int = 3, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, 7), nn.Tanh(), nn.Linear(7, d))


def all_signs(d: int, batch: int) -> torch.Tensor:
    """Every sign vector in {±1}^d, the same for each row: (2^d, batch, d)."""
    s = torch.tensor(list(itertools.product((-1.0, 1.0), repeat=d)))
    return s[:, None, :].expand(len(s), batch, d).clone()


def dense(f, x):
    return torch.func.vmap(torch.func.jacrev(f))(x)


def test_average_over_all_sign_vectors_is_the_dense_value_and_gradient():
    f = small_map()
    x = torch.randn(5, 3)
    target = torch.randn(5, 3, 3)
    exact = (dense(f, x) - target).pow(2).sum()
    est = frobenius_sq_estimate(f, x, target, probes=all_signs(3, 5))
    assert float(est.detach()) == pytest.approx(float(exact.detach()), rel=1e-12)
    params = [p for name, p in f.named_parameters() if name != "2.bias"]   # the output bias leaves ∂f/∂x alone
    g_exact = torch.autograd.grad(exact, params)
    g_est = torch.autograd.grad(est, params)
    for a, b in zip(g_exact, g_est, strict=True):
        assert float((a - b).abs().max()) <= 1e-12 * max(1.0, float(a.abs().max()))
    # no target: the squared Frobenius norm itself
    assert float(frobenius_sq_estimate(f, x, probes=all_signs(3, 5)).detach()) == pytest.approx(
        float(dense(f, x).pow(2).sum().detach()), rel=1e-12)


def test_single_probe_is_one_vjp_of_the_dense_jacobian():
    f = small_map(4, seed=1)
    x = torch.randn(6, 4)
    u = rademacher((1, 6, 4), like=x)
    g, used = probe_vjps(f, x, u)
    assert torch.equal(used, u)
    expected = torch.einsum("bm,bmd->bd", u[0], dense(f, x))
    assert float((g[0] - expected).detach().abs().max()) <= 1e-13


def test_monte_carlo_mean_and_variance_match_closed_forms():
    """``‖uᵀM‖²`` has mean ‖M‖_F² and variance 2(‖MMᵀ‖_F² − Σ_i (MMᵀ)_ii²) for Rademacher u."""
    torch.manual_seed(3)
    M = torch.randn(4, 4)
    f = nn.Linear(4, 4, bias=False)
    with torch.no_grad():
        f.weight.copy_(M)
    n = 20000
    g, _ = probe_vjps(f, torch.zeros(1, 4), n)          # (n, 1, 4) = uᵀ M
    vals = g.detach().pow(2).sum(dim=(1, 2))
    mmt = M @ M.T
    mean, var = float(M.pow(2).sum()), float(2 * (mmt.pow(2).sum() - mmt.diagonal().pow(2).sum()))
    se = math.sqrt(var / n)
    assert abs(float(vals.mean()) - mean) <= 5 * se
    assert float(vals.var(unbiased=True)) == pytest.approx(var, rel=0.1)


def test_probes_are_drawn_from_the_given_generator():
    x = torch.zeros(2, 3)
    a = rademacher((4, 2, 3), like=x, generator=torch.Generator().manual_seed(7))
    b = rademacher((4, 2, 3), like=x, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b) and set(a.unique().tolist()) == {-1.0, 1.0}


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_bad_probe_counts_are_refused(bad):
    with pytest.raises(ValueError, match="probes"):
        probe_vjps(small_map(), torch.randn(2, 3), bad)
    with pytest.raises(ValueError, match="do not fit"):
        probe_vjps(small_map(), torch.randn(2, 3), torch.ones(1, 2, 4))


# ------------------------------------------------------------------------------------------- objective terms
def student_and_data(seed: int = 0):
    torch.manual_seed(seed)
    s = ResidualStudent(dim=3, n_layers=4, horizon=1.0, width=8, tied=False, time_conditioned=True)
    t = torch.linspace(0.0, 1.0, 3)
    states = torch.randn(3, 5, 3)
    jac = torch.randn(3, 5, 3, 3)
    return s, TrajectoryData(t, states, torch.randn(3, 5, 3), jac)


@pytest.mark.parametrize("term", ["jacobian", "jacobian_norm"])
def test_probe_terms_are_unbiased_for_the_dense_terms(term):
    s, data = student_and_data()
    exact = float(TERMS[term](_Cache(s, data)).detach())
    gen = torch.Generator().manual_seed(0)
    draws = torch.tensor([float(TERMS[term](_Cache(s, data, {term: 1}, gen)).detach()) for _ in range(400)])
    se = float(draws.std(unbiased=True)) / math.sqrt(len(draws))
    assert se > 0
    assert abs(float(draws.mean()) - exact) <= 4.5 * se
    many = float(TERMS[term](_Cache(s, data, {term: 400}, gen)).detach())   # 400 probes in one call: a tighter estimate
    assert many == pytest.approx(exact, rel=0.1)


def test_objective_with_probes_is_reproducible_and_validated():
    s, data = student_and_data()
    obj = make_objective("field+jacobian", probes={"jacobian": 2, "jacobian_norm": 3})
    assert dict(obj.probes) == {"jacobian": 2}          # terms absent from the objective are dropped
    a, _ = obj(s, data, generator=torch.Generator().manual_seed(1))
    b, _ = obj(s, data, generator=torch.Generator().manual_seed(1))
    c, _ = obj(s, data, generator=torch.Generator().manual_seed(2))
    assert float(a.detach()) == float(b.detach()) and float(a.detach()) != float(c.detach())
    assert make_objective("field", probes={"jacobian": 2}).probes == {}
    with pytest.raises(ConfigError, match="no probe estimator"):
        Objective({"vector_field": 1.0}, probes={"vector_field": 1})
    with pytest.raises(ConfigError, match="not in the objective"):
        Objective({"endpoint": 1.0}, probes={"jacobian": 1})
    with pytest.raises(ConfigError, match="integer ≥ 0"):
        Objective({"jacobian": 1.0}, probes={"jacobian": -1})
    with pytest.raises(ConfigError, match="no probe estimator"):
        make_objective("field", probes={"trajectory": 1})

"""The SINDy baseline: its polynomial library against PySINDy's, exact recovery of polynomial laws from field
samples, the RK4 step against its closed form, second-order finite differences, and the threshold chosen on the
validation split."""

from __future__ import annotations

import math

import pytest
import torch

import systems
from testbed.experiments.common import make_splits, split_validation
from testbed.field.metrics import law_error

pytest.importorskip("pysindy")
from testbed.students.sindy import (  # noqa: E402
    SindyStudent,
    features,
    finite_difference_velocities,
    fit_coefficients,
    fit_sindy,
    monomial_powers,
    validation_error,
)


def test_library_size_and_order():
    p = monomial_powers(3, 3)
    assert len(p) == math.comb(3 + 3, 3) and p[0].sum() == 0 and list(p[1]) == [1, 0, 0]
    x = torch.tensor([[2.0, 3.0, 5.0]], dtype=torch.float64)
    th = features(x, torch.as_tensor(p))
    assert float(th[0, 0]) == 1.0 and float(th[0, -1]) == 125.0          # last: z³


def test_field_fit_recovers_lotka_volterra_exactly():
    """dx/dt = αx − βxy, dy/dt = δxy − γy: the fitted coefficients (our monomial order) equal the law's."""
    s = systems.get_system("lotka_volterra")
    train, test_id, test_ood = make_splits(s, 64, 16, 4)
    fit_part, val = split_validation(train, 0.25)
    fitted = fit_sindy(fit_part, val, variant="field", n_layers=8, horizon=float(s.horizon), degree=2)
    assert law_error(fitted.student.vector_field, test_id) < 1e-10
    assert law_error(fitted.student.vector_field, test_ood) < 1e-10
    assert fitted.student.n_terms == 4


def test_coefficients_reorder_pysindys_library_into_ours():
    torch.manual_seed(0)
    x = torch.randn(200, 2, dtype=torch.float64)
    coef = torch.zeros(len(monomial_powers(2, 3)), 2, dtype=torch.float64)
    coef[4, 0], coef[8, 1], coef[2, 1] = 1.5, -0.7, 0.3                   # x0·x1, x0·x1² (order check), x1
    xdot = features(x, torch.as_tensor(monomial_powers(2, 3))) @ coef
    got = fit_coefficients(x.numpy(), xdot.numpy(), 3, 0.0)
    assert float((torch.from_numpy(got) - coef).abs().max()) < 1e-9


def test_rk4_step_is_the_fourth_order_taylor_map_for_a_linear_law():
    A = torch.tensor([[-0.3, 1.0], [-1.0, -0.3]], dtype=torch.float64)
    coef = torch.zeros(len(monomial_powers(2, 1)), 2, dtype=torch.float64)
    coef[1:] = A.T                                                        # f(x) = x Aᵀ
    s = SindyStudent(2, n_layers=4, horizon=1.0, degree=1, coefficients=coef)
    x = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    hA = 0.25 * A
    eye = torch.eye(2, dtype=torch.float64)
    M = eye + hA + hA @ hA / 2 + hA @ hA @ hA / 6 + hA @ hA @ hA @ hA / 24
    assert torch.allclose(s.step(0, x), x @ M.T, atol=1e-15)


def test_finite_differences_are_exact_for_quadratic_paths_on_nonuniform_grids():
    t = torch.tensor([0.0, 0.1, 0.3, 0.6, 1.0], dtype=torch.float64)
    states = torch.stack([t**2, 3 * t - t**2], -1)[:, None, :]            # (K+1, 1, 2)
    v = finite_difference_velocities(t, states)
    assert torch.allclose(v[:, 0], torch.stack([2 * t, 3 - 2 * t], -1), atol=1e-12)


def test_states_variant_sees_states_only_and_is_scored_on_validation_roll_outs():
    s = systems.get_system("van_der_pol")
    train, test_id, _ = make_splits(s, 64, 16, 8)
    fit_part, val = split_validation(train, 0.25)
    # no field samples anywhere: neither the fit nor the threshold choice may read them
    corrupted = fit_part.replace(velocities=torch.zeros_like(fit_part.velocities))
    corrupted_val = val.replace(velocities=torch.full_like(val.velocities, 7.0))
    a = fit_sindy(fit_part, val, variant="states", n_layers=8, horizon=float(s.horizon), degree=3)
    b = fit_sindy(corrupted, corrupted_val, variant="states", n_layers=8, horizon=float(s.horizon), degree=3)
    assert torch.equal(a.student.coef, b.student.coef) and a.validation == b.validation
    assert validation_error(a.student, val) == pytest.approx(a.validation[a.student.threshold], rel=1e-12)
    assert 1e-6 < law_error(a.student.vector_field, test_id) < 0.5      # FD on 8 intervals: approximate, not exact

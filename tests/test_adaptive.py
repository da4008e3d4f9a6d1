"""Per-sample adaptive Dormand–Prince: each row agrees with a tight SciPy DOP853 solve, is bit-for-bit the row solved
alone, takes its own number of steps, handles time-dependent fields and several output times, and stops on
divergence; ``solver_consistency(per_sample=True)`` uses it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

from testbed.errors import DivergenceError
from testbed.field.adaptive import dopri5_per_sample
from testbed.field.consistency import is_autonomous, solver_consistency

pytestmark = pytest.mark.usefixtures("float64_default")


def oscillators(t, x):
    """Damped oscillators whose frequency a is carried as a third, constant coordinate (per-row stiffness)."""
    a = x[:, 2:3]
    return torch.cat([x[:, 1:2], -a**2 * x[:, 0:1] - 0.1 * x[:, 1:2], torch.zeros_like(a)], 1)


def rows(n: int = 24, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.cat([torch.randn(n, 2, generator=g), torch.logspace(0, 1.5, n)[:, None]], 1)


def scipy_end(f, x0: torch.Tensor, times) -> np.ndarray:
    r = solve_ivp(lambda t, y: f(torch.tensor(t), torch.from_numpy(y)[None])[0].numpy(), (times[0], times[-1]),
                  x0.numpy(), method="DOP853", t_eval=times, rtol=1e-12, atol=1e-14)
    return r.y.T


def test_every_row_matches_dop853_at_every_output_time():
    x0 = rows()
    times = torch.tensor([0.0, 0.3, 0.55, 1.0])
    sol, nfev = dopri5_per_sample(oscillators, x0, times, rtol=1e-8, atol=1e-10, autonomous=True)
    assert sol.shape == (4, 24, 3) and torch.equal(sol[0], x0)
    for i in range(0, 24, 5):
        ref = scipy_end(oscillators, x0[i], times.numpy())
        assert np.abs(sol[:, i].numpy() - ref).max() <= 1e-6 * max(1.0, np.abs(ref).max())
    # stiffer rows take more steps: the evaluation count grows with the carried frequency
    assert int(nfev[-1]) > 5 * int(nfev[0]) and bool((nfev[1:] >= nfev[:-1] - 12).all())


def test_a_row_is_the_row_solved_alone():
    x0 = rows()
    times = torch.tensor([0.0, 1.0])
    sol, nfev = dopri5_per_sample(oscillators, x0, times, autonomous=True)
    for i in (0, 7, 23):
        alone, n1 = dopri5_per_sample(oscillators, x0[i:i + 1], times, autonomous=True)
        assert torch.equal(alone[-1, 0], sol[-1, i]) and int(n1[0]) == int(nfev[i])


def test_time_dependent_fields_get_each_rows_own_time():
    def forced(t, x):
        return -x + torch.sin(3.0 * t) * torch.ones_like(x)

    x0 = torch.tensor([[0.0], [1.0], [50.0]])                 # different scales → different step sequences
    sol, nfev = dopri5_per_sample(forced, x0, torch.tensor([0.0, 2.0]), rtol=1e-9, atol=1e-11)
    for i in range(3):
        ref = scipy_end(forced, x0[i], np.array([0.0, 2.0]))[-1]
        assert abs(float(sol[-1, i, 0]) - ref[0]) <= 1e-7 * max(1.0, abs(ref[0]))
    assert len(set(nfev.tolist())) > 1


def test_an_untied_students_rows_each_use_their_own_layer():
    """An untied student's field picks its block by t: per-row times must reach it (checked against solving each
    row alone, where there is only one time)."""
    from testbed.students import ResidualStudent

    torch.manual_seed(0)
    s = ResidualStudent(dim=2, n_layers=4, width=8, tied=False, init_scale=1.0)
    x0 = torch.randn(6, 2) * torch.logspace(-1, 1, 6)[:, None]
    times = torch.tensor([0.0, 1.0])
    sol, _ = dopri5_per_sample(s.vector_field, x0, times, autonomous=is_autonomous(s.vector_field))
    for i in range(6):
        alone, _ = dopri5_per_sample(s.vector_field, x0[i:i + 1], times)
        assert torch.allclose(sol[-1, i], alone[-1, 0], atol=1e-12)


def test_divergence_is_reported_not_hung():
    with pytest.raises(DivergenceError):
        dopri5_per_sample(lambda t, x: x**2, torch.tensor([[0.5], [5.0]]), torch.tensor([0.0, 1.0]),
                          autonomous=True, max_nfev=20_000)


def test_solver_consistency_per_sample_uses_the_batched_solver():
    x0 = rows(16)[:, :3]
    batched = solver_consistency(oscillators, x0, 1.0, 16, step_counts=[16], rtol=1e-9, atol=1e-11)
    per = solver_consistency(oscillators, x0, 1.0, 16, step_counts=[16], rtol=1e-9, atol=1e-11, per_sample=True)
    b = next(r for r in batched.rows if r["method"] == "dopri5")
    p = next(r for r in per.rows if r["method"] == "dopri5")
    assert abs(b["endpoint_change"] - p["endpoint_change"]) < 1e-7
    assert p["nfev_min"] < p["nfev_max"] and p["nfev"] >= 16 * p["nfev_min"]


def test_autonomy_is_read_from_the_fields_owner():
    import systems
    from testbed.students import ResidualStudent

    assert is_autonomous(systems.get_system("van_der_pol").vector_field)
    assert not is_autonomous(systems.get_system("double_gyre").vector_field)
    assert is_autonomous(ResidualStudent(dim=2, n_layers=4).vector_field)
    assert not is_autonomous(ResidualStudent(dim=2, n_layers=4, time_conditioned=True).vector_field)
    assert not is_autonomous(ResidualStudent(dim=2, n_layers=4, tied=False).vector_field)   # one block per layer
    assert not is_autonomous(oscillators)


def test_non_finite_initial_states_are_refused_at_once():
    with pytest.raises(DivergenceError, match="finite"):
        dopri5_per_sample(oscillators, torch.tensor([[float("nan"), 0.0, 1.0]]), torch.tensor([0.0, 1.0]))

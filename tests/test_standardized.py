"""A teacher in nondimensional coordinates is exactly conjugate to the original: field, Jacobian and flow against
the original system's through ``x = c + r z``, ``t = T s``."""

from __future__ import annotations

import torch

import systems
from systems.standardized import standardize
from systems.user import central_difference_jacobian


def test_standardized_teacher_is_conjugate_to_the_original():
    base = systems.get_system("van_der_pol")       # ID box [-2, 2]², T = 3
    s = standardize(base)
    assert s.dim == 2 and float(s.horizon) == 1.0 and s.id_low == (-1.0, -1.0) and s.ood_low == (-2.0, -2.0)
    z = s.sample_id(6, torch.Generator().manual_seed(0))
    assert bool((z.abs() <= 1).all())
    x = 2.0 * z                                     # c = 0, r = 2
    assert torch.allclose(s.vector_field(0.2, z), 3.0 * base.vector_field(0.6, x) / 2.0, atol=1e-14)
    fd = central_difference_jacobian(s.vector_field, 0.2, z)
    assert float((s.jacobian(0.2, z) - fd).abs().max()) < 1e-7
    grid = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    zt = s.flow(z, grid)
    assert torch.allclose(zt, base.flow(x, grid * 3.0) / 2.0, atol=1e-12)
    assert float((zt - s.reference_flow(z, grid)).abs().max()) < 1e-8   # the flow of its own field


def test_off_centre_unequal_box_maps_field_jacobian_and_flow():
    """c = (1, 2), r = (1, 3), T = 0.8: a row/column swap in the Jacobian or a missing −c in the flow shows here."""
    from systems.user import FlowSpec, flow_class

    spec = FlowSpec(vector_field=lambda t, x: torch.stack([x[:, 1], -x[:, 0] + 0.5 * x[:, 1] ** 2], -1), dim=2,
                    horizon=0.8, id_box=([0.0, -1.0], [2.0, 5.0]))
    base = flow_class(spec, "offset_box_test")()
    s = standardize(base)
    c, r = torch.tensor([1.0, 2.0], dtype=torch.float64), torch.tensor([1.0, 3.0], dtype=torch.float64)
    z = s.sample_id(5, torch.Generator().manual_seed(2))
    x = c + r * z
    assert torch.allclose(s.vector_field(0.0, z), 0.8 * base.vector_field(0.0, x) / r, atol=1e-13)
    fd = central_difference_jacobian(s.vector_field, 0.0, z)
    assert float((s.jacobian(0.0, z) - fd).abs().max()) < 1e-7
    grid = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    assert torch.allclose(s.flow(z, grid), (base.flow(x, grid * 0.8) - c) / r, atol=1e-12)
    assert float((s.flow(z, grid) - s.reference_flow(z, grid)).abs().max()) < 1e-8


def test_standardized_box_with_offset_centre():
    base = systems.get_system("dysts:Lorenz") if _has_dysts() else systems.get_system("lotka_volterra")
    s = standardize(base)
    lo, hi = torch.tensor(base.id_low, dtype=torch.float64), torch.tensor(base.id_high, dtype=torch.float64)
    z = torch.tensor([[-1.0] * base.dim, [1.0] * base.dim], dtype=torch.float64)
    assert torch.allclose(s._x(z), torch.stack([lo, hi]), atol=1e-12)
    fd = central_difference_jacobian(s.vector_field, 0.0, z)
    assert float((s.jacobian(0.0, z) - fd).abs().max()) < 1e-6 * max(1.0, float(fd.abs().max()))


def _has_dysts() -> bool:
    import importlib.util

    return importlib.util.find_spec("dysts") is not None

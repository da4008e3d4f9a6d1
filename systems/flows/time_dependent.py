"""Non-autonomous flows: the time-periodic double gyre (flow by DOP853)."""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import torch

from systems.base import TeacherFlow, Tensor
from systems.flows._common import as_time_like, check_real, matrix_rows
from systems.registry import register


@register
@dataclasses.dataclass(repr=False)
class DoubleGyre(TeacherFlow):
    """Time-periodic double gyre (Shadden, Lekien & Marsden 2005) on the domain ``[0, 2] x [0, 1]``.

    With ``a(t) = ε sin(ω t)``, ``b(t) = 1 - 2 ε sin(ω t)`` and ``f(x, t) = a x² + b x``::

        x' = -π A sin(π f) cos(π y)
        y' =  π A cos(π f) sin(π y) ∂f/∂x,      ∂f/∂x = 2 a x + b.

    The field is divergence free (stream function ``ψ = A sin(π f) sin(π y)``), so the flow preserves
    area. Outside the domain the same formula is used (its periodic/odd extension).

    Parameters: ``A`` > 0 (default 0.1), ``epsilon`` >= 0 (default 0.25), ``omega`` > 0 (default 2π/10);
    ``horizon`` T = 5.0 (half a forcing period). ``t`` may be a python number, a 0-dim tensor or a tensor
    broadcastable with ``x[..., 0]``. ID box ``[0.1, 1.9] x [0.1, 0.9]``; OOD box
    ``[-0.5, 2.5] x [-0.5, 1.5]`` minus the ID box.
    """

    name: ClassVar[str] = "double_gyre"
    dim: ClassVar[int] = 2
    autonomous: ClassVar[bool] = False
    closed_form: ClassVar[bool] = False

    horizon: float = 5.0
    A: float = 0.1
    epsilon: float = 0.25
    omega: float = 2.0 * math.pi / 10.0

    id_low: ClassVar[tuple[float, ...]] = (0.1, 0.1)
    id_high: ClassVar[tuple[float, ...]] = (1.9, 0.9)
    ood_low: ClassVar[tuple[float, ...]] = (-0.5, -0.5)
    ood_high: ClassVar[tuple[float, ...]] = (2.5, 1.5)

    def validate(self) -> None:
        check_real(self.name, "A", self.A, positive=True)
        check_real(self.name, "epsilon", self.epsilon, nonnegative=True)
        check_real(self.name, "omega", self.omega, positive=True)

    def _coeffs(self, t, x: Tensor) -> tuple[Tensor, Tensor]:
        tt = as_time_like(t, x)
        s = float(self.epsilon) * torch.sin(float(self.omega) * tt)
        return s, 1.0 - 2.0 * s          # a(t), b(t)

    def vector_field(self, t, x: Tensor) -> Tensor:
        amp = float(self.A)
        a, b = self._coeffs(t, x)
        u, v = x[..., 0], x[..., 1]
        f = a * u * u + b * u
        fx = 2.0 * a * u + b
        dx = -math.pi * amp * torch.sin(math.pi * f) * torch.cos(math.pi * v)
        dy = math.pi * amp * torch.cos(math.pi * f) * torch.sin(math.pi * v) * fx
        dx, dy = torch.broadcast_tensors(dx, dy)
        return torch.stack([dx, dy], dim=-1)

    def jacobian(self, t, x: Tensor) -> Tensor:
        amp = float(self.A)
        a, b = self._coeffs(t, x)
        u, v = x[..., 0], x[..., 1]
        f = a * u * u + b * u
        fx = 2.0 * a * u + b
        sf, cf = torch.sin(math.pi * f), torch.cos(math.pi * f)
        sy, cy = torch.sin(math.pi * v), torch.cos(math.pi * v)
        k = math.pi * math.pi * amp
        j11 = -k * cf * fx * cy
        j12 = k * sf * sy
        j21 = math.pi * amp * sy * (2.0 * a * cf - math.pi * sf * fx * fx)
        j22 = k * cf * cy * fx
        return matrix_rows([[j11, j12], [j21, j22]])

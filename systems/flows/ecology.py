"""Population dynamics: the Lotka–Volterra predator–prey system (flow by DOP853)."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch

from systems.base import TeacherFlow, Tensor
from systems.flows._common import check_real, matrix_rows
from systems.registry import register


@register
@dataclasses.dataclass(repr=False)
class LotkaVolterra(TeacherFlow):
    """Lotka–Volterra predator–prey system ``x' = α x - β x y``, ``y' = δ x y - γ y`` (x prey, y predator).

    Jacobian ``[[α - β y, -β x], [δ y, δ x - γ]]``. On the open positive quadrant every orbit is closed
    around the equilibrium ``(γ/δ, α/β)`` and ``V = δ x - γ ln x + β y - α ln y`` is conserved.

    Parameters (all > 0): ``alpha`` = 1.5, ``beta`` = 1.0, ``delta`` = 1.0, ``gamma`` = 3.0;
    ``horizon`` T = 2.0. ID box ``[0.5, 3]^2``; OOD box ``[0.2, 5]^2`` minus the ID box (strictly positive).
    """

    name: ClassVar[str] = "lotka_volterra"
    dim: ClassVar[int] = 2
    autonomous: ClassVar[bool] = True
    closed_form: ClassVar[bool] = False

    horizon: float = 2.0
    alpha: float = 1.5
    beta: float = 1.0
    delta: float = 1.0
    gamma: float = 3.0

    id_low: ClassVar[tuple[float, ...]] = (0.5, 0.5)
    id_high: ClassVar[tuple[float, ...]] = (3.0, 3.0)
    ood_low: ClassVar[tuple[float, ...]] = (0.2, 0.2)
    ood_high: ClassVar[tuple[float, ...]] = (5.0, 5.0)

    def validate(self) -> None:
        for pname in ("alpha", "beta", "delta", "gamma"):
            check_real(self.name, pname, getattr(self, pname), positive=True)

    def invariant(self, x: Tensor) -> Tensor:
        """The conserved ``V = δ x - γ ln x + β y - α ln y`` (positive states), shape ``x.shape[:-1]``."""
        a, b, d, g = float(self.alpha), float(self.beta), float(self.delta), float(self.gamma)
        u, v = x[..., 0], x[..., 1]
        return d * u - g * torch.log(u) + b * v - a * torch.log(v)

    def vector_field(self, t, x: Tensor) -> Tensor:
        a, b, d, g = float(self.alpha), float(self.beta), float(self.delta), float(self.gamma)
        u, v = x[..., 0], x[..., 1]
        return torch.stack([a * u - b * u * v, d * u * v - g * v], dim=-1)

    def jacobian(self, t, x: Tensor) -> Tensor:
        a, b, d, g = float(self.alpha), float(self.beta), float(self.delta), float(self.gamma)
        u, v = x[..., 0], x[..., 1]
        return matrix_rows([[a - b * v, -b * u], [d * v, d * u - g]])

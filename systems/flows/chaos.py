"""Chaotic flows: the Lorenz-63 system over a short horizon (flow by DOP853)."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch

from systems.base import TeacherFlow, Tensor
from systems.flows._common import check_real, matrix_rows
from systems.registry import register


@register
@dataclasses.dataclass(repr=False)
class Lorenz63(TeacherFlow):
    """Lorenz (1963) system ``x' = σ (y - x)``, ``y' = x (ρ - z) - y``, ``z' = x y - β z``.

    Jacobian ``[[-σ, σ, 0], [ρ - z, -1, -x], [y, x, -β]]``; its trace ``-(σ + 1 + β)`` is constant, so
    phase-space volume contracts as ``det ∂φ_t/∂x0 = exp(-(σ + 1 + β) t)``.

    Parameters (all > 0): ``sigma`` = 10, ``rho`` = 28, ``beta`` = 8/3; ``horizon`` T = 0.5 (short, so
    that the largest Lyapunov exponent ≈ 0.9 amplifies errors by only ≈ 1.6 over the horizon).
    ID box ``[-15, 15] x [-20, 20] x [5, 40]`` (around the attractor); OOD box
    ``[-30, 30] x [-40, 40] x [-10, 60]`` minus the ID box.
    """

    name: ClassVar[str] = "lorenz63"
    dim: ClassVar[int] = 3
    autonomous: ClassVar[bool] = True
    closed_form: ClassVar[bool] = False

    horizon: float = 0.5
    sigma: float = 10.0
    rho: float = 28.0
    beta: float = 8.0 / 3.0

    id_low: ClassVar[tuple[float, ...]] = (-15.0, -20.0, 5.0)
    id_high: ClassVar[tuple[float, ...]] = (15.0, 20.0, 40.0)
    ood_low: ClassVar[tuple[float, ...]] = (-30.0, -40.0, -10.0)
    ood_high: ClassVar[tuple[float, ...]] = (30.0, 40.0, 60.0)

    def validate(self) -> None:
        for pname in ("sigma", "rho", "beta"):
            check_real(self.name, pname, getattr(self, pname), positive=True)

    def vector_field(self, t, x: Tensor) -> Tensor:
        s, r, b = float(self.sigma), float(self.rho), float(self.beta)
        u, v, w = x[..., 0], x[..., 1], x[..., 2]
        return torch.stack([s * (v - u), u * (r - w) - v, u * v - b * w], dim=-1)

    def jacobian(self, t, x: Tensor) -> Tensor:
        s, r, b = float(self.sigma), float(self.rho), float(self.beta)
        u, v, w = x[..., 0], x[..., 1], x[..., 2]
        zero = torch.zeros_like(u)
        return matrix_rows([
            [zero - s, zero + s, zero],
            [r - w, zero - 1.0, -u],
            [v, u, zero - b],
        ])

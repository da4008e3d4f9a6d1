"""Nonlinear planar oscillators: van der Pol, unforced Duffing, damped pendulum (flows by DOP853)."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch

from systems.base import TeacherFlow, Tensor
from systems.flows._common import check_real, matrix_rows
from systems.registry import register


@register
@dataclasses.dataclass(repr=False)
class VanDerPol(TeacherFlow):
    """Van der Pol oscillator ``x'' - μ (1 - x²) x' + x = 0`` as
    ``x' = y``, ``y' = μ (1 - x²) y - x``.

    Jacobian ``[[0, 1], [-2 μ x y - 1, μ (1 - x²)]]``. For ``μ > 0`` every orbit except the origin
    approaches a limit cycle (amplitude ≈ 2.0086 in ``x`` for ``μ = 1``).

    Parameters: ``mu`` >= 0 (default 1.0), ``horizon`` T = 3.0.
    ID box ``[-2, 2]^2``; OOD box ``[-4, 4]^2`` minus the ID box.
    """

    name: ClassVar[str] = "van_der_pol"
    dim: ClassVar[int] = 2
    autonomous: ClassVar[bool] = True
    closed_form: ClassVar[bool] = False

    horizon: float = 3.0
    mu: float = 1.0

    id_low: ClassVar[tuple[float, ...]] = (-2.0, -2.0)
    id_high: ClassVar[tuple[float, ...]] = (2.0, 2.0)
    ood_low: ClassVar[tuple[float, ...]] = (-4.0, -4.0)
    ood_high: ClassVar[tuple[float, ...]] = (4.0, 4.0)

    def validate(self) -> None:
        check_real(self.name, "mu", self.mu, nonnegative=True)

    def vector_field(self, t, x: Tensor) -> Tensor:
        mu = float(self.mu)
        p, q = x[..., 0], x[..., 1]
        return torch.stack([q, mu * (1.0 - p * p) * q - p], dim=-1)

    def jacobian(self, t, x: Tensor) -> Tensor:
        mu = float(self.mu)
        p, q = x[..., 0], x[..., 1]
        zero = torch.zeros_like(p)
        return matrix_rows([[zero, zero + 1.0], [-2.0 * mu * p * q - 1.0, mu * (1.0 - p * p)]])


@register
@dataclasses.dataclass(repr=False)
class Duffing(TeacherFlow):
    """Unforced damped Duffing oscillator ``x'' + δ x' + α x + β x³ = 0`` as
    ``x' = v``, ``v' = -δ v - α x - β x³``.

    Jacobian ``[[0, 1], [-α - 3 β x², -δ]]``. With the defaults (double well, α = -1, β = 1) the
    energy ``E = v²/2 + α x²/2 + β x⁴/4`` decays at rate ``dE/dt = -δ v²`` towards the wells ``x = ±1``.

    Parameters: ``delta`` >= 0 (default 0.2), ``alpha`` (default -1.0), ``beta`` (default 1.0),
    ``horizon`` T = 5.0. ID box ``[-2, 2]^2``; OOD box ``[-3, 3]^2`` minus the ID box.
    """

    name: ClassVar[str] = "duffing"
    dim: ClassVar[int] = 2
    autonomous: ClassVar[bool] = True
    closed_form: ClassVar[bool] = False

    horizon: float = 5.0
    delta: float = 0.2
    alpha: float = -1.0
    beta: float = 1.0

    id_low: ClassVar[tuple[float, ...]] = (-2.0, -2.0)
    id_high: ClassVar[tuple[float, ...]] = (2.0, 2.0)
    ood_low: ClassVar[tuple[float, ...]] = (-3.0, -3.0)
    ood_high: ClassVar[tuple[float, ...]] = (3.0, 3.0)

    def validate(self) -> None:
        check_real(self.name, "delta", self.delta, nonnegative=True)
        check_real(self.name, "alpha", self.alpha)
        check_real(self.name, "beta", self.beta)

    def energy(self, x: Tensor) -> Tensor:
        """``E = v²/2 + α x²/2 + β x⁴/4``, shape ``x.shape[:-1]``."""
        p, v = x[..., 0], x[..., 1]
        return 0.5 * v * v + 0.5 * float(self.alpha) * p * p + 0.25 * float(self.beta) * p ** 4

    def vector_field(self, t, x: Tensor) -> Tensor:
        d, a, b = float(self.delta), float(self.alpha), float(self.beta)
        p, v = x[..., 0], x[..., 1]
        return torch.stack([v, -d * v - a * p - b * p ** 3], dim=-1)

    def jacobian(self, t, x: Tensor) -> Tensor:
        d, a, b = float(self.delta), float(self.alpha), float(self.beta)
        p = x[..., 0]
        zero = torch.zeros_like(p)
        return matrix_rows([[zero, zero + 1.0], [-a - 3.0 * b * p * p, zero - d]])


@register
@dataclasses.dataclass(repr=False)
class DampedPendulum(TeacherFlow):
    """Damped pendulum ``θ'' = -(g/ℓ) sin θ - γ θ'`` as ``θ' = ω``, ``ω' = -(g/ℓ) sin θ - γ ω``.

    Jacobian ``[[0, 1], [-(g/ℓ) cos θ, -γ]]``. The energy ``E = ω²/2 + (g/ℓ)(1 - cos θ)`` obeys
    ``dE/dt = -γ ω² <= 0``.

    Parameters: ``g_over_l`` > 0 (default 1.0), ``gamma`` >= 0 (default 0.2), ``horizon`` T = 5.0.
    ID box ``[-2, 2]^2`` (angles inside ±2 rad); OOD box ``[-4, 4]^2`` minus the ID box.
    """

    name: ClassVar[str] = "damped_pendulum"
    dim: ClassVar[int] = 2
    autonomous: ClassVar[bool] = True
    closed_form: ClassVar[bool] = False

    horizon: float = 5.0
    g_over_l: float = 1.0
    gamma: float = 0.2

    id_low: ClassVar[tuple[float, ...]] = (-2.0, -2.0)
    id_high: ClassVar[tuple[float, ...]] = (2.0, 2.0)
    ood_low: ClassVar[tuple[float, ...]] = (-4.0, -4.0)
    ood_high: ClassVar[tuple[float, ...]] = (4.0, 4.0)

    def validate(self) -> None:
        check_real(self.name, "g_over_l", self.g_over_l, positive=True)
        check_real(self.name, "gamma", self.gamma, nonnegative=True)

    def energy(self, x: Tensor) -> Tensor:
        """``E = ω²/2 + (g/ℓ)(1 - cos θ)``, shape ``x.shape[:-1]``."""
        th, om = x[..., 0], x[..., 1]
        return 0.5 * om * om + float(self.g_over_l) * (1.0 - torch.cos(th))

    def vector_field(self, t, x: Tensor) -> Tensor:
        k, g = float(self.g_over_l), float(self.gamma)
        th, om = x[..., 0], x[..., 1]
        return torch.stack([om, -k * torch.sin(th) - g * om], dim=-1)

    def jacobian(self, t, x: Tensor) -> Tensor:
        k, g = float(self.g_over_l), float(self.gamma)
        th = x[..., 0]
        zero = torch.zeros_like(th)
        return matrix_rows([[zero, zero + 1.0], [-k * torch.cos(th), zero - g]])

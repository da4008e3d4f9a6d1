"""Transport teacher flows: 2-D data sets (two moons, two spirals, concentric circles) carried by a known flow
to an endpoint where the two classes are separated by a hyperplane.

Each system lives on ``R^3``: the data coordinates ``(x1, x2)`` plus one augmented coordinate ``z`` (initially 0,
as in augmented neural ODEs) — a planar flow cannot separate an inner disc from a surrounding ring, a flow in
``R^3`` can. Every flow has a closed form, and the *label* of an initial state is defined by the teacher:

    ``y(x0) = 1[⟨w, φ_T(x0)⟩ > b]``                 (:meth:`TransportFlow.label`)

so the task "classify from the endpoint" has a ground truth everywhere — also for shifted or noisy inputs and
in regions never sampled in training. On the clean data set these labels coincide with the data set's own
class labels for ≥ 99% of the points (``tests/test_multipath.py`` checks the agreement).

=================  =========================================================================================
``moons_shear``    ``x2' = −a·c(x1)``, ``c(x1) = 0.25 + 0.5·cos(π x1)``: the curved gap between the moons is
                   sheared flat; ``y = 1[x2(T) < 0]`` (the lower moon).
``spiral_twist``   ``(x1, x2)' = ω r J (x1, x2)`` (rotation by an angle ``ω r t`` that grows with the radius
                   ``r``): two rays at the endpoint are two interleaved spirals at ``t = 0``;
                   ``y = 1[x1(T) < 0]``.
``circles_lift``   rotation ``(x1, x2)' = ω J (x1, x2)`` plus a lift ``z' = k (r0² − r²)``: the inner circle
                   rises, the outer one sinks; ``y = 1[z(T) > 0]`` (the inner circle).
=================  =========================================================================================

In-distribution initial states are drawn from the data set (:meth:`sample_id`, with its noise level); OOD states
from the same data set shifted by ``ood_shift`` (:meth:`sample_ood`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import torch

from systems.base import TeacherFlow, Tensor, as_time_grid
from systems.flows._common import broadcast_times, check_real, float_state, matrix_rows
from systems.registry import register


class TransportFlow(TeacherFlow):
    """A 3-D teacher flow with a data-set sampler and an endpoint labelling rule ``1[⟨w, x_T⟩ > b]``."""

    dim: ClassVar[int] = 3
    autonomous: ClassVar[bool] = True
    closed_form: ClassVar[bool] = True
    n_classes: ClassVar[int] = 2
    label_normal: ClassVar[tuple[float, float, float]] = (1.0, 0.0, 0.0)
    label_offset: ClassVar[float] = 0.0
    center: ClassVar[tuple[float, float]] = (0.0, 0.0)   # centre of the data set (for held-out wedges)
    ood_shift: ClassVar[tuple[float, float]] = (0.5, -0.5)

    noise: float = 0.1

    def validate(self) -> None:
        check_real(self.name, "noise", self.noise, nonnegative=True)

    def label(self, x_end: Tensor) -> Tensor:
        """``1[⟨w, x_T⟩ > b]`` as int64 labels."""
        w = torch.tensor(self.label_normal, dtype=x_end.dtype, device=x_end.device)
        return ((x_end @ w) > self.label_offset).long()

    def classify(self, x0: Tensor) -> Tensor:
        """The teacher's label of initial states ``x0``: :meth:`label` of ``φ_T(x0)``."""
        return self.label(self.flow(x0, [0.0, float(self.horizon)])[-1])

    def lift(self, xy: Tensor) -> Tensor:
        """2-D points ``(N, 2)`` → initial states ``(N, 3)`` with ``z = 0``."""
        return torch.cat([xy, torch.zeros_like(xy[..., :1])], -1)

    def sample_data(self, n: int, generator: torch.Generator | None = None,
                    dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
        """``n`` points of the 2-D data set (balanced classes) and the data set's own labels."""
        y = torch.arange(n) % 2
        xy = self._draw(y, generator, dtype)
        if self.noise > 0:
            xy = xy + self.noise * torch.randn(xy.shape, generator=generator, dtype=dtype)
        return self.lift(xy), y

    def _draw(self, y: Tensor, generator: torch.Generator | None, dtype: torch.dtype) -> Tensor:
        raise NotImplementedError

    def sample_id(self, n: int, generator: torch.Generator | None = None,
                  dtype: torch.dtype = torch.float64) -> Tensor:
        return self.sample_data(n, generator, dtype)[0]

    def sample_ood(self, n: int, generator: torch.Generator | None = None,
                   dtype: torch.dtype = torch.float64) -> Tensor:
        """The data set shifted by ``ood_shift`` in the ``(x1, x2)`` plane."""
        x = self.sample_id(n, generator, dtype)
        shift = torch.tensor([*self.ood_shift, 0.0], dtype=dtype)
        return x + shift

    def polar_angle(self, x0: Tensor) -> Tensor:
        """Angle of ``(x1, x2)`` about :attr:`center`, in ``[0, 2π)``."""
        dx = x0[..., 0] - self.center[0]
        dy = x0[..., 1] - self.center[1]
        return torch.remainder(torch.atan2(dy, dx), 2 * math.pi)


def _rotate(x: Tensor, angle: Tensor) -> Tensor:
    """Rotate ``(x1, x2)`` by ``angle`` (broadcast against ``x[..., 0]``); ``z`` untouched."""
    c, s = torch.cos(angle), torch.sin(angle)
    x1, x2 = x[..., 0], x[..., 1]
    return torch.stack([c * x1 - s * x2, s * x1 + c * x2, x[..., 2].expand_as(c * x1)], -1)


@register
@dataclasses.dataclass(repr=False)
class MoonsShear(TransportFlow):
    """Two moons sheared apart: ``f = (0, −a·c(x1), 0)``, ``c(x1) = 0.25 + 0.5 cos(π x1)``.

    Flow: ``x2(t) = x2 − a t c(x1)`` (exact). Label ``1[x2(T) < 0]`` (the lower moon). Data: the two-moons set
    (upper arc ``(cos θ, sin θ)``, lower arc ``(1 − cos θ, 0.5 − sin θ)``, ``θ ~ U(0, π)``) plus Gaussian noise.
    Parameters: ``a`` (default 1), ``noise`` (0.1), ``horizon`` T = 1.
    """

    name: ClassVar[str] = "moons_shear"
    label_normal: ClassVar[tuple[float, float, float]] = (0.0, -1.0, 0.0)
    center: ClassVar[tuple[float, float]] = (0.5, 0.25)

    horizon: float = 1.0
    a: float = 1.0
    noise: float = 0.1

    def validate(self) -> None:
        super().validate()
        check_real(self.name, "a", self.a)

    def _c(self, x1: Tensor) -> Tensor:
        return 0.25 + 0.5 * torch.cos(math.pi * x1)

    def vector_field(self, t, x: Tensor) -> Tensor:
        zero = torch.zeros_like(x[..., 0])
        return torch.stack([zero, -float(self.a) * self._c(x[..., 0]), zero], -1)

    def jacobian(self, t, x: Tensor) -> Tensor:
        zero = torch.zeros_like(x[..., 0])
        d = float(self.a) * 0.5 * math.pi * torch.sin(math.pi * x[..., 0])
        return matrix_rows([[zero, zero, zero], [d, zero, zero], [zero, zero, zero]])

    def flow(self, x0: Tensor, t) -> Tensor:
        x0 = float_state(x0)
        self._check_state(x0)
        tau = broadcast_times(as_time_grid(t) - as_time_grid(t)[0], x0).to(x0.device, x0.dtype)
        x1 = x0[..., 0].expand(tau.shape[0], *x0.shape[:-1])
        x2 = x0[..., 1] - float(self.a) * tau * self._c(x0[..., 0])
        return torch.stack([x1, x2, x0[..., 2].expand_as(x2)], -1)

    def _draw(self, y: Tensor, generator, dtype) -> Tensor:
        theta = math.pi * torch.rand(y.shape[0], generator=generator, dtype=dtype)
        upper = torch.stack([torch.cos(theta), torch.sin(theta)], -1)
        lower = torch.stack([1.0 - torch.cos(theta), 0.5 - torch.sin(theta)], -1)
        return torch.where(y[:, None] == 1, lower, upper)


@register
@dataclasses.dataclass(repr=False)
class SpiralTwist(TransportFlow):
    """Two spirals untwisted: ``(x1, x2)' = ω r (−x2, x1)`` with ``r = ‖(x1, x2)‖`` (conserved), ``z' = 0``.

    Flow: rotation by ``ω r t`` (exact). Label ``1[x1(T) < 0]``. Data: at the endpoint, two noisy rays
    (angles 0 and π, radii ``U(r_min, r_max)``), pulled back by the inverse flow — two interleaved spirals of
    ``ω r_max T / 2π`` turns. Parameters: ``omega`` (default 4), ``r_min`` 0.25, ``r_max`` 1.5, ``noise`` 0.05
    (angular noise of the rays, in radians ×π), ``horizon`` T = 1.
    """

    name: ClassVar[str] = "spiral_twist"
    label_normal: ClassVar[tuple[float, float, float]] = (-1.0, 0.0, 0.0)
    ood_shift: ClassVar[tuple[float, float]] = (0.3, -0.3)

    horizon: float = 1.0
    omega: float = 4.0
    r_min: float = 0.25
    r_max: float = 1.5
    noise: float = 0.05

    def validate(self) -> None:
        super().validate()
        check_real(self.name, "omega", self.omega)
        check_real(self.name, "r_min", self.r_min, positive=True)
        check_real(self.name, "r_max", self.r_max, positive=True)
        if not self.r_max > self.r_min:
            from systems.base import SystemSpecError
            raise SystemSpecError(f"{self.name}: parameter 'r_max' must exceed r_min={self.r_min}, got {self.r_max}")

    def vector_field(self, t, x: Tensor) -> Tensor:
        r = torch.sqrt(x[..., 0] ** 2 + x[..., 1] ** 2)
        w = float(self.omega) * r
        return torch.stack([-w * x[..., 1], w * x[..., 0], torch.zeros_like(r)], -1)

    def jacobian(self, t, x: Tensor) -> Tensor:
        x1, x2 = x[..., 0], x[..., 1]
        r = torch.sqrt(x1 ** 2 + x2 ** 2).clamp_min(1e-300)
        om = float(self.omega)
        zero = torch.zeros_like(x1)
        # ∂/∂x_j (−ω r x2) = −ω (x_j/r) x2 − ω r δ_{j2};  ∂/∂x_j (ω r x1) = ω (x_j/r) x1 + ω r δ_{j1}
        return matrix_rows([
            [-om * x1 * x2 / r, -om * x2 * x2 / r - om * r, zero],
            [om * x1 * x1 / r + om * r, om * x1 * x2 / r, zero],
            [zero, zero, zero],
        ])

    def flow(self, x0: Tensor, t) -> Tensor:
        x0 = float_state(x0)
        self._check_state(x0)
        tau = broadcast_times(as_time_grid(t) - as_time_grid(t)[0], x0).to(x0.device, x0.dtype)
        r = torch.sqrt(x0[..., 0] ** 2 + x0[..., 1] ** 2)
        return _rotate(x0, float(self.omega) * r * tau)

    def sample_data(self, n: int, generator: torch.Generator | None = None,
                    dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
        """Spiral arms with *angular* noise (so the arms stay arms): the ray angles get ``noise·π·N(0,1)``."""
        y = torch.arange(n) % 2
        r = self.r_min + (self.r_max - self.r_min) * torch.rand(n, generator=generator, dtype=dtype)
        ang = math.pi * y.to(dtype) + self.noise * math.pi * torch.randn(n, generator=generator, dtype=dtype)
        end = torch.stack([r * torch.cos(ang), r * torch.sin(ang), torch.zeros_like(r)], -1)
        return _rotate(end, -float(self.omega) * r * float(self.horizon)), y


@register
@dataclasses.dataclass(repr=False)
class CirclesLift(TransportFlow):
    """Concentric circles lifted apart: ``(x1, x2)' = ω (−x2, x1)``, ``z' = k (r0² − r²)``.

    Flow: rotation by ``ω t`` and ``z(t) = z0 + k t (r0² − r²)`` (``r`` is conserved; exact). Label
    ``1[z(T) > 0]`` (the inner circle). Data: circles of radius 1 (class 0) and ``factor`` (class 1) plus noise.
    Parameters: ``omega`` (default 2), ``k`` (2), ``factor`` (0.5), ``r0`` (0.75), ``noise`` (0.08), T = 1.
    """

    name: ClassVar[str] = "circles_lift"
    label_normal: ClassVar[tuple[float, float, float]] = (0.0, 0.0, 1.0)
    ood_shift: ClassVar[tuple[float, float]] = (0.3, -0.3)

    horizon: float = 1.0
    omega: float = 2.0
    k: float = 2.0
    factor: float = 0.5
    r0: float = 0.75
    noise: float = 0.08

    def validate(self) -> None:
        super().validate()
        check_real(self.name, "omega", self.omega)
        check_real(self.name, "k", self.k)
        check_real(self.name, "factor", self.factor, positive=True)
        check_real(self.name, "r0", self.r0, positive=True)

    def vector_field(self, t, x: Tensor) -> Tensor:
        om, k = float(self.omega), float(self.k)
        r2 = x[..., 0] ** 2 + x[..., 1] ** 2
        return torch.stack([-om * x[..., 1], om * x[..., 0], k * (self.r0 ** 2 - r2)], -1)

    def jacobian(self, t, x: Tensor) -> Tensor:
        om, k = float(self.omega), float(self.k)
        zero = torch.zeros_like(x[..., 0])
        return matrix_rows([
            [zero, zero - om, zero],
            [zero + om, zero, zero],
            [-2 * k * x[..., 0], -2 * k * x[..., 1], zero],
        ])

    def flow(self, x0: Tensor, t) -> Tensor:
        x0 = float_state(x0)
        self._check_state(x0)
        tau = broadcast_times(as_time_grid(t) - as_time_grid(t)[0], x0).to(x0.device, x0.dtype)
        rot = _rotate(x0, float(self.omega) * tau)
        r2 = x0[..., 0] ** 2 + x0[..., 1] ** 2
        z = x0[..., 2] + float(self.k) * tau * (self.r0 ** 2 - r2)
        return torch.cat([rot[..., :2], z[..., None]], -1)

    def _draw(self, y: Tensor, generator, dtype) -> Tensor:
        theta = 2 * math.pi * torch.rand(y.shape[0], generator=generator, dtype=dtype)
        radius = torch.where(y == 1, torch.full_like(theta, float(self.factor)), torch.ones_like(theta))
        return torch.stack([radius * torch.cos(theta), radius * torch.sin(theta)], -1)

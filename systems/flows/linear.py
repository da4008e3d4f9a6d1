"""Linear teacher flows with closed-form flow maps: a damped spiral and the harmonic oscillator."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np
import torch

from systems.base import SystemSpecError, TeacherFlow, Tensor, as_time_grid
from systems.flows._common import broadcast_times, check_real, float_state, matrix_rows
from systems.registry import register


@register
@dataclasses.dataclass(repr=False)
class LinearSpiral(TeacherFlow):
    """Linear flow ``x' = A x`` on ``R^2``.

    By default ``A = [[-a, -w], [w, -a]]`` (a spiral sink with decay rate ``a`` and angular frequency
    ``w``); a general real 2x2 ``matrix`` may be given instead, in which case ``a`` and ``w`` are ignored.

    Flow: ``φ_t(x0) = expm(A (t - t0)) x0`` (``torch.linalg.matrix_exp``); Jacobian ``∂f/∂x = A``.

    Parameters: ``a`` (default 0.1), ``w`` (default 1.0), ``matrix`` (default ``None``),
    ``horizon`` T = 5.0. ID box ``[-2, 2]^2``; OOD box ``[-3, 3]^2`` minus the ID box.
    """

    name: ClassVar[str] = "linear_spiral"
    dim: ClassVar[int] = 2
    autonomous: ClassVar[bool] = True
    closed_form: ClassVar[bool] = True

    horizon: float = 5.0
    a: float = 0.1
    w: float = 1.0
    matrix: tuple[tuple[float, float], tuple[float, float]] | None = None

    id_low: ClassVar[tuple[float, ...]] = (-2.0, -2.0)
    id_high: ClassVar[tuple[float, ...]] = (2.0, 2.0)
    ood_low: ClassVar[tuple[float, ...]] = (-3.0, -3.0)
    ood_high: ClassVar[tuple[float, ...]] = (3.0, 3.0)

    def __post_init__(self) -> None:
        if self.matrix is not None:
            try:
                m = np.asarray(torch.as_tensor(self.matrix).detach().cpu(), dtype=np.float64)
            except (TypeError, ValueError, RuntimeError) as err:
                raise SystemSpecError(f"{self.name}: parameter 'matrix' must be a real 2x2 matrix, "
                                      f"got {self.matrix!r}") from err
            if m.shape != (2, 2):
                raise SystemSpecError(f"{self.name}: parameter 'matrix' must have shape (2, 2), "
                                      f"got {m.shape}")
            if not np.isfinite(m).all():
                raise SystemSpecError(f"{self.name}: parameter 'matrix' must be finite, got {m.tolist()}")
            self.matrix = tuple(tuple(float(v) for v in row) for row in m)
        super().__post_init__()

    def validate(self) -> None:
        check_real(self.name, "a", self.a)
        check_real(self.name, "w", self.w)

    def matrix_tensor(self, dtype: torch.dtype = torch.float64, device=None) -> Tensor:
        """The system matrix ``A`` as a ``(2, 2)`` tensor."""
        if self.matrix is not None:
            rows = self.matrix
        else:
            a, w = float(self.a), float(self.w)
            rows = ((-a, -w), (w, -a))
        return torch.tensor(rows, dtype=dtype, device=device)

    def vector_field(self, t, x: Tensor) -> Tensor:
        A = self.matrix_tensor(x.dtype, x.device)
        return x @ A.transpose(-1, -2)

    def jacobian(self, t, x: Tensor) -> Tensor:
        A = self.matrix_tensor(x.dtype, x.device)
        return A.expand(*x.shape[:-1], 2, 2).clone()

    def flow(self, x0: Tensor, t) -> Tensor:
        x0 = float_state(x0)
        self._check_state(x0)
        tg = as_time_grid(t)                      # float64 on CPU
        tau = (tg - tg[0]).to(x0.device)
        A = self.matrix_tensor(torch.float64, x0.device)
        M = torch.linalg.matrix_exp(tau[:, None, None] * A).to(x0.dtype)   # (K, 2, 2)
        return torch.einsum("kij,...j->k...i", M, x0)


@register
@dataclasses.dataclass(repr=False)
class HarmonicOscillator(TeacherFlow):
    """Harmonic oscillator ``q'' = -ω² q`` as the first-order system ``q' = p``, ``p' = -ω² q``.

    Flow: ``q(t) = q0 cos(ωτ) + (p0/ω) sin(ωτ)``, ``p(t) = -ω q0 sin(ωτ) + p0 cos(ωτ)`` with
    ``τ = t - t0``. It conserves ``E = ω² q² + p²``. Jacobian ``[[0, 1], [-ω², 0]]``.

    Parameters: ``omega`` > 0 (default 1.0), ``horizon`` T = 5.0.
    ID box ``[-2, 2]^2``; OOD box ``[-3, 3]^2`` minus the ID box.
    """

    name: ClassVar[str] = "harmonic_oscillator"
    dim: ClassVar[int] = 2
    autonomous: ClassVar[bool] = True
    closed_form: ClassVar[bool] = True

    horizon: float = 5.0
    omega: float = 1.0

    id_low: ClassVar[tuple[float, ...]] = (-2.0, -2.0)
    id_high: ClassVar[tuple[float, ...]] = (2.0, 2.0)
    ood_low: ClassVar[tuple[float, ...]] = (-3.0, -3.0)
    ood_high: ClassVar[tuple[float, ...]] = (3.0, 3.0)

    def validate(self) -> None:
        check_real(self.name, "omega", self.omega, positive=True)

    def energy(self, x: Tensor) -> Tensor:
        """``E = ω² q² + p²`` (twice the mechanical energy), shape ``x.shape[:-1]``."""
        w = float(self.omega)
        return w * w * x[..., 0] ** 2 + x[..., 1] ** 2

    def vector_field(self, t, x: Tensor) -> Tensor:
        w2 = float(self.omega) ** 2
        return torch.stack([x[..., 1], -w2 * x[..., 0]], dim=-1)

    def jacobian(self, t, x: Tensor) -> Tensor:
        w2 = float(self.omega) ** 2
        zero = torch.zeros_like(x[..., 0])
        return matrix_rows([[zero, zero + 1.0], [zero - w2, zero]])

    def flow(self, x0: Tensor, t) -> Tensor:
        x0 = float_state(x0)
        self._check_state(x0)
        tg = as_time_grid(t)
        w = float(self.omega)
        phase = w * (tg - tg[0])                                   # float64 for accuracy
        c = broadcast_times(torch.cos(phase), x0).to(device=x0.device, dtype=x0.dtype)
        s = broadcast_times(torch.sin(phase), x0).to(device=x0.device, dtype=x0.dtype)
        q0, p0 = x0[..., 0], x0[..., 1]
        q = c * q0 + (s / w) * p0
        p = -w * s * q0 + c * p0
        return torch.stack([q, p], dim=-1)


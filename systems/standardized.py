"""A teacher in nondimensional coordinates: its ID box mapped to ``[−1, 1]^d`` and its horizon to 1.

With ``c`` the centre and ``r`` the half-width of the ID box (per coordinate) and ``T`` the horizon,

    x = c + r ⊙ z,    t = T s,    dz/ds = g(s, z) = T · r⁻¹ ⊙ f*(T s, c + r ⊙ z),

so ``∂g/∂z = T · diag(r)⁻¹ J*(T s, x) diag(r)`` and the flow is ``ψ_s(z₀) = r⁻¹ ⊙ (φ_{Ts}(c + r ⊙ z₀) − c)``.
An affine change of coordinates and a rescaling of time: the same dynamics (exactly conjugate), but every teacher
now starts from the same box over the same horizon, so one student architecture, initialisation and learning
rate serve teachers whose natural scales differ by orders of magnitude (a dysts catalogue). Errors are measured in
these coordinates: coordinate ``i`` scaled by ``1/r_i``, states measured from the box centre ``c``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch

from systems.base import TeacherFlow, as_time_grid

Tensor = torch.Tensor


def standardize(system: TeacherFlow) -> Standardized:
    """``system`` in nondimensional coordinates (:class:`Standardized`)."""
    return Standardized(base=system)


@dataclasses.dataclass(repr=False)
class Standardized(TeacherFlow):
    """``base`` in the coordinates ``z = (x − c)/r``, ``s = t/T`` (see the module docstring)."""

    name: ClassVar[str] = "standardized"
    base: Any = None
    horizon: float = 1.0

    def validate(self) -> None:
        if not isinstance(self.base, TeacherFlow):
            raise TypeError(f"Standardized needs a TeacherFlow to wrap, got {type(self.base).__name__}")

    # per-instance geometry (class attributes of TeacherFlow are overridden on the instance)
    def __post_init__(self) -> None:
        super().__post_init__()
        b = self.base
        lo, hi = torch.tensor(b.id_low, dtype=torch.float64), torch.tensor(b.id_high, dtype=torch.float64)
        self.c, self.r, self.T = (lo + hi) / 2, (hi - lo) / 2, float(b.horizon)
        self.dim = b.dim
        self.autonomous, self.closed_form = b.autonomous, b.closed_form
        self.reference_method = b.reference_method
        self.name = b.name            # the same system, in other units
        self.id_low, self.id_high = (-1.0,) * b.dim, (1.0,) * b.dim
        olo = (torch.tensor(b.ood_low, dtype=torch.float64) - self.c) / self.r
        ohi = (torch.tensor(b.ood_high, dtype=torch.float64) - self.c) / self.r
        self.ood_low, self.ood_high = tuple(olo.tolist()), tuple(ohi.tolist())

    def params(self) -> dict:
        return {"base": self.base.name, **self.base.params()}

    def _x(self, z: Tensor) -> Tensor:
        return self.c.to(z) + self.r.to(z) * z

    def vector_field(self, t: Tensor | float, z: Tensor) -> Tensor:
        return self.T * self.base.vector_field(self.T * t, self._x(z)) / self.r.to(z)

    def jacobian(self, t: Tensor | float, z: Tensor) -> Tensor:
        r = self.r.to(z)
        return self.T * self.base.jacobian(self.T * t, self._x(z)) * r / r[:, None]

    def flow(self, z0: Tensor, t) -> Tensor:
        z0 = torch.as_tensor(z0)
        x = self.base.flow(self._x(z0), as_time_grid(t) * self.T)
        return (x - self.c.to(x)) / self.r.to(x)

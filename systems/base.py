"""The protocol every ground-truth system meets.

A *teacher flow* is an ODE ``dx/dt = f*(t, x)`` on ``R^dim`` over the horizon ``[0, T]`` together with

* ``vector_field(t, x)``  the law ``f*`` (batched, torch, any float dtype),
* ``jacobian(t, x)``      ``∂f*/∂x`` in closed form, shape ``(..., dim, dim)``,
* ``flow(x0, t)``         the flow map ``φ_{t_k}(x0)`` on a time grid, shape ``(len(t), *x0.shape)``
                          (closed form where one exists, otherwise :meth:`reference_flow`),
* ``sample_id`` / ``sample_ood``  initial states from the training distribution and from outside it.

The numerical reference :meth:`reference_flow` integrates with SciPy's ``solve_ivp`` (DOP853,
``rtol=1e-11``, ``atol=1e-12`` by default). The whole batch is integrated as one stacked system; with
tolerances this tight every sample is accurate to the tolerance whatever else shares the batch.

Shapes follow torchdiffeq: time first, then batch, then state.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np
import torch
from scipy.integrate import solve_ivp

Tensor = torch.Tensor


class SystemSpecError(ValueError):
    """Raised for an unknown system, an unknown parameter or a bad parameter value."""


def as_time_grid(t: Tensor | np.ndarray | list[float] | float, dtype=torch.float64) -> Tensor:
    """Return ``t`` as a 1-D, non-decreasing float tensor (a scalar becomes ``[0, t]``)."""
    t = torch.as_tensor(t, dtype=dtype)
    if t.ndim == 0:
        t = torch.stack([torch.zeros((), dtype=dtype), t])
    if t.ndim != 1 or t.numel() < 1:
        raise SystemSpecError(f"time grid must be 1-D and non-empty, got shape {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise SystemSpecError("time grid contains NaN or inf")
    if t.numel() > 1 and not bool((t[1:] >= t[:-1]).all()):
        raise SystemSpecError("time grid must be non-decreasing")
    return t


@dataclasses.dataclass
class TeacherFlow(ABC):
    """Base class of analytic teacher flows. Subclasses are dataclasses whose fields are the parameters.

    Class attributes a subclass sets:
        name:        registry name.
        dim:         state dimension.
        autonomous:  whether ``f*`` does not depend on ``t``.
        closed_form: whether :meth:`flow` is an exact formula (else it is :meth:`reference_flow`).

    Every subclass has a ``horizon`` field (T) and may override ``id_low/id_high`` (the box of
    in-distribution initial states) and ``ood_low/ood_high`` (a larger box; OOD states are drawn from
    the larger box *minus* the ID box).
    """

    name: ClassVar[str] = "teacher"
    dim: ClassVar[int] = 2
    autonomous: ClassVar[bool] = True
    closed_form: ClassVar[bool] = False
    #: the ``solve_ivp`` method of :meth:`reference_flow` (``"Radau"`` for stiff systems)
    reference_method: ClassVar[str] = "DOP853"

    horizon: float = 1.0

    # ------------------------------------------------------------------ validation
    def __post_init__(self) -> None:
        h = self.horizon
        if isinstance(h, bool) or not isinstance(h, (int, float)) or not (np.isfinite(h) and h > 0):
            raise SystemSpecError(f"{self.name}: horizon must be a positive finite number, got {self.horizon!r}")
        self.validate()

    def validate(self) -> None:  # noqa: B027  (optional hook)
        """Check parameter values; raise :class:`SystemSpecError` naming the bad parameter."""

    @property
    def flow_kind(self) -> str:
        """How :meth:`flow` is computed (for listings)."""
        return "closed form" if self.closed_form else "DOP853 reference"

    def params(self) -> dict:
        """The parameters as a plain dict (enough to rebuild the system with ``get_system``)."""
        return dataclasses.asdict(self)

    # ------------------------------------------------------------------ the law
    @abstractmethod
    def vector_field(self, t: Tensor | float, x: Tensor) -> Tensor:
        """``f*(t, x)`` for ``x`` of shape ``(..., dim)``; returns the same shape."""

    @abstractmethod
    def jacobian(self, t: Tensor | float, x: Tensor) -> Tensor:
        """``∂f*/∂x`` at ``(t, x)``; shape ``(..., dim, dim)`` with ``J[..., i, j] = ∂f_i/∂x_j``."""

    # ------------------------------------------------------------------ the flow map
    def flow(self, x0: Tensor, t) -> Tensor:
        """States ``φ_{t_k}(x0)`` at the times ``t`` (1-D, starting anywhere; ``φ`` starts at ``t[0]``).

        Returns shape ``(len(t), *x0.shape)``. Subclasses with a closed form override this.
        """
        return self.reference_flow(x0, t)

    def reference_flow(self, x0: Tensor, t, rtol: float = 1e-11, atol: float = 1e-12) -> Tensor:
        """High-accuracy numerical flow: ``solve_ivp`` (DOP853, or :attr:`reference_method`) on the stacked batch."""
        x0 = torch.as_tensor(x0)
        self._check_state(x0)
        dtype = x0.dtype if x0.is_floating_point() else torch.float64
        tg = as_time_grid(t)
        batch_shape = x0.shape[:-1]
        y0 = x0.detach().to("cpu", torch.float64).reshape(-1).numpy()
        n = y0.size // self.dim
        if tg.numel() == 1 or float(tg[-1] - tg[0]) == 0.0:
            out = np.repeat(y0[None, :], tg.numel(), axis=0)
        else:
            def rhs(s: float, y: np.ndarray) -> np.ndarray:
                xs = torch.from_numpy(y.reshape(n, self.dim))
                return self.vector_field(s, xs).reshape(-1).numpy()

            tn = tg.numpy()
            sol = solve_ivp(rhs, (tn[0], tn[-1]), y0, method=self.reference_method, t_eval=tn, rtol=rtol, atol=atol)
            if not sol.success:
                raise RuntimeError(f"{self.name}: reference integration failed: {sol.message}")
            out = sol.y.T
        res = torch.from_numpy(np.ascontiguousarray(out)).reshape(tg.numel(), *batch_shape, self.dim)
        return res.to(device=x0.device, dtype=dtype)

    def flow_jacobian(self, x0: Tensor, t, rtol: float = 1e-10, atol: float = 1e-12) -> Tensor:
        """``∂φ_{t_k}(x0)/∂x0`` by integrating the variational equation ``dM/dt = J*(t, x) M``, ``M(t0) = I``.

        Returns shape ``(len(t), *x0.shape[:-1], dim, dim)``.
        """
        x0 = torch.as_tensor(x0)
        self._check_state(x0)
        tg = as_time_grid(t)
        d = self.dim
        batch_shape = x0.shape[:-1]
        xs0 = x0.detach().to("cpu", torch.float64).reshape(-1, d)
        n = xs0.shape[0]
        y0 = torch.cat([xs0, torch.eye(d, dtype=torch.float64).expand(n, d, d).reshape(n, d * d)], 1)

        def rhs(s: float, y: np.ndarray) -> np.ndarray:
            yy = torch.from_numpy(y.reshape(n, d + d * d))
            x, m = yy[:, :d], yy[:, d:].reshape(n, d, d)
            dx = self.vector_field(s, x)
            dm = self.jacobian(s, x) @ m
            return torch.cat([dx, dm.reshape(n, d * d)], 1).reshape(-1).numpy()

        tn = tg.numpy()
        if tg.numel() == 1 or tn[-1] == tn[0]:
            out = np.repeat(y0.reshape(1, -1).numpy(), tg.numel(), axis=0)
        else:
            sol = solve_ivp(rhs, (tn[0], tn[-1]), y0.reshape(-1).numpy(), method=self.reference_method, t_eval=tn,
                            rtol=rtol, atol=atol)
            if not sol.success:
                raise RuntimeError(f"{self.name}: variational integration failed: {sol.message}")
            out = sol.y.T
        m = torch.from_numpy(np.ascontiguousarray(out)).reshape(tg.numel(), n, d + d * d)[..., d:]
        dtype = x0.dtype if x0.is_floating_point() else torch.float64
        return m.reshape(tg.numel(), *batch_shape, d, d).to(device=x0.device, dtype=dtype)

    # ------------------------------------------------------------------ samplers
    id_low: ClassVar[tuple[float, ...]] = (-2.0, -2.0)
    id_high: ClassVar[tuple[float, ...]] = (2.0, 2.0)
    ood_low: ClassVar[tuple[float, ...]] = (-3.0, -3.0)
    ood_high: ClassVar[tuple[float, ...]] = (3.0, 3.0)

    def sample_id(self, n: int, generator: torch.Generator | None = None,
                  dtype: torch.dtype = torch.float64) -> Tensor:
        """``n`` initial states uniform in the in-distribution box ``[id_low, id_high]``."""
        lo = torch.tensor(self.id_low, dtype=dtype)
        hi = torch.tensor(self.id_high, dtype=dtype)
        u = torch.rand(n, self.dim, generator=generator, dtype=dtype)
        return lo + (hi - lo) * u

    def sample_ood(self, n: int, generator: torch.Generator | None = None,
                   dtype: torch.dtype = torch.float64) -> Tensor:
        """``n`` initial states uniform in ``[ood_low, ood_high] \\ [id_low, id_high]`` (rejection sampling)."""
        lo = torch.tensor(self.ood_low, dtype=dtype)
        hi = torch.tensor(self.ood_high, dtype=dtype)
        ilo = torch.tensor(self.id_low, dtype=dtype)
        ihi = torch.tensor(self.id_high, dtype=dtype)
        out: list[Tensor] = []
        got = 0
        tries = 0
        while got < n:
            tries += 1
            if tries > 1000:
                raise SystemSpecError(f"{self.name}: the OOD box leaves (almost) no room outside the ID box")
            u = torch.rand(max(2 * (n - got), 16), self.dim, generator=generator, dtype=dtype)
            x = lo + (hi - lo) * u
            inside = ((x >= ilo) & (x <= ihi)).all(-1)
            x = x[~inside]
            out.append(x)
            got += x.shape[0]
        return torch.cat(out)[:n]

    # ------------------------------------------------------------------ helpers
    def _check_state(self, x: Tensor) -> None:
        if x.shape[-1] != self.dim:
            raise SystemSpecError(f"{self.name}: state must have last dimension {self.dim}, got {tuple(x.shape)}")

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"

"""Small helpers shared by the teacher-flow families (parameter checks, Jacobian assembly, time handling)."""

from __future__ import annotations

import math
import numbers

import torch

from systems.base import SystemSpecError

Tensor = torch.Tensor


def check_real(system: str, name: str, value, *, positive: bool = False, nonnegative: bool = False) -> None:
    """Raise :class:`SystemSpecError` naming ``name`` unless ``value`` is a finite real number
    (and, when asked, ``> 0`` or ``>= 0``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise SystemSpecError(f"{system}: parameter {name!r} must be a real number, got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise SystemSpecError(f"{system}: parameter {name!r} must be finite, got {value!r}")
    if positive and not v > 0:
        raise SystemSpecError(f"{system}: parameter {name!r} must be > 0, got {value!r}")
    if nonnegative and not v >= 0:
        raise SystemSpecError(f"{system}: parameter {name!r} must be >= 0, got {value!r}")


def matrix_rows(rows: list[list[Tensor]]) -> Tensor:
    """Assemble ``J[..., i, j] = rows[i][j]`` from broadcast-compatible tensors of shape ``(...)``."""
    flat = [e for row in rows for e in row]
    flat = torch.broadcast_tensors(*flat)
    n = len(rows)
    return torch.stack([torch.stack(flat[i * n:(i + 1) * n], dim=-1) for i in range(n)], dim=-2)


def as_time_like(t, x: Tensor) -> Tensor:
    """``t`` (python number, 0-dim tensor or tensor broadcastable with ``x[..., 0]``) as a tensor with the
    dtype and device of ``x``. Gradients through a tensor ``t`` are kept."""
    if isinstance(t, Tensor):
        return t.to(dtype=x.dtype, device=x.device)
    return torch.as_tensor(t, dtype=x.dtype, device=x.device)


def float_state(x0) -> Tensor:
    """``x0`` as a floating tensor (integer input becomes float64, as in ``reference_flow``)."""
    x0 = torch.as_tensor(x0)
    if not x0.is_floating_point():
        x0 = x0.to(torch.float64)
    return x0


def broadcast_times(tau: Tensor, x0: Tensor) -> Tensor:
    """Reshape a 1-D time tensor ``(K,)`` to ``(K, 1, ..., 1)`` so it broadcasts against ``x0[..., 0]``."""
    return tau.reshape(tau.shape[0], *([1] * (x0.ndim - 1)))

"""Uniform time grids ``t_k = k·T/n``: locating given times on them, tolerant of their dtype's round-off."""

from __future__ import annotations

import torch

Tensor = torch.Tensor


def index_tolerance(t: Tensor | float, position: float) -> float:
    """Slack, in grid-index units, for a time stored in ``t``'s dtype at grid position ``position``.

    A float32 time ``l·T/n`` is off the grid by ~eps₃₂·l index units, so a fixed 1e-6 is too strict there.
    """
    eps = torch.finfo(t.dtype).eps if isinstance(t, Tensor) and t.is_floating_point() else 2.0**-52
    return max(1e-6, 4 * eps * abs(position))


def grid_indices(times: Tensor | list[float], horizon: float, n_steps: int) -> Tensor:
    """Indices ``k`` with ``times[j] = k·T/n`` (to round-off); ``ValueError`` for a time off the grid."""
    tol = index_tolerance(times if isinstance(times, Tensor) else 0.0, n_steps)
    pos = torch.as_tensor(times, dtype=torch.float64).cpu() / float(horizon) * n_steps
    idx = torch.round(pos)
    if pos.numel() == 0:
        raise ValueError("no times given")
    if (pos - idx).abs().max() > tol or idx.min() < 0 or idx.max() > n_steps:
        raise ValueError(f"times are not on the {n_steps}-step grid t_k = k·{horizon:g}/{n_steps}")
    return idx.long()

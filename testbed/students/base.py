"""The interface every student meets, so objectives and field metrics never ask what kind it is.

A student maps an initial state ``x0`` (shape ``(B, dim)``) through a *propagation field*: states
``h_0 = x0, h_1, …, h_L`` at layer times ``t_0 = 0 < t_1 < … < t_L = T`` produced by ``L`` steps
``h_{l+1} = step(l, h_l)``. Every student also exposes its learned vector field ``f_θ(t, x)`` as a callable
usable by :func:`torchdiffeq.odeint`, so the field can be re-integrated with any solver or step count.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import torch
from torch import nn

from testbed.grid import grid_indices

Tensor = torch.Tensor


class Student(nn.Module):
    """Abstract student. Subclasses set ``dim``, ``horizon``, ``n_layers`` and implement the methods."""

    kind: str = "student"
    dim: int
    horizon: float
    n_layers: int

    @property
    def layer_times(self) -> Tensor:
        """``t_l = l · T / L`` for ``l = 0..L`` (float64, on CPU)."""
        return torch.linspace(0.0, float(self.horizon), self.n_layers + 1, dtype=torch.float64)

    @abstractmethod
    def step(self, l: int, h: Tensor) -> Tensor:
        """One layer of the propagation field: ``h_{l+1}`` from ``h_l`` (any leading shape)."""

    @abstractmethod
    def vector_field(self, t: Tensor | float, x: Tensor) -> Tensor:
        """The learned law ``f_θ(t, x)`` (``odeint``-compatible signature)."""

    def trajectory(self, x0: Tensor, times: Tensor | None = None) -> Tensor:
        """States at ``times`` (default: all layer times), shape ``(len(times), *x0.shape)``."""
        hs = [x0]
        h = x0
        for l in range(self.n_layers):
            h = self.step(l, h)
            hs.append(h)
        traj = torch.stack(hs)
        if times is None:
            return traj
        return traj[self.time_indices(times)]

    def forward(self, x0: Tensor) -> Tensor:
        """The endpoint ``h_L`` (= the network's output)."""
        h = x0
        for l in range(self.n_layers):
            h = self.step(l, h)
        return h

    def time_indices(self, times: Tensor) -> Tensor:
        """Layer indices ``l`` with ``t_l == times[k]``; a clear error for times off the layer grid."""
        try:
            return grid_indices(times, self.horizon, self.n_layers)
        except ValueError:
            raise ValueError(
                f"observation times must lie on the student's layer grid t_l = l·{self.horizon}/{self.n_layers}; "
                f"choose a depth L that is a multiple of the number of observation intervals"
            ) from None

    @abstractmethod
    def spec(self) -> dict[str, Any]:
        """Constructor arguments (JSON-able) so :func:`testbed.students.build_student` rebuilds it."""

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.spec().items())

"""The interface every student meets, so objectives and field metrics never ask what kind it is.

A student maps an initial state ``x0`` (shape ``(B, dim)``) through a *propagation field*: states
``h_0 = x0, h_1, …, h_L`` at layer times ``t_0 = 0 < t_1 < … < t_L = T`` produced by ``L`` steps
``h_{l+1} = step(l, h_l)``. Every student also exposes its learned vector field ``f_θ(t, x)`` as a callable
usable by :func:`torchdiffeq.odeint`, so the field can be re-integrated with any solver or step count.

Optional structure, for code that can exploit it (each with a generic default):

* :meth:`Student.branch_layers` — layer ``l`` as ``h + m·g(t, h)`` with ``g`` a chain of affine maps and elementwise
  activations (:class:`BranchLayers`); the spectral field metrics then apply the layer Jacobians in closed form
  (default ``None``: they differentiate :meth:`Student.step` instead);
* :attr:`Student.layers_similar` — whether neighbouring layers have close Jacobians (a warm-start hint);
* :meth:`Student.branch_first_layer_names` — the parameters of each residual branch's first internal layer (the
  Depth-μP block-depth-2 learning-rate correction); the default raises ``NotImplementedError``.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from testbed.grid import grid_indices

Tensor = torch.Tensor


@dataclass(frozen=True)
class Affine:
    """``z ↦ z Wᵀ + b`` (``weight`` (out, in), ``bias`` (out,) or ``None``), one factor of a :class:`BranchLayers`."""

    weight: Tensor
    bias: Tensor | None


@dataclass(frozen=True)
class BranchLayers:
    """Layer ``l`` of a residual student, ``step(l, h) = h + multiplier·g(h_in)``, with the branch ``g`` spelled out.

    ``g`` is the composition of ``layers`` in order: :class:`Affine` maps and elementwise activations (any other
    callable in ``layers`` must act elementwise, ``σ(z)_i = σ(z_i)``; its derivative is taken by forward-mode
    autodiff). The branch input ``h_in`` is the state ``h`` itself, or ``[h, time]`` (the layer time appended as
    one last coordinate) when ``time`` is not ``None``. Weights may be parameters or tensors derived from them
    (e.g. interpolated); when several layers share a weight, return the *same* tensor object for each, so a
    consumer can keep one copy.
    """

    multiplier: float
    layers: tuple[Affine | Callable[[Tensor], Tensor], ...]
    time: float | None = None


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

    # ---------------------------------------------------------------- optional structure (see the module docstring)
    def branch_layers(self, l: int) -> BranchLayers | None:
        """Layer ``l`` as ``h + m·g(h)`` with ``g`` spelled out (:class:`BranchLayers`), or ``None`` when the step
        has no such form (the default): field metrics then differentiate :meth:`step` with ``torch.func``."""
        return None

    @property
    def autonomous(self) -> bool:
        """Whether ``vector_field(t, x)`` ignores ``t`` (a solver may then evaluate rows at different times in one
        call). Default ``False`` — always safe; students whose field provably ignores time override it."""
        return False

    @property
    def layers_similar(self) -> bool:
        """Whether neighbouring layers have close Jacobians (tied or smoothly varying weights): lets the spectral
        metrics warm-start one layer's solve from its neighbour's. A hint only (default ``True``)."""
        return True

    def branch_first_layer_names(self) -> set[str]:
        """Names (as in :meth:`named_parameters`) of the first internal layer ``W₁, b₁`` of every residual branch
        ``W₂ σ(W₁h + b₁) + b₂``, the layer the block-depth-2 learning-rate correction of
        :func:`testbed.parameterization.param_groups` acts on; an empty set when every branch has a single weight
        matrix. The default raises ``NotImplementedError``: a student without residual branches has no such layer."""
        raise NotImplementedError(f"{type(self).__name__} does not name its residual branches' first internal layer "
                                  "(branch_first_layer_names)")

    @abstractmethod
    def spec(self) -> dict[str, Any]:
        """Constructor arguments (JSON-able) so :func:`testbed.students.build_student` rebuilds it."""

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.spec().items())

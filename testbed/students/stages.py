"""Any model's residual stages as a propagation field: the adapter between your ``nn.Module`` and the field metrics.

A network with residual stages ``h_{l+1} = s_l(h_l)`` (e.g. ``s_l(h) = h + r_l(h)``) *is* a depth-``L`` propagation
field. :class:`ResidualStages` exposes it through the :class:`~testbed.students.base.Student` interface, so
``layer_jacobians``, ``path_sensitivity``, ``path_spectral_norms``, ``field_geometry`` and ``solver_consistency``
apply unchanged:

* ``step(l, h) = s_l(h)`` — the stage itself (no copy: gradients flow into your model);
* ``vector_field(t, x) = (s_{l(t)}(x) − x)/Δt`` with ``Δt = T/L`` and ``l(t) = ⌊t/Δt⌋`` — the field whose forward
  Euler discretisation on the layer grid is the network (``T`` = ``horizon`` is a convention; 1 by default).

The stages must map a state of shape ``(..., dim)`` to the same shape (flatten spatial states first). The adapter
cannot be rebuilt from a spec (it wraps your modules), so it is not in the student registry.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from testbed.config import ConfigError, check_positive, check_positive_int
from testbed.students.base import Student

Tensor = torch.Tensor


class ResidualStages(Student):
    """Expose residual stages ``h ↦ s_l(h)`` (``l = 0..L-1``) of any model to the field metrics."""

    kind = "residual_stages"

    def __init__(self, stages: Sequence[nn.Module], dim: int, horizon: float = 1.0) -> None:
        super().__init__()
        if len(stages) == 0:
            raise ConfigError("stages must hold at least one module")
        check_positive_int("dim", dim)
        check_positive("horizon", horizon)
        self.stages = stages if isinstance(stages, nn.ModuleList) else nn.ModuleList(stages)
        self.dim, self.n_layers, self.horizon = dim, len(self.stages), float(horizon)

    @property
    def dt(self) -> float:
        return self.horizon / self.n_layers

    def stage_index(self, t: Tensor | float) -> int:
        """``⌊t/Δt⌋`` clamped to ``[0, L-1]`` (layer times ``t_l = l·Δt`` map to ``l``)."""
        return min(max(math.floor(float(t) / self.dt + 1e-9), 0), self.n_layers - 1)

    def step(self, l: int, h: Tensor) -> Tensor:
        return self.stages[l](h)

    def vector_field(self, t: Tensor | float, x: Tensor) -> Tensor:
        return (self.stages[self.stage_index(t)](x) - x) / self.dt

    def spec(self) -> dict[str, Any]:
        return {"dim": self.dim, "n_layers": self.n_layers, "horizon": self.horizon}

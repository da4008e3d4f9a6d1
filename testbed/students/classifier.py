"""Residual networks with an input embedding and a read-out: a propagation field in a hidden space.

``y = W_out · h_L + b_out`` with ``h_0 = W_in · x + b_in`` and ``h_{l+1} = h_l + m·g_l(t_l, h_l)`` the
:class:`~testbed.students.residual.ResidualStudent` ``flow`` (residual-stream width ``dim``). Every field
metric applies to ``flow`` with initial states ``initial_state(x)``.

* :class:`ResidualNet`         regression head (``output_dim`` outputs), e.g. a teacher flow map ``x ↦ φ_T(x)``
                               learned through a wide hidden stream (width/depth scaling studies);
* :class:`ResidualClassifier`  ``n_classes`` logits; its endpoint metric is the accuracy.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from testbed.config import check_positive_int
from testbed.students.residual import ResidualStudent

Tensor = torch.Tensor

_FLOW_KEYS = ("dim", "n_layers", "horizon", "width", "hidden_layers", "tied", "activation", "branch_scaling",
              "branch_multiplier", "init_scale")


class ResidualNet(nn.Module):
    """``x ↦ head(flow(embed(x)))``; keyword arguments after ``output_dim`` go to :class:`ResidualStudent`."""

    kind = "residual_net"

    def __init__(self, input_dim: int, output_dim: int, dim: int = 16, n_layers: int = 16, horizon: float = 1.0,
                 width: int = 64, hidden_layers: int = 1, tied: bool = False, activation: str = "tanh",
                 branch_scaling: str = "ode", branch_multiplier: float = 1.0, init_scale: float = 1.0) -> None:
        super().__init__()
        check_positive_int("input_dim", input_dim)
        check_positive_int("output_dim", output_dim)
        self.input_dim, self.output_dim = input_dim, output_dim
        self.embed = nn.Linear(input_dim, dim)
        self.flow = ResidualStudent(dim, n_layers, horizon, width, hidden_layers, tied, False, activation,
                                    branch_scaling, branch_multiplier, init_scale)
        self.head = nn.Linear(dim, output_dim)

    def initial_state(self, x: Tensor) -> Tensor:
        """``h_0 = embed(x)`` (inputs are flattened)."""
        return self.embed(x.reshape(x.shape[0], -1))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.flow(self.initial_state(x)))

    def spec(self) -> dict[str, Any]:
        f = self.flow.spec()
        return {"input_dim": self.input_dim, "output_dim": self.output_dim, **{k: f[k] for k in _FLOW_KEYS}}


class ResidualClassifier(ResidualNet):
    """A :class:`ResidualNet` whose ``n_classes`` outputs are logits."""

    kind = "residual_classifier"

    def __init__(self, input_dim: int, n_classes: int, dim: int = 16, n_layers: int = 16, horizon: float = 1.0,
                 width: int = 64, hidden_layers: int = 1, tied: bool = False, activation: str = "tanh",
                 branch_scaling: str = "ode", branch_multiplier: float = 1.0, init_scale: float = 1.0) -> None:
        super().__init__(input_dim, n_classes, dim, n_layers, horizon, width, hidden_layers, tied, activation,
                         branch_scaling, branch_multiplier, init_scale)
        self.n_classes = n_classes

    @torch.no_grad()
    def accuracy(self, x: Tensor, y: Tensor) -> float:
        """Fraction of ``argmax logits == y``."""
        return float((self(x).argmax(-1) == y).double().mean())

    def spec(self) -> dict[str, Any]:
        s = super().spec()
        s["n_classes"] = s.pop("output_dim")
        return s

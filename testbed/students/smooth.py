"""A residual network whose branch weights are a continuous function of layer time.

``h_{l+1} = h_l + m·g(t_l, h_l; W(t_l))`` with ``W(t) = Σ_k λ_k(t) W_k``: ``K`` anchor weight sets ``W_k`` at
``s_k = k·T/(K−1)`` and piecewise-linear hat functions ``λ_k`` (``K = 1``: tied weights). With ODE scaling
(``m = T/L``) the network is the ``L``-step forward-Euler discretisation of the one ODE
``dh/dt = g(t, h; W(t))`` whatever ``L`` is, so networks of different depth built from the same anchors
(:meth:`SmoothResidualStudent.with_depth`) share one continuous-time limit and their trajectories converge to it
at Euler's order, ``O(1/L)``.
"""

from __future__ import annotations

import copy
import math
from typing import Any

from torch import nn
from torch.func import functional_call

from testbed.config import check_choice, check_nonneg, check_nonneg_int, check_positive, check_positive_int
from testbed.students.base import BranchLayers, Student, Tensor
from testbed.students.mlp import ACTIVATIONS, FieldMLP
from testbed.students.residual import branch_multiplier


class SmoothResidualStudent(Student):
    """ODE-scaled (by default) ResNet with branch weights ``W(t)`` interpolated between ``n_anchors`` anchors."""

    kind = "smooth_residual"

    def __init__(self, dim: int, n_layers: int = 16, horizon: float = 1.0, width: int = 64, hidden_layers: int = 1,
                 n_anchors: int = 4, activation: str = "tanh", init_scale: float = 1.0,
                 branch_scaling: str = "ode", branch_multiplier: float = 1.0) -> None:
        super().__init__()
        check_positive_int("dim", dim)
        check_positive_int("n_layers (depth L)", n_layers)
        check_positive("horizon", horizon)
        check_positive_int("width", width)
        check_nonneg_int("hidden_layers", hidden_layers)
        check_positive_int("n_anchors", n_anchors)
        check_choice("activation", activation, list(ACTIVATIONS))
        check_choice("branch_scaling", branch_scaling, ("ode", "depth_mup", "standard"))
        check_nonneg("init_scale", init_scale)
        self.dim, self.n_layers, self.horizon = dim, n_layers, float(horizon)
        self.width, self.hidden_layers, self.n_anchors = width, hidden_layers, n_anchors
        self.activation, self.init_scale = activation, float(init_scale)
        self.branch_scaling, self.branch_multiplier = branch_scaling, float(branch_multiplier)
        self.anchors = nn.ModuleList(FieldMLP(dim, width, hidden_layers, activation, False, init_scale)
                                     for _ in range(n_anchors))

    @property
    def dt(self) -> float:
        return self.horizon / self.n_layers

    @property
    def multiplier(self) -> float:
        return branch_multiplier(self.branch_scaling, self.n_layers, self.horizon, self.branch_multiplier)

    def hat_weights(self, t: float) -> list[float]:
        """``λ_k(t)``: piecewise-linear interpolation weights on the anchors (sum to 1)."""
        k = self.n_anchors
        if k == 1:
            return [1.0]
        pos = min(max(float(t) / self.horizon, 0.0), 1.0) * (k - 1)
        i = min(int(math.floor(pos)), k - 2)
        frac = pos - i
        w = [0.0] * k
        w[i], w[i + 1] = 1.0 - frac, frac
        return w

    def weights_at(self, t: float) -> dict[str, Tensor]:
        """The branch parameters ``W(t) = Σ_k λ_k(t) W_k`` (differentiable in the anchors)."""
        lam = self.hat_weights(t)
        names = [n for n, _ in self.anchors[0].named_parameters()]
        params = [dict(a.named_parameters()) for a in self.anchors]
        return {n: sum(lk * p[n] for lk, p in zip(lam, params, strict=True) if lk != 0.0) for n in names}

    def branch(self, t: float, h: Tensor) -> Tensor:
        return functional_call(self.anchors[0], self.weights_at(t), (t, h))

    def step(self, l: int, h: Tensor) -> Tensor:
        t_l = l * self.dt
        return h + self.multiplier * self.branch(t_l, h)

    def vector_field(self, t: Tensor | float, x: Tensor) -> Tensor:
        return (self.multiplier / self.dt) * self.branch(float(t), x)

    def branch_layers(self, l: int) -> BranchLayers | None:
        """Layer ``l`` with the interpolated branch ``g(·; W(t_l))`` spelled out (see :class:`FieldMLP`); ``None``
        for subclasses that change :meth:`step`."""
        if type(self).step is not SmoothResidualStudent.step or not all(type(a) is FieldMLP for a in self.anchors):
            return None
        block, t_l = self.anchors[0], l * self.dt
        layers = block.chain(self.weights_at(t_l))
        if layers is None:
            return None
        return BranchLayers(float(self.multiplier), layers, t_l if block.time_conditioned else None)

    def with_depth(self, n_layers: int) -> SmoothResidualStudent:
        """The same weight function ``W(t)`` discretised with ``n_layers`` layers (a copy)."""
        new = copy.deepcopy(self)
        check_positive_int("n_layers", n_layers)
        new.n_layers = int(n_layers)
        return new

    def spec(self) -> dict[str, Any]:
        return {"dim": self.dim, "n_layers": self.n_layers, "horizon": self.horizon, "width": self.width,
                "hidden_layers": self.hidden_layers, "n_anchors": self.n_anchors, "activation": self.activation,
                "init_scale": self.init_scale, "branch_scaling": self.branch_scaling,
                "branch_multiplier": self.branch_multiplier}


__all__ = ["SmoothResidualStudent"]

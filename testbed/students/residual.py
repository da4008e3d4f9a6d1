"""Residual networks as discretised ODEs.

The student propagates ``h_{l+1} = h_l + m · g_l(t_l, h_l)`` for ``l = 0..L-1`` with ``t_l = l·Δt``,
``Δt = T/L`` and branch multiplier ``m`` set by ``branch_scaling``:

* ``"ode"``        ``m = Δt = T/L`` — the network is exactly forward Euler for ``dh/dt = g(t, h)``;
* ``"depth_mup"``  ``m = a/√L`` — depth-muP (Tensor Programs VI); the implied ODE field is ``(m/Δt)·g``;
* ``"standard"``   ``m = 1`` — the usual ResNet; the implied field is ``g/Δt``.

With ``tied=True`` one branch ``g`` is shared by all layers (optionally time-conditioned: ``g(t, h)``);
with ``tied=False`` layer ``l`` has its own branch ``g_l`` and the learned vector field is piecewise
constant in time, ``f_θ(t, x) = (m/Δt)·g_{l(t)}(t, x)`` with ``l(t) = ⌊t/Δt⌋`` (clamped to ``[0, L-1]``).
``init_scale`` multiplies the initial weights of each branch's output layer (0 starts the network at the
identity map, ``h_L = h_0``).

``branch`` picks the branch network: ``"mlp"`` (:class:`FieldMLP`, a fully connected field, non-local in
the state), ``"conv"`` (:class:`~testbed.students.conv.StencilField`, a local translation-equivariant
field for states on a periodic grid: learned stencil of width ``kernel_size`` plus a pointwise MLP) or ``"poly"``
(:class:`~testbed.students.poly_stencil.PolynomialStencil`: linear + quadratic window monomials + ``u_j³``, local
and linear in its parameters).
Either way, forward Euler with ``L`` steps on ``f_θ`` reproduces the network's
trajectory exactly.
"""

from __future__ import annotations

import math
from typing import Any

from torch import nn

from testbed.config import (
    ConfigError,
    check_choice,
    check_nonneg,
    check_nonneg_int,
    check_positive,
    check_positive_int,
)
from testbed.grid import index_tolerance
from testbed.students.base import BranchLayers, Student, Tensor
from testbed.students.conv import StencilField
from testbed.students.mlp import ACTIVATIONS, FieldMLP
from testbed.students.poly_stencil import PolynomialStencil

BRANCH_SCALINGS = ("ode", "depth_mup", "standard")
BRANCHES = ("mlp", "conv", "poly")


def branch_multiplier(scaling: str, n_layers: int, horizon: float, a: float = 1.0) -> float:
    """``m`` of ``h_{l+1} = h_l + m·g``: ``T/L`` (``ode``), ``a/√L`` (``depth_mup``) or 1 (``standard``)."""
    if scaling == "ode":
        return horizon / n_layers
    if scaling == "depth_mup":
        return a / math.sqrt(n_layers)
    return 1.0


class ResidualStudent(Student):
    """A depth-``L`` ResNet ``h_{l+1} = h_l + m·g_l(t_l, h_l)`` viewed as an ODE discretisation."""

    kind = "residual"

    def __init__(self, dim: int, n_layers: int = 16, horizon: float = 1.0, width: int = 64,
                 hidden_layers: int = 1, tied: bool = True, time_conditioned: bool = False,
                 activation: str = "tanh", branch_scaling: str = "ode", branch_multiplier: float = 1.0,
                 init_scale: float = 1.0, branch: str = "mlp", kernel_size: int = 3) -> None:
        super().__init__()
        check_positive_int("dim", dim)
        check_positive_int("n_layers (depth L)", n_layers)
        check_positive("horizon", horizon)
        if branch == "mlp":  # a conv branch may be a pure linear stencil (width 0); a poly branch has no width
            check_positive_int("width", width)
        check_nonneg_int("hidden_layers (0: one-matrix block W·σ(h))", hidden_layers)
        check_choice("branch_scaling", branch_scaling, BRANCH_SCALINGS)
        check_choice("activation", activation, list(ACTIVATIONS))
        check_positive("branch_multiplier", branch_multiplier)
        check_nonneg("init_scale", init_scale)
        check_choice("branch", branch, BRANCHES)
        if not isinstance(tied, bool) or not isinstance(time_conditioned, bool):
            raise ConfigError("tied and time_conditioned must be booleans")
        if branch == "poly" and time_conditioned:
            raise ConfigError("a 'poly' branch is autonomous (a fixed polynomial law); time_conditioned must be False")
        self.dim, self.n_layers, self.horizon = dim, n_layers, float(horizon)
        self.width, self.hidden_layers, self.activation = width, hidden_layers, activation
        self.tied, self.time_conditioned = tied, time_conditioned
        self.branch_scaling, self.branch_multiplier = branch_scaling, float(branch_multiplier)
        self.init_scale = float(init_scale)
        self.branch, self.kernel_size = branch, int(kernel_size)
        n_blocks = 1 if tied else n_layers

        def make_branch() -> nn.Module:
            if branch == "conv":
                return StencilField(dim, width, hidden_layers, kernel_size, activation, time_conditioned, init_scale)
            if branch == "poly":
                return PolynomialStencil(dim, kernel_size, init_scale=init_scale)
            return FieldMLP(dim, width, hidden_layers, activation, time_conditioned, init_scale)

        self.blocks = nn.ModuleList(make_branch() for _ in range(n_blocks))

    # ---------------------------------------------------------------- scales
    @property
    def dt(self) -> float:
        """Layer time step ``Δt = T/L``."""
        return self.horizon / self.n_layers

    @property
    def multiplier(self) -> float:
        """Branch multiplier ``m`` (see module docstring)."""
        return branch_multiplier(self.branch_scaling, self.n_layers, self.horizon, self.branch_multiplier)

    def block_index(self, t: Tensor | float) -> int:
        """Which branch acts at time ``t``: ``⌊t/Δt⌋`` clamped to ``[0, L-1]`` (0 when tied)."""
        if self.tied:
            return 0
        pos = float(t) / self.dt
        l = math.floor(pos + index_tolerance(t, pos))  # a grid time t_l may carry float32 round-off
        return min(max(l, 0), self.n_layers - 1)

    # ---------------------------------------------------------------- the field
    def step(self, l: int, h: Tensor) -> Tensor:
        t_l = l * self.dt
        g = self.blocks[0 if self.tied else l]
        return h + self.multiplier * g(t_l, h)

    def vector_field(self, t: Tensor | float, x: Tensor) -> Tensor:
        g = self.blocks[self.block_index(t)]
        return (self.multiplier / self.dt) * g(t, x)

    # ---------------------------------------------------------------- structure (see testbed.students.base)
    def branch_layers(self, l: int) -> BranchLayers | None:
        """Layer ``l`` with its :class:`FieldMLP` branch spelled out; ``None`` for a stencil (or any other) branch
        and for subclasses that change :meth:`step`."""
        if type(self).step is not ResidualStudent.step:
            return None
        block = self.blocks[0 if self.tied else l]
        if type(block) is not FieldMLP:
            return None
        layers = block.chain()
        if layers is None:
            return None
        return BranchLayers(float(self.multiplier), layers, l * self.dt if block.time_conditioned else None)

    @property
    def layers_similar(self) -> bool:
        """Tied branches make neighbouring layers alike; untied ones are independent."""
        return self.tied

    def branch_first_layer_names(self) -> set[str]:
        """``blocks.<i>.<first-layer parameter>`` of every branch (empty for one-matrix blocks); a branch that does
        not name its first layer (``first_layer_names``, e.g. a stencil branch) raises ``NotImplementedError``."""
        names: set[str] = set()
        for i, block in enumerate(self.blocks):
            first = getattr(block, "first_layer_names", None)
            if first is None:
                raise NotImplementedError(f"a {type(block).__name__} branch does not name its first internal layer "
                                          "(first_layer_names)")
            names |= {f"blocks.{i}.{n}" for n in first()}
        return names

    @property
    def autonomous(self) -> bool:
        """One branch for every layer and no time input: ``f_θ(t, x)`` does not depend on ``t``."""
        return self.tied and not self.time_conditioned

    def spec(self) -> dict[str, Any]:
        return {
            "dim": self.dim, "n_layers": self.n_layers, "horizon": self.horizon, "width": self.width,
            "hidden_layers": self.hidden_layers, "tied": self.tied, "time_conditioned": self.time_conditioned,
            "activation": self.activation, "branch_scaling": self.branch_scaling,
            "branch_multiplier": self.branch_multiplier, "init_scale": self.init_scale,
            "branch": self.branch, "kernel_size": self.kernel_size,
        }

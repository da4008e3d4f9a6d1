"""A residual network whose hidden state *is* an observable state: ``h = (x, a, c)``.

Observed intermediate states (a teacher's trajectory, the states of a route) can be compared with the hidden
states directly only when the network lives in the observed coordinates. :class:`AugmentedResidualNet` does:

* ``h_0 = (x, 0_aug, c)`` — the data coordinates ``x ∈ R^{data_dim}``, ``aug_dim`` zero-initialised augmented
  coordinates (as in augmented neural ODEs; a flow in ``R^2`` cannot separate nested classes, one in ``R^3``
  can) and an optional per-sample context ``c ∈ R^{context_dim}`` (e.g. a one-hot route code) that the
  branch reads at every depth but never changes (its velocity is masked to zero);
* ``h_{l+1} = h_l + m · (g(t_l, (x, a, c_{b(t_l)})), 0_context)`` — the context never moves, and with
  ``context_blocks = B`` the branch reads only the block of ``c`` active at time ``t`` (a schedule such as
  "which law acts in which segment"; :class:`ContextResidualStudent`);
* ``observe(h) = (x, a)`` — the coordinates that observations are made in;
* read-out ``head``: ``"linear"`` (logits or outputs ``W·observe(h_L) + b``) or ``"observe"`` (the first
  ``output_dim`` observed coordinates: a regression onto the endpoint state itself).

The input embedding is fixed (not learned), so the field metrics of ``flow`` are metrics in the data space.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from testbed.config import ConfigError, check_choice, check_nonneg_int, check_positive_int
from testbed.students.base import Student
from testbed.students.residual import ResidualStudent

Tensor = torch.Tensor

HEADS = ("linear", "observe")


class ContextResidualStudent(Student):
    """A residual field on states ``h = (o, c)``: observed coordinates ``o`` that move and a context ``c`` that
    is carried unchanged and read by the branch.

    The context has ``context_blocks`` equal blocks ``c = (c_1, …, c_B)``; at time ``t`` the branch sees only the
    active block ``c_{b(t)}``, ``b(t) = ⌊B t / T⌋`` (a schedule: e.g. which law acts in which time segment):

        ``o_{l+1} = o_l + m · g(t_l, (o_l, c_{b(t_l)}))_{[:dim_o]}``,   ``c_{l+1} = c_l``

    with ``g`` a :class:`~testbed.students.residual.ResidualStudent` branch on ``dim_o + |c_b|`` coordinates.
    ``context_blocks = 1`` gives the plain "read the whole context" field; ``n_context = 0`` a plain ResNet.
    """

    kind = "context_residual"

    def __init__(self, observed_dim: int, n_context: int = 0, context_blocks: int = 1, n_layers: int = 16,
                 horizon: float = 1.0, width: int = 64, hidden_layers: int = 2, tied: bool = True,
                 time_conditioned: bool = False, activation: str = "tanh", init_scale: float = 0.1) -> None:
        super().__init__()
        check_positive_int("observed_dim", observed_dim)
        check_nonneg_int("n_context", n_context)
        check_positive_int("context_blocks", context_blocks)
        if n_context % context_blocks:
            raise ConfigError(f"n_context={n_context} must be a multiple of context_blocks={context_blocks}")
        self.observed_dim, self.n_context, self.context_blocks = observed_dim, n_context, context_blocks
        self.block_size = n_context // context_blocks
        self.dim = observed_dim + n_context
        self.core = ResidualStudent(observed_dim + self.block_size, n_layers=n_layers, horizon=horizon, width=width,
                                    hidden_layers=hidden_layers, tied=tied, time_conditioned=time_conditioned,
                                    activation=activation, init_scale=init_scale)
        self.n_layers, self.horizon = n_layers, float(horizon)

    def _branch_input(self, t: float, h: Tensor) -> Tensor:
        o = h[..., :self.observed_dim]
        if not self.n_context:
            return o
        b = min(int(float(t) * self.context_blocks / self.horizon + 1e-9), self.context_blocks - 1)
        start = self.observed_dim + b * self.block_size
        return torch.cat([o, h[..., start:start + self.block_size]], -1)

    def _velocity(self, t: float, h: Tensor, g: nn.Module) -> Tensor:
        v = g(t, self._branch_input(t, h))[..., :self.observed_dim]
        return torch.cat([v, torch.zeros_like(h[..., self.observed_dim:])], -1)

    def step(self, l: int, h: Tensor) -> Tensor:
        core = self.core
        t = l * core.dt
        return h + core.multiplier * self._velocity(t, h, core.blocks[0 if core.tied else l])

    def vector_field(self, t: Tensor | float, x: Tensor) -> Tensor:
        core = self.core
        return (core.multiplier / core.dt) * self._velocity(float(t), x, core.blocks[core.block_index(t)])

    def spec(self) -> dict[str, Any]:
        c = self.core
        return {"observed_dim": self.observed_dim, "n_context": self.n_context,
                "context_blocks": self.context_blocks, "n_layers": c.n_layers, "horizon": c.horizon,
                "width": c.width, "hidden_layers": c.hidden_layers, "tied": c.tied,
                "time_conditioned": c.time_conditioned, "activation": c.activation, "init_scale": c.init_scale}


class AugmentedResidualNet(nn.Module):
    """``x ↦ head(observe(flow((x, 0_aug, c))))`` — see the module docstring.

    Inputs have ``data_dim + context_dim`` features: the data coordinates first, then the context.
    """

    kind = "augmented_residual_net"

    def __init__(self, data_dim: int, output_dim: int, aug_dim: int = 0, context_dim: int = 0,
                 n_layers: int = 16, horizon: float = 1.0, width: int = 64, hidden_layers: int = 2,
                 tied: bool = True, time_conditioned: bool = False, activation: str = "tanh",
                 init_scale: float = 0.1, head: str = "linear", context_blocks: int = 1) -> None:
        super().__init__()
        check_positive_int("data_dim", data_dim)
        check_positive_int("output_dim", output_dim)
        check_nonneg_int("aug_dim", aug_dim)
        check_nonneg_int("context_dim", context_dim)
        check_choice("head", head, HEADS)
        self.data_dim, self.output_dim, self.aug_dim, self.context_dim = data_dim, output_dim, aug_dim, context_dim
        self.observed_dim = data_dim + aug_dim
        if head == "observe" and output_dim > self.observed_dim:
            raise ConfigError(f"head='observe' reads the first output_dim={output_dim} observed coordinates, "
                              f"but there are only {self.observed_dim}")
        self.head_kind = head
        self.flow = ContextResidualStudent(self.observed_dim, n_context=context_dim,
                                           context_blocks=context_blocks, n_layers=n_layers, horizon=horizon,
                                           width=width,
                                           hidden_layers=hidden_layers, tied=tied,
                                           time_conditioned=time_conditioned, activation=activation,
                                           init_scale=init_scale)
        self.readout = nn.Linear(self.observed_dim, output_dim) if head == "linear" else None

    @property
    def n_layers(self) -> int:
        return self.flow.n_layers

    def initial_state(self, x: Tensor) -> Tensor:
        """``h_0 = (x, 0_aug, c)`` from inputs ``(x, c)`` of shape ``(N, data_dim + context_dim)``."""
        x = x.reshape(x.shape[0], -1)
        if x.shape[1] != self.data_dim + self.context_dim:
            raise ValueError(f"inputs must have data_dim + context_dim = {self.data_dim + self.context_dim} "
                             f"features, got {x.shape[1]}")
        data, ctx = x[:, :self.data_dim], x[:, self.data_dim:]
        return torch.cat([data, x.new_zeros(x.shape[0], self.aug_dim), ctx], 1)

    def observe(self, h: Tensor) -> Tensor:
        """The observed coordinates ``(x, a)`` of hidden states ``h`` (any leading shape)."""
        return h[..., :self.observed_dim]

    def head(self, h: Tensor) -> Tensor:
        """Read-out of a hidden state (the endpoint ``h_L`` in :meth:`forward`)."""
        o = self.observe(h)
        return self.readout(o) if self.readout is not None else o[..., :self.output_dim]

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.flow(self.initial_state(x)))

    @torch.no_grad()
    def accuracy(self, x: Tensor, y: Tensor) -> float:
        """Fraction of ``argmax outputs == y`` (for a classifier head)."""
        return float((self(x).argmax(-1) == y).double().mean())

    def spec(self) -> dict[str, Any]:
        f = self.flow.core
        return {"data_dim": self.data_dim, "output_dim": self.output_dim, "aug_dim": self.aug_dim,
                "context_dim": self.context_dim, "n_layers": f.n_layers, "horizon": f.horizon, "width": f.width,
                "hidden_layers": f.hidden_layers, "tied": f.tied, "time_conditioned": f.time_conditioned,
                "activation": f.activation, "init_scale": f.init_scale, "head": self.head_kind,
                "context_blocks": self.flow.context_blocks}

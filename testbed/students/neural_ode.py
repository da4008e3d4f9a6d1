"""Neural ODE student: ``dh/dt = f_θ(t, h)`` solved by :func:`torchdiffeq.odeint`.

Its propagation field is the solver's step grid: ``n_layers`` equal steps on ``[0, T]`` for the fixed-step
methods (each ``step(l, ·)`` is one solver step), or the same grid of output times for adaptive ones
(each ``step`` is then one adaptive solve between consecutive grid times). ``adjoint=True`` back-propagates
with :func:`torchdiffeq.odeint_adjoint` (O(1) memory in depth).
"""

from __future__ import annotations

from typing import Any

import torch
from torchdiffeq import odeint, odeint_adjoint

from testbed.config import check_choice, check_nonneg, check_positive, check_positive_int
from testbed.errors import DivergenceError
from testbed.solvers import ADAPTIVE_METHODS, FIXED_STEP_METHODS
from testbed.students.base import Student, Tensor
from testbed.students.mlp import ACTIVATIONS, FieldMLP

#: accepted steps one adaptive solve may take before it is declared diverged
MAX_ADAPTIVE_STEPS = 20_000


class NeuralODEStudent(Student):
    """``h(T) = h(0) + ∫_0^T f_θ(t, h(t)) dt`` with a torchdiffeq solver."""

    kind = "neural_ode"

    def __init__(self, dim: int, n_layers: int = 16, horizon: float = 1.0, width: int = 64,
                 hidden_layers: int = 1, time_conditioned: bool = False, activation: str = "tanh",
                 method: str = "rk4", rtol: float = 1e-5, atol: float = 1e-6, adjoint: bool = False,
                 init_scale: float = 1.0) -> None:
        super().__init__()
        check_positive_int("dim", dim)
        check_positive_int("n_layers (solver steps)", n_layers)
        check_positive("horizon", horizon)
        check_positive_int("width", width)
        check_positive_int("hidden_layers", hidden_layers)
        check_choice("method", method, FIXED_STEP_METHODS + ADAPTIVE_METHODS)
        check_choice("activation", activation, list(ACTIVATIONS))
        check_positive("rtol", rtol)
        check_positive("atol", atol)
        self.dim, self.n_layers, self.horizon = dim, n_layers, float(horizon)
        self.width, self.hidden_layers, self.activation = width, hidden_layers, activation
        self.time_conditioned, self.method = time_conditioned, method
        self.rtol, self.atol, self.adjoint = float(rtol), float(atol), bool(adjoint)
        check_nonneg("init_scale", init_scale)
        self.init_scale = float(init_scale)
        self.field = FieldMLP(dim, width, hidden_layers, activation, time_conditioned, init_scale)

    def vector_field(self, t: Tensor | float, x: Tensor) -> Tensor:
        return self.field(t, x)

    def _solve(self, x0: Tensor, times: Tensor) -> Tensor:
        times = torch.as_tensor(times, dtype=x0.dtype, device=x0.device)
        kwargs: dict[str, Any] = {"method": self.method}
        if self.method in FIXED_STEP_METHODS:
            kwargs["options"] = {"step_size": self.horizon / self.n_layers}
        else:
            kwargs.update(rtol=self.rtol, atol=self.atol, options={"max_num_steps": MAX_ADAPTIVE_STEPS})
        try:
            if self.adjoint:
                return odeint_adjoint(self.field, x0, times, adjoint_params=tuple(self.field.parameters()),
                                      **kwargs)
            return odeint(self.vector_field, x0, times, **kwargs)
        except AssertionError as err:  # torchdiffeq signals an exhausted step budget or underflow this way
            raise DivergenceError(f"neural ODE {self.method} solve failed ({err}): the learned field is too stiff "
                                  "or diverged") from None

    def step(self, l: int, h: Tensor) -> Tensor:
        t = self.layer_times[l: l + 2]
        return self._solve(h, t)[-1]

    def trajectory(self, x0: Tensor, times: Tensor | None = None) -> Tensor:
        if times is None:
            times = self.layer_times
        times = torch.as_tensor(times, dtype=torch.float64)
        if self.method in FIXED_STEP_METHODS:
            # off-grid times would be silently linearly interpolated by torchdiffeq: refuse them, as the base does
            self.time_indices(times)
        if float(times[0]) != 0.0:
            times = torch.cat([torch.zeros(1, dtype=times.dtype), times])
            return self._solve(x0, times)[1:]
        return self._solve(x0, times)

    def forward(self, x0: Tensor) -> Tensor:
        return self._solve(x0, torch.tensor([0.0, self.horizon], dtype=torch.float64))[-1]

    @property
    def autonomous(self) -> bool:
        return not self.time_conditioned

    def spec(self) -> dict[str, Any]:
        return {
            "dim": self.dim, "n_layers": self.n_layers, "horizon": self.horizon, "width": self.width,
            "hidden_layers": self.hidden_layers, "time_conditioned": self.time_conditioned,
            "activation": self.activation, "method": self.method, "rtol": self.rtol, "atol": self.atol,
            "adjoint": self.adjoint, "init_scale": self.init_scale,
        }

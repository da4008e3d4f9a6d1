"""Small fully connected networks used as vector fields / residual branches."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from testbed.config import ConfigError
from testbed.students.base import Affine

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "gelu": nn.GELU, "softplus": nn.Softplus, "silu": nn.SiLU}
_ELEMENTWISE = tuple(ACTIVATIONS.values())


def make_activation(name: str) -> nn.Module:
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ConfigError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {name!r}") from None


class FieldMLP(nn.Module):
    """``g(t, x) = W_k σ(… σ(W_1 [x, t] + b_1) …) + b_k``: an MLP on the state, optionally time-conditioned.

    ``hidden_layers`` is the number of hidden layers; ``hidden_layers = 0`` gives the one-matrix block
    ``g(x) = W σ(x) + b`` (residual block depth 1 in Tensor Programs VI), ``hidden_layers = 1`` the two-matrix
    block ``W_2 σ(W_1 x + b_1) + b_2`` (block depth 2). With ``time_conditioned`` the time
    ``t`` is appended to the input as one extra coordinate. Works on any leading batch shape, including a
    single unbatched state of shape ``(dim,)`` (as ``torch.func.vmap`` sees it).
    """

    def __init__(self, dim: int, width: int = 64, hidden_layers: int = 1, activation: str = "tanh",
                 time_conditioned: bool = False, out_scale: float = 1.0) -> None:
        """``out_scale`` multiplies the initial output-layer weights and bias (0 gives ``g ≡ 0`` at init)."""
        super().__init__()
        self.dim = dim
        self.time_conditioned = time_conditioned
        layers: list[nn.Module] = []
        fan_in = dim + (1 if time_conditioned else 0)
        if hidden_layers == 0:
            layers.append(make_activation(activation))
        for _ in range(hidden_layers):
            layers += [nn.Linear(fan_in, width), make_activation(activation)]
            fan_in = width
        last = nn.Linear(fan_in, dim)
        if out_scale != 1.0:
            with torch.no_grad():
                last.weight.mul_(out_scale)
                last.bias.mul_(out_scale)
        layers.append(last)
        self.net = nn.Sequential(*layers)

    def forward(self, t: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
        if self.time_conditioned:
            tt = torch.as_tensor(t, dtype=x.dtype, device=x.device)
            tt = tt.expand(x.shape[:-1]).unsqueeze(-1) if tt.ndim == 0 else tt.reshape(*x.shape[:-1], 1)
            x = torch.cat([x, tt], dim=-1)
        return self.net(x)

    # ---------------------------------------------------------------- structure (for students' optional methods)
    def linear_names(self) -> list[str]:
        """Module names of the affine layers ``W_1, …, W_k`` in order (for ``get_submodule`` / ``get_parameter``)."""
        return [f"net.{i}" for i, mod in enumerate(self.net) if isinstance(mod, nn.Linear)]

    def first_layer_names(self) -> set[str]:
        """Parameter names of the first internal layer ``W_1, b_1`` of a block with two or more matrices
        (``hidden_layers ≥ 1``); empty for the one-matrix block ``W σ(x) + b``."""
        if not isinstance(self.net[0], nn.Linear) or len(self.linear_names()) < 2:
            return set()
        return {f"net.0.{n}" for n, _ in self.net[0].named_parameters()}

    def chain(self, params: Mapping[str, torch.Tensor] | None = None) -> tuple[Affine | nn.Module, ...] | None:
        """The layers as :class:`~testbed.students.base.BranchLayers` factors, in order: :class:`Affine` maps with
        this block's parameters (or those in ``params``, keyed as in :meth:`named_parameters`, e.g. interpolated
        weights) and the elementwise activation modules; ``None`` if ``net`` holds anything else."""
        params = dict(self.named_parameters()) if params is None else params
        out: list[Affine | nn.Module] = []
        for i, mod in enumerate(self.net):
            if isinstance(mod, nn.Linear):
                out.append(Affine(params[f"net.{i}.weight"], params.get(f"net.{i}.bias")))
            elif isinstance(mod, _ELEMENTWISE):
                out.append(mod)
            else:
                return None
        return tuple(out)

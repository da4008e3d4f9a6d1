"""Local, translation-equivariant vector fields for states on a periodic 1-D grid (PDE students).

A state ``u ∈ R^n`` holds the values ``u_j = u(x_j)`` on a periodic grid. The branch

    g(t, u)_j = Σ_{o=-r..r} a_o u_{j+o}                                   (linear stencil)
              + Σ_c w_c σ( Σ_{o=-r..r} W_{c,o} u_{j+o} + β_c t + b_c ) + b   (pointwise MLP on the stencil)

(indices mod ``n``, kernel width ``k = 2r + 1``) is a periodic 1-D convolution: it commutes with every
grid shift, and ``g(u)_j`` depends only on ``u_{j-r..j+r}``. A method-of-lines law such as the
second-order heat discretisation ``ν(u_{j+1} − 2u_j + u_{j-1})/Δx²`` is exactly a linear stencil, so a
learned field can be compared coefficient by coefficient with it (:meth:`StencilField.effective_stencil`).
"""

from __future__ import annotations

import torch
from torch import nn

from testbed.config import ConfigError, check_positive_int
from testbed.students.mlp import make_activation

Tensor = torch.Tensor


def periodic_pad(u: Tensor, r: int) -> Tensor:
    """``[u_{n-r}, …, u_{n-1}, u_0, …, u_{n-1}, u_0, …, u_{r-1}]`` along the last axis (vmap-safe)."""
    if r == 0:
        return u
    return torch.cat([u[..., -r:], u, u[..., :r]], dim=-1)


class StencilField(nn.Module):
    """``g(t, u)``: a learned linear stencil plus a small pointwise MLP on each stencil window.

    Args:
        n_grid:      grid size ``n`` (the state dimension).
        width:       channels of the nonlinear path (0 = purely linear stencil).
        hidden_layers: number of hidden 1×1 layers after the stencil convolution (≥ 1 when ``width > 0``).
        kernel_size: stencil width ``k = 2r + 1`` (odd, at most ``n``).
        activation:  nonlinearity ``σ``.
        time_conditioned: feed ``t`` to the nonlinear path as an extra constant channel.
        out_scale:   multiplies the initial linear stencil and output-layer weights (0: ``g ≡ 0`` at init).
    """

    def __init__(self, n_grid: int, width: int = 16, hidden_layers: int = 1, kernel_size: int = 3,
                 activation: str = "tanh", time_conditioned: bool = False, out_scale: float = 1.0) -> None:
        super().__init__()
        check_positive_int("dim (grid size)", n_grid)
        check_positive_int("kernel_size", kernel_size)
        if kernel_size % 2 == 0 or kernel_size > n_grid:
            raise ConfigError(f"kernel_size must be odd and at most the grid size {n_grid}, got {kernel_size}")
        if isinstance(width, bool) or not isinstance(width, int) or width < 0:
            raise ConfigError(f"width must be an integer ≥ 0, got {width!r}")
        self.n_grid, self.kernel_size, self.width = n_grid, kernel_size, width
        self.radius = kernel_size // 2
        self.time_conditioned = time_conditioned
        self.stencil = nn.Parameter(torch.randn(kernel_size) * out_scale / kernel_size)
        self.act = make_activation(activation)
        if width > 0:
            check_positive_int("hidden_layers", hidden_layers)
            self.inp = nn.Conv1d(1 + int(time_conditioned), width, kernel_size)
            self.hidden = nn.ModuleList(nn.Conv1d(width, width, 1) for _ in range(hidden_layers - 1))
            self.out = nn.Conv1d(width, 1, 1)
            with torch.no_grad():
                self.out.weight.mul_(out_scale)
                self.out.bias.mul_(out_scale)

    def forward(self, t: Tensor | float, u: Tensor) -> Tensor:
        if u.shape[-1] != self.n_grid:
            raise ValueError(f"state must have last dimension {self.n_grid}, got {tuple(u.shape)}")
        lead = u.shape[:-1]
        flat = u.reshape(-1, 1, self.n_grid)
        padded = periodic_pad(flat, self.radius)
        lin = torch.nn.functional.conv1d(padded, self.stencil.view(1, 1, -1))
        if self.width == 0:
            return lin.reshape(*lead, self.n_grid)
        z = padded
        if self.time_conditioned:
            tt = torch.as_tensor(t, dtype=u.dtype, device=u.device).reshape(-1, 1, 1)
            z = torch.cat([z, tt.expand(z.shape[0], 1, z.shape[-1])], dim=1)
        z = self.act(self.inp(z))
        for layer in self.hidden:
            z = self.act(layer(z))
        return (lin + self.out(z)).reshape(*lead, self.n_grid)

    def effective_stencil(self, u: Tensor | None = None, t: float = 0.0) -> Tensor:
        """The linearised stencil ``c_o = ∂g_j/∂u_{j+o}`` (``o = -r..r``), averaged over ``j`` (and the rows of
        ``u``; default ``u = 0``). For a linear field this is exactly the learned stencil."""
        return linearised_stencil(lambda x: self.forward(t, x), self.n_grid, self.radius, self.stencil.dtype, u)


def linearised_stencil(g, n_grid: int, radius: int, dtype: torch.dtype, u: Tensor | None = None) -> Tensor:
    """``c_o = mean_{rows of u, j} ∂g(u)_j/∂u_{j+o}`` for ``o = −r..r`` (indices mod ``n``; default ``u = 0``): the
    stencil of a translation-equivariant field ``g`` linearised at the states ``u``."""
    from torch.func import jacrev, vmap

    u = torch.zeros(1, n_grid, dtype=dtype) if u is None else u.reshape(-1, n_grid).to(dtype)
    jac = vmap(jacrev(g))(u)  # (B, n, n)
    j = torch.arange(n_grid)
    cols = (j[:, None] + torch.arange(-radius, radius + 1)[None, :]) % n_grid  # (n, k)
    return jac[:, j[:, None], cols].mean(dim=(0, 1)).detach()

"""A local polynomial vector field on a periodic 1-D grid: the learnable counterpart of a finite-difference law.

For a state ``u ∈ R^n`` on a periodic grid and a window of radius ``r`` (kernel ``k = 2r + 1``),

    g(t, u)_j = b + Σ_o a_o u_{j+o} + Σ_{o ≤ o'} B_{o,o'} u_{j+o} u_{j+o'} + c u_j³        (o, o' ∈ −r..r)

(indices mod ``n``). It is translation-equivariant, local (``g_j`` reads ``u_{j−r..j+r}`` only) and *linear in its
parameters*: every method-of-lines law built from a linear stencil, a quadratic flux and a pointwise cubic — heat
``ν D² u``, advection ``−c D u``, Burgers ``−½ D(u²) + ν D² u``, Allen–Cahn ``ε D² u + u − u³`` with ``D``, ``D²``
finite-difference stencils of radius ``≤ r`` — is exactly one parameter vector. (A pseudo-spectral law is not
local; :func:`least_squares_floor` gives the best a radius-``r`` field of this form can do on given data.)
With ``quadratic=False`` and ``cubic=False`` it is a linear stencil.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from testbed.config import ConfigError, check_nonneg, check_positive_int

Tensor = torch.Tensor


def window(u: Tensor, radius: int) -> Tensor:
    """``W[..., j, i] = u[..., (j + i − r) mod n]``: the periodic window of every grid point (shape (..., n, k))."""
    return torch.stack([torch.roll(u, -o, dims=-1) for o in range(-radius, radius + 1)], dim=-1)


def features(u: Tensor, radius: int, quadratic: bool = True, cubic: bool = True) -> Tensor:
    """The monomials of :class:`PolynomialStencil` at every grid point, shape (..., n, m): the ``k`` window values,
    then (``quadratic``) the ``k(k+1)/2`` products ``u_{j+o} u_{j+o'}`` (``o ≤ o'``), then (``cubic``) ``u_j³``."""
    w = window(u, radius)
    parts = [w]
    if quadratic:
        i, j = torch.triu_indices(w.shape[-1], w.shape[-1])
        parts.append(w[..., i] * w[..., j])
    if cubic:
        parts.append(u.unsqueeze(-1) ** 3)
    return torch.cat(parts, dim=-1)


class PolynomialStencil(nn.Module):
    """``g(t, u)_j = b + θ · φ(u)_j`` with the monomials ``φ`` of :func:`features` (autonomous: ``t`` is ignored).

    Args:
        n_grid:      grid size ``n`` (the state dimension).
        kernel_size: window ``k = 2r + 1`` (odd, at most ``n``).
        quadratic:   include the products of two window values.
        cubic:       include the pointwise cube ``u_j³``.
        init_scale:  standard deviation of the initial coefficients is ``init_scale / m`` (0: ``g ≡ 0``).
    """

    def __init__(self, n_grid: int, kernel_size: int = 5, quadratic: bool = True, cubic: bool = True,
                 init_scale: float = 1.0) -> None:
        super().__init__()
        check_positive_int("dim (grid size)", n_grid)
        check_positive_int("kernel_size", kernel_size)
        if kernel_size % 2 == 0 or kernel_size > n_grid:
            raise ConfigError(f"kernel_size must be odd and at most the grid size {n_grid}, got {kernel_size}")
        check_nonneg("init_scale", init_scale)
        self.n_grid, self.kernel_size, self.radius = n_grid, kernel_size, kernel_size // 2
        self.quadratic, self.cubic = bool(quadratic), bool(cubic)
        m = kernel_size + (kernel_size * (kernel_size + 1) // 2 if quadratic else 0) + int(cubic)
        self.coef = nn.Parameter(torch.randn(m) * init_scale / m)
        self.bias = nn.Parameter(torch.zeros(()))
        # the fixed affine map of the monomials (identity until :meth:`precondition` is called): ψ = (φ − μ) P
        self.register_buffer("shift", torch.zeros(m))
        self.register_buffer("transform", torch.eye(m))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[override]
        # checkpoints written before preconditioning existed hold no shift/transform: the identity map, as then
        for name, default in (("shift", torch.zeros_like(self.shift)), ("transform", torch.eye(self.n_features))):
            state_dict.setdefault(prefix + name, default.to(self.coef.dtype))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def n_features(self) -> int:
        return self.coef.numel()

    def forward(self, t: Tensor | float, u: Tensor) -> Tensor:
        if u.shape[-1] != self.n_grid:
            raise ValueError(f"state must have last dimension {self.n_grid}, got {tuple(u.shape)}")
        phi = features(u, self.radius, self.quadratic, self.cubic)
        return ((phi - self.shift) @ self.transform) @ self.coef + self.bias

    @torch.no_grad()
    def precondition(self, states: Tensor, rcond: float = 1e-2) -> None:
        """Precondition the monomials on ``states`` (rows of shape (..., n)) and restart the field at ``g ≡ 0``.

        With ``μ`` the mean and ``C = V diag(λ) Vᵀ`` the covariance of the monomials over every (state, grid point),
        the field becomes ``g = b + ((φ − μ) P) · θ`` with ``P = V diag(max(λ, rcond·λ_max))^{-1/2}``: the
        monomials the optimiser sees are rotated onto the eigenbasis of ``C`` and whitened there, except that
        directions with variance below ``rcond·λ_max`` are scaled as if they had exactly that variance (their
        covariance is ``λ/(rcond·λ_max) < 1``). The function class is unchanged (``P`` is invertible; ``b``
        absorbs ``μ``); only the geometry of the parameters changes. Smooth data make the window values nearly
        collinear (``u_{j+1} ≈ u_j``) and a finite-difference law has coefficients of order ``ν/Δx²``; without this
        step a first-order optimiser crawls along that ill-conditioned valley. The floor (default ``1e-2``) keeps
        a unit step in ``θ`` from moving the field by more than ``1/√rcond = 10`` times its data scale along the
        barely excited directions: the roll-out terms of an objective leave the data slightly, and a full
        whitening (``rcond → 0``) let the Euler roll-out of the advection student blow up within a few hundred
        Adam steps (measured). ``θ`` and ``b`` restart at 0, since a random ``θ`` in these units would weigh the
        barely excited directions heavily.
        """
        phi = features(states.reshape(-1, self.n_grid).to(self.coef.dtype), self.radius, self.quadratic,
                       self.cubic).reshape(-1, self.n_features)
        mu = phi.mean(0)
        lam, vec = torch.linalg.eigh(torch.cov((phi - mu).T))
        lam = lam.clamp_min(rcond * float(lam.max()))
        self.shift.copy_(mu)
        self.transform.copy_(vec * lam.rsqrt())
        self.coef.zero_()
        self.bias.zero_()

    def effective_stencil(self, u: Tensor | None = None, t: float = 0.0) -> Tensor:
        """The linearised stencil ``c_o = ∂g_j/∂u_{j+o}`` averaged over ``j`` and the rows of ``u`` (default ``u = 0``,
        where it is the linear coefficients ``a_o``) — the same definition as
        :meth:`~testbed.students.conv.StencilField.effective_stencil`."""
        from testbed.students.conv import linearised_stencil

        return linearised_stencil(lambda x: self.forward(t, x), self.n_grid, self.radius, self.coef.dtype, u)


def _design(states: Tensor, kernel_size: int, quadratic: bool, cubic: bool) -> Tensor:
    """Rows = (state, grid point) pairs; columns = the monomials and a constant."""
    n = states.shape[-1]
    X = features(states.reshape(-1, n).double(), kernel_size // 2, quadratic, cubic)
    X = X.reshape(-1, X.shape[-1])
    return torch.cat([X, torch.ones(X.shape[0], 1, dtype=X.dtype)], dim=1)


def least_squares_floor(states: Tensor, velocities: Tensor, kernel_size: int, quadratic: bool = True,
                        cubic: bool = True, tests: Sequence[tuple[Tensor, Tensor]] = ()) -> list[float]:
    """``[floor, *test errors]``: ``floor`` is the smallest law error ``‖g − F*‖/‖F*‖`` any
    :class:`PolynomialStencil` of this ``kernel_size`` reaches on the fitting data — the least-squares fit of
    ``velocities`` (``F*(u)``) on the monomials of ``states`` (rows of shape (..., n); SVD solver, minimum-norm
    solution) — and each test error is that one fit's law error on a ``(states, velocities)`` pair of ``tests``.
    The floor is 0 (to rounding) when ``F*`` is a polynomial law of radius ``≤ r``; the test errors are not floors
    (a wide window is not pinned by data with few modes, and other field families, e.g. an MLP on the window,
    are not bounded by it)."""
    X = _design(states, kernel_size, quadratic, cubic)
    y = velocities.reshape(-1, 1).double()
    sol = torch.linalg.lstsq(X, y, driver="gelsd").solution       # SVD: robust to near-collinear monomials
    errs = [float((X @ sol - y).norm() / y.norm())]
    for ts, tv in tests:
        Xt, yt = _design(ts, kernel_size, quadratic, cubic), tv.reshape(-1, 1).double()
        errs.append(float((Xt @ sol - yt).norm() / yt.norm()))
    return errs


__all__ = ["PolynomialStencil", "features", "least_squares_floor", "window"]

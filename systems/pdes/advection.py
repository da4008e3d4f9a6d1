"""Linear advection ``u_t + c u_x = 0`` on the periodic interval ``[0, ℓ)``."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch

from systems.base import SystemSpecError, Tensor
from systems.flows._common import check_real
from systems.pdes.base import PDESystem, SchemeChoice
from systems.pdes.operators import Stencil, complex_dtype, spectral_symbol, stencil_symbol
from systems.registry import register


@register
@dataclasses.dataclass(repr=False)
class Advection(SchemeChoice, PDESystem):
    """Linear advection ``u_t = -c u_x``, periodic on ``[0, ℓ)``, ``N = n_grid`` points ``x_j = j·dx``.

    Schemes (``scheme``):

    * ``"spectral"`` (default): the Fourier derivative, ``λ_k = -i c κ_k`` (``κ_k = 2πk/ℓ``; 0 at the Nyquist
      mode). The flow is the exact phase shift ``û_k(t) = e^{-icκ_k t} û_k(0)``; for band-limited data (modes
      ``< N/2``) it equals the continuous solution ``u0(x - ct)`` at the grid points. It conserves the mean
      and the discrete ``L²`` norm exactly (the operator is skew symmetric). Even ``n_grid``.
    * ``"upwind"``: first-order upwind differences, ``-(c/dx)(u_j - u_{j-1})`` for ``c > 0`` and
      ``-(c/dx)(u_{j+1} - u_j)`` for ``c < 0`` (:meth:`stencil`); symbol ``-(|c|/dx)(1 - e^{∓iκ_k dx})``
      (numerical diffusion ``|c| dx/2``). Exact flow of the semi-discrete system by the same Fourier formula.
      Any ``n_grid ≥ 8``.

    Defaults: ``n_grid = 32``, ``c = 1``, ``T = 1`` (a shift by one radian, ``dx·5.1``), modes 1..3 with
    RMS 1 (OOD: modes 1..6). Spectrum: ``spectral`` purely imaginary, ``max|λ| = c(N/2 - 1) = 15``
    (``h·max|λ| = 0.94`` at ``L = 16``): forward Euler is *never* absolutely stable on it (``|1 + ihω| > 1``;
    over the horizon the worst mode grows by 155 at L = 16, the ID modes by at most 1.32), see
    :meth:`check_stability` with ``max_growth``. ``upwind``: Euler is stable iff the CFL number
    ``|c| h/dx ≤ 1``, i.e. ``L ≥ 6`` at the defaults.
    """

    name: ClassVar[str] = "advection"
    closed_form: ClassVar[bool] = True
    linear: ClassVar[bool] = True
    SCHEMES: ClassVar[tuple[str, ...]] = ("spectral", "upwind")

    horizon: float = 1.0
    c: float = 1.0
    scheme: str = "spectral"

    def validate(self) -> None:
        self.check_scheme()
        super().validate()
        check_real(self.name, "c", self.c)
        if float(self.c) == 0.0:
            raise SystemSpecError(f"{self.name}: parameter 'c' must be non-zero (c = 0 is the identity flow)")

    def stencil(self) -> Stencil:
        """The true stencil of ``-c ∂_x``: upwind ``(c/dx, -c/dx)`` at offsets ``(-1, 0)`` (``c > 0``) or
        ``(c/dx, -c/dx)`` at ``(0, 1)`` (``c < 0``); for ``"spectral"`` the full circulant row."""
        c = float(self.c)
        if self.scheme == "upwind":
            return Stencil((-1, 0) if c > 0 else (0, 1), (c / self.dx, -c / self.dx))
        return self.circulant_stencil()

    def symbol(self, dtype: torch.dtype = torch.float64, device=None) -> Tensor:
        c = float(self.c)
        if self.scheme == "upwind":
            st = self.stencil()
            return stencil_symbol(self.n_grid, float(self.length), st.offsets, st.coefficients, dtype, device)
        return (-c * spectral_symbol(self.n_grid, float(self.length), 1, dtype, device)).to(complex_dtype(dtype))

    def vector_field(self, t, x: Tensor) -> Tensor:
        """``-c u_x`` by FFT (``spectral``) or the upwind stencil."""
        self._check_state(x)
        return self.stencil().apply(x) if self.scheme == "upwind" else self.apply_linear(x)

    def jvp(self, t, u: Tensor, v: Tensor) -> Tensor:
        return self.stencil().apply(v) if self.scheme == "upwind" else self.apply_linear(v)

    def linear_matrix(self, dtype: torch.dtype = torch.float64, device=None) -> Tensor:
        if self.scheme == "upwind":
            return self.stencil().matrix(self.n_grid, dtype, device)
        return super().linear_matrix(dtype, device)

"""The heat equation ``u_t = ν u_xx`` on the periodic interval ``[0, ℓ)``."""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import torch

from systems.base import Tensor
from systems.flows._common import check_real
from systems.pdes.base import PDESystem, SchemeChoice
from systems.pdes.operators import Stencil, complex_dtype, wavenumbers
from systems.registry import register


@register
@dataclasses.dataclass(repr=False)
class Heat(SchemeChoice, PDESystem):
    """Heat equation ``u_t = ν u_xx``, periodic on ``[0, ℓ)``, ``N = n_grid`` points ``x_j = j·dx``.

    Schemes (``scheme``):

    * ``"fd"`` (default): the second-order central Laplacian ``(ν/dx²)(u_{j+1} - 2u_j + u_{j-1})``, a 3-point
      stencil (:meth:`stencil`), so a learned stencil can be compared with it coefficient by coefficient. Its
      eigenvalues are the modified wavenumbers ``λ_k = -(4ν/dx²) sin²(κ_k dx/2)``, ``κ_k = 2πk/ℓ``
      (``≈ -νκ_k² (1 - κ_k²dx²/12)``: second order in ``dx``). Any ``n_grid ≥ 8``.
    * ``"spectral"``: the Fourier Laplacian ``λ_k = -νκ_k²``; for band-limited data (modes ``< N/2``) its
      semi-discrete solution *is* the continuous one, ``Σ_k e^{-νκ_k² t} û_k e^{iκ_k x}``. Even ``n_grid``.

    Flow: exact solution of the semi-discrete system, ``u(t) = F⁻¹ diag(e^{λ_k t}) F u0`` (``F`` the DFT).
    It conserves the mean (``λ_0 = 0``) and decays the discrete ``L²`` norm.

    Defaults: ``n_grid = 32``, ``ν = 0.1``, ``T = 1``, modes 1..3 with RMS 1 (OOD: modes 1..6, RMS 1). The
    slowest ID mode decays by ``e^{-0.1}``, the fastest (k = 3) by ``e^{-0.87}``. Stiffness at ``L = 16``
    forward-Euler layers (``h = T/16``): ``fd`` ``max|λ| = 4ν/dx² = 10.4``, ``h·max|λ| = 0.65``; ``spectral``
    ``max|λ| = ν(N/2)² = 25.6``, ``h·max|λ| = 1.6`` (Euler needs ``≤ 2``).
    """

    name: ClassVar[str] = "heat"
    closed_form: ClassVar[bool] = True
    linear: ClassVar[bool] = True
    SCHEMES: ClassVar[tuple[str, ...]] = ("fd", "spectral")

    horizon: float = 1.0
    nu: float = 0.1
    scheme: str = "fd"

    def validate(self) -> None:
        self.check_scheme()
        super().validate()
        check_real(self.name, "nu", self.nu, positive=True)

    def stencil(self) -> Stencil:
        """The true stencil of ``L_h``: ``(ν/dx²)·(1, -2, 1)`` at offsets ``(-1, 0, 1)`` for ``"fd"``; for
        ``"spectral"`` the full circulant row (offsets ``-N/2+1 .. N/2``)."""
        if self.scheme == "fd":
            c = float(self.nu) / self.dx ** 2
            return Stencil((-1, 0, 1), (c, -2.0 * c, c))
        return self.circulant_stencil()

    def symbol(self, dtype: torch.dtype = torch.float64, device=None) -> Tensor:
        kappa = wavenumbers(self.n_grid, float(self.length), dtype, device)
        nu = float(self.nu)
        if self.scheme == "fd":
            lam = -(4.0 * nu / self.dx ** 2) * torch.sin(kappa * (self.dx / 2)) ** 2
        else:
            lam = -nu * kappa ** 2
        return lam.to(complex_dtype(dtype))

    def vector_field(self, t, x: Tensor) -> Tensor:
        """``ν u_xx`` by the 3-point stencil (``fd``) or by FFT (``spectral``)."""
        self._check_state(x)
        return self.stencil().apply(x) if self.scheme == "fd" else self.apply_linear(x)

    def jvp(self, t, u: Tensor, v: Tensor) -> Tensor:
        return self.stencil().apply(v) if self.scheme == "fd" else self.apply_linear(v)

    def linear_matrix(self, dtype: torch.dtype = torch.float64, device=None) -> Tensor:
        if self.scheme == "fd":
            return self.stencil().matrix(self.n_grid, dtype, device)
        return super().linear_matrix(dtype, device)

    def exact_solution(self, coeffs_cos: Tensor, coeffs_sin: Tensor, t: Tensor | float,
                       x: Tensor | None = None) -> Tensor:
        """The continuous solution ``Σ_{k≥1} e^{-νκ_k² t}(a_k cos κ_k x + b_k sin κ_k x)`` of the PDE (not the
        semi-discrete one) for ``u0 = Σ_k a_k cos κ_k x + b_k sin κ_k x``; ``coeffs_*`` have shape ``(..., K)``
        for ``k = 1..K``; returns ``(..., len(x))`` (default ``x``: the grid) at the scalar time ``t``."""
        x = self.grid(coeffs_cos.dtype) if x is None else x
        k = torch.arange(1, coeffs_cos.shape[-1] + 1, dtype=coeffs_cos.dtype)
        kappa = (2.0 * math.pi / float(self.length)) * k
        decay = torch.exp(-float(self.nu) * kappa ** 2 * float(t))
        ph = kappa[:, None] * x[None, :]
        return (coeffs_cos * decay) @ torch.cos(ph) + (coeffs_sin * decay) @ torch.sin(ph)

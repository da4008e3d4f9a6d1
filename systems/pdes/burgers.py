"""Viscous Burgers ``u_t + u u_x = ν u_xx`` on the periodic interval ``[0, ℓ)`` (pseudo-spectral with the 2/3 rule,
or the conservative central finite-difference law)."""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import ClassVar

import torch

from systems.base import Tensor
from systems.flows._common import check_real
from systems.pdes.base import PDESystem, ResolutionWarning, SchemeChoice
from systems.pdes.operators import (
    complex_dtype,
    dealias_cutoff,
    dealias_mask,
    spectral_symbol,
    symbol_matrix,
    wavenumbers,
)
from systems.registry import register

# grid Reynolds number Re_h = U dx / ν above which Burgers warns (U = 3 × the larger RMS amplitude)
MAX_GRID_REYNOLDS = 4.0


class QuadraticFlux:
    """Mixin: the dealiased conservative flux term ``Q(u) = -½ ∂_x P[(P u)²]`` of Burgers-type PDEs.

    ``P`` is the 2/3-rule projection onto the modes ``|k| ≤ ⌊(N-1)/3⌋`` (:func:`dealias_mask`), applied to
    ``u`` before squaring and to the square after, so ``Q`` is alias free on the kept modes. ``Q`` preserves the
    mean (``∂_x`` kills mode 0) and the discrete energy (``⟨u, Q(u)⟩ = 0`` exactly), and leaves the modes above
    the cutoff untouched (they evolve by the linear part alone).
    """

    n_grid: int
    length: float

    def _flux_symbols(self, dtype: torch.dtype, device) -> tuple[Tensor, Tensor]:
        mask = dealias_mask(self.n_grid, dtype, device)
        d1 = spectral_symbol(self.n_grid, float(self.length), 1, dtype, device) * mask
        return mask.to(complex_dtype(dtype)), d1

    def flux_hat(self, v: Tensor) -> Tensor:
        """``rfft(Q(u))`` from ``v = rfft(u)``."""
        mask, d1 = self._flux_symbols(_real(v.dtype), v.device)
        w = torch.fft.irfft(mask * v, n=self.n_grid, dim=-1)
        return -0.5 * d1 * torch.fft.rfft(w * w, dim=-1)

    def flux_jvp_hat(self, v: Tensor, dv: Tensor) -> Tensor:
        """``∂Q̂/∂v (v) · dv = -D P rfft((P u)(P du))`` in Fourier space (``v`` broadcast against ``dv``)."""
        mask, d1 = self._flux_symbols(_real(v.dtype), v.device)
        w = torch.fft.irfft(mask * v, n=self.n_grid, dim=-1)
        dw = torch.fft.irfft(mask * dv, n=self.n_grid, dim=-1)
        return -d1 * torch.fft.rfft(w * dw, dim=-1)

    def flux_jvp(self, u: Tensor, v: Tensor) -> Tensor:
        """``∂Q/∂u (u) · v = -∂_x P[(P u)(P v)]``."""
        mask, d1 = self._flux_symbols(u.dtype, u.device)
        n = self.n_grid
        pu = torch.fft.irfft(mask * torch.fft.rfft(u, dim=-1), n=n, dim=-1)
        pv = torch.fft.irfft(mask * torch.fft.rfft(v, dim=-1), n=n, dim=-1)
        return -torch.fft.irfft(d1 * torch.fft.rfft(pu * pv, dim=-1), n=n, dim=-1)

    def flux_jacobian(self, u: Tensor) -> Tensor:
        """Dense ``∂Q/∂u = -D P diag(P u) P`` (``D`` the spectral derivative), shape ``(..., N, N)``."""
        n = self.n_grid
        mask, d1 = self._flux_symbols(torch.float64, u.device)
        Pm = symbol_matrix(mask, n).to(u.dtype)
        DP = symbol_matrix(d1, n).to(u.dtype)
        pu = u @ Pm.transpose(-1, -2)
        return -(DP * pu[..., None, :]) @ Pm

    # the semilinear hooks of a PDE u_t = L u + Q(u) whose nonlinearity is this flux
    def nonlinear_hat(self, v: Tensor) -> Tensor:
        return self.flux_hat(v)

    def nonlinear_jvp_hat(self, v: Tensor, dv: Tensor) -> Tensor:
        return self.flux_jvp_hat(v, dv)

    def jvp(self, t, u: Tensor, v: Tensor) -> Tensor:
        return self.apply_linear(v) + self.flux_jvp(u, v)

    def jacobian(self, t, x: Tensor) -> Tensor:
        """``L − D P diag(P u) P`` (the linear part's matrix plus :meth:`flux_jacobian`)."""
        self._check_state(x)
        return self.linear_matrix(x.dtype, x.device) + self.flux_jacobian(x)


def _real(cdtype: torch.dtype) -> torch.dtype:
    return torch.float64 if cdtype == torch.complex128 else torch.float32


@register
@dataclasses.dataclass(repr=False)
class Burgers(SchemeChoice, QuadraticFlux, PDESystem):
    """Viscous Burgers ``u_t = -u u_x + ν u_xx`` in conservative form ``u_t = -½(u²)_x + ν u_xx``, periodic on
    ``[0, ℓ)``, ``N = n_grid`` points (even for the spectral scheme).

    Schemes (``scheme``):

    * ``"spectral"`` (default; Fourier pseudo-spectral, 2/3 dealiasing): ``f(u) = ν D² u - ½ D P[(P u)²]`` with
      ``D`` the spectral derivative (symbol ``iκ_k``) and ``P`` the projection onto ``|k| ≤ ⌊(N-1)/3⌋``. The
      semi-discrete system conserves the mean exactly and its energy ``½‖u‖²`` decays at the rate ``ν‖D u‖²``
      (the dealiased flux is exactly energy neutral). ``f(u)_j`` depends on every grid value (non-local).
    * ``"fd"``: the conservative central finite-difference law
      ``f(u)_j = -(u_{j+1}² − u_{j−1}²)/(4dx) + ν(u_{j+1} − 2u_j + u_{j−1})/dx²`` — local (radius 1), second
      order in ``dx``, mean conserving, not exactly energy neutral. In Fourier space it is the same semilinear
      form with ``D`` → ``i sin(κ dx)/dx``, ``D²`` → ``−(4/dx²) sin²(κ dx/2)`` and ``P = I``, integrated by the
      same ETDRK4 scheme. Central differences stay free of grid-scale wiggles only for a cell Péclet number
      ``U dx/ν ≤ 2``; the defaults' 3σ bound gives 2.9, which the ID samples (RMS 0.5) rarely reach.

    Flow: ETDRK4 with the diffusion integrated exactly and substeps ``≤ max_step() = 0.04/(κ_c U)`` (``κ_c``
    the largest derivative symbol of the flux: the dealiasing cutoff wavenumber, or ``1/dx`` for ``fd``; ``U`` =
    3 × the larger RMS amplitude: a CFL-like bound on the advective rate; 375 steps per unit time at the spectral
    defaults), giving a global error of about ``1e-9`` on ID data (ETDRK4 error ``∝ h⁴``).

    Exact solutions: Cole–Hopf, ``u = -2ν φ_x/φ`` for a positive heat solution ``φ_t = ν φ_xx``
    (:meth:`cole_hopf`), used by the tests on a fine grid.

    Resolution: a viscous front of jump ``2U`` has width ``~4ν/U``; the grid Reynolds number
    ``Re_h = U dx/ν`` with ``U = 3 max(id_amplitude, ood_amplitude)`` (the 3σ pointwise bound of the samples)
    above ``4`` (:data:`MAX_GRID_REYNOLDS`) means fronts may be resolved by fewer than about one grid point per
    front width and the semi-discrete solution (though exact for its own ODE) no longer approximates the PDE
    well: a :class:`ResolutionWarning` is issued at construction.

    Defaults: ``n_grid = 32``, ``ν = 0.1``, ``T = 0.8``, ID modes 1..3 with RMS 0.5 (OOD: modes 1..6, RMS 0.5);
    ``Re_h = 1.5·0.196/0.1 = 2.9``. Over the horizon the state changes by about half its norm and fronts steepen
    (``max|u_x|`` of the steepest 3σ samples grows from 3.2 to 3.6) without becoming shocks; the semi-discrete
    teacher stays within 2% of ``max|u0|`` of the continuous PDE (measured against ``N = 128``). Stiffness at
    ``L = 16`` (``h = 0.05``): the Jacobian's spectral radius on ID trajectories is ``ν(N/2)² = 25.6`` (the
    diffusion of the highest mode; the advective part ``k_c max|u| ≲ 15`` adds mostly imaginary parts), so
    ``h·max|λ| = 1.28 < 2`` and Euler is stable from ``L = 11`` on (:meth:`check_stability`); for ``fd`` the
    diffusion's radius is ``4ν/dx² = 10.4`` (``h·max|λ| = 0.52``).
    """

    name: ClassVar[str] = "burgers"

    horizon: float = 0.8
    id_amplitude: float = 0.5
    ood_amplitude: float = 0.5
    nu: float = 0.1
    scheme: str = "spectral"

    SCHEMES: ClassVar[tuple[str, ...]] = ("spectral", "fd")

    def validate(self) -> None:
        self.check_scheme()
        super().validate()
        check_real(self.name, "nu", self.nu, positive=True)
        re = self.grid_reynolds()
        if re > MAX_GRID_REYNOLDS:
            warnings.warn(f"{self.name}: grid Reynolds number U·dx/ν = {re:.3g} > {MAX_GRID_REYNOLDS:g} "
                          f"(U = 3·amplitude = {self._velocity_scale():.3g}, dx = {self.dx:.3g}, nu = {self.nu:g}): "
                          "viscous fronts are under-resolved; increase n_grid or nu",
                          ResolutionWarning, stacklevel=4)

    def max_mode(self) -> int:
        return dealias_cutoff(int(self.n_grid)) if self.spectral else super().max_mode()

    def _velocity_scale(self) -> float:
        return 3.0 * max(float(self.id_amplitude), float(self.ood_amplitude))

    def grid_reynolds(self) -> float:
        """``Re_h = U dx / ν`` with ``U = 3·max(id_amplitude, ood_amplitude)``."""
        return self._velocity_scale() * self.dx / float(self.nu)

    def max_step(self) -> float:
        # the largest derivative symbol the flux applies: κ_c (spectral, dealiased) or max sin(κ dx)/dx = 1/dx (fd)
        kc = dealias_cutoff(self.n_grid) * 2.0 * math.pi / float(self.length) if self.spectral else 1.0 / self.dx
        return min(float(self.horizon) / 8, 0.04 / (kc * self._velocity_scale()))

    def symbol(self, dtype: torch.dtype = torch.float64, device=None) -> Tensor:
        kappa = wavenumbers(self.n_grid, float(self.length), dtype, device)
        if self.spectral:
            lam = -float(self.nu) * kappa ** 2
        else:
            lam = -(4.0 * float(self.nu) / self.dx ** 2) * torch.sin(kappa * (self.dx / 2)) ** 2
        return lam.to(complex_dtype(dtype))

    def _flux_symbols(self, dtype: torch.dtype, device) -> tuple[Tensor, Tensor]:
        if self.spectral:
            return super()._flux_symbols(dtype, device)
        kappa = wavenumbers(self.n_grid, float(self.length), dtype, device)
        d1 = (1j * torch.sin(kappa * self.dx) / self.dx).to(complex_dtype(dtype))
        return torch.ones_like(d1), d1

    def cole_hopf(self, a0: float, coeffs_cos: Tensor, coeffs_sin: Tensor, t: float,
                  x: Tensor | None = None) -> Tensor:
        """The exact solution ``u = -2ν φ_x/φ`` of the (continuous) PDE with
        ``φ(x, t) = a0 + Σ_{k=1..K} e^{-νκ_k² t}(c_k cos κ_k x + s_k sin κ_k x)``, ``κ_k = 2πk/ℓ``
        (a positive heat solution when ``a0 > Σ_k |c_k| + |s_k|``). ``coeffs_*`` have shape ``(K,)``;
        returns the values at ``x`` (default: the grid) at the scalar time ``t``."""
        x = self.grid(coeffs_cos.dtype) if x is None else x
        nu = float(self.nu)
        kappa = (2.0 * math.pi / float(self.length)) * torch.arange(1, coeffs_cos.shape[-1] + 1,
                                                                     dtype=coeffs_cos.dtype)
        decay = torch.exp(-nu * kappa ** 2 * float(t))
        c, s = coeffs_cos * decay, coeffs_sin * decay
        ph = kappa[:, None] * x[None, :]
        phi = a0 + c @ torch.cos(ph) + s @ torch.sin(ph)
        phi_x = (-c * kappa) @ torch.sin(ph) + (s * kappa) @ torch.cos(ph)
        return -2.0 * nu * phi_x / phi

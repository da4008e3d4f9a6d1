"""Kuramoto–Sivashinsky ``u_t = -u u_x - u_xx - u_xxxx`` on the periodic interval ``[0, ℓ)``."""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import torch

from systems.base import Tensor
from systems.pdes.base import PDESystem
from systems.pdes.burgers import QuadraticFlux
from systems.pdes.operators import complex_dtype, dealias_cutoff, wavenumbers
from systems.registry import register


@register
@dataclasses.dataclass(repr=False)
class KuramotoSivashinsky(QuadraticFlux, PDESystem):
    """Kuramoto–Sivashinsky ``u_t = -½(u²)_x - u_xx - u_xxxx``, periodic on ``[0, ℓ)``, ``N = n_grid`` (even).

    Discretisation (Fourier pseudo-spectral, 2/3 dealiasing, as Burgers): ``f(u) = L u - ½ D P[(P u)²]`` with
    the linear symbol ``λ_k = κ_k² - κ_k⁴`` (modes ``0 < κ_k < 1`` grow: the instability that drives the
    spatio-temporal chaos; ``λ`` is very negative for large ``κ``). Mean conserved. Flow: ETDRK4 (the linear
    part exactly, as in Kassam & Trefethen) with substeps ``≤ max_step() = 0.1/(κ_c U)`` (``κ_c`` the dealiasing
    cutoff wavenumber, ``U`` = 3 × the larger RMS amplitude; 900 steps over the default horizon), global error
    a few ``1e-9`` over the default horizon on ID data (the stiff modes reduce the observed order to ≈ 3.5).

    Defaults: ``ℓ = 22`` (the classic chaotic box, 3 unstable modes ``κ = 2πk/22 < 1``), ``n_grid = 64``,
    ``T = 5``, ID modes 1..3 with RMS 1 (OOD: modes 1..6, RMS 1). **Not** a forward-Euler learning problem at
    ``L = 16``: ``max|λ| = κ_{N/2}⁴ - κ_{N/2}² ≈ 6.9e3`` (``h·max|λ| ≈ 2e3``); explicit students need
    ``L ≳ 1.8e4`` (:meth:`check_stability`). Meant for exponential / implicit students and for long-horizon
    chaos diagnostics.
    """

    name: ClassVar[str] = "kuramoto_sivashinsky"

    horizon: float = 5.0
    n_grid: int = 64
    length: float = 22.0

    def max_mode(self) -> int:
        return dealias_cutoff(int(self.n_grid))

    def max_step(self) -> float:
        kc = dealias_cutoff(self.n_grid) * 2.0 * math.pi / float(self.length)
        U = 3.0 * max(float(self.id_amplitude), float(self.ood_amplitude))
        return min(float(self.horizon) / 8, 0.1 / (kc * U))

    def symbol(self, dtype: torch.dtype = torch.float64, device=None) -> Tensor:
        kappa = wavenumbers(self.n_grid, float(self.length), dtype, device)
        return (kappa ** 2 - kappa ** 4).to(complex_dtype(dtype))

"""Periodic 1-D grid operators shared by the method-of-lines PDE systems.

The grid is ``x_j = j·dx``, ``j = 0..N-1``, ``dx = ℓ/N`` on the periodic interval ``[0, ℓ)``. Every operator here
is shift invariant (circulant), hence diagonal in the discrete Fourier basis: an operator ``A`` is described by
its *symbol* ``σ_k`` on the ``rfft`` wavenumbers ``κ_k = 2πk/ℓ``, ``k = 0..N//2``, with
``A u = irfft(σ · rfft(u))``. For a real operator the symbol at ``-k`` is ``conj(σ_k)``, so the ``rfft`` half
holds every eigenvalue of ``A`` (``σ_k`` and ``conj(σ_k)``).

* :func:`wavenumbers`       ``κ_k = 2πk/ℓ`` (``k = 0..N//2``);
* :func:`spectral_symbol`   symbol of ``∂^m`` (``(iκ)^m``; the Nyquist entry of an odd derivative is 0 so the
  operator stays real);
* :func:`spectral_derivative` ``∂^m u`` by FFT (exact for trigonometric polynomials of degree ``< N/2``);
* :func:`stencil_apply` / :func:`stencil_symbol` a periodic finite-difference stencil
  ``(A u)_j = Σ_m c_m u_{j+m}`` and its symbol ``Σ_m c_m e^{iκ_k m dx}``;
* :func:`dealias_mask`      the 2/3 rule: keep ``|k| ≤ k_c = ⌊(N-1)/3⌋`` (then the square of a kept field is
  alias free on the kept modes);
* :func:`apply_symbol`, :func:`symbol_matrix` apply a symbol along the last axis / its dense ``N x N`` matrix;
* :class:`Stencil`          offsets and coefficients of a stencil, applied or as a dense circulant matrix.

All functions are torch (batched over leading dimensions, differentiable, ``vmap``-able).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch

Tensor = torch.Tensor


def wavenumbers(n: int, length: float, dtype: torch.dtype = torch.float64, device=None) -> Tensor:
    """The ``rfft`` angular wavenumbers ``κ_k = 2πk/ℓ``, ``k = 0..n//2`` (shape ``(n//2 + 1,)``)."""
    return (2.0 * math.pi / length) * torch.arange(n // 2 + 1, dtype=dtype, device=device)


def spectral_symbol(n: int, length: float, order: int, dtype: torch.dtype = torch.float64, device=None) -> Tensor:
    """Symbol ``(iκ_k)^order`` of the ``order``-th spectral derivative on ``n`` points (complex).

    For odd ``order`` and even ``n`` the Nyquist entry (``k = n/2``) is set to 0: the Nyquist mode
    ``cos(πx/dx)`` samples to ``(-1)^j`` and its odd derivatives are not representable on the grid; zeroing
    keeps the operator real (and the first derivative skew symmetric).
    """
    cdtype = complex_dtype(dtype)
    kappa = wavenumbers(n, length, dtype, device)
    sym = (1j * kappa.to(cdtype)) ** order
    if order % 2 == 1 and n % 2 == 0:
        sym[-1] = 0.0
    return sym


def apply_symbol(symbol: Tensor, u: Tensor) -> Tensor:
    """``irfft(symbol · rfft(u))`` along the last axis of the real tensor ``u``."""
    n = u.shape[-1]
    uh = torch.fft.rfft(u, dim=-1)
    return torch.fft.irfft(symbol.to(device=u.device, dtype=uh.dtype) * uh, n=n, dim=-1)


def spectral_derivative(u: Tensor, length: float, order: int = 1) -> Tensor:
    """``∂^order u`` of the periodic samples ``u[..., j] = u(x_j)`` by FFT.

    Exact (to rounding) when ``u`` is a trigonometric polynomial of degree ``< N/2``.
    """
    sym = spectral_symbol(u.shape[-1], length, order, dtype=_real(u.dtype), device=u.device)
    return apply_symbol(sym, u)


def stencil_apply(u: Tensor, offsets: Sequence[int], coeffs: Sequence[float] | Tensor) -> Tensor:
    """``(A u)_j = Σ_m c_m u_{j+m}`` with periodic wrap-around (batched over leading dims)."""
    out = torch.zeros_like(u)
    for m, c in zip(offsets, coeffs, strict=True):
        out = out + c * torch.roll(u, shifts=-int(m), dims=-1)
    return out


def stencil_symbol(n: int, length: float, offsets: Sequence[int], coeffs: Sequence[float],
                   dtype: torch.dtype = torch.float64, device=None) -> Tensor:
    """Symbol ``σ_k = Σ_m c_m exp(i κ_k m dx)`` of a periodic stencil (the eigenvalue on mode ``e^{iκ_k x}``)."""
    cdtype = complex_dtype(dtype)
    theta = wavenumbers(n, length, dtype, device) * (length / n)        # κ_k dx = 2πk/N
    sym = torch.zeros(n // 2 + 1, dtype=cdtype, device=device)
    for m, c in zip(offsets, coeffs, strict=True):
        sym = sym + float(c) * torch.exp(1j * m * theta.to(cdtype))
    return sym


def dealias_cutoff(n: int) -> int:
    """Largest kept wavenumber index ``k_c = ⌊(n-1)/3⌋`` of the 2/3 rule (``2 k_c < n - k_c``: no aliasing)."""
    return (n - 1) // 3


def dealias_mask(n: int, dtype: torch.dtype = torch.float64, device=None) -> Tensor:
    """0/1 mask on the ``rfft`` modes keeping ``k ≤ dealias_cutoff(n)`` (the orthogonal projection ``P``)."""
    k = torch.arange(n // 2 + 1, device=device)
    return (k <= dealias_cutoff(n)).to(dtype)


def symbol_matrix(symbol: Tensor, n: int, dtype: torch.dtype = torch.float64, device=None) -> Tensor:
    """Dense ``n x n`` matrix ``A`` of the circulant operator with ``rfft`` symbol ``symbol``
    (``A[i, j] = (A e_j)_i``)."""
    eye = torch.eye(n, dtype=dtype, device=device)
    return apply_symbol(symbol.to(device), eye).transpose(-1, -2).contiguous()


def circulant_row(symbol: Tensor, n: int) -> Tensor:
    """Coefficients ``c_m``, ``m = 0..n-1``, with ``(A u)_j = Σ_m c_m u_{j+m}`` for the circulant with this symbol."""
    return symbol_matrix(symbol, n)[0]


def complex_dtype(dtype: torch.dtype) -> torch.dtype:
    """The complex dtype matching a real one (complex64 for float32 and below, complex128 for float64)."""
    return torch.complex128 if dtype == torch.float64 else torch.complex64


def _real(dtype: torch.dtype) -> torch.dtype:
    return dtype if dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16) else torch.float64


class Stencil(NamedTuple):
    """A periodic stencil ``(A u)_j = Σ_m coefficients[m] · u_{j + offsets[m]}``."""

    offsets: tuple[int, ...]
    coefficients: tuple[float, ...]

    def apply(self, u: Tensor) -> Tensor:
        """``A u`` along the last axis."""
        return stencil_apply(u, self.offsets, self.coefficients)

    def matrix(self, n: int, dtype: torch.dtype = torch.float64, device=None) -> Tensor:
        """Dense ``n x n`` circulant matrix ``A[j, (j + m) mod n] += c_m``."""
        A = torch.zeros(n, n, dtype=dtype, device=device)
        j = torch.arange(n, device=device)
        for m, c in zip(self.offsets, self.coefficients, strict=True):
            A[j, (j + m) % n] += c
        return A


def fourier_interpolate(u: Tensor, n_new: int) -> Tensor:
    """Trigonometric interpolation of the periodic samples ``u[..., j]`` (``n`` points) onto ``n_new ≥ n`` points.

    Exact for trigonometric polynomials of degree ``< n/2``: the rfft coefficients are zero padded (and rescaled);
    a Nyquist coefficient of even ``n`` is split evenly between ``±n/2`` so the result stays real.
    """
    n = u.shape[-1]
    if n_new < n:
        raise ValueError(f"fourier_interpolate only refines: n_new = {n_new} < n = {n}")
    v = torch.fft.rfft(u, dim=-1)
    if n % 2 == 0 and n_new > n:
        v = torch.cat([v[..., :-1], v[..., -1:] / 2], dim=-1)
    pad = torch.zeros(*v.shape[:-1], n_new // 2 + 1 - v.shape[-1], dtype=v.dtype, device=v.device)
    return torch.fft.irfft(torch.cat([v, pad], dim=-1), n=n_new, dim=-1) * (n_new / n)

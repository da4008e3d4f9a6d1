"""ETDRK4: the fourth-order exponential time-differencing Runge–Kutta scheme of Cox & Matthews (2002) with the
contour-integral coefficients of Kassam & Trefethen (2005), for stiff semilinear systems

    u_t = L u + N(u),    L diagonal in the Fourier basis (symbol λ_k on the rfft modes).

Written in Fourier space (``v = rfft(u)``) one step of size ``h`` is::

    a = E2 v + Q N(v)
    b = E2 v + Q N(a)
    c = E2 a + Q (2 N(b) - N(v))
    v⁺ = E v + f1 N(v) + 2 f2 (N(a) + N(b)) + f3 N(c)

with ``z = hλ``, ``E = e^z``, ``E2 = e^{z/2}``, ``Q = h (e^{z/2} - 1)/z`` and
``f1 = h (-4 - z + e^z (4 - 3z + z²))/z³``, ``f2 = h (2 + z + e^z (z - 2))/z³``,
``f3 = h (-4 - 3z - z² + e^z (4 - z))/z³``. These functions are entire but cancel catastrophically near
``z = 0``; Kassam & Trefethen evaluate each as the mean of its values on a circle of radius 1 around ``z``
(the trapezoid rule for Cauchy's integral, spectrally accurate), which is what :func:`etdrk4_coefficients` does.
The linear part is integrated exactly, so the step is limited by the nonlinearity only; the global error is
``O(h⁴)`` (checked in the tests).

Everything is torch: the solve is batched over leading dimensions and differentiable (autograd and torch.func).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import torch

from systems.pdes.operators import complex_dtype

Tensor = torch.Tensor


@dataclasses.dataclass(frozen=True)
class ETDRK4Coefficients:
    """The per-mode ETDRK4 coefficients for one step size ``h`` (complex tensors on the rfft modes)."""

    h: float
    E: Tensor
    E2: Tensor
    Q: Tensor
    f1: Tensor
    f2: Tensor
    f3: Tensor


def etdrk4_coefficients(symbol: Tensor, h: float, n_contour: int = 64, radius: float = 1.0) -> ETDRK4Coefficients:
    """ETDRK4 coefficients for the diagonal linear part ``symbol`` (complex, any shape) and step ``h``.

    Computed in complex128 whatever the symbol's dtype, by the Kassam–Trefethen contour mean over
    ``n_contour`` equispaced points of the circle ``|ζ - z| = radius`` (full circle, so complex symbols work too).
    """
    lam = symbol.to(torch.complex128)
    z = h * lam
    theta = 2.0 * math.pi * (torch.arange(n_contour, dtype=torch.float64, device=lam.device) + 0.5) / n_contour
    zc = z[..., None] + radius * torch.exp(1j * theta.to(torch.complex128))      # (..., M)
    ez = torch.exp(zc)
    ez2 = torch.exp(zc / 2)
    z3 = zc ** 3
    Q = h * ((ez2 - 1.0) / zc).mean(-1)
    f1 = h * ((-4.0 - zc + ez * (4.0 - 3.0 * zc + zc ** 2)) / z3).mean(-1)
    f2 = h * ((2.0 + zc + ez * (zc - 2.0)) / z3).mean(-1)
    f3 = h * ((-4.0 - 3.0 * zc - zc ** 2 + ez * (4.0 - zc)) / z3).mean(-1)
    return ETDRK4Coefficients(h, torch.exp(z), torch.exp(z / 2), Q, f1, f2, f3)


def etdrk4_step(v: Tensor, nonlinear_hat: Callable[[Tensor], Tensor], c: ETDRK4Coefficients) -> Tensor:
    """One ETDRK4 step of ``v_t = λ v + N̂(v)`` in Fourier space (``v`` complex, modes last)."""
    nv = nonlinear_hat(v)
    a = c.E2 * v + c.Q * nv
    na = nonlinear_hat(a)
    b = c.E2 * v + c.Q * na
    nb = nonlinear_hat(b)
    cc = c.E2 * a + c.Q * (2.0 * nb - nv)
    nc = nonlinear_hat(cc)
    return c.E * v + c.f1 * nv + 2.0 * c.f2 * (na + nb) + c.f3 * nc


def substeps(dt: float, max_step: float) -> int:
    """Number of equal substeps of an interval ``dt`` so that each is ``≤ max_step`` (at least 1)."""
    if dt <= 0.0:
        return 0
    return max(1, math.ceil(dt / max_step * (1.0 - 1e-12)))


def _coefficient_cache(symbol: Tensor, like: Tensor) -> Callable[[float], ETDRK4Coefficients]:
    """``h -> coefficients`` on ``like``'s device and complex dtype, memoised per step size (to 12 digits)."""
    cache: dict[float, ETDRK4Coefficients] = {}
    cdtype = complex_dtype(like.dtype)

    def coeffs(h: float) -> ETDRK4Coefficients:
        key = float(f"{h:.12e}")
        if key not in cache:
            c = etdrk4_coefficients(symbol, h)
            cache[key] = ETDRK4Coefficients(h, *(getattr(c, f).to(device=like.device, dtype=cdtype)
                                                 for f in ("E", "E2", "Q", "f1", "f2", "f3")))
        return cache[key]

    return coeffs


def etdrk4_solve(u0: Tensor, t: Tensor, symbol: Tensor, nonlinear_hat: Callable[[Tensor], Tensor],
                 max_step: float) -> Tensor:
    """Solve ``u_t = L u + N(u)`` from ``u(t[0]) = u0`` and return ``u(t_k)`` with shape ``(len(t), *u0.shape)``.

    ``u0`` is real with the grid last; ``symbol`` is the rfft symbol of ``L``; ``nonlinear_hat`` maps the rfft
    of ``u`` to the rfft of ``N(u)``. Each interval ``[t_k, t_{k+1}]`` is split into
    ``⌈(t_{k+1} - t_k)/max_step⌉`` equal steps (coefficients are cached per distinct step size).
    """
    n = u0.shape[-1]
    tn = [float(s) for s in t]
    coeffs = _coefficient_cache(symbol, u0)
    v = torch.fft.rfft(u0, dim=-1)
    out = [u0]
    for k in range(len(tn) - 1):
        dt = tn[k + 1] - tn[k]
        m = substeps(dt, max_step)
        if m:
            c = coeffs(dt / m)
            for _ in range(m):
                v = etdrk4_step(v, nonlinear_hat, c)
            out.append(torch.fft.irfft(v, n=n, dim=-1))
        else:
            out.append(out[-1])
    return torch.stack(out)


def etdrk4_solve_tangent(u0: Tensor, du0: Tensor, t: Tensor, symbol: Tensor,
                         nonlinear_hat: Callable[[Tensor], Tensor],
                         nonlinear_jvp_hat: Callable[[Tensor, Tensor], Tensor],
                         max_step: float) -> tuple[Tensor, Tensor]:
    """:func:`etdrk4_solve` together with its exact tangent-linear map (the derivative of the discrete ETDRK4
    map, stage by stage), without automatic differentiation.

    ``u0`` is ``(..., N)``; ``du0`` is ``(..., P, N)``: ``P`` tangent directions per state. ``nonlinear_jvp_hat(v,
    dv)`` is ``∂N̂/∂v (v) · dv`` with ``v`` broadcast against ``dv``. Returns the states ``(len(t), ..., N)`` and
    the tangents ``(len(t), ..., P, N)``; ``du0 = I`` gives the flow Jacobian (transposed in the last two axes).
    """
    n = u0.shape[-1]
    tn = [float(s) for s in t]
    coeffs = _coefficient_cache(symbol, u0)
    v = torch.fft.rfft(u0, dim=-1)
    dv = torch.fft.rfft(du0, dim=-1)
    out, dout = [u0], [du0]
    for k in range(len(tn) - 1):
        dt = tn[k + 1] - tn[k]
        m = substeps(dt, max_step)
        if not m:
            out.append(out[-1])
            dout.append(dout[-1])
            continue
        c = coeffs(dt / m)
        E, E2, Q, f1, f2, f3 = c.E, c.E2, c.Q, c.f1, c.f2, c.f3

        def nl(w: Tensor, dw: Tensor) -> tuple[Tensor, Tensor]:
            return nonlinear_hat(w), nonlinear_jvp_hat(w[..., None, :], dw)

        for _ in range(m):
            nv, dnv = nl(v, dv)
            a, da = E2 * v + Q * nv, E2 * dv + Q * dnv
            na, dna = nl(a, da)
            b, db = E2 * v + Q * na, E2 * dv + Q * dna
            nb, dnb = nl(b, db)
            cc, dcc = E2 * a + Q * (2.0 * nb - nv), E2 * da + Q * (2.0 * dnb - dnv)
            nc, dnc = nl(cc, dcc)
            v = E * v + f1 * nv + 2.0 * f2 * (na + nb) + f3 * nc
            dv = E * dv + f1 * dnv + 2.0 * f2 * (dna + dnb) + f3 * dnc
        out.append(torch.fft.irfft(v, n=n, dim=-1))
        dout.append(torch.fft.irfft(dv, n=n, dim=-1))
    return torch.stack(out), torch.stack(dout)

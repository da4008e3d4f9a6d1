"""Dormand–Prince 5(4) with a step size and error control per sample, all samples in one tensor program.

torchdiffeq's adaptive solvers treat a batch as one system: every sample takes the step its hardest batch-mate
needs, and a sample's solution (and its number of field evaluations) depends on what else is in the batch.
:func:`dopri5_per_sample` gives each row of ``x0`` its own time ``t_i``, step ``h_i`` and error test

    err_i = ‖(y⁵_i − y⁴_i) / (atol + rtol · max(|y_i|, |y⁵_i|))‖_RMS over the d coordinates,

accepting the step where ``err_i ≤ 1`` and rescaling ``h_i ← h_i · clip(0.9 · err_i^(−1/5), 0.2, 10)`` (the
constants of torchdiffeq's ``dopri5``; as there, an accepted step never shrinks the next one), while every stage
is evaluated for all *active* rows at once. A row is active until it has passed the last output time; each row's
steps are shortened to land on every output time (no interpolation), and its first step is chosen by Hairer's rule
from its own ``‖x₀‖`` and ``‖f(x₀)‖``. The solution of a row is therefore that of the row solved alone (bit for
bit when the field's arithmetic on a row does not depend on the batch size — elementwise maps; a batched matrix
product may differ in the last bits), and ``nfev[i]`` counts the field evaluations row ``i`` took part in.

The field is called as ``f(t, x)`` on the active rows. An autonomous field (``autonomous=True``: a teacher's or a
student's ``autonomous`` property, :func:`testbed.field.consistency.is_autonomous`) gets one scalar time, which it
ignores, and all rows in one call; otherwise each distinct time is a separate call — correct for any field, but the
rows' step sizes differ from the first step on, so a time-dependent field costs about one call per row and stage
(the per-row loop's cost, without its Python overhead per step).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from testbed.errors import DivergenceError

Tensor = torch.Tensor
Field = Callable[[Tensor, Tensor], Tensor]

# Dormand–Prince 5(4) tableau (FSAL: the 7th stage is the next step's 1st)
_C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
_A = (
    (),
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
    (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
)
_B5 = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0)
_B4 = (5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40)
_E = tuple(b5 - b4 for b5, b4 in zip(_B5, _B4, strict=True))
SAFETY, MIN_FACTOR, MAX_FACTOR, ORDER = 0.9, 0.2, 10.0, 5


def _rms(x: Tensor) -> Tensor:
    return x.pow(2).mean(dim=-1).sqrt()


def _evaluate(f: Field, t: Tensor, y: Tensor, autonomous: bool) -> Tensor:
    """``f`` at per-row times ``t`` (R,) and states ``y`` (R, d)."""
    if autonomous or t.numel() == 0:
        return f(t[0] if t.numel() else torch.zeros((), dtype=y.dtype), y)
    out = torch.empty_like(y)
    for tv in torch.unique(t):
        rows = t == tv
        out[rows] = f(tv, y[rows])
    return out


def _initial_step(f: Field, t0: Tensor, y0: Tensor, f0: Tensor, rtol: float, atol: float, autonomous: bool,
                  span: Tensor) -> Tensor:
    """Hairer, Nørsett & Wanner (II.4): a first step per row from ``‖y0‖``, ``‖f0‖`` and one trial Euler step."""
    scale = atol + rtol * y0.abs()
    d0, d1 = _rms(y0 / scale), _rms(f0 / scale)
    h0 = torch.where((d0 < 1e-5) | (d1 < 1e-5), torch.full_like(d0, 1e-6), 0.01 * d0 / d1)
    h0 = torch.minimum(h0, span)
    y1 = y0 + h0[:, None] * f0
    f1 = _evaluate(f, t0 + h0, y1, autonomous)
    d2 = _rms((f1 - f0) / scale) / h0
    dmax = torch.maximum(d1, d2)
    h1 = torch.where(dmax <= 1e-15, torch.maximum(torch.full_like(h0, 1e-6), h0 * 1e-3),
                     (0.01 / dmax.clamp_min(1e-300)) ** (1.0 / ORDER))
    return torch.minimum(torch.minimum(100 * h0, h1), span)


@torch.no_grad()
def dopri5_per_sample(f: Field, x0: Tensor, times: Tensor, rtol: float = 1e-7, atol: float = 1e-9,
                      autonomous: bool = False, max_nfev: int = 100_000,
                      bound: float | None = None) -> tuple[Tensor, Tensor]:
    """Solve ``dx/dt = f(t, x)`` for each row of ``x0`` (B, d) with its own adaptive steps; return the states at
    ``times`` (increasing, starting at the initial time), shape ``(len(times), B, d)``, and the number of field
    evaluations per row (B,). Raises :class:`~testbed.errors.DivergenceError` when a row needs more than
    ``max_nfev`` evaluations or its state leaves ``|x| ≤ bound`` (default ``1e6 · max(1, max|x0|)``)."""
    times = torch.as_tensor(times, dtype=x0.dtype, device=x0.device)
    if times.ndim != 1 or times.numel() < 1 or bool((times[1:] <= times[:-1]).any()):
        raise ValueError("times must be a 1-D, strictly increasing grid")
    n, _ = x0.shape
    bound = 1e6 * max(1.0, float(x0.abs().max()) if x0.numel() else 1.0) if bound is None else bound
    out = torch.empty(times.numel(), *x0.shape, dtype=x0.dtype, device=x0.device)
    out[0] = x0
    nfev = torch.zeros(n, dtype=torch.long, device=x0.device)
    if times.numel() == 1 or n == 0:
        return out, nfev
    t = times[0].expand(n).clone()
    y = x0.clone()
    if not bool(torch.isfinite(y).all()):
        raise DivergenceError("dopri5 (per sample): the initial states are not all finite")
    k1 = _evaluate(f, t, y, autonomous)
    h = _initial_step(f, t, y, k1, rtol, atol, autonomous, (times[-1] - times[0]).expand(n))
    nfev += 2
    if not bool(torch.isfinite(k1).all() & torch.isfinite(h).all()):
        raise DivergenceError("dopri5 (per sample): the field is not finite at the initial states")
    nxt = torch.ones(n, dtype=torch.long, device=x0.device)       # index of each row's next output time
    active = torch.arange(n, device=x0.device)
    while active.numel():
        ta, ya, k1a, ha = t[active], y[active], k1[active], h[active]
        target = times[nxt[active]]
        hit = ha >= target - ta
        ha = torch.where(hit, target - ta, ha)
        ks = [k1a]
        for s in range(1, 7):
            ys = ya + ha[:, None] * sum(a * k for a, k in zip(_A[s], ks, strict=False) if a != 0.0)
            ks.append(_evaluate(f, ta + _C[s] * ha, ys, autonomous))
        y5 = ys                                                     # stage 7 is evaluated at the 5th-order state
        nfev[active] += 6
        err_vec = ha[:, None] * sum(e * k for e, k in zip(_E, ks, strict=True) if e != 0.0)
        err = _rms(err_vec / (atol + rtol * torch.maximum(ya.abs(), y5.abs())))
        ok = err <= 1.0
        finite = torch.isfinite(y5).all(-1) & torch.isfinite(err)
        if bool((ok & finite & (y5.abs().amax(-1) > bound)).any()) or bool((~finite & (ha < 1e-300)).any()) \
                or not bool(torch.isfinite(ha).all()):
            raise DivergenceError(f"dopri5 (per sample): a state left |x| ≤ {bound:.3g} or became non-finite")
        if int(nfev[active].max()) > max_nfev:
            raise DivergenceError(f"dopri5 (per sample): a sample needed more than {max_nfev} field evaluations "
                                  "(stiff or diverging field)")
        factor = torch.where(err == 0, torch.full_like(err, MAX_FACTOR),
                             (SAFETY * err.clamp_min(1e-300) ** (-1.0 / ORDER)).clamp(MIN_FACTOR, MAX_FACTOR))
        factor = torch.where(finite, factor, torch.full_like(err, MIN_FACTOR))
        factor = torch.where(ok & finite, factor.clamp_min(1.0), factor)     # an accepted step does not shrink h
        acc = active[ok & finite]
        if acc.numel():
            sel = ok & finite
            landed = hit[sel]
            t[acc] = torch.where(landed, target[sel], ta[sel] + ha[sel])
            y[acc] = y5[sel]
            k1[acc] = ks[6][sel]
            rows = acc[landed]
            out[nxt[rows], rows] = y5[sel][landed]
            nxt[rows] += 1
        # the next step from the one just tried; a step shortened to land on an output time and accepted does not
        # shrink the next one below the step planned before the shortening
        h[active] = torch.where(hit & ok & finite, torch.maximum(ha * factor, h[active]), ha * factor)
        active = active[nxt[active] < times.numel()]
    return out, nfev

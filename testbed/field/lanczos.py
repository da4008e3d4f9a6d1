"""Batched Lanczos for the extreme eigenvalues of many independent symmetric PSD operators, matrix-free.

Generic: it knows only a batched product ``v ↦ M v``; nothing here knows about students or Jacobians (those
operators are built in :mod:`testbed.field.spectral`, which solves ``‖A‖₂² = λ_max(AᵀA)`` with it).

**The estimator.** ``‖A‖₂² = λ_max(AᵀA)``, and ``λ_max`` of the symmetric PSD operator ``M = AᵀA`` is found by
Lanczos iteration, batched over all independent problems (layers × inputs, or depths × inputs) at once. Only
products ``v ↦ A v`` and ``u ↦ Aᵀ u`` are needed. After ``j`` steps the Lanczos vectors ``q_1..q_j`` and the
three-term recurrence ``M q_i = β_{i-1} q_{i-1} + α_i q_i + β_i q_{i+1}`` give a tridiagonal ``T_j``; its largest
eigenvalue (the top Ritz value ``θ_j``) increases monotonically to ``λ_max(M)`` and never exceeds it (so
``sqrt(θ_j)`` is a lower bound on ``‖A‖₂``); its smallest eigenvalue decreases to ``λ_min(M)``. Convergence to the
top of the spectrum is much faster than power iteration's (Chebyshev-like, in ``sqrt`` of the relative gap). No
re-orthogonalisation is done: in floating point, lost orthogonality only produces duplicate ("ghost") copies of
converged Ritz values, never values outside the spectrum, so the extreme Ritz values stay valid.

**Stopping rule.** ``σ = sqrt(θ)`` per problem. Each problem keeps a reference ``θ_ref ≤ θ_j``: its exact top
Ritz value at its last refresh. After every step a Sturm-sequence count on ``T_j`` (``O(j)`` per problem, no
eigen-solve) finds the problems with a Ritz value above ``θ_ref·(1 + tol)²``, i.e. whose ``σ`` estimate has moved by
more than ``tol`` (relative) since the reference; at steps ``min_iter``, ``refresh``, ``2·refresh``, … (and
``max_iter``) the references of those moving problems are re-evaluated exactly (``eigvalsh`` of their ``T_j``). The
iteration stops at the first step ``j ≥ min_iter`` where no problem of the batch has moved by more than ``tol``
(with ``want_min=True``: neither ``σ_max`` nor ``σ_min``), or at ``max_iter``. The final values are the top
(bottom) Ritz values of the last ``T_j``, located by Sturm bisection inside ``[θ_ref, θ_ref(1 + tol)²]`` to
``0.1·tol``. :class:`SpectralInfo` reports the steps used, the largest relative change of any problem's estimate
over its last window and whether the rule was met. The matrix-vector products run in the start vector's dtype, the
recurrence in float64; ``tol`` should stay above the products' rounding level (``tol ≳ 1e-6`` for float32
products; below it the change test may never settle and the run goes to ``max_iter``).

The rule is a relative-*change* test, not an error bound, and Krylov methods can stagnate: a problem whose start
vector is almost orthogonal to the top singular vector, with a tiny gap to the next singular value, can sit on a
plateau below ``σ_max`` for a few steps before jumping. Stopping only when the *whole batch* is quiet (hundreds to
thousands of independent problems) makes a premature stop unlikely in practice; the estimate is always a lower
bound, and for a ``d``-dimensional state ``d`` steps of exact arithmetic span the whole space. For single problems,
raise ``min_iter`` or lower ``tol``. Observed errors (against the dense SVD): about ``tol`` for the input means and
up to ~10–20·``tol`` for single inputs with warm starts (:mod:`testbed.field.spectral`), far less from random starts.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

Tensor = torch.Tensor


# ------------------------------------------------------------------------------------------ diagnostics
@dataclass
class SpectralInfo:
    """Diagnostics of one batched Lanczos run.

    Attributes:
        iterations: Lanczos steps taken (each: one ``A v`` and one ``Aᵀ u`` per problem).
        rel_change: largest relative change of any problem's ``σ`` estimate over its last window (see the module
            docstring); ``≤ tol`` when ``converged``.
        converged:  whether the stopping rule was met before ``max_iter``.
        tol:        the tolerance asked for.
        max_iter:   the iteration cap.
        problems:   number of independent problems solved together.
    """

    iterations: int
    rel_change: float
    converged: bool
    tol: float
    max_iter: int
    problems: int


# ------------------------------------------------------------------------------------------ batched Lanczos
def _count_above(alpha: Tensor, beta2: Tensor, x: Tensor) -> Tensor:
    """Number of eigenvalues ``> x`` of each tridiagonal ``T`` (diagonal ``alpha`` (j, N), squared off-diagonal
    ``beta2`` (j-1, N)): the positive pivots of ``T − xI = LDLᵀ`` (Sylvester's law of inertia). A zero pivot
    becomes ``±inf`` in the next one (LAPACK's ``-pivmin`` up to the sign convention: a miscount only at ``x``
    exactly equal to an eigenvalue of a leading block)."""
    piv = alpha - x
    for i in range(1, alpha.shape[0]):
        torch.sub(piv[i], beta2[i - 1] / piv[i - 1], out=piv[i])
    return (piv > 0).sum(0)


def _bisect(alpha: Tensor, beta2: Tensor, lo: Tensor, hi: Tensor, top: bool, rtol: float,
            max_steps: int = 60) -> Tensor:
    """Sturm bisection for the top (bottom) eigenvalue of each tridiagonal, known to lie in ``[lo, hi]``, until
    ``hi − lo ≤ rtol·|end|`` (``end`` = ``lo`` for the top, ``hi`` for the bottom); returns that end, a bound on the
    safe side (below the top eigenvalue, above the bottom one)."""
    j = alpha.shape[0]
    end = lo if top else hi
    width = float(((hi - lo) / end.abs().clamp_min(torch.finfo(end.dtype).tiny)).max()) if lo.numel() else 0.0
    steps = min(max_steps, max(0, math.ceil(math.log2(width / rtol)))) if width > rtol else 0
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        above = _count_above(alpha, beta2, mid)
        inside = above > 0 if top else above == j  # top: an eigenvalue above mid; bottom: all of them
        lo, hi = torch.where(inside, mid, lo), torch.where(inside, hi, mid)
    return lo if top else hi


def _refresh(alpha: Tensor, beta: Tensor, old_max: Tensor, old_min: Tensor, up: Tensor, down: Tensor | None,
             grow: float, rtol: float) -> tuple[Tensor, Tensor | None]:
    """New references for moving problems (tridiagonals ``alpha`` (j, n), ``beta`` (j-1, n)): the top Ritz value
    where ``up`` (it exceeds ``old_max·grow``), the bottom one where ``down`` (below ``old_min/grow``; ``None``: not
    tracked); the old reference elsewhere.

    Exact (``eigvalsh`` of the dense ``T``) when that is cheaper than Sturm bisection (few problems, short ``T``: its
    cost is per matrix), else bisection to ``rtol`` inside the Gershgorin bounds, returning the safe end (below the
    top, above the bottom)."""
    j, n = alpha.shape
    if n * (1.2 + 0.035 * j * j) <= 40 * j * (4 + 0.001 * n):  # rough µs per call of each route
        t = torch.diag_embed(alpha.T)
        if j > 1:
            t = t + torch.diag_embed(beta.T, 1) + torch.diag_embed(beta.T, -1)
        ritz = torch.linalg.eigvalsh(t)
        return ritz[:, -1], (None if down is None else ritz[:, 0])
    beta2 = beta**2
    radius = torch.zeros_like(alpha)
    radius[:-1] += beta
    radius[1:] += beta
    new_max, new_min = old_max, None
    if bool(up.any()):
        hi = (alpha + radius).amax(0).clamp_min(old_max * grow)
        new_max = torch.where(up, _bisect(alpha, beta2, old_max * grow, hi, True, rtol), old_max)
    if down is not None:
        new_min = old_min
        if bool(down.any()):
            lo = (alpha - radius).amin(0).clamp(min=0).minimum(old_min / grow)
            new_min = torch.where(down, _bisect(alpha, beta2, lo, old_min / grow, False, rtol), old_min)
    return new_max, new_min


def _top_eigenvector(alpha: Tensor, beta: Tensor, shift: Tensor, steps: int = 1) -> Tensor:
    """Top eigenvector (j, n) of each tridiagonal by inverse iteration with ``shift`` just above its top eigenvalue:
    ``shift·I − T`` is then positive definite, so its ``LDLᵀ`` solve (``O(j)``, vectorised over problems) is stable,
    and the iteration converges at the rate ``(shift − θ_1)/(shift − θ_2)``."""
    j = alpha.shape[0]
    tiny = torch.finfo(alpha.dtype).tiny
    piv = torch.empty_like(alpha)  # D of shift·I − T = L D Lᵀ
    piv[0] = shift - alpha[0]
    for i in range(1, j):
        piv[i] = shift - alpha[i] - beta[i - 1] ** 2 / piv[i - 1]
    piv = piv.clamp_min(tiny)
    x = torch.ones_like(alpha)
    for _ in range(steps):
        y = x.clone()
        for i in range(1, j):
            y[i] += beta[i - 1] / piv[i - 1] * y[i - 1]
        x = y / piv
        for i in range(j - 2, -1, -1):
            x[i] += beta[i] / piv[i] * x[i + 1]
        x = x / x.abs().amax(0).clamp_min(tiny)
    return x / torch.linalg.vector_norm(x, dim=0)


def lanczos_extremes(matvec: Callable[[Tensor], Tensor], v0: Tensor, tol: float = 1e-6, max_iter: int = 100,
                     min_iter: int = 2, want_min: bool = False, refresh: int = 4,
                     return_vector: bool = False) -> tuple[Tensor, Tensor | None, Tensor | None, SpectralInfo]:
    """Extreme eigenvalues of independent symmetric PSD operators by batched Lanczos.

    ``matvec`` maps ``(*P, d) → (*P, d)`` in ``v0``'s dtype, acting independently on each of the problems indexed
    by ``*P`` (the leading dims of ``v0``); the recurrence itself runs in float64. Returns
    ``(λ_max, λ_min or None, top Ritz vector or None, info)`` with the eigenvalues (float64) of shape ``P``; the
    stopping rule is the module docstring's (``tol`` is relative in ``sqrt(λ)``). The references of moving problems
    are refreshed (Sturm bisection to ``tol/4``) at step ``min_iter``, every ``refresh`` steps, at ``max_iter``, and
    at every step while that is cheap (few moving problems × short ``T_j``). ``return_vector`` keeps the Lanczos
    basis (``j·|P|·d`` numbers) to form the (unit) top Ritz vector — plus the (unit) bottom one with ``want_min``:
    a start vector for a nearby problem that holds both ends of the spectrum.
    """
    shape = v0.shape[:-1]
    n = math.prod(shape)
    f64, work = torch.float64, v0.dtype
    dev = v0.device
    eps, tiny = torch.finfo(f64).eps, torch.finfo(f64).tiny
    cap = min(max_iter, 16)  # T's storage, grown by doubling (most runs stop early)
    alpha = torch.zeros(cap, n, dtype=f64, device=dev)
    beta = torch.zeros(cap, n, dtype=f64, device=dev)
    grow = (1.0 + tol) ** 2  # σ moves by more than tol  ⟺  θ = σ² moves by more than a factor grow
    q = v0.to(f64)
    q = q / torch.linalg.vector_norm(q, dim=-1, keepdim=True).clamp_min(tiny)
    q_prev = torch.zeros_like(q)
    spare = torch.empty_like(q)  # the three Lanczos vectors rotate through reused buffers (no page faults)
    q_work = torch.empty_like(v0) if work != f64 else None
    b_prev = torch.zeros(shape, dtype=f64, device=dev)
    done = torch.zeros(n, dtype=torch.bool, device=dev)  # Krylov space invariant: T is exact there
    basis = [q] if return_vector else []
    ref_max = ref_min = torch.zeros(n, dtype=f64, device=dev)
    change = math.inf
    converged = False
    j = 0
    for j in range(1, max_iter + 1):
        if j > alpha.shape[0]:
            grown = min(max_iter, 2 * alpha.shape[0])
            alpha = torch.cat([alpha, alpha.new_zeros(grown - alpha.shape[0], n)])
            beta = torch.cat([beta, beta.new_zeros(grown - beta.shape[0], n)])
        w = spare.copy_(matvec(q if q_work is None else q_work.copy_(q)))  # updated in place below
        a = torch.linalg.vecdot(w, q)
        w.addcmul_(a[..., None], q, value=-1).addcmul_(b_prev[..., None], q_prev, value=-1)
        b = torch.linalg.vector_norm(w, dim=-1)
        alpha[j - 1], beta[j - 1] = a.reshape(n), b.reshape(n)
        if bool(done.any()):  # a broken-down problem keeps a decoupled diagonal inside its spectrum
            alpha[j - 1] = torch.where(done, alpha[0], alpha[j - 1])
            beta[j - 1] = torch.where(done, 0.0, beta[j - 1])
        broke = b <= eps * (a.abs() + b_prev)
        if bool(broke.any()):
            done = done | broke.reshape(n)
            w.div_(torch.where(broke, 1.0, b)[..., None]).masked_fill_(broke[..., None], 0.0)
        else:
            w.div_(b[..., None])
        # rotate: w is the new q; the old q_prev's buffer is free (unless kept for the Ritz vector)
        q_prev, q, spare = q, w, (q_prev if not return_vector and j > 1 else torch.empty_like(q))
        b_prev = b
        if return_vector:
            basis.append(q)
        if j == 1:
            ref_max, ref_min = alpha[0].clone(), alpha[0].clone()
            continue
        al, b2 = alpha[:j], beta[: j - 1] ** 2
        up = _count_above(al, b2, ref_max * grow) > 0
        down = (_count_above(al, b2, ref_min / grow) < j) if want_min else torch.zeros_like(up)
        moving = up | down
        n_moving = int(moving.sum())
        if n_moving == 0:
            if j >= min_iter:
                converged = True
                break
            continue
        if j % refresh and j != min_iter and j != max_iter and n_moving * j > 4096:
            continue
        # refresh the references of the moving problems to their current extreme Ritz values
        idx = moving.nonzero().squeeze(1)
        old_max, old_min = ref_max[idx], ref_min[idx]
        new_max, new_min = _refresh(al[:, idx], beta[: j - 1, idx], old_max, old_min, up[idx],
                                    down[idx] if want_min else None, grow, tol / 4)
        ref_max[idx] = new_max
        ch = (new_max / old_max).sqrt() - 1
        if new_min is not None:
            ref_min[idx] = new_min
            ch = torch.maximum(ch, 1 - (new_min / old_min.clamp_min(tiny)).sqrt())
        change = float(ch.max())
    # final values: within [ref, ref·grow] (resp. [ref/grow, ref]) for the quiet problems
    al, b2 = alpha[:j], beta[: j - 1] ** 2
    lam_max, lam_min = ref_max, (ref_min if want_min else None)
    if j > 1:
        lam_max = _bisect(al, b2, ref_max, ref_max * grow, True, tol * 0.1)
        if want_min:
            lam_min = _bisect(al, b2, ref_min / grow, ref_min, False, tol * 0.1)
    if converged:
        change = max(0.0, float(((lam_max / ref_max).sqrt() - 1).max()))
        if lam_min is not None:
            change = max(change, float((1 - (lam_min / ref_min.clamp_min(tiny)).sqrt()).max()))
    vec = None
    if return_vector:
        def ritz_vector(s: Tensor) -> Tensor:  # Σ_i s_i q_i, normalised
            y = sum(basis[i] * s[i].reshape(shape)[..., None] for i in range(j))
            return (y / torch.linalg.vector_norm(y, dim=-1, keepdim=True).clamp_min(tiny)).to(work)

        bump = (1 + tol * 0.1) ** 2 * (1 + 1e-12)  # just beyond the located Ritz value
        vec = ritz_vector(_top_eigenvector(al, beta[: j - 1], lam_max * bump))
        if lam_min is not None:  # the bottom one: top eigenvector of −T
            vec = vec + ritz_vector(_top_eigenvector(-al, -beta[: j - 1], -lam_min / bump))
    info = SpectralInfo(j, change, converged, tol, max_iter, n)
    out_min = None if lam_min is None else lam_min.reshape(shape)
    return lam_max.reshape(shape), out_min, vec, info


# ------------------------------------------------------------------------------------------ helpers for callers
def random_start(shape: tuple[int, ...], like: Tensor, seed: int) -> Tensor:
    """A seeded standard-normal start of ``shape`` in ``like``'s dtype and device (drawn on the CPU)."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    return torch.randn(shape, generator=gen, dtype=like.dtype).to(like.device)


def default_max_iter(d: int) -> int:
    """The default step cap for operators on ``R^d``: ``max(20, 2d)``."""
    return max(20, 2 * d)


def merge_info(infos: Sequence[SpectralInfo], tol: float, max_iter: int) -> SpectralInfo:
    """One :class:`SpectralInfo` for several runs: steps and problems summed, the worst change, all converged."""
    return SpectralInfo(sum(i.iterations for i in infos), max(i.rel_change for i in infos),
                        all(i.converged for i in infos), tol, max_iter, sum(i.problems for i in infos))


def check_settings(tol: float, max_iter: int, min_iter: int) -> None:
    """``ValueError`` unless ``tol > 0`` and ``max_iter, min_iter ≥ 1``."""
    if not tol > 0:
        raise ValueError(f"tol must be > 0, got {tol}")
    if max_iter < 1 or min_iter < 1:
        raise ValueError(f"max_iter and min_iter must be ≥ 1, got {max_iter}, {min_iter}")


__all__ = ["SpectralInfo", "check_settings", "default_max_iter", "lanczos_extremes", "merge_info",
           "random_start"]

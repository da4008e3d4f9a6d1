"""Unbiased random-probe estimates of squared Jacobian Frobenius norms, without forming the Jacobian.

For a matrix ``M`` (d × d) and a probe ``u`` with ``E[u uᵀ] = I`` (Rademacher: entries ±1 with probability ½),

    E_u ‖uᵀ M‖² = E_u uᵀ M Mᵀ u = tr(M Mᵀ) = ‖M‖_F²,

so ``(1/k) Σ_j ‖u_jᵀ M‖²`` over ``k`` independent probes is an unbiased estimate of ``‖M‖_F²`` (Hutchinson's trace
estimator applied to ``M Mᵀ``). With ``M = ∂f/∂x − J*`` this estimates the Jacobian-matching error, and with
``M = ∂f/∂x`` the Jacobian-norm regulariser of Finlay et al. (2020), "How to train your neural ODE".
``uᵀ ∂f/∂x`` is one vector–Jacobian product (one reverse pass, ``create_graph`` so the estimate stays
differentiable in the parameters), against ``d`` reverse passes for the dense Jacobian. Because the estimate is
linear in ``‖uᵀ M‖²`` and unbiased for every θ, its gradient in θ is an unbiased estimate of the dense gradient.

Rademacher probes have the smallest variance among the i.i.d. isotropic choices:
``Var ‖uᵀ M‖² = 2 (‖M Mᵀ‖_F² − Σ_i (M Mᵀ)_ii²)`` (Gaussian probes: ``2 ‖M Mᵀ‖_F²``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Tensor = torch.Tensor


def rademacher(shape: tuple[int, ...] | torch.Size, *, like: Tensor,
               generator: torch.Generator | None = None) -> Tensor:
    """Entries ±1 with probability ½ each, with ``like``'s dtype and device, drawn from ``generator`` (a CPU
    generator; None: torch's global one), so seeded runs repeat exactly."""
    if generator is None:
        bits = torch.randint(0, 2, tuple(shape), device=like.device)
    else:
        bits = torch.randint(0, 2, tuple(shape), generator=generator).to(like.device)
    return bits.to(like.dtype).mul_(2).sub_(1)


def probe_vjps(f: Callable[[Tensor], Tensor], x: Tensor, probes: Tensor | int,
               generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """``(uᵀ ∂f/∂x, u)`` at each row of ``x`` for each probe ``u``: ``x`` (B, d), ``probes`` (k, B, m) or a count
    ``k`` of fresh Rademacher probes → ((k, B, d), (k, B, m)).

    One forward evaluation and one reverse pass per probe, with ``create_graph`` (when grad is enabled) so the result
    is differentiable in the parameters of ``f`` (and in ``x`` where ``x`` itself depends on them). Rows must not
    interact (``f`` maps each sample on its own), which holds for every propagation field here.
    """
    xg = x.detach().requires_grad_(True) if not x.requires_grad else x
    with torch.enable_grad():
        y = f(xg)
    if isinstance(probes, bool) or (not isinstance(probes, Tensor) and (not isinstance(probes, int) or probes < 1)):
        raise ValueError(f"probes must be a tensor (k, B, m) or an integer count ≥ 1, got {probes!r}")
    if not isinstance(probes, Tensor):
        probes = rademacher((probes, *y.shape), like=y, generator=generator)
    if y.shape[:-1] != x.shape[:-1] or probes.shape[1:] != y.shape:
        raise ValueError(f"probes of shape {tuple(probes.shape)} do not fit f(x) of shape {tuple(y.shape)} "
                         "(expected (k, *f(x).shape))")
    out = []
    for u in probes:
        (g,) = torch.autograd.grad(y, xg, u, create_graph=torch.is_grad_enabled(), retain_graph=True,
                                   allow_unused=True)
        out.append(torch.zeros_like(x) if g is None else g)
    return torch.stack(out), probes


def frobenius_sq_estimate(f: Callable[[Tensor], Tensor], x: Tensor, target: Tensor | None = None, *,
                          n_probes: int = 1, probes: Tensor | None = None,
                          generator: torch.Generator | None = None) -> Tensor:
    """Unbiased estimate of ``Σ_i ‖∂f/∂x(x_i) − J*_i‖_F²`` over the rows ``x_i`` of ``x`` (B, d).

    ``target`` is ``J*`` (B, m, d) or None (then the estimate is of ``Σ_i ‖∂f/∂x(x_i)‖_F²``). ``probes`` (k, B, m)
    overrides the ``n_probes`` fresh Rademacher probes (e.g. all 2^m sign vectors, which make the average exact);
    ``generator`` draws those.
    """
    g, u = probe_vjps(f, x, n_probes if probes is None else probes, generator)   # (k, B, d) = uᵀ ∂f/∂x
    if target is not None:
        g = g - torch.einsum("kbm,bmd->kbd", u, target)                 # uᵀ (∂f/∂x − J*)
    return g.pow(2).sum() / u.shape[0]

"""Jacobians of the propagation field with torch.func.

* :func:`layer_jacobians` — ``J_l(x) = ∂h_{l+1}/∂h_l`` at every layer along the trajectory of each input,
  with ``vmap(jacrev(step_l))`` (one sample's map, vectorised over the batch);
* :func:`path_jacobians` — the products ``P_l = ∂h_L/∂h_l = J_{L-1} ⋯ J_l`` (``P_L = I``);
* :func:`vector_field_jacobian` — ``∂f/∂x`` of any ``odeint``-style field ``f(t, x)``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.func import jacfwd, jacrev, vmap

from testbed.students.base import Student

Tensor = torch.Tensor


def _jac(fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """Batched Jacobian of a per-sample map; forward mode when it is no wider than reverse.

    Maps that cannot be vmapped (torchdiffeq's solvers write their solution in place, so a neural-ODE
    ``step`` fails under ``vmap``) fall back to plain autograd, one sample at a time.
    """
    try:
        return vmap(jacfwd(fn) if x.shape[-1] <= 8 else jacrev(fn))(x)
    except RuntimeError as err:
        if "vmap" not in str(err):
            raise
    create_graph = torch.is_grad_enabled()  # keep the Jacobian differentiable in θ when it is a loss term
    return torch.stack([torch.autograd.functional.jacobian(fn, xi, create_graph=create_graph) for xi in x])


def vector_field_jacobian(f: Callable[[float, Tensor], Tensor], t: float | Tensor, x: Tensor) -> Tensor:
    """``∂f(t, x)/∂x`` for each row of ``x`` (B, d) → (B, d, d)."""
    tf = float(t)
    return _jac(lambda xi: f(tf, xi), x)


@torch.no_grad()
def _trajectory(student: Student, x0: Tensor) -> Tensor:
    return student.trajectory(x0)


def layer_jacobians(student: Student, x0: Tensor) -> tuple[Tensor, Tensor]:
    """Trajectory ``h`` (L+1, B, d) and layer Jacobians ``J`` (L, B, d, d), ``J[l] = ∂h_{l+1}/∂h_l``."""
    traj = _trajectory(student, x0)
    jacs = []
    for l in range(student.n_layers):
        jacs.append(_jac(lambda h, l=l: student.step(l, h), traj[l]).detach())
    return traj, torch.stack(jacs)


def path_jacobians(layer_jacs: Tensor) -> Tensor:
    """``P[l] = ∂h_L/∂h_l = J_{L-1} ⋯ J_l`` for ``l = 0..L`` (``P[L] = I``); shape (L+1, B, d, d)."""
    n_layers, b, d, _ = layer_jacs.shape
    eye = torch.eye(d, dtype=layer_jacs.dtype, device=layer_jacs.device).expand(b, d, d)
    out = [eye]
    p = eye
    for l in range(n_layers - 1, -1, -1):
        p = p @ layer_jacs[l]
        out.append(p)
    return torch.stack(out[::-1])

"""Field snapshots of a :class:`~testbed.continual.backbones.StagedNet`: stage states and Jacobian sketches.

For inputs ``x_i`` and fixed random probe directions ``v_k`` (unit norm, drawn once from a seeded generator), the
snapshot holds, for every stage ``s``,

    h_s(x_i)               the hidden state after stage ``s`` (the trajectory of the propagation field), and
    J_s(x_i) v_{k(i)}      the Jacobian-vector product of the map ``x ↦ h_s(x)`` along sample ``i``'s probe
                           (one forward-mode pass, :func:`torch.func.jvp`; differentiable in the parameters).

*Relative drift* of a later snapshot ``a`` from a reference ``b`` is the mean over stages of
``‖a_s − b_s‖_F / ‖b_s‖_F``; *retention* is ``1 − drift`` (1 for an unchanged field, smaller the more it moved;
it can go negative when the drift exceeds the reference's own norm).

A sketch sees the Jacobian only along its probes. :func:`exact_jacobians` gives the whole Jacobian
``J_s(x_i) = ∂h_s/∂x (x_i)`` (``d_s × d_in`` per sample) for a few inputs, so a retention of the full matrix —
``‖J_s^new − J_s^ref‖_F / ‖J_s^ref‖_F`` over the stacked samples — can be set beside the sketched one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from testbed.field.retention import relative_drift, retention  # noqa: F401  (re-exported)

Tensor = torch.Tensor


@contextlib.contextmanager
def eval_mode(net: nn.Module) -> Iterator[nn.Module]:
    """Put ``net`` in eval mode (BatchNorm uses running statistics, samples do not interact) and restore it."""
    was_training = net.training
    net.eval()
    try:
        yield net
    finally:
        net.train(was_training)


def make_probes(n_probes: int, input_shape: Sequence[int], seed: int, device: str | torch.device = "cpu") -> Tensor:
    """``n_probes`` Gaussian directions of shape ``input_shape``, each scaled to unit Frobenius norm."""
    g = torch.Generator().manual_seed(seed)
    v = torch.randn((n_probes, *input_shape), generator=g)
    v = v / v.flatten(1).norm(dim=1).view(-1, *([1] * len(input_shape)))
    return v.to(device)


def has_batchnorm(net: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())


def field_snapshot(net: nn.Module, x: Tensor, probes: Tensor, probe_index: Tensor,
                   create_graph: bool = True) -> tuple[list[Tensor], list[Tensor]]:
    """``([h_s(x)]_s, [J_s(x) v_{probe_index}]_s)`` for a staged net.

    Forward mode (:func:`torch.func.jvp`) in general; for nets with BatchNorm (whose forward-mode rule falls back to
    a slow decomposition on the CPU) the same JVPs by the double-backward identity ``J v = ∂/∂u ⟨Jᵀu, v⟩``. With
    ``create_graph`` the results stay differentiable in the parameters (the field-preservation penalty); without,
    they are detached (snapshots, retention)."""
    tangent = probes[probe_index.to(probes.device)].to(dtype=x.dtype)
    if not has_batchnorm(net):
        with torch.set_grad_enabled(create_graph and torch.is_grad_enabled()):
            states, sketches = torch.func.jvp(net.stages, (x,), (tangent,))
    else:
        with torch.enable_grad():
            xr = x.detach().requires_grad_(True)
            states = net.stages(xr)
            us = [torch.zeros_like(h, requires_grad=True) for h in states]
            (g,) = torch.autograd.grad(states, xr, grad_outputs=us, create_graph=True)
            sketches = torch.autograd.grad(g, us, grad_outputs=tangent, create_graph=create_graph)
    if not create_graph:
        return [h.detach() for h in states], [j.detach() for j in sketches]
    return list(states), list(sketches)


def exact_jacobians(net: nn.Module, x: Tensor) -> list[Tensor]:
    """``[J_s]_s`` with ``J_s[i] = ∂h_s/∂x (x_i)`` flattened to ``(n, d_s, d_in)`` (reverse mode, one sample at a
    time, eval mode, detached). Memory ``n · Σ_s d_s · d_in`` floats: meant for a handful of inputs of a small net."""
    def stages_of_one(xi: Tensor) -> tuple[Tensor, ...]:
        return tuple(h[0] for h in net.stages(xi[None]))

    per_sample = []
    with eval_mode(net), torch.enable_grad():
        for xi in x:
            jac = torch.func.jacrev(stages_of_one)(xi.detach())
            per_sample.append([j.detach().reshape(-1, xi.numel()) for j in jac])
    return [torch.stack([js[s] for js in per_sample]) for s in range(len(per_sample[0]))] if per_sample else []


def squared_relative_drift(new: Sequence[Tensor], ref: Sequence[Tensor], eps: float = 1e-8) -> Tensor:
    """Differentiable ``(1/S) Σ_s ‖new_s − ref_s‖² / sg(‖new_s‖² + ‖ref_s‖² + ε)`` (norms over the whole batch,
    ``sg`` = stop-gradient): the field-preservation penalty. Scale-free across backbones and stages, at most 2, and
    its gradient ``2(new − ref)/D`` stays bounded even when the reference is tiny (the denominator is detached so
    the penalty cannot be lowered by inflating ``new``)."""
    terms = [(a - b).pow(2).sum() / (a.detach().pow(2).sum() + b.pow(2).sum() + eps)
             for a, b in zip(new, ref, strict=True)]
    return torch.stack(terms).mean()

"""The networks and estimators of the ``weight_reuse`` sub-study: the custom autograd Function
:class:`DecoupledLinear` (forward ``W``, backward ``W_back``), the residual :class:`ReuseNet` built from it, the
closed-form batched coupling estimator at initialisation (:func:`coupling_from_weights`, :func:`coupling_rows`) and
the paired training of a true network and its decoupled twin (:func:`dynamics_rows`). The definitions and the
reasoning behind them are in the docstring of :mod:`testbed.experiments.depth.weight_reuse`.

Everything here runs on the device of its input tensors: weights are drawn on the CPU from seeded generators (so
the numbers do not depend on the device) and then moved there.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from testbed.parameterization import param_groups
from testbed.seeding import generator

Tensor = torch.Tensor

BRANCH_MULTIPLIER = 1.0     # a in ε = a/√L
MIN_DRAWS = 32              # weight draws per seed for the coupling at initialisation: max(MIN_DRAWS, n)
MIRROR_LAYERS = 8           # layers per draw that get a mirrored (antithetic) pass
COPY_SALT = 7_919           # the decoupled copy W̃ is drawn from derived_seed(seed, COPY_SALT)
VARIANTS = ("tracking", "frozen", "reinit")


# ------------------------------------------------------------------------------------- the autograd Function
class DecoupledLinear(torch.autograd.Function):
    """``y = x Wᵀ + b`` whose backward sends the input gradient through ``W_back`` instead of ``W``.

    Backward: ``∂/∂x = grad_y · W_back`` (``W_back = W`` reproduces autograd exactly), ``∂/∂W = grad_yᵀ x`` and
    ``∂/∂b = Σ grad_y`` summed over all leading (batch) dimensions; ``W_back`` gets no gradient.
    Shapes: ``x (..., in)``, ``W, W_back (out, in)``, ``b (out,)`` or None.
    """

    @staticmethod
    def forward(ctx, x: Tensor, W: Tensor, b: Tensor | None, W_back: Tensor) -> Tensor:  # type: ignore[override]
        if W_back.shape != W.shape:
            raise ValueError(f"W_back must have W's shape {tuple(W.shape)}, got {tuple(W_back.shape)}")
        ctx.save_for_backward(x, W_back)
        ctx.has_bias = b is not None
        y = x @ W.transpose(-1, -2)
        return y + b if b is not None else y

    @staticmethod
    def backward(ctx, grad_y: Tensor):  # type: ignore[override]
        x, W_back = ctx.saved_tensors
        grad_x = grad_W = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = grad_y @ W_back
        if ctx.needs_input_grad[1]:
            grad_W = grad_y.reshape(-1, grad_y.shape[-1]).transpose(0, 1) @ x.reshape(-1, x.shape[-1])
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad_y.reshape(-1, grad_y.shape[-1]).sum(0)
        return grad_x, grad_W, grad_b, None


def decoupled_linear(x: Tensor, W: Tensor, b: Tensor | None, W_back: Tensor) -> Tensor:
    """Functional form of :class:`DecoupledLinear`."""
    return DecoupledLinear.apply(x, W, b, W_back)


# ----------------------------------------------------------------------------------------------- the network
def _gen(seed: int, salt: int = 0) -> torch.Generator:
    return generator(seed, salt)


class ReuseBlock(nn.Module):
    """One branch ``u = W σ(h) + b`` (``σ = tanh``) computed with :class:`DecoupledLinear`.

    ``W_back`` is ``W`` (true), ``W + offset`` with ``offset = W̃ − W(0)`` (decoupled, tracking copy), or the
    frozen copy ``W̃`` (``frozen_copy``). The copy and offset are buffers, not parameters.
    """

    def __init__(self, W: Tensor, copy: Tensor | None = None, frozen_copy: bool = False) -> None:
        super().__init__()
        self.W = nn.Parameter(W.clone())
        self.b = nn.Parameter(torch.zeros(W.shape[0], dtype=W.dtype))
        self.decoupled, self.frozen_copy = copy is not None, bool(frozen_copy)
        if copy is not None:
            self.register_buffer("copy", copy.clone())
            self.register_buffer("offset", copy - W)

    def back_matrix(self) -> Tensor:
        """The matrix the backward pass uses (``W_back``)."""
        if not self.decoupled:
            return self.W
        return self.copy if self.frozen_copy else self.W.detach() + self.offset

    def forward(self, h: Tensor) -> Tensor:
        return decoupled_linear(torch.tanh(h), self.W, self.b, self.back_matrix())


class ReuseNet(nn.Module):
    """``x ↦ W_out h_L + b_out`` with ``h_l = h_{l−1} + ε·u_l(h_{l−1})`` (see the module docstring).

    Built deterministically from ``seed`` (μP initialisation, float64); ``decoupled=True`` draws the backward
    copies ``W̃_l`` from a separate stream, so a true and a decoupled net with the same seed share every forward
    weight. ``readout="standard"`` uses ``W_out ~ N(0, 1/n)`` instead of the μP ``N(0, 1/n²)``. Exposes
    ``blocks`` and ``n_layers`` for :func:`testbed.parameterization.param_groups`.
    """

    def __init__(self, input_dim: int, output_dim: int, width: int, n_layers: int, seed: int = 0,
                 decoupled: bool = False, frozen_copy: bool = False, readout: str = "mup",
                 branch_multiplier: float = BRANCH_MULTIPLIER, dtype: torch.dtype = torch.float64) -> None:
        super().__init__()
        if readout not in ("mup", "standard"):
            raise ValueError(f"readout must be 'mup' or 'standard', got {readout!r}")
        self.n_layers, self.width, self.decoupled = int(n_layers), int(width), bool(decoupled)
        self.multiplier = branch_multiplier / math.sqrt(n_layers)
        g = _gen(seed)
        self.W_in = nn.Parameter(torch.randn(width, input_dim, generator=g, dtype=dtype) / math.sqrt(input_dim))
        Ws = [torch.randn(width, width, generator=g, dtype=dtype) / math.sqrt(width) for _ in range(n_layers)]
        out_std = 1.0 / width if readout == "mup" else 1.0 / math.sqrt(width)
        self.W_out = nn.Parameter(torch.randn(output_dim, width, generator=g, dtype=dtype) * out_std)
        self.b_out = nn.Parameter(torch.zeros(output_dim, dtype=dtype))
        copies: list[Tensor | None] = [None] * n_layers
        if decoupled:
            gc = _gen(seed, COPY_SALT)
            copies = [torch.randn(width, width, generator=gc, dtype=dtype) / math.sqrt(width) for _ in range(n_layers)]
        self.blocks = nn.ModuleList(ReuseBlock(W, c, frozen_copy) for W, c in zip(Ws, copies, strict=True))

    def forward(self, x: Tensor, states: list[Tensor] | None = None) -> Tensor:
        """Output ``y``; when a list is passed as ``states``, ``h_0 … h_L`` are appended to it."""
        h = x @ self.W_in.T
        if states is not None:
            states.append(h)
        for block in self.blocks:
            h = h + self.multiplier * block(h)
            if states is not None:
                states.append(h)
        return h @ self.W_out.T + self.b_out


# ------------------------------------------------------------------------------------ coupling at initialisation
def mirror_layers_of(depth: int, mirror_layers: int = MIRROR_LAYERS) -> list[int]:
    """The 1-based layers that get a mirrored pass: ``min(L, mirror_layers)`` evenly spaced ones."""
    return sorted({int(round(v)) for v in np.linspace(1, depth, min(depth, mirror_layers))})


def init_weights(width: int, depth: int, input_dim: int, output_dim: int, seed: int, n_draws: int,
                 readout: str = "mup", dtype: torch.dtype = torch.float32) -> dict[str, Tensor]:
    """``n_draws`` independent μP initialisations (seeded by ``seed``, width and depth): ``W_in (R, n, d_in)``,
    ``W (L, R, n, n)``, the backward copies ``W_copy (L, R, n, n)`` and ``W_out (R, d_out, n)`` (biases 0)."""
    R, L, n = int(n_draws), int(depth), int(width)
    g = _gen(seed, 500_000 + 31 * n + L)
    out_std = 1.0 / n if readout == "mup" else 1.0 / math.sqrt(n)
    return {"W_in": torch.randn(R, n, input_dim, generator=g, dtype=dtype) / math.sqrt(input_dim),
            "W": torch.randn(L, R, n, n, generator=g, dtype=dtype) / math.sqrt(n),
            "W_copy": torch.randn(L, R, n, n, generator=g, dtype=dtype) / math.sqrt(n),
            "W_out": torch.randn(R, output_dim, n, generator=g, dtype=dtype) * out_std}


def coupling_from_weights(x: Tensor, y: Tensor, weights: dict[str, Tensor], layers: Sequence[int],
                          branch_multiplier: float = BRANCH_MULTIPLIER) -> dict[str, Tensor]:
    """Per-layer, per-draw ingredients of the coupling (module docstring) for the networks in ``weights``
    (:func:`init_weights`), shape ``(S, R)`` for the ``S`` (1-based) ``layers``, ``net`` ∈ {``true``, ``control``}:

    * ``{net}_dot``   mirror estimate ``½(Σ_i⟨m_l, s_{l−1}⟩[W_l] + Σ_i⟨m_l, s_{l−1}⟩[−W_l])``;
    * ``{net}_den``   ``sqrt(Σ_i‖m_l‖² · Σ_i‖s_{l−1}‖²)`` of the plain pass;
    * ``{net}_raw``   ``Σ_i⟨m_l, s_{l−1}⟩`` of the plain pass (no mirroring);

    and ``overlap`` (shape ``(R,)``): ``Σ_i⟨g_0, g̃_0⟩ / sqrt(Σ_i‖g_0‖² Σ_i‖g̃_0‖²)``, the cosine between the true
    and the decoupled input-layer backward signal ``∂loss/∂h_0`` (plain pass). The true network's backward uses
    ``W``, the control's ``W_copy``; the loss is ``½ Σ_i ‖y(x_i) − y_i‖² / B``. Closed-form forward / backward of
    the :class:`ReuseNet` architecture (checked against autograd in the tests), batched over draws and mirrored
    copies (rows ``k·B … (k+1)·B − 1`` hold copy ``k``: 0 plain, ``k ≥ 1`` layer ``layers[k−1]`` mirrored).
    """
    W_in, W, Wc, W_out = weights["W_in"], weights["W"], weights["W_copy"], weights["W_out"]
    L, R = W.shape[0], W.shape[1]
    dt, dev = W.dtype, W.device
    eps = branch_multiplier / math.sqrt(L)
    x, y = x.to(device=dev, dtype=dt), y.to(device=dev, dtype=dt)
    B = x.shape[0]
    K = len(layers) + 1
    sign = torch.ones(L, K, dtype=dt, device=dev)
    for k, l in enumerate(layers, start=1):
        sign[l - 1, k] = -1.0
    rows_sign = sign.repeat_interleave(B, dim=1).unsqueeze(0).unsqueeze(-1)   # (1, L, K·B, 1)
    h = torch.matmul(x, W_in.transpose(1, 2)).repeat(1, K, 1)                 # (R, K·B, n)
    ss = []                                                                   # s_l = σ(h_l), l = 0..L-1
    for l in range(L):
        ss.append(torch.tanh(h))
        h = h + eps * rows_sign[:, l] * torch.bmm(ss[l], W[l].transpose(1, 2))
    out = torch.bmm(h, W_out.transpose(1, 2))
    g_L = torch.bmm(out - y.repeat(K, 1), W_out) / B                          # ∂loss/∂h_L
    res: dict[str, Tensor] = {}
    g0: dict[str, Tensor] = {}
    for name, Wb in (("true", W), ("control", Wc)):
        gl = g_L
        dot, den = torch.zeros(L, R, K, dtype=dt, device=dev), torch.zeros(L, R, K, dtype=dt, device=dev)
        for l in range(L, 0, -1):
            s = ss[l - 1]
            m = rows_sign[:, l - 1] * torch.bmm(gl, Wb[l - 1])                   # W_backᵀ g_l (mirror sign)
            dot[l - 1] = (m * s).sum(-1).view(R, K, B).sum(-1)
            den[l - 1] = ((m * m).sum(-1).view(R, K, B).sum(-1) * (s * s).sum(-1).view(R, K, B).sum(-1)).sqrt()
            gl = gl + eps * (1.0 - s * s) * m                                  # g_{l−1}
        g0[name] = gl[:, :B]
        res[f"{name}_dot"] = torch.stack([0.5 * (dot[l - 1, :, 0] + dot[l - 1, :, k])
                                          for k, l in enumerate(layers, start=1)])
        res[f"{name}_den"] = torch.stack([den[l - 1, :, 0] for l in layers])
        res[f"{name}_raw"] = torch.stack([dot[l - 1, :, 0] for l in layers])
    a, b = g0["true"], g0["control"]
    res["overlap"] = (a * b).sum((1, 2)) / ((a * a).sum((1, 2)) * (b * b).sum((1, 2))).sqrt()
    return res


def coupling_draws(width: int, depth: int, x: Tensor, y: Tensor, seed: int, n_draws: int = MIN_DRAWS,
                   mirror_layers: int = MIRROR_LAYERS, readout: str = "mup",
                   dtype: torch.dtype = torch.float32) -> dict[str, Tensor]:
    """:func:`coupling_from_weights` on ``n_draws`` fresh initialisations (:func:`init_weights`, drawn on the CPU
    and moved to the device of ``x``) and the layers of :func:`mirror_layers_of`. float32 by default: the mirrored
    differences are ~1e-3 of the norms, far above float32 round-off."""
    w = {k: v.to(x.device) for k, v in init_weights(width, depth, x.shape[1], y.shape[1], seed, n_draws, readout,
                                                    dtype).items()}
    return coupling_from_weights(x, y, w, mirror_layers_of(depth, mirror_layers))


def n_draws_for(width: int) -> int:
    """Weight draws per seed at width ``n``: ``max(MIN_DRAWS, n)``. The single-draw noise of the mirror estimate
    relative to the coupling grows like ``√n``, so ``∝ n`` draws keep its relative standard error constant."""
    return max(MIN_DRAWS, int(width))


def coupling_stats(c: dict[str, Tensor]) -> dict[str, float]:
    """Coupling quantities from :func:`coupling_draws` output.

    ``κ = mean_l E_W[Σ_i⟨m_l, s_{l−1}⟩] / E_W[sqrt(Σ_i‖m_l‖² Σ_i‖s_{l−1}‖²)]`` (expectations over draws; the
    numerator from the mirror estimate) for the true net and the control; ``coupling_excess`` is their
    difference, ``coupling_excess_se`` its standard error over draws, ``coupling_raw_true`` the plain-pass
    estimate of the true ``κ``, ``coupling_fluctuation`` the RMS over layers and draws of the plain-pass
    control cosine ``ρ̃_l`` (the gradient-independent noise of one draw) and ``backward_overlap`` the mean over
    draws of the cosine between the true and the decoupled ``∂loss/∂h_0``.
    """
    R = c["true_dot"].shape[1]
    per_draw = {}
    for net in ("true", "control"):
        den = c[f"{net}_den"].mean(1, keepdim=True)                          # E_W per layer
        per_draw[net] = (c[f"{net}_dot"] / den).mean(0)                      # (R,): mean_l of the ratio, per draw
    ex = per_draw["true"] - per_draw["control"]
    raw_true = (c["true_raw"] / c["true_den"].mean(1, keepdim=True)).mean()
    fluct = ((c["control_raw"] / c["control_den"]) ** 2).mean().sqrt()
    return {"coupling_true": float(per_draw["true"].mean()), "coupling_control": float(per_draw["control"].mean()),
            "coupling_excess": float(ex.mean()),
            "coupling_excess_se": float(ex.std() / math.sqrt(R)) if R > 1 else float("nan"),
            "coupling_raw_true": float(raw_true), "coupling_fluctuation": float(fluct),
            "backward_overlap": float(c["overlap"].mean())}


def coupling_rows(width: int, depth: int, x: Tensor, y: Tensor, seed: int, **kw: Any) -> list[dict[str, Any]]:
    """Tidy rows of the coupling quantities (:func:`coupling_stats`) for one (width, depth, seed);
    ``n_draws`` defaults to :func:`n_draws_for`."""
    kw.setdefault("n_draws", n_draws_for(width))
    vals = coupling_stats(coupling_draws(width, depth, x, y, seed, **kw))
    return [{"quantity": q, "width": width, "depth": depth, "seed": seed, "value": v} for q, v in vals.items()]


# ------------------------------------------------------------------------------------------------- dynamics
def train_reuse_net(model: ReuseNet, x: Tensor, y: Tensor, steps: int, lr: float, batch_size: int,
                    seed: int) -> list[float]:
    """Adam (Depth-μP groups, constant rate) on ``½·mean_i ‖model(x_i) − y_i‖²``; minibatches from ``seed``.

    Returns the training loss of every step (on its minibatch, before the update). ``model``, ``x`` and ``y``
    share a device; the minibatch stream is drawn on the CPU (the same on every device).
    """
    opt = torch.optim.Adam(param_groups(model, lr, "depth_mup", "adam"))
    gen = torch.Generator().manual_seed(int(seed))
    bs = min(batch_size, x.shape[0])
    losses = []
    for _ in range(steps):
        idx = torch.randperm(x.shape[0], generator=gen)[:bs].to(x.device)
        loss = 0.5 * (model(x[idx]) - y[idx]).pow(2).sum(-1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


def dynamics_rows(width: int, depth: int, data: tuple[Tensor, Tensor, Tensor, Tensor], seed: int, steps: int,
                  lr: float, batch_size: int, variants: Sequence[str] = VARIANTS) -> list[dict[str, Any]]:
    """Train the true net and each variant from the same start; rows of the distances (module docstring). The
    networks are built on the CPU (seeded) and trained on the device of ``data``."""
    x_tr, y_tr, x_te, y_te = data
    d_in, d_out = x_tr.shape[1], y_tr.shape[1]

    def build(**kw: Any) -> ReuseNet:
        return ReuseNet(d_in, d_out, width, depth, **kw).to(x_tr.device)

    def test_loss(m: ReuseNet) -> float:
        with torch.no_grad():
            return float(0.5 * (m(x_te) - y_te).pow(2).sum(-1).mean())

    true = build(seed=seed)
    with torch.no_grad():
        f0 = true(x_te)
    curve_true = torch.tensor(train_reuse_net(true, x_tr, y_tr, steps, lr, batch_size, seed))
    with torch.no_grad():
        f_true = true(x_te)
    learned = float((f_true - f0).norm())
    vals = {"test_loss_true": test_loss(true)}
    for v in variants:
        if v == "reinit":
            other = build(seed=seed + 1_000)
        else:
            other = build(seed=seed, decoupled=True, frozen_copy=(v == "frozen"))
        curve = torch.tensor(train_reuse_net(other, x_tr, y_tr, steps, lr, batch_size, seed))
        with torch.no_grad():
            f = other(x_te)
        vals[f"func_dist_{v}"] = float((f - f_true).norm()) / max(learned, 1e-300)
        vals[f"loss_dist_{v}"] = float((curve - curve_true).abs().sum() / curve_true.sum())
        vals[f"test_loss_{v}"] = test_loss(other)
    return [{"quantity": q, "width": width, "depth": depth, "seed": seed, "value": v} for q, v in vals.items()]


__all__ = ["BRANCH_MULTIPLIER", "COPY_SALT", "DecoupledLinear", "MIN_DRAWS", "MIRROR_LAYERS", "ReuseBlock", "ReuseNet",
           "VARIANTS", "coupling_draws", "coupling_from_weights", "coupling_rows", "coupling_stats", "decoupled_linear",
           "dynamics_rows", "init_weights", "mirror_layers_of", "n_draws_for", "train_reuse_net"]

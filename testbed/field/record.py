"""Record the propagation field of any PyTorch model: its residual blocks as a depth-``L`` field.

``record(model, inputs, blocks=...)`` runs ``model(inputs)`` once with forward hooks on the named blocks and keeps,
for each block ``l``, the state entering it and the state leaving it. A state of any shape ``(B, …)`` (a token
sequence ``(B, S, E)`` or ``(S, B, E)``, a feature map ``(B, C, H, W)``) is flattened per sample to ``(B, D)``; the
blocks become maps of flattened states (:class:`RecordedBlock`: reshape, call the module with the extra arguments it
was called with — an attention mask, ``is_causal`` — flatten), chained as a
:class:`~testbed.students.stages.ResidualStages`, so every field metric of the library (``path_sensitivity``,
``layer_jacobians``, ``field_geometry``, ``layer_spectral_norms``, ``path_spectral_norms``, ``solver_consistency``)
applies to the recording unchanged, with ``h_0`` = the state entering the first block and ``h_L`` the state leaving
the last.

Blocks: a list of module names (``model.get_submodule``), a predicate ``(name, module) -> bool``, or None — the
children of ``model`` itself when it is an ``nn.Sequential``, else of its largest ``nn.ModuleList`` /
``nn.Sequential`` (``TransformerEncoder.layers``, a ResNet stage). A block whose output shape differs from its input
shape (a downsampling stage) is not part of the field: it is listed in ``FieldRecord.skipped`` with the reason. The
kept blocks must chain (each one's input is the previous one's output); otherwise the error names the first break.
A testbed student is recorded as itself (its own layers, the same numbers as the library's functions).

Extra arguments that carry the batch (a key-padding mask of shape ``(B, S)``) cannot follow a single sample through
the per-sample Jacobians; they are refused with the argument's name.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from testbed.config import ConfigError
from testbed.students.base import Student
from testbed.students.stages import ResidualStages

Tensor = torch.Tensor
Blocks = Sequence[str] | Callable[[str, nn.Module], bool] | None


class RecordedBlock(nn.Module):
    """Block ``module`` as a map of flattened states ``(N, D) → (N, D)`` (or one state ``(D,) → (D,)``)."""

    def __init__(self, module: nn.Module, shape: tuple[int, ...], batch_dim: int, args: tuple, kwargs: dict) -> None:
        super().__init__()
        self.module, self.shape, self.batch_dim = module, tuple(shape), int(batch_dim)
        self.args, self.kwargs = args, kwargs

    def forward(self, h: Tensor) -> Tensor:
        single = h.ndim == 1
        hb = h[None] if single else h
        x = hb.reshape(hb.shape[0], *self.shape)
        if self.batch_dim:
            x = x.movedim(0, self.batch_dim)
        # the fused attention kernels (encoder fast path, flash SDPA) have no forward-mode AD: the plain-math route
        fast = torch.backends.mha.get_fastpath_enabled()
        torch.backends.mha.set_fastpath_enabled(False)
        try:
            with sdpa_kernel(SDPBackend.MATH):
                y = self.module(x, *self.args, **self.kwargs)
        finally:
            torch.backends.mha.set_fastpath_enabled(fast)
        if isinstance(y, (tuple, list)):
            y = y[0]
        if self.batch_dim:
            y = y.movedim(self.batch_dim, 0)
        out = y.reshape(hb.shape[0], -1)
        return out[0] if single else out


@dataclass
class FieldRecord:
    """A recorded forward pass: block names, flattened states ``(L+1, B, D)``, the per-sample state shape, the
    blocks as a :class:`~testbed.students.stages.ResidualStages` (``student``) and the blocks left out."""

    names: list[str]
    states: Tensor
    shape: tuple[int, ...]
    batch_dim: int
    student: Student
    skipped: list[dict[str, Any]] = field(default_factory=list)

    @property
    def x0(self) -> Tensor:
        """The flattened state entering the first block, ``(B, D)``: the input of every field metric."""
        return self.states[0]

    @property
    def n_blocks(self) -> int:
        return len(self.names)

    def unflatten(self, states: Tensor) -> Tensor:
        """``(…, B, D)`` flattened states back to the model's layout ``(…, B, *shape)`` (batch first)."""
        return states.reshape(*states.shape[:-1], *self.shape)


def default_blocks(model: nn.Module) -> list[str]:
    """The children of an ``nn.Sequential`` model, else those of its largest ``ModuleList``/``Sequential``."""
    if isinstance(model, nn.Sequential):
        return [name for name, _ in model.named_children()]
    best: tuple[str, nn.Module] | None = None
    for name, mod in model.named_modules():
        if name and isinstance(mod, (nn.ModuleList, nn.Sequential)) and (best is None or len(mod) > len(best[1])):
            best = (name, mod)
    if best is None:
        raise ConfigError(f"{type(model).__name__} has no nn.Sequential / nn.ModuleList of blocks; name them with "
                          "blocks=[...] (module names) or a predicate")
    return [f"{best[0]}.{child}" for child, _ in best[1].named_children()]


def _resolve(model: nn.Module, blocks: Blocks) -> list[str]:
    if blocks is None:
        return default_blocks(model)
    if callable(blocks):
        names = [n for n, m in model.named_modules() if n and blocks(n, m)]
    else:
        names = list(blocks)
        for n in names:
            try:
                model.get_submodule(n)
            except AttributeError:
                raise ConfigError(f"blocks: {type(model).__name__} has no submodule {n!r}") from None
    if not names:
        raise ConfigError("blocks selected no module")
    return names


def _batch_args(args: tuple, kwargs: dict, n: int, batch_dim: int) -> list[str]:
    """Names of the extra arguments that carry the batch axis (refused)."""
    bad = []
    for key, v in [*((f"args[{i}]", a) for i, a in enumerate(args)), *kwargs.items()]:
        if isinstance(v, Tensor) and v.ndim > batch_dim and v.shape[batch_dim] == n and v.ndim >= 2:
            bad.append(key)
    return bad


@torch.no_grad()
def record(model: nn.Module, inputs: Any, blocks: Blocks = None, batch_dim: int | None = None,
           horizon: float = 1.0) -> FieldRecord:
    """Run ``model(inputs)`` once and record the field of its residual blocks (see the module docstring).

    ``batch_dim``: the batch axis of the states inside the blocks (default 0; 1 for a ``TransformerEncoder`` whose
    layers are not ``batch_first``, detected). ``horizon``: the depth convention ``T`` of the field (``Δt = T/L``).
    """
    if isinstance(model, Student):
        x0 = torch.as_tensor(inputs)
        states = model.trajectory(x0).detach()
        return FieldRecord([f"layer {l}" for l in range(model.n_layers)], states, (model.dim,), 0, model)
    names = _resolve(model, blocks)
    modules = [model.get_submodule(n) for n in names]
    if batch_dim is None:
        batch_dim = 0
        first = modules[0]
        if isinstance(first, nn.TransformerEncoderLayer) and not getattr(first.self_attn, "batch_first", False):
            batch_dim = 1
    calls: dict[int, tuple[Tensor, tuple, dict, Any]] = {}

    def hook(idx: int):
        def fn(mod, args, kwargs, out):
            if idx not in calls:                      # a block used twice keeps its first call
                calls[idx] = (args[0], args[1:], dict(kwargs), out)
        return fn

    if model.training:
        warnings.warn(f"{type(model).__name__} is in training mode: dropout and batch statistics make its blocks "
                      "random maps; call model.eval() before recording its field", stacklevel=2)
    handles = [m.register_forward_hook(hook(i), with_kwargs=True) for i, m in enumerate(modules)]
    try:
        model(inputs)
    finally:
        for h in handles:
            h.remove()
    missing = [names[i] for i in range(len(names)) if i not in calls]
    if missing:
        raise ConfigError(f"blocks {missing} were not called by model(inputs)")
    kept, skipped, states = [], [], []
    for i, name in enumerate(names):
        x, args, kwargs, out = calls[i]
        y = out[0] if isinstance(out, (tuple, list)) else out
        if not isinstance(x, Tensor) or not isinstance(y, Tensor) or x.shape != y.shape:
            skipped.append({"block": name, "reason": "output shape differs from input shape" if isinstance(y, Tensor)
                            and isinstance(x, Tensor) else "input or output is not a tensor",
                            "in_shape": tuple(getattr(x, "shape", ())), "out_shape": tuple(getattr(y, "shape", ()))})
            continue
        n = x.shape[batch_dim]
        bad = _batch_args(args, kwargs, n, batch_dim)
        if bad:
            raise ConfigError(f"block {name!r} is called with per-sample argument(s) {bad} (they carry the batch "
                              "axis and cannot follow one sample through the per-sample Jacobians); record without "
                              "them (e.g. no key-padding mask) or pass blocks that do not take them")
        if kept and not torch.equal(x, states[-1][1]):
            raise ConfigError(f"block {name!r} does not take the output of block {kept[-1][0]!r} as its input: the "
                              "recorded blocks must form one chain (name the blocks of one stage)")
        kept.append((name, modules[i], args, kwargs))
        states.append((x, y))
    if not kept:
        raise ConfigError(f"no recorded block keeps its state's shape ({[s['block'] for s in skipped]})")
    x_first = states[0][0].movedim(batch_dim, 0)
    shape = tuple(x_first.shape[1:])
    flat = [x_first.reshape(x_first.shape[0], -1)]
    flat += [y.movedim(batch_dim, 0).reshape(x_first.shape[0], -1) for _, y in states]
    stages = [RecordedBlock(m, shape, batch_dim, a, k) for _, m, a, k in kept]
    student = ResidualStages(stages, dim=flat[0].shape[1], horizon=horizon)
    return FieldRecord([k[0] for k in kept], torch.stack(flat).detach(), shape, batch_dim, student, skipped)

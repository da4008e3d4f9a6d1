"""Depth parameterizations of residual networks: branch multipliers and per-layer learning rates.

For a residual stream ``h_{l+1} = h_l + m·g_l(h_l)`` of depth ``L`` (:class:`~testbed.students.ResidualStudent`,
``branch_scaling``) trained with base learning rate ``η``:

=================  ===================  ==========================  ==========================================
parameterization   branch multiplier m  Adam learning rate          SGD learning rate
=================  ===================  ==========================  ==========================================
``standard`` (SP)  1                    η for every parameter       η for every parameter
``depth_mup``      a/√L                 η/√L for branch weights,    η for every parameter
                                        η for embedding/read-out
``ode``            T/L                  η for every parameter       η for every parameter
=================  ===================  ==========================  ==========================================

``depth_mup`` is the Depth-μP rule of Tensor Programs VI (Yang, Yu, Zhu, Hayou 2023, arXiv 2310.02244,
Table 1 / Sec. 3): with the 1/√L multiplier, SGD needs no depth correction and Adam (whose update size does
not scale with the gradient) needs ``η/√L`` on the hidden (branch) weights. Under SP the learning rate has to be
re-tuned for every depth.

**Block depth 2 correction** (``first_layer_correction=γ``): in a two-matrix block ``W₂ σ(W₁ h)``, the first
internal layer ``W₁`` sits behind the ``a/√L`` multiplier *and* behind ``W₂``, so under Depth-μP its feature
updates vanish as ``L`` grows (arXiv 2512.21075). The correction multiplies that layer's learning rate by
``L^γ`` (default ``γ = 1/2``: the first internal layer then learns at ``η`` under Adam, undoing the ``1/√L``).
This is our implementation of the "depth-aware learning-rate correction"; the exponent is a parameter.
"""

from __future__ import annotations

import math
from typing import Any

from torch import nn

from testbed.config import ConfigError

PARAMETERIZATIONS = ("standard", "depth_mup", "ode")
OPTIMIZERS = ("adam", "sgd")


def _flow_of(model: nn.Module):
    return getattr(model, "flow", model)


def branch_first_layer_names(flow: nn.Module) -> set[str]:
    """Parameter names (in ``flow``) of the first internal layer ``W₁, b₁`` of every two-matrix residual branch,
    from the student's :meth:`~testbed.students.base.Student.branch_first_layer_names` (empty for one-matrix
    branches). A model that does not provide them raises :class:`ConfigError`: the correction cannot be applied."""
    names = getattr(flow, "branch_first_layer_names", None)
    try:
        if names is None:
            raise NotImplementedError(f"{type(flow).__name__} has no branch_first_layer_names()")
        return set(names())
    except NotImplementedError as err:
        raise ConfigError(f"first_layer_correction needs the first internal layer of every residual branch, but "
                          f"{type(flow).__name__} does not name it: {err}") from None


def param_groups(model: nn.Module, lr: float, parameterization: str = "depth_mup", optimizer: str = "adam",
                 first_layer_correction: float | None = None) -> list[dict[str, Any]]:
    """Optimizer parameter groups implementing the learning-rate rule of ``parameterization`` (see module doc).

    Groups are named (``"group"`` key): ``embedding/read-out``, ``branch``, ``branch first layer``. Pass the
    result to ``torch.optim.Adam``/``SGD`` or to :func:`testbed.train.train` (``param_groups=``).
    """
    if parameterization not in PARAMETERIZATIONS:
        raise ConfigError(f"parameterization must be one of {PARAMETERIZATIONS}, got {parameterization!r}")
    if optimizer not in OPTIMIZERS:
        raise ConfigError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    if first_layer_correction is not None and not math.isfinite(first_layer_correction):
        raise ConfigError(f"first_layer_correction must be a finite exponent, got {first_layer_correction!r}")
    flow = _flow_of(model)
    depth = flow.n_layers
    branch_lr = lr / math.sqrt(depth) if (parameterization == "depth_mup" and optimizer == "adam") else lr
    first_lr = branch_lr * (depth ** first_layer_correction if first_layer_correction is not None else 1.0)
    branch_params = {id(p) for p in flow.blocks.parameters()}
    first_ids: set[int] = set()
    if first_layer_correction is not None:  # only the correction needs them
        names = branch_first_layer_names(flow)
        first_ids = {id(p) for n, p in flow.named_parameters() if n in names}
    groups = {"embedding/read-out": [], "branch": [], "branch first layer": []}
    for p in model.parameters():
        if id(p) in first_ids and first_layer_correction is not None:
            groups["branch first layer"].append(p)
        elif id(p) in branch_params:
            groups["branch"].append(p)
        else:
            groups["embedding/read-out"].append(p)
    rates = {"embedding/read-out": lr, "branch": branch_lr, "branch first layer": first_lr}
    return [{"params": ps, "lr": rates[g], "group": g} for g, ps in groups.items() if ps]

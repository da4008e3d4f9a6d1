"""Partially observed paths: inputs, their outcome (labels or endpoint targets) and the intermediate states
observed for *some* inputs at *some* depths.

``PathData`` is what the ``observed_path`` objective term reads (:mod:`testbed.objectives`):

* ``x``            inputs ``(N, …)`` (passed through the model's ``initial_state``);
* ``path_layers``  layer indices ``l_1 < … < l_K`` (``0 < l_k ≤ L``) where states may be observed;
* ``path_targets`` observed states ``(N, K, d_obs)`` (anything where the mask is 0);
* ``path_mask``    ``(N, K)`` weights in ``[0, 1]``: 1 where ``x_n`` was observed at ``l_k``, 0 where not;
* ``y`` (int64 labels, with ``n_classes``) and/or ``endpoints`` (regression targets ``(N, d_out)``);
* ``teacher_logits`` (optional, ``(N, n_classes)``): a teacher network's logits on every input, read by the
  ``distill`` objective term on the observed inputs only (the same inputs whose states are observed).

Two ways of building targets from the same observations (:func:`aligned_paths`, :func:`dense_paths`) are the
*aligned* and *over-constrained* field objectives of the multi-path study.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch

from systems.containers import SampleData

Tensor = torch.Tensor


@dataclasses.dataclass
class PathData(SampleData):
    """Inputs with partially observed intermediate states (see the module docstring)."""

    x: Tensor
    path_layers: Tensor
    path_targets: Tensor
    path_mask: Tensor
    y: Tensor | None = None
    n_classes: int = 0
    endpoints: Tensor | None = None
    teacher_logits: Tensor | None = None
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    SAMPLE_AXES: ClassVar[dict[str, int]] = {"x": 0, "path_targets": 0, "path_mask": 0, "y": 0, "endpoints": 0,
                                             "teacher_logits": 0}
    FLOAT_FIELDS: ClassVar[tuple[str, ...]] = ("x", "path_targets", "path_mask", "endpoints", "teacher_logits")

    def __post_init__(self) -> None:
        n = self.x.shape[0]
        k = self.path_layers.numel()
        if self.path_layers.ndim != 1 or self.path_layers.dtype != torch.long:
            raise ValueError("path_layers must be a 1-D int64 tensor of layer indices")
        if k and int(self.path_layers.min()) < 1:
            raise ValueError(f"path_layers must be ≥ 1 (layer 0 is the input itself), got {self.path_layers}")
        if self.path_targets.shape[:2] != (n, k) or self.path_targets.ndim != 3:
            raise ValueError(f"path_targets must have shape (N={n}, K={k}, d), got {tuple(self.path_targets.shape)}")
        if tuple(self.path_mask.shape) != (n, k):
            raise ValueError(f"path_mask must have shape (N={n}, K={k}), got {tuple(self.path_mask.shape)}")
        if self.y is not None:
            if self.y.shape != (n,) or self.y.dtype != torch.long:
                raise ValueError("y must be a 1-D int64 tensor with one label per input")
            if n and (int(self.y.min()) < 0 or int(self.y.max()) >= self.n_classes):
                raise ValueError(f"labels must lie in [0, n_classes={self.n_classes})")
        if self.endpoints is not None and self.endpoints.shape[0] != n:
            raise ValueError(f"endpoints must have {n} rows, got {self.endpoints.shape[0]}")
        if self.teacher_logits is not None and tuple(self.teacher_logits.shape) != (n, self.n_classes):
            raise ValueError(f"teacher_logits must have shape (N={n}, n_classes={self.n_classes}), got "
                             f"{tuple(self.teacher_logits.shape)}")
        for name in ("x", "path_targets", "endpoints", "teacher_logits"):
            v = getattr(self, name)
            if v is not None and not torch.isfinite(v).all():
                raise ValueError(f"{name} contains NaN/inf")

    @property
    def n(self) -> int:
        return self.x.shape[0]

    @property
    def observed_fraction(self) -> float:
        """Fraction of (input, layer) pairs that carry an observation."""
        return float((self.path_mask > 0).double().mean()) if self.path_mask.numel() else 0.0


def observation_layers(n_layers: int, n_obs: int) -> Tensor:
    """``n_obs`` evenly spaced interior layers ``l_k = round(k·L/(n_obs+1))``, ``k = 1..n_obs`` (distinct)."""
    if n_obs < 0 or n_obs >= n_layers:
        raise ValueError(f"n_obs must lie in [0, n_layers={n_layers}), got {n_obs}")
    layers = torch.tensor([round(k * n_layers / (n_obs + 1)) for k in range(1, n_obs + 1)], dtype=torch.long)
    if layers.unique().numel() != layers.numel():
        raise ValueError(f"{n_obs} observation layers do not fit distinctly in depth {n_layers}")
    return layers


def aligned_paths(states: Tensor, layers: Tensor, observed: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The aligned field targets: supervise only what was observed.

    ``states`` ``(N, K, d)`` are the observed states at ``layers`` ``(K,)``; ``observed`` ``(N,)`` marks the
    inputs whose path was observed. Returns ``(layers, targets, mask)`` with ``mask[n, k] = observed[n]``.
    """
    mask = observed.to(states.dtype)[:, None].expand(-1, layers.numel()).clone()
    return layers.clone(), states.clone(), mask


def dense_paths(x0: Tensor, states: Tensor, layers: Tensor, observed: Tensor,
                n_layers: int) -> tuple[Tensor, Tensor, Tensor]:
    """The over-constrained field targets: a target at *every* depth ``l = 1..L`` for *every* input.

    Where nothing was observed the target is made up by the only rule available without the law: linear
    interpolation in depth between the known anchors ``h_0 = x0`` and the observed states, held constant after
    the last one. For inputs whose path was never observed that means "stay at ``x0``". Returns
    ``(layers = 1..L, targets (N, L, d), mask = 1)``.
    """
    n, _, d = states.shape
    all_layers = torch.arange(1, n_layers + 1, dtype=torch.long)
    anchors_l = torch.cat([torch.zeros(1, dtype=torch.long), layers])                  # (K+1,)
    anchors = torch.cat([x0[:, None, :d], states], 1)                                    # (N, K+1, d)
    targets = x0[:, None, :d].expand(n, n_layers, d).clone()
    obs = observed.bool()
    if obs.any() and layers.numel():
        lf = all_layers.to(states.dtype)
        al = anchors_l.to(states.dtype)
        seg = torch.searchsorted(anchors_l, all_layers, right=True) - 1                # anchor at or before l
        seg = seg.clamp(max=anchors_l.numel() - 1)
        nxt = (seg + 1).clamp(max=anchors_l.numel() - 1)
        span = (al[nxt] - al[seg]).clamp_min(1.0)
        w = torch.where(nxt > seg, (lf - al[seg]) / span, torch.zeros_like(lf))        # (L,)
        interp = anchors[:, seg] * (1 - w)[None, :, None] + anchors[:, nxt] * w[None, :, None]
        targets[obs] = interp[obs]
    return all_layers, targets, torch.ones(n, n_layers, dtype=states.dtype)

"""Retention of a field across a change of the model: one relative drift for states and for Jacobian sketches.

For snapshots ``a_s`` (after) and ``b_s`` (before) of the same quantities (block states, or Jacobian-vector sketches)
over stages ``s``, the *relative drift* is ``(1/S) Σ_s ‖a_s − b_s‖_F / ‖b_s‖_F`` and the *retention* ``1 − drift``
(1 for an unchanged field; negative when the drift exceeds the reference's own norm).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

Tensor = torch.Tensor


def relative_drift(new: Sequence[Tensor], ref: Sequence[Tensor], eps: float = 1e-12) -> float:
    """Mean over stages of ``‖new_s − ref_s‖_F / ‖ref_s‖_F``."""
    vals = [float((a - b).norm() / (b.norm() + eps)) for a, b in zip(new, ref, strict=True)]
    return sum(vals) / len(vals)


def retention(new: Sequence[Tensor], ref: Sequence[Tensor]) -> float:
    """``1 − relative_drift(new, ref)``."""
    return 1.0 - relative_drift(new, ref)

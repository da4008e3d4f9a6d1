"""Evaluate a trained student against its teacher: the row every law-recovery table is made of."""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from typing import Any

import torch

from systems.data import TrajectoryData
from testbed.field.consistency import ConsistencyResult, integrate, solver_consistency
from testbed.field.metrics import (
    endpoint_error,
    flow_jacobian_error,
    interior_error,
    is_aliased,
    law_error,
    path_sensitivity,
    relative_l2,
    trajectory_error,
)
from testbed.students.base import Student

Tensor = torch.Tensor

#: a relative endpoint error above this is worse than predicting 0: the row is kept but flagged
LARGE_ERROR = 1.0


def quality_flag(metrics: dict[str, Any], label: str, keys: tuple[str, ...] = ("endpoint_error",),
                 threshold: float = LARGE_ERROR) -> str:
    """``"ok"``, or ``"large_error"`` when any of ``keys`` exceeds ``threshold`` (relative L2, so > 1 is worse
    than the zero predictor); a flagged row also prints one ``testbed: warning:`` line naming ``label``."""
    bad = {k: float(metrics[k]) for k in keys if k in metrics and not float(metrics[k]) <= threshold}
    if not bad:
        return "ok"
    shown = ", ".join(f"{k} = {v:.3g}" for k, v in bad.items())
    print(f"testbed: warning: {label}: {shown} > {threshold:g}; the row is kept and flagged 'large_error' "
          "(lower the learning rate or train longer)", file=sys.stderr)
    return "large_error"


@dataclass
class TeacherReference:
    """What the teacher contributes to an evaluation, computed once per system and reused for each student.

    ``consistency`` is the teacher law's own consistency curve (its discretisation floor) at the student's
    depth; ``flow_jacobian`` is ``∂φ_T/∂x_0`` at ``x0_jacobian`` (variational equation).
    """

    test_id: TrajectoryData
    test_ood: TrajectoryData
    consistency: ConsistencyResult
    x0_jacobian: Tensor
    flow_jacobian: Tensor

    @property
    def path_sensitivity(self) -> float:
        """``E_x ‖∂φ_T/∂x_0‖_2``, the teacher's counterpart of the students' path sensitivity."""
        return float(torch.linalg.matrix_norm(self.flow_jacobian, ord=2).mean())


def teacher_reference(system, test_id: TrajectoryData, test_ood: TrajectoryData, n_layers: int,
                      step_counts: list[int] | None = None, n_consistency: int = 128,
                      n_jacobian: int = 64) -> TeacherReference:
    x0c = test_id.x0[:n_consistency]
    cons = solver_consistency(system.vector_field, x0c, float(system.horizon), n_layers, step_counts,
                              target=test_id.endpoints[:n_consistency])
    x0j = test_id.x0[:n_jacobian]
    fj = system.flow_jacobian(x0j, [0.0, float(system.horizon)])[-1]
    return TeacherReference(test_id, test_ood, cons, x0j, fj)


@dataclass
class Evaluation:
    """Scalar metrics of one student (``metrics``) and its consistency curve (``consistency``)."""

    metrics: dict[str, float]
    consistency: ConsistencyResult
    extra: dict[str, Any] = field(default_factory=dict)


def evaluate_student(student: Student, ref: TeacherReference, step_counts: list[int] | None = None,
                     n_consistency: int = 128) -> Evaluation:
    """Endpoint/trajectory/law errors (ID and OOD), solver consistency and path sensitivity.

    Columns (all relative L2, see :mod:`testbed.field.metrics`):
    endpoint_error, endpoint_error_ood, trajectory_error, law_error_id, law_error_ood,
    interior_error (the states strictly inside (0, T) only) and aliased (the endpoint fits, the interior does not:
    :func:`~testbed.field.metrics.is_aliased`),
    consistency_error (endpoint change from the L-step network to the dopri5 solve of its own field),
    consistency_error_mean (mean endpoint change over all re-integrations L/4 … 4L, dopri5),
    consistency_excess (consistency_error − teacher_consistency_error: what the student adds to the true law's own
    discretisation floor at this L; 0 for the true law, negative for a law that compensates its own steps),
    teacher_consistency_error (consistency_error for f*: the discretisation floor at this L),
    path_sensitivity (E‖∂h_L/∂h_0‖_2),
    flow_jacobian_error (∂h_L/∂h_0 vs ∂φ_T/∂x_0).
    """
    dtype = next(student.parameters()).dtype
    tid = ref.test_id.to(dtype=dtype)
    tood = ref.test_ood.to(dtype=dtype)
    student.eval()
    cons = solver_consistency(student.vector_field, tid.x0[:n_consistency], float(student.horizon),
                              student.n_layers, step_counts, target=tid.endpoints[:n_consistency])
    ps = path_sensitivity(student, ref.x0_jacobian.to(dtype))
    end_err = endpoint_error(student, tid)
    inner = interior_error(student, tid) if tid.t.numel() >= 3 else float("nan")
    metrics = {
        "endpoint_error": end_err,
        "endpoint_error_ood": endpoint_error(student, tood),
        "trajectory_error": trajectory_error(student, tid),
        "interior_error": inner,
        "aliased": bool(is_aliased(end_err, inner)) if inner == inner else False,
        "law_error_id": law_error(student.vector_field, tid),
        "law_error_ood": law_error(student.vector_field, tood),
        "consistency_error": cons.summary,
        "consistency_error_mean": cons.mean_change(),
        "consistency_excess": cons.summary - ref.consistency.summary,
        "teacher_consistency_error": ref.consistency.summary,
        "path_sensitivity": ps.total,
        "teacher_path_sensitivity": ref.path_sensitivity,
        "flow_jacobian_error": flow_jacobian_error(ps, ref.flow_jacobian),
    }
    return Evaluation(metrics, cons, {"path_sensitivity": ps})


@dataclass
class Rollout:
    """Student vs teacher beyond the training horizon: ``errors[k]`` is the relative L2 error at ``times[k]``."""

    times: Tensor
    student: Tensor
    teacher: Tensor
    errors: list[float]

    def error_at(self, t: float) -> float:
        """The error at the grid time closest to ``t``."""
        k = int(torch.argmin((self.times - t).abs()))
        return self.errors[k]


@torch.no_grad()
def rollout(field, system, x0: Tensor, horizon: float, n_layers: int, factor: int = 4,
            points_per_horizon: int | None = None) -> Rollout:
    """Continue a depth-``L`` field past its horizon ``T`` to ``factor·T`` and compare with the teacher's flow.

    ``field`` is a student (its ``vector_field`` is used) or any ``f(t, x)``. The field is extended in depth
    with its own step: forward Euler with ``Δt = T/L`` for ``factor·L`` steps (for a tied ODE-scaled residual
    network this is the network applied ``factor`` times). Errors
    ``sqrt(Σ_i ‖x^θ_i(t) − φ_t(x_{0,i})‖² / Σ_i ‖φ_t(x_{0,i})‖²)`` on the grid ``t_k = k·T/points_per_horizon``
    (default: every layer), ``k = 0..factor·points_per_horizon``. A roll-out whose states left the floating-point
    range (a field unstable under its own step) has error ``inf`` from then on — diverged, not missing.
    """
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
        raise ValueError(f"factor must be an integer ≥ 1, got {factor!r}")
    f = getattr(field, "vector_field", field)
    ppt = points_per_horizon or n_layers
    if n_layers % ppt:
        raise ValueError(f"points_per_horizon ({ppt}) must divide the depth ({n_layers})")
    T = float(horizon)
    times = torch.linspace(0.0, factor * T, factor * ppt + 1, dtype=torch.float64)
    xs, _ = integrate(f, x0, factor * T, "euler", factor * n_layers, times)
    ref = system.flow(x0.to(torch.float64), times).to(x0.dtype)
    errors = [relative_l2(xs[k], ref[k]) for k in range(times.numel())]
    errors = [e if math.isfinite(e) else math.inf for e in errors]
    return Rollout(times, xs, ref, errors)

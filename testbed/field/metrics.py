"""Field metrics: how a student's propagation field compares with itself and with the teacher.

All errors are *relative L2* over the evaluation set,

    rel(a, b) = sqrt( Σ_i ‖a_i − b_i‖² / Σ_i ‖b_i‖² ),

summed over samples (and over times / matrix entries where the quantity has them).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from systems.data import TrajectoryData
from testbed.field.jacobians import layer_jacobians, path_jacobians
from testbed.students.base import Student

Tensor = torch.Tensor
Field = Callable[[float, Tensor], Tensor]


def relative_l2(pred: Tensor, target: Tensor, eps: float = 1e-30) -> float:
    """``sqrt(Σ‖pred − target‖² / Σ‖target‖²)`` over all elements."""
    num = (pred - target).double().pow(2).sum()
    den = target.double().pow(2).sum()
    return float(torch.sqrt(num / (den + eps)))


# ------------------------------------------------------------------------------------------ path sensitivity
@dataclass
class PathSensitivity:
    """Norms of ``P_l = ∂h_L/∂h_l`` for ``l = 0..L``, averaged over inputs.

    Attributes:
        spectral:  (L+1,) mean over inputs of ``‖P_l‖_2`` (largest singular value).
        frobenius: (L+1,) mean over inputs of ``‖P_l‖_F``.
        logdet:    (L+1,) mean over inputs of ``log|det P_l|`` (log volume change from depth l to L).
        endpoint_jacobian: (B, d, d) ``P_0 = ∂h_L/∂h_0`` per input.
    """

    spectral: Tensor
    frobenius: Tensor
    logdet: Tensor
    endpoint_jacobian: Tensor

    @property
    def total(self) -> float:
        """``E_x ‖∂h_L/∂h_0‖_2`` — the summary reported in result tables."""
        return float(self.spectral[0])


def path_sensitivity(student: Student, x0: Tensor) -> PathSensitivity:
    """Per-depth sensitivity of the endpoint to the hidden state, from layer Jacobians (torch.func)."""
    _, jacs = layer_jacobians(student, x0)
    p = path_jacobians(jacs).double()
    spectral = torch.linalg.matrix_norm(p, ord=2).mean(dim=1)
    frob = torch.linalg.matrix_norm(p, ord="fro").mean(dim=1)
    logdet = torch.linalg.slogdet(p).logabsdet.mean(dim=1)
    return PathSensitivity(spectral, frob, logdet, p[0])


# ------------------------------------------------------------------------------------------ law recovery
def evaluate_field(f: Field, t: Tensor, states: Tensor) -> Tensor:
    """``f(t_k, states[k])`` for every grid time, shape (K+1, N, d)."""
    return torch.stack([f(float(t[k]), states[k]) for k in range(t.numel())])


@torch.no_grad()
def law_error(student_field: Field, data: TrajectoryData) -> float:
    """Relative L2 distance between ``f_θ`` and ``f*`` at the teacher's states in ``data``:
    ``sqrt(Σ_{k,i} ‖f_θ(t_k, x_{k,i}) − f*(t_k, x_{k,i})‖² / Σ_{k,i} ‖f*(t_k, x_{k,i})‖²)``."""
    dtype = data.states.dtype
    pred = evaluate_field(student_field, data.t.to(dtype), data.states)
    return relative_l2(pred, data.velocities)


@torch.no_grad()
def endpoint_error(student: Student, data: TrajectoryData) -> float:
    """Relative L2 error of the network output ``h_L(x_0)`` against ``φ_T(x_0)``."""
    return relative_l2(student(data.x0), data.endpoints)


@torch.no_grad()
def trajectory_error(student: Student, data: TrajectoryData) -> float:
    """Relative L2 error of the student's states at the observation times against the teacher's (k ≥ 1)."""
    pred = student.trajectory(data.x0, data.t)
    return relative_l2(pred[1:], data.states[1:])


def interior_error(student: Student, data: TrajectoryData) -> float:
    """Relative L2 error of the student's states at the *interior* observation times ``0 < t_k < T`` against the
    teacher's (the endpoint left out): what an endpoint loss never sees."""
    if data.t.numel() < 3:
        raise ValueError("interior_error needs at least one observation time strictly inside (0, T)")
    with torch.no_grad():
        pred = student.trajectory(data.x0, data.t)
    return relative_l2(pred[1:-1], data.states[1:-1])


#: an endpoint error at most this counts as "the endpoint map fits" for :func:`is_aliased`
ALIAS_ENDPOINT_TOL = 0.1
#: the interior error must exceed the endpoint error by this factor (and ``ALIAS_ENDPOINT_TOL``) to flag aliasing
ALIAS_RATIO = 3.0


def is_aliased(endpoint_err: float, interior_err: float, endpoint_tol: float = ALIAS_ENDPOINT_TOL,
               ratio: float = ALIAS_RATIO) -> bool:
    """An *aliased* law: the endpoint map fits (``endpoint_err ≤ endpoint_tol``) while the interior states do not
    (``interior_err ≥ max(ratio·endpoint_err, endpoint_tol)``). Example: on ``x' = A x`` with rotation rate ``w``
    and horizon ``T``, the rate ``w − 2π/T`` has the same flow map ``φ_T`` and different states in between — a
    student that learned it passes every endpoint test and has not learned the law."""
    return endpoint_err <= endpoint_tol and interior_err >= max(ratio * endpoint_err, endpoint_tol)


def flow_jacobian_error(sensitivity: PathSensitivity, teacher_flow_jacobian: Tensor) -> float:
    """Relative L2 (Frobenius) error of ``∂h_L/∂h_0`` against the teacher's ``∂φ_T/∂x_0``."""
    return relative_l2(sensitivity.endpoint_jacobian.to(teacher_flow_jacobian.dtype), teacher_flow_jacobian)

"""Field geometry: the shape of a propagation field ``h_0 = x0, h_1, …, h_L`` and of its layer maps.

With increments ``d_l = h_{l+1} − h_l`` (``l = 0..L-1``), layer step ``Δt = T/L`` and layer Jacobians
``J_l = ∂h_{l+1}/∂h_l``, per input:

* trajectory length  ``Λ = Σ_l ‖d_l‖₂``  (reparameterisation-invariant; → ``∫‖ḣ‖ dt``);
* kinetic energy     ``E = Σ_l ‖d_l‖₂² / Δt``  (→ ``∫‖ḣ‖² dt`` for an exact ODE solution; *not*
  reparameterisation-invariant: among paths of given length, constant speed minimises it, ``E ≥ Λ²/T``);
* turning angles     ``θ_l = ∠(d_{l-1}, d_l) ∈ [0, π]`` at the interior vertices ``h_l``, ``l = 1..L-1``;
  total curvature ``Θ = Σ_l θ_l`` and mean curvature ``κ = Θ / Λ`` (radians per unit length);
* Jacobian spectral norm ``‖J_l‖₂ = σ_max(J_l)`` and condition number ``σ_max(J_l)/σ_min(J_l)``;
* log volume change ``Σ_l log|det J_l| = log|det ∂h_L/∂h_0|``.

Per-input quantities are returned with the batch shape; :class:`FieldGeometry` keeps them and
:meth:`FieldGeometry.summary` averages over inputs (plain mean). Jacobian norms are averaged over inputs
*per layer* first, then summarised by their max and mean over layers.

Length, kinetic energy and curvature depend on the whole interior of the path; the log-determinant and the
path sensitivity ``E_x‖∂h_L/∂h_0‖₂`` depend only on the endpoint map (see :mod:`testbed.students.constructed`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from testbed.field.jacobians import layer_jacobians, path_jacobians
from testbed.students.base import Student

Tensor = torch.Tensor


def _check_trajectory(traj: Tensor) -> Tensor:
    if traj.ndim < 2 or traj.shape[0] < 2:
        raise ValueError(f"trajectory must have shape (L+1, ..., d) with L >= 1, got {tuple(traj.shape)}")
    return traj.double()


def increments(traj: Tensor) -> Tensor:
    """``d_l = h_{l+1} − h_l``: (L+1, ..., d) → (L, ..., d)."""
    return traj[1:] - traj[:-1]


def trajectory_length(traj: Tensor) -> Tensor:
    """``Λ = Σ_l ‖h_{l+1} − h_l‖₂`` per input: (L+1, ..., d) → (...)."""
    traj = _check_trajectory(traj)
    return torch.linalg.vector_norm(increments(traj), dim=-1).sum(0)


def kinetic_energy(traj: Tensor, horizon: float) -> Tensor:
    """``E = Σ_l ‖h_{l+1} − h_l‖₂² / Δt`` with ``Δt = T/L``, per input: (L+1, ..., d) → (...)."""
    traj = _check_trajectory(traj)
    dt = float(horizon) / (traj.shape[0] - 1)
    return increments(traj).pow(2).sum(-1).sum(0) / dt


def _angle(u: Tensor, v: Tensor) -> Tensor:
    """Angle between unit vectors, ``2·atan2(‖u − v‖, ‖u + v‖)`` (accurate near 0 and π)."""
    return 2 * torch.atan2(torch.linalg.vector_norm(u - v, dim=-1), torch.linalg.vector_norm(u + v, dim=-1))


def turning_angles(traj: Tensor, zero_tol: float = 1e-12) -> Tensor:
    """Discrete turning angles of the polygon ``h_0, …, h_L``: (L+1, ..., d) → (L-1, ...).

    Entry ``l-1`` is the turn at vertex ``h_l``: the angle in ``[0, π]`` between ``d_{l-1}`` and ``d_l``.

    Zero increments: an increment with ``‖d_l‖ ≤ zero_tol · max_k ‖d_k‖`` (per input) is a pause, not a
    direction. Pauses are skipped: the angle is measured between the last non-zero increment before and the
    next non-zero one after (the polygon with repeated vertices removed), and recorded at the vertex where
    motion resumes; every other entry touching a pause is 0. So a pause costs no curvature, a stop-and-
    reverse still counts ``π``, and a path that never moves has zero curvature.
    """
    traj = _check_trajectory(traj)
    d = increments(traj)
    norms = torch.linalg.vector_norm(d, dim=-1)                         # (L, ...)
    moving = norms > zero_tol * norms.amax(0)                           # (L, ...)
    units = d / torch.where(moving, norms, torch.ones_like(norms)).unsqueeze(-1)
    prev, has_prev = units[0], moving[0]
    out = []
    for l in range(1, d.shape[0]):
        cur, ok = units[l], moving[l]
        theta = _angle(prev, cur)
        out.append(torch.where(ok & has_prev, theta, torch.zeros_like(theta)))
        prev = torch.where(ok.unsqueeze(-1), cur, prev)
        has_prev = has_prev | ok
    if not out:
        return torch.zeros((0, *traj.shape[1:-1]), dtype=traj.dtype, device=traj.device)
    return torch.stack(out)


def total_curvature(traj: Tensor, zero_tol: float = 1e-12) -> Tensor:
    """``Θ = Σ_l θ_l`` (radians) per input; see :func:`turning_angles` for the zero-increment convention."""
    return turning_angles(traj, zero_tol).sum(0)


def mean_curvature(traj: Tensor, zero_tol: float = 1e-12) -> Tensor:
    """``κ = Θ / Λ`` per input (radians per unit length); 0 for a path of zero length."""
    theta, length = total_curvature(traj, zero_tol), trajectory_length(traj)
    return torch.where(length > 0, theta / torch.where(length > 0, length, torch.ones_like(length)),
                       torch.zeros_like(theta))


def jacobian_spectra(jacobians: Tensor) -> tuple[Tensor, Tensor]:
    """``(‖J_l‖₂, σ_max/σ_min)`` per layer and input: (L, ..., d, d) → two (L, ...) tensors.

    The condition number is ``inf`` where ``J_l`` is singular (``σ_min = 0``).
    """
    sv = torch.linalg.svdvals(jacobians.double())
    smax, smin = sv[..., 0], sv[..., -1]
    cond = torch.where(smin > 0, smax / torch.where(smin > 0, smin, torch.ones_like(smin)),
                       torch.full_like(smax, math.inf))
    return smax, cond


def path_logdet(jacobians: Tensor) -> Tensor:
    """``Σ_l log|det J_l| = log|det ∂h_L/∂h_0|`` per input: (L, ..., d, d) → (...) (``-inf`` if singular)."""
    return torch.linalg.slogdet(jacobians.double()).logabsdet.sum(0)


def endpoint_sensitivity(jacobians: Tensor) -> Tensor:
    """``‖∂h_L/∂h_0‖₂ = ‖J_{L-1} ⋯ J_0‖₂`` per input: (L, B, d, d) → (B,).

    Its mean over inputs is :attr:`testbed.field.metrics.PathSensitivity.total` (same product, same norm).
    """
    return torch.linalg.matrix_norm(path_jacobians(jacobians.double())[0], ord=2)


# ------------------------------------------------------------------------------------------ the result
@dataclass
class FieldGeometry:
    """Geometry of one student's propagation field on a batch of ``B`` inputs (float64 tensors).

    Attributes:
        trajectory_length: (B,) ``Λ`` per input.
        kinetic_energy:    (B,) ``E`` per input.
        turning_angles:    (L-1, B) ``θ_l`` per interior vertex and input.
        total_curvature:   (B,) ``Θ = Σθ_l`` per input.
        mean_curvature:    (B,) ``κ = Θ/Λ`` per input.
        jac_spectral:      (L,) mean over inputs of ``‖J_l‖₂`` (``None`` without Jacobians).
        jac_condition:     (L,) mean over inputs of ``σ_max(J_l)/σ_min(J_l)`` (``None`` without Jacobians).
        logdet:            (B,) ``Σ_l log|det J_l|`` per input (``None`` without Jacobians).
        endpoint_sensitivity: (B,) ``‖∂h_L/∂h_0‖₂`` per input (``None`` without Jacobians).
    """

    trajectory_length: Tensor
    kinetic_energy: Tensor
    turning_angles: Tensor
    total_curvature: Tensor
    mean_curvature: Tensor
    jac_spectral: Tensor | None = None
    jac_condition: Tensor | None = None
    logdet: Tensor | None = None
    endpoint_sensitivity: Tensor | None = None

    @property
    def path_sensitivity(self) -> float:
        """``E_x ‖∂h_L/∂h_0‖₂`` (= :func:`testbed.field.metrics.path_sensitivity` ``.total``); NaN if absent."""
        return math.nan if self.endpoint_sensitivity is None else float(self.endpoint_sensitivity.mean())

    def summary(self) -> dict[str, float]:
        """Flat floats: input means of the per-input quantities; for the layer Jacobians, the max and the mean
        over layers of the per-layer input means. Jacobian entries are NaN when Jacobians were skipped."""
        nan = math.nan

        def over_layers(x: Tensor | None, how: str) -> float:
            if x is None or x.numel() == 0:
                return nan
            return float(x.max() if how == "max" else x.mean())

        return {
            "trajectory_length": float(self.trajectory_length.mean()),
            "kinetic_energy": float(self.kinetic_energy.mean()),
            "total_curvature": float(self.total_curvature.mean()),
            "mean_curvature": float(self.mean_curvature.mean()),
            "jac_spectral_max": over_layers(self.jac_spectral, "max"),
            "jac_spectral_mean": over_layers(self.jac_spectral, "mean"),
            "jac_condition_max": over_layers(self.jac_condition, "max"),
            "jac_condition_mean": over_layers(self.jac_condition, "mean"),
            "logdet": nan if self.logdet is None else float(self.logdet.mean()),
            "path_sensitivity": self.path_sensitivity,
        }


SUMMARY_KEYS = ("trajectory_length", "kinetic_energy", "total_curvature", "mean_curvature", "jac_spectral_max",
                "jac_spectral_mean", "jac_condition_max", "jac_condition_mean", "logdet", "path_sensitivity")


def geometry_from_tensors(traj: Tensor, horizon: float, jacobians: Tensor | None = None,
                          zero_tol: float = 1e-12) -> FieldGeometry:
    """:class:`FieldGeometry` of a trajectory (L+1, B, d) on ``[0, T]`` and, optionally, its layer Jacobians
    (L, B, d, d)."""
    traj = _check_trajectory(traj).detach()
    n_layers = traj.shape[0] - 1
    geo = FieldGeometry(
        trajectory_length=trajectory_length(traj),
        kinetic_energy=kinetic_energy(traj, horizon),
        turning_angles=turning_angles(traj, zero_tol),
        total_curvature=total_curvature(traj, zero_tol),
        mean_curvature=mean_curvature(traj, zero_tol),
    )
    if jacobians is not None:
        jacobians = jacobians.detach().double()
        if jacobians.shape[0] != n_layers or jacobians.shape[1:-1] != traj.shape[1:]:
            raise ValueError(f"jacobians of shape {tuple(jacobians.shape)} do not match a trajectory of shape "
                             f"{tuple(traj.shape)}; expected (L, B, d, d)")
        spectral, cond = jacobian_spectra(jacobians)
        geo.jac_spectral, geo.jac_condition = spectral.mean(1), cond.mean(1)
        geo.logdet = path_logdet(jacobians)
        geo.endpoint_sensitivity = endpoint_sensitivity(jacobians)
    return geo


def field_geometry(student: Student, x0: Tensor, trajectory: Tensor | None = None, jacobians: Tensor | None = None,
                   with_jacobians: bool = True, zero_tol: float = 1e-12) -> FieldGeometry:
    """:class:`FieldGeometry` of ``student`` on inputs ``x0`` (B, d).

    ``trajectory`` (L+1, B, d) and ``jacobians`` (L, B, d, d, from :func:`layer_jacobians`) may be passed by
    callers that already have them; otherwise they are computed (Jacobians only when ``with_jacobians``).
    """
    if jacobians is None and with_jacobians:
        traj, jacobians = layer_jacobians(student, x0)
        trajectory = traj if trajectory is None else trajectory
    elif trajectory is None:
        with torch.no_grad():
            trajectory = student.trajectory(x0)
    return geometry_from_tensors(trajectory, student.horizon, jacobians if with_jacobians else None, zero_tol)

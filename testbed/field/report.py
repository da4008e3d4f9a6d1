"""The field of any model in one call: ``field_report`` and ``field_retention`` on a :func:`~testbed.field.record`.

``field_report(model, inputs, blocks=...)`` records the residual blocks (:func:`testbed.field.record.record`) and
measures, averaged over the inputs (``h_l`` the flattened state entering block ``l``, ``J_l = ∂h_{l+1}/∂h_l``,
``P_l = ∂h_L/∂h_l = J_{L-1}⋯J_l``):

* the path-sensitivity curve ``‖P_l‖₂``, ``‖P_l‖_F`` and ``log|det P_l|`` for every ``l = 0..L``;
* per block ``‖J_l‖₂`` and the condition number ``σ_max(J_l)/σ_min(J_l)``;
* the trajectory's length ``Σ_l ‖h_{l+1} − h_l‖``, kinetic energy ``Σ_l ‖h_{l+1} − h_l‖²/Δt`` (``Δt = 1/L``) and
  total turning angle (:mod:`testbed.field.geometry`).

Route: ``"dense"`` forms every ``J_l`` (``vmap(jacrev)``: ``D`` reverse passes per block) and decomposes it — exact,
for state dimensions up to a few hundred; ``"matrix_free"`` never forms a Jacobian (batched Lanczos on jvp/vjp
products, :mod:`testbed.field.spectral`; ``log|det P_l|`` is then not available and reported as NaN); ``"auto"``
picks dense up to ``dense_max_dim``.

``field_retention(before, after, inputs, blocks)`` compares two versions of a model (before / after training on
something else): trajectory retention ``1 − mean_l ‖h_l' − h_l‖/‖h_l‖`` over the block outputs and Jacobian
retention, the same on the sketches ``∂h_l/∂h_0 · v`` along unit probes ``v`` drawn from a seeded generator (the
seed is recorded in the result).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from testbed.config import ConfigError
from testbed.field.geometry import geometry_from_tensors
from testbed.field.jacobians import layer_jacobians, path_jacobians
from testbed.field.record import Blocks, FieldRecord, record
from testbed.field.retention import retention
from testbed.field.spectral import layer_spectral_norms, path_spectral_norms

Tensor = torch.Tensor
ROUTES = ("auto", "dense", "matrix_free")


@dataclass
class FieldReport:
    """Field metrics of one recorded model (input means; per-depth lists have ``L + 1`` entries, per-block ``L``)."""

    blocks: list[str]
    route: str
    dim: int
    n_inputs: int
    path_spectral: list[float]
    path_frobenius: list[float]
    path_logdet: list[float]
    block_spectral: list[float]
    block_condition: list[float]
    trajectory_length: float
    kinetic_energy: float
    total_curvature: float
    skipped: list[dict[str, Any]] = field(default_factory=list)

    @property
    def path_sensitivity(self) -> float:
        """``E_x ‖∂h_L/∂h_0‖₂``."""
        return self.path_spectral[0]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_frame(self):
        """One row per depth ``l = 0..L`` (block ``l``'s columns empty at ``l = L``); needs pandas."""
        import pandas as pd

        n = len(self.blocks)
        return pd.DataFrame({
            "depth": list(range(n + 1)),
            "block": [*self.blocks, None],
            "path_spectral": self.path_spectral, "path_frobenius": self.path_frobenius,
            "path_logdet": self.path_logdet,
            "block_spectral": [*self.block_spectral, math.nan], "block_condition": [*self.block_condition, math.nan],
        })


def _floats(x: Tensor) -> list[float]:
    return [float(v) for v in x.detach().double().cpu()]


def report_from_record(rec: FieldRecord, route: str = "auto", dense_max_dim: int = 256, tol: float = 1e-6,
                       seed: int = 0) -> FieldReport:
    """:class:`FieldReport` of a recording (see the module docstring for ``route``)."""
    if route not in ROUTES:
        raise ConfigError(f"route must be one of {ROUTES}, got {route!r}")
    s, x0, d = rec.student, rec.x0, rec.states.shape[-1]
    use_dense = route == "dense" or (route == "auto" and d <= dense_max_dim)
    traj = rec.states.double()
    if use_dense:
        _, jacs = layer_jacobians(s, x0)
        p = path_jacobians(jacs).double()
        path_sp = torch.linalg.matrix_norm(p, ord=2).mean(1)
        path_fr = torch.linalg.matrix_norm(p, ord="fro").mean(1)
        path_ld = torch.linalg.slogdet(p).logabsdet.mean(1)
        geo = geometry_from_tensors(traj, s.horizon, jacs)
        blk_sp, blk_cond = geo.jac_spectral, geo.jac_condition
    else:
        layers = layer_spectral_norms(s, x0, tol=tol, condition=True, seed=seed)
        paths = path_spectral_norms(s, x0, tol=tol, method="accumulate", seed=seed)
        path_sp = paths.curve
        path_fr = paths.frobenius.mean(1) if paths.frobenius is not None else torch.full_like(path_sp, math.nan)
        path_ld = torch.full_like(path_sp, math.nan)
        geo = geometry_from_tensors(traj, s.horizon)
        blk_sp, blk_cond = layers.mean, layers.condition.mean(1)
    return FieldReport(
        blocks=list(rec.names), route="dense" if use_dense else "matrix_free", dim=d, n_inputs=x0.shape[0],
        path_spectral=_floats(path_sp), path_frobenius=_floats(path_fr), path_logdet=_floats(path_ld),
        block_spectral=_floats(blk_sp), block_condition=_floats(blk_cond),
        trajectory_length=float(geo.trajectory_length.mean()), kinetic_energy=float(geo.kinetic_energy.mean()),
        total_curvature=float(geo.total_curvature.mean()), skipped=list(rec.skipped))


def field_report(model: nn.Module, inputs: Any, blocks: Blocks = None, batch_dim: int | None = None,
                 route: str = "auto", dense_max_dim: int = 256, tol: float = 1e-6, seed: int = 0) -> FieldReport:
    """Record ``model``'s residual blocks on ``inputs`` and measure its field (see the module docstring)."""
    return report_from_record(record(model, inputs, blocks, batch_dim), route, dense_max_dim, tol, seed)


@dataclass
class Retention:
    """Trajectory and Jacobian retention of ``after`` relative to ``before`` (1 = unchanged)."""

    trajectory: float
    jacobian: float
    n_probes: int
    seed: int


def _sketches(rec: FieldRecord, probes: Tensor) -> list[Tensor]:
    """``∂h_l/∂h_0 · v_i`` for every block output ``l ≥ 1`` and input ``i`` (its probe ``v_i``), by forward mode."""
    s, x0 = rec.student, rec.x0

    def outputs(x: Tensor) -> tuple[Tensor, ...]:
        hs, h = [], x
        for l in range(s.n_layers):
            h = s.step(l, h)
            hs.append(h)
        return tuple(hs)

    with torch.no_grad():
        _, tangents = torch.func.jvp(outputs, (x0,), (probes.to(x0.dtype),))
    return list(tangents)


def field_retention(before: nn.Module, after: nn.Module, inputs: Any, blocks: Blocks = None,
                    batch_dim: int | None = None, n_probes: int = 8, seed: int = 0) -> Retention:
    """Trajectory and Jacobian retention of ``after`` against ``before`` on ``inputs`` (same blocks in both)."""
    ra, rb = record(after, inputs, blocks, batch_dim), record(before, inputs, blocks, batch_dim)
    if ra.names != rb.names or ra.states.shape != rb.states.shape:
        raise ConfigError(f"the two models' recorded fields differ in blocks or shapes ({rb.names} vs {ra.names})")
    g = torch.Generator().manual_seed(seed)
    d, n = rb.states.shape[-1], rb.states.shape[1]
    v = torch.randn(n_probes, d, generator=g, dtype=torch.float64)
    v = v / v.norm(dim=1, keepdim=True)
    probes = v[torch.arange(n) % n_probes]

    traj = retention(list(ra.states[1:]), list(rb.states[1:]))
    jac = retention(_sketches(ra, probes), _sketches(rb, probes))
    return Retention(traj, jac, n_probes, seed)

"""Trajectory data sets drawn from a teacher: states, velocities and Jacobians on a time grid.

``make_trajectories(system, n, n_obs)`` samples ``n`` initial states (in-distribution or OOD), evaluates the
teacher flow on the uniform grid ``t_k = k·T/n_obs`` (``k = 0..n_obs``) and records, at every grid state, the
law ``f*(t_k, x_k)`` and optionally its Jacobian. Data sets can be saved to ``.npz`` with a JSON sidecar of
metadata and loaded back.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from systems.base import SystemSpecError
from systems.containers import SampleData

Tensor = torch.Tensor


@dataclasses.dataclass
class TrajectoryData(SampleData):
    """Teacher trajectories on a common grid.

    Attributes:
        t:          (K+1,) observation times, ``t[0] = 0``, ``t[-1] = T``.
        states:     (K+1, N, d) states ``x_k = φ_{t_k}(x_0)``.
        velocities: (K+1, N, d) the law ``f*(t_k, x_k)``.
        jacobians:  (K+1, N, d, d) ``∂f*/∂x`` at the states, or None.
        meta:       JSON-able description (system name and params, split, seed).
    """

    t: Tensor
    states: Tensor
    velocities: Tensor
    jacobians: Tensor | None = None
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    SAMPLE_AXES: ClassVar[dict[str, int]] = {"states": 1, "velocities": 1, "jacobians": 1}
    FLOAT_FIELDS: ClassVar[tuple[str, ...]] = ("t", "states", "velocities", "jacobians")

    def __post_init__(self) -> None:
        k1, n, d = self.states.shape
        if self.t.shape != (k1,):
            raise ValueError(f"t has shape {tuple(self.t.shape)}, expected ({k1},)")
        if self.velocities.shape != self.states.shape:
            raise ValueError("velocities must have the same shape as states")
        if self.jacobians is not None and self.jacobians.shape != (k1, n, d, d):
            raise ValueError(f"jacobians must have shape {(k1, n, d, d)}, got {tuple(self.jacobians.shape)}")
        for name in ("t", "states", "velocities", "jacobians"):
            v = getattr(self, name)
            if v is not None and not torch.isfinite(v).all():
                bad = int((~torch.isfinite(v)).sum())
                raise ValueError(f"trajectory data field {name!r} contains {bad} NaN/inf value(s)")

    @property
    def n(self) -> int:
        return self.states.shape[1]

    @property
    def dim(self) -> int:
        return self.states.shape[2]

    @property
    def x0(self) -> Tensor:
        return self.states[0]

    @property
    def endpoints(self) -> Tensor:
        return self.states[-1]

    # ---------------------------------------------------------------- caching
    def save(self, path: str | Path) -> Path:
        """Write ``path`` (.npz) and ``path`` with suffix .json (metadata), atomically."""
        path = Path(path).with_suffix(".npz")
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {"t": self.t.cpu().numpy(), "states": self.states.cpu().numpy(),
                  "velocities": self.velocities.cpu().numpy()}
        if self.jacobians is not None:
            arrays["jacobians"] = self.jacobians.cpu().numpy()
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz")
        os.close(fd)
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
        path.with_suffix(".json").write_text(json.dumps(self.meta, indent=2, sort_keys=True))
        return path

    @classmethod
    def load(cls, path: str | Path) -> TrajectoryData:
        path = Path(path).with_suffix(".npz")
        with np.load(path) as z:
            arrays = {k: torch.from_numpy(z[k]) for k in z.files}
        meta_path = path.with_suffix(".json")
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        return cls(arrays["t"], arrays["states"], arrays["velocities"], arrays.get("jacobians"), meta)


def make_trajectories(system, n: int, n_obs: int, generator: torch.Generator | None = None,
                      split: str = "id", with_jacobians: bool = False,
                      dtype: torch.dtype = torch.float64) -> TrajectoryData:
    """Sample ``n`` initial states (``split`` = "id" or "ood") and record the teacher on ``n_obs`` intervals."""
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        raise SystemSpecError(f"number of trajectories n must be a positive integer, got {n!r}")
    if isinstance(n_obs, bool) or not isinstance(n_obs, int) or n_obs <= 0:
        raise SystemSpecError(f"number of observation intervals n_obs must be a positive integer, got {n_obs!r}")
    if split == "id":
        x0 = system.sample_id(n, generator=generator, dtype=torch.float64)
    elif split == "ood":
        x0 = system.sample_ood(n, generator=generator, dtype=torch.float64)
    else:
        raise SystemSpecError(f"split must be 'id' or 'ood', got {split!r}")
    t = torch.linspace(0.0, float(system.horizon), n_obs + 1, dtype=torch.float64)
    states = system.flow(x0, t)
    velocities = torch.stack([system.vector_field(t[k], states[k]) for k in range(t.numel())])
    jac = None
    if with_jacobians:
        jac = torch.stack([system.jacobian(t[k], states[k]) for k in range(t.numel())])
    meta = {"system": system.name, "params": system.params(), "split": split, "n": n, "n_obs": n_obs}
    data = TrajectoryData(t, states, velocities, jac, meta)
    return data.to(dtype=dtype)

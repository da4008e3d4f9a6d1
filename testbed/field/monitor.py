"""Watch a model's field during any training loop: ``FieldMonitor`` (one call per step) and a Lightning callback.

Every ``every`` steps the monitor records the named residual blocks on fixed probe inputs
(:func:`testbed.field.record.record`, in eval mode, restoring the mode after) and appends one JSON line with a cheap
summary of the field (input means):

* ``trajectory_length`` ``Σ_l ‖h_{l+1} − h_l‖``, ``kinetic_energy`` ``L·Σ_l ‖h_{l+1} − h_l‖²``, ``total_curvature``;
* ``block_spectral_max`` / ``block_spectral_mean`` over blocks of ``‖J_l‖₂`` and ``path_sensitivity``
  ``‖∂h_L/∂h_0‖₂`` — matrix-free (batched Lanczos on jvp/vjp) at the loose tolerance ``tol`` (default 1e-3), so a
  check costs a few dozen block evaluations, not ``D`` backward passes.

``FieldMonitor.history`` keeps the rows in memory too. ``lightning_callback(monitor)`` wraps it as a PyTorch
Lightning ``Callback`` (optional extra ``[lightning]``): it calls the monitor after every training batch with the
trainer's global step.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from torch import nn

from testbed.config import ConfigError
from testbed.field.geometry import geometry_from_tensors
from testbed.field.record import Blocks, record
from testbed.field.spectral import layer_spectral_norms, path_spectral_norms


class FieldMonitor:
    """Append a field summary of ``model`` on ``probe_inputs`` to ``path`` (JSON lines) every ``every`` steps."""

    def __init__(self, model: nn.Module, probe_inputs: Any, every: int = 100, blocks: Blocks = None,
                 path: str | Path | None = None, tol: float = 1e-3, max_iter: int = 30, seed: int = 0) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ConfigError(f"every must be a positive integer, got {every!r}")
        self.model, self.inputs, self.every, self.blocks = model, probe_inputs, every, blocks
        self.path = None if path is None else Path(path)
        self.tol, self.max_iter, self.seed = tol, max_iter, seed
        self.history: list[dict[str, Any]] = []
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def summary(self) -> dict[str, float]:
        """The field summary now (see the module docstring)."""
        was_training = self.model.training
        self.model.eval()
        try:
            rec = record(self.model, self.inputs, self.blocks)
            geo = geometry_from_tensors(rec.states.double(), rec.student.horizon)
            layers = layer_spectral_norms(rec.student, rec.x0, tol=self.tol, max_iter=self.max_iter, seed=self.seed)
            path = path_spectral_norms(rec.student, rec.x0, depths=[0], tol=self.tol, max_iter=self.max_iter,
                                       method="chain", seed=self.seed)
        finally:
            self.model.train(was_training)
        return {"trajectory_length": float(geo.trajectory_length.mean()),
                "kinetic_energy": float(geo.kinetic_energy.mean()),
                "total_curvature": float(geo.total_curvature.mean()),
                "block_spectral_max": float(layers.mean.max()), "block_spectral_mean": float(layers.mean.mean()),
                "path_sensitivity": path.total}

    def __call__(self, step: int) -> dict[str, Any] | None:
        """Check at ``step`` (every ``every``-th step, and step 0); returns the row written, else None."""
        if step % self.every:
            return None
        t0 = time.perf_counter()
        row = {"step": int(step), **self.summary()}
        row["seconds"] = time.perf_counter() - t0
        self.history.append(row)
        if self.path is not None:
            with open(self.path, "a") as fh:
                fh.write(json.dumps(row) + "\n")
        return row


def lightning_callback(monitor: FieldMonitor):
    """A ``lightning.pytorch.Callback`` that calls ``monitor(trainer.global_step)`` after every training batch."""
    try:
        from lightning.pytorch import Callback
    except ImportError as err:
        raise ConfigError("the Lightning callback needs the optional extra: pip install "
                          f"'propagation-field-testbed[lightning]' — {err}") from None

    class FieldMonitorCallback(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: D401
            monitor(trainer.global_step)

    return FieldMonitorCallback()

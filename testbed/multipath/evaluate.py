"""Metrics of a multi-path student on a task's evaluation sets.

For every evaluation set the *score* is the accuracy (classification) or the relative endpoint error
``‖ŷ − y‖/‖y‖`` over the set (regression). Besides the scores:

* ``unseen_grid`` — the same score on the ``seen`` inputs when the learned field is re-integrated on other
  depth grids (forward Euler with ``L/2`` and ``2L`` steps; mean over the two): a held-out *time grid*;
* ``val_score`` and ``val_loss`` — on the ``validation`` split carved from the training inputs (when the task has
  one): the score, and the loss hyperparameters are chosen on: mean cross-entropy (classification) or the
  relative endpoint error (regression);
* ``ece``, ``nll`` (classification, ``seen`` inputs; :mod:`testbed.calibration`, 15 bins) and the reliability
  table of the ``seen`` inputs;
* ``path_error_<set>`` — relative L2 distance between the student's observed coordinates at the observation
  layers and the true intermediate states (on inputs none of whose paths were trained on);
* ``law_error_<set>`` — ``‖f_θ − f*‖/‖f*‖`` along the true states, where the task knows its law ``f*``;
* ``path_sensitivity`` — ``E_x ‖∂h_L/∂h_0‖_2`` (:func:`testbed.field.metrics.path_sensitivity`).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from testbed.calibration import ece_from_bins, negative_log_likelihood, reliability_bins
from testbed.field.consistency import fixed_step_solve
from testbed.field.metrics import path_sensitivity, relative_l2
from testbed.multipath.tasks import EvalSet, MultipathTask

Tensor = torch.Tensor
SPLITS = ("seen", "unseen_path", "unseen_grid", "shifted", "noisy")


def _unseen_key(task: MultipathTask) -> str | None:
    for k in ("unseen_region", "unseen_route"):
        if k in task.evals:
            return k
    return None


@torch.no_grad()
def outputs_on_grid(model, x: Tensor, n_steps: int | None = None) -> tuple[Tensor, Tensor]:
    """``(outputs, trajectory)``: the model's read-out and all hidden states, the field integrated with forward
    Euler on ``n_steps`` equal steps over ``[0, T]`` (``None``: the network's own ``L`` layers)."""
    flow = model.flow
    h0 = model.initial_state(x)
    if n_steps is None:
        traj = flow.trajectory(h0)
    else:
        grid = torch.linspace(0.0, float(flow.horizon), n_steps + 1, dtype=h0.dtype)
        traj = fixed_step_solve(flow.vector_field, h0, grid, "euler")
    return model.head(traj[-1]), traj


def _observe(model, h: Tensor) -> Tensor:
    obs = getattr(model, "observe", None)
    return obs(h) if obs is not None else h


def _score(task: MultipathTask, out: Tensor, ev: EvalSet) -> float:
    if task.kind == "classification":
        return float((out.argmax(-1) == ev.y).double().mean())
    return relative_l2(out, ev.endpoints)


@torch.no_grad()
def evaluate(model, task: MultipathTask, n_sensitivity: int = 128) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``(metrics, reliability rows)`` of a trained ``model`` on ``task`` (see the module docstring)."""
    model.eval()
    m: dict[str, Any] = {"metric": "accuracy" if task.kind == "classification" else "endpoint_error"}
    L = model.flow.n_layers
    unseen = _unseen_key(task)
    names = {"seen": "seen", "shifted": "shifted", "noisy": "noisy"}
    if unseen:
        names["unseen_path"] = unseen
    reliability: list[dict[str, Any]] = []
    for col, key in names.items():
        ev = task.evals[key]
        out, traj = outputs_on_grid(model, ev.x)
        m[col] = _score(task, out, ev)
        if ev.states is not None:
            pred = _observe(model, traj[task.obs_layers]).transpose(0, 1)
            m[f"path_error_{col}"] = relative_l2(pred, ev.states[..., :pred.shape[-1]])
            if task.law is not None and col in ("seen", "unseen_path"):
                states = ev.states.reshape(-1, ev.states.shape[-1])
                t = 0.0
                f_true = task.law(t, states.double())
                f_hat = _observe(model, model.flow.vector_field(t, states))
                m[f"law_error_{col}"] = relative_l2(f_hat, f_true)
        if col == "seen" and task.kind == "classification":
            reliability = reliability_bins(out, ev.y)
            m["ece"], m["nll"] = ece_from_bins(reliability), negative_log_likelihood(out, ev.y)
    if "validation" in task.evals:
        ev = task.evals["validation"]
        out, _ = outputs_on_grid(model, ev.x)
        m["val_score"] = _score(task, out, ev)
        m["val_loss"] = (negative_log_likelihood(out, ev.y) if task.kind == "classification"
                         else relative_l2(out, ev.endpoints))
    if "unseen_path" not in m:
        m["unseen_path"] = math.nan
    ev = task.evals["seen"]
    m["unseen_grid"] = sum(_score(task, outputs_on_grid(model, ev.x, n)[0], ev) for n in (max(L // 2, 1), 2 * L)) / 2
    with torch.enable_grad():
        h0 = model.initial_state(ev.x[:n_sensitivity])
        m["path_sensitivity"] = path_sensitivity(model.flow, h0.detach()).total
    return m, reliability

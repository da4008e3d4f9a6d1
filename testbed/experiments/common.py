"""Pieces every controlled-system experiment shares: data splits and one seeded fit of one student."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from systems.data import TrajectoryData, make_trajectories
from testbed.limits import check_memory
from testbed.objectives import Objective, make_objective
from testbed.seeding import DATA_SEED
from testbed.train import TrainConfig, TrainResult, train


def make_splits(system, n_train: int, n_test: int, n_obs: int, dtype: torch.dtype = torch.float64,
                seed: int = DATA_SEED, with_jacobians: bool = False,
                ) -> tuple[TrajectoryData, TrajectoryData, TrajectoryData]:
    """``(train, test_id, test_ood)`` teacher trajectories on ``n_obs`` intervals, drawn with one seeded stream
    (``with_jacobians``: the training split also carries ``∂f*/∂x`` at its states; the draws are the same)."""
    itemsize = torch.empty((), dtype=dtype).element_size()
    check_memory((n_train + 2 * n_test) * (n_obs + 1) * system.dim * itemsize * 3,  # states, field values, copies
                 f"teacher data ({n_train:,} training + 2 × {n_test:,} test trajectories of {n_obs + 1} states)")
    gen = torch.Generator().manual_seed(seed)
    train_data = make_trajectories(system, n_train, n_obs, gen, "id", with_jacobians=with_jacobians, dtype=dtype)
    test_id = make_trajectories(system, n_test, n_obs, gen, "id", dtype=dtype)
    test_ood = make_trajectories(system, n_test, n_obs, gen, "ood", dtype=dtype)
    return train_data, test_id, test_ood


def path_component(name: str) -> str:
    """``name`` as one file-name component: every character outside ``[A-Za-z0-9._+-]`` becomes ``_`` (a system
    named by reference must not turn a run folder into a path outside the output directory)."""
    out = "".join(c if c.isalnum() or c in "._+-" else "_" for c in str(name)).lstrip(".")
    return out or "_"


def split_validation(train_data, fraction: float):
    """``(fit_data, val_data)``: ``fraction`` of the training trajectories held out as a validation split
    (:func:`testbed.selection.split_indices`, drawn with a fixed seed so every run of a study holds out the same
    ones); test splits are never touched."""
    from testbed.selection import split_indices

    keep, val = split_indices(train_data.x0.shape[0], fraction, DATA_SEED + 3)
    return train_data.subset(keep), train_data.subset(val)


def fit(student, objective: str | Objective, data, *, seed: int, steps: int, batch_size: int, lr: float,
        grad_clip: float, progress: bool, run_dir: str | Path | None, device: str = "cpu",
        extra: dict[str, Any] | None = None, log_every: int = 50, **train_kwargs: Any) -> TrainResult:
    """Train ``student`` under ``objective`` with Adam (cosine schedule), checkpointing to ``run_dir``.

    The student must have been built under ``torch.manual_seed(seed)``; the minibatch stream uses ``seed`` too.
    It is moved back to the CPU afterwards (evaluation runs there). ``train_kwargs`` go to
    :func:`testbed.train.train` (e.g. ``stop_when``, checked every ``log_every`` steps). ``objective`` is a name,
    a spec or an :class:`~testbed.objectives.Objective` (e.g. one with probe-estimated Jacobian terms).
    """
    tcfg = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, seed=seed, grad_clip=grad_clip, progress=progress,
                       checkpoint_every=max(steps // 4, 1), log_every=log_every)
    result = train(student, make_objective(objective), data, tcfg, run_dir, device=device, extra=extra,
                   **train_kwargs)
    student.to("cpu")
    return result

"""One training loop for every student and objective.

``train(student, objective, data, config, out_dir)`` minimises ``objective(student, batch)`` with Adam over
minibatches drawn (with a seeded generator) from ``data`` — teacher trajectories
(:class:`~systems.data.TrajectoryData`) or labelled examples (:class:`~testbed.datasets.LabeledData`, for a
:class:`~testbed.students.ResidualClassifier`). It

* is deterministic on CPU for a given ``config.seed`` (the model should be built under the same seed);
* reports progress (``config.progress``: a tqdm bar on a terminal, a line every 10% in a log);
* appends one JSON object per logged step to ``out_dir/train_log.jsonl``;
* writes ``out_dir/checkpoint.pt`` atomically every ``checkpoint_every`` steps and at the end, holding the
  student's spec and weights, optimizer/scheduler state and the RNG state, so ``resume=True`` continues a
  killed run to the same final weights as an uninterrupted one;
* raises :class:`NonFiniteLossError` (naming the step and the terms) as soon as the loss is NaN/inf;
* refuses, before the first step, a run whose estimated memory exceeds the machine's
  (:func:`testbed.limits.check_training_memory`).

Checkpoints are data: :func:`read_checkpoint` loads them with ``torch.load(weights_only=True)``, so a file
holding anything but tensors and plain containers is refused without running any of its code, and an empty,
truncated or foreign file gives a :class:`~testbed.errors.CheckpointError` naming it and the remedy.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pickle
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from systems.data import TrajectoryData
from testbed.config import (
    ConfigError,
    check_choice,
    check_nonneg,
    check_nonneg_int,
    check_positive,
    check_positive_int,
)
from testbed.datasets import LabeledData
from testbed.errors import CheckpointError
from testbed.limits import check_training_memory
from testbed.objectives import Objective, make_objective
from testbed.progress import progress
from testbed.results import atomic_path
from testbed.students import Student, build_student

CHECKPOINT_NAME = "checkpoint.pt"
LOG_NAME = "train_log.jsonl"


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite."""

    def __init__(self, step: int, loss: float, terms: dict[str, float]) -> None:
        self.step, self.loss, self.terms = step, loss, terms
        super().__init__(f"loss became non-finite ({loss}) at step {step}; terms: {terms}. "
                         "Lower the learning rate, clip gradients (grad_clip) or check the data.")


@dataclasses.dataclass
class TrainConfig:
    """Optimisation settings. ``lr_schedule`` is ``"cosine"`` (to 0 over ``steps``) or ``"constant"``."""

    steps: int = 2000
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 0.0
    lr_schedule: str = "cosine"
    optimizer: str = "adam"
    grad_clip: float = 0.0
    seed: int = 0
    log_every: int = 50
    checkpoint_every: int = 500
    progress: bool = True

    def __post_init__(self) -> None:
        check_positive_int("steps", self.steps)
        check_positive_int("batch_size", self.batch_size)
        check_positive("lr", self.lr)
        check_nonneg("weight_decay", self.weight_decay)
        check_choice("lr_schedule", self.lr_schedule, ("cosine", "constant"))
        check_choice("optimizer", self.optimizer, ("adam", "sgd"))
        check_nonneg("grad_clip", self.grad_clip)
        check_nonneg_int("seed", self.seed)
        check_positive_int("log_every", self.log_every)
        check_nonneg_int("checkpoint_every", self.checkpoint_every)


@dataclasses.dataclass
class TrainResult:
    """What a run produced: the loss history ``[(step, loss, terms)]``, the final loss, wall time."""

    history: list[dict[str, Any]]
    final_loss: float
    steps: int
    wall_time: float  # seconds of training, including the time spent before a resume
    resumed_from: int = 0


def _atomic_save(obj: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def _plain(meta: dict[str, Any]) -> Any:
    """``meta`` as JSON would hold it (tuples → lists, NumPy scalars → numbers): comparable across a save/load."""
    return json.loads(json.dumps(meta, default=str))


def save_checkpoint(path: str | Path, student: Student, extra: dict[str, Any] | None = None, **state: Any) -> None:
    """Write a checkpoint holding the student (kind, spec, weights, dtype) plus ``extra`` metadata."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dtype = next(student.parameters()).dtype
    payload = {"student_kind": student.kind, "student_spec": student.spec(), "dtype": str(dtype).replace("torch.", ""),
               "student_state": student.state_dict(), "extra": extra or {}, **state}
    _atomic_save(payload, path)


_REMEDY = "delete it (or rerun with --fresh) to train from scratch"


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The checkpoint dict at ``path``, loaded as data only (``torch.load(weights_only=True)``).

    Raises :class:`~testbed.errors.CheckpointError` naming the file for one that holds other objects (nothing in
    it is executed), is empty or truncated, or is not a testbed checkpoint.
    """
    path = Path(path)
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"checkpoint {path} holds objects other than tensors and plain data; refused without "
                              f"running them ({first[:160]}); {_REMEDY}") from None
    except (IsADirectoryError, PermissionError, FileNotFoundError):
        raise
    except Exception as err:  # noqa: BLE001 - untrusted bytes: any parse failure means "not a checkpoint"
        what = "empty" if path.exists() and path.stat().st_size == 0 else "truncated or not a torch file"
        detail = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"checkpoint {path} cannot be read ({what}: {detail}); {_REMEDY}") from None
    if not isinstance(ckpt, dict) or "student_kind" not in ckpt or "student_state" not in ckpt:
        raise CheckpointError(f"checkpoint {path} is not a testbed checkpoint (no student_kind/student_state); "
                              f"{_REMEDY}")
    return ckpt


def load_student(path: str | Path, map_location: str = "cpu") -> tuple[Student, dict[str, Any]]:
    """Rebuild a student from a checkpoint; returns ``(student, checkpoint dict)``."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    ckpt = read_checkpoint(path, map_location)
    try:
        student = build_student(ckpt["student_kind"], **ckpt["student_spec"])
        student = student.to(getattr(torch, ckpt.get("dtype", "float32")))
        student.load_state_dict(ckpt["student_state"])
    except (KeyError, TypeError, AttributeError, RuntimeError, ValueError) as err:
        detail = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"checkpoint {path} does not describe a student this testbed can rebuild "
                              f"({detail}); {_REMEDY}") from None
    return student, ckpt


def _resume_key(cfg: dict[str, Any]) -> dict[str, Any]:
    """The settings a resumed run must share with its checkpoint (display options may differ)."""
    return {k: v for k, v in cfg.items() if k not in ("progress", "log_every", "checkpoint_every")}


def _lr_lambda(cfg: TrainConfig):
    if cfg.lr_schedule == "constant":
        return lambda step: 1.0
    return lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, cfg.steps) / cfg.steps))


#: the probe generator's seed is the run's seed plus this (a stream apart from the minibatch generator's)
PROBE_SEED_OFFSET = 7919


def train(student: Student, objective: Objective | str, data: TrajectoryData | LabeledData,
          config: TrainConfig | None = None, out_dir: str | Path | None = None, resume: bool = True,
          extra: dict[str, Any] | None = None, device: str | torch.device | None = None,
          stop_when: Callable[[int, Any], bool] | None = None,
          param_groups: list[dict[str, Any]] | None = None) -> TrainResult:
    """Fit ``student`` to ``data`` under ``objective``. See the module docstring for the guarantees.

    ``stop_when(step, student)`` is called every ``log_every`` steps; when it returns True training stops
    there (early stopping, e.g. "endpoint error below a target"), the checkpoint is written and
    ``TrainResult.steps`` is the step reached. ``param_groups`` (e.g. from
    :func:`testbed.parameterization.param_groups`) sets per-group learning rates; the schedule scales each.
    """
    cfg = config or TrainConfig()
    objective = make_objective(objective)
    if objective.needs_jacobians and getattr(data, "jacobians", None) is None:
        raise ConfigError("objective has a 'jacobian' term but the data carry no Jacobians")
    param = next(student.parameters())
    device = torch.device(device) if device is not None else param.device
    student.to(device)
    data = data.to(device=device, dtype=param.dtype)
    params = param_groups if param_groups is not None else student.parameters()
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg))
    gen = torch.Generator().manual_seed(cfg.seed)
    # random probes of probe-estimated objective terms: their own stream, so the minibatch order does not depend on
    # whether (or how many) probes are drawn
    probe_gen = torch.Generator().manual_seed(cfg.seed + PROBE_SEED_OFFSET)
    start = 0
    elapsed_before = 0.0
    out = Path(out_dir) if out_dir is not None else None
    history: list[dict[str, Any]] = []
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        ckpt_path = out / CHECKPOINT_NAME
        log_path = out / LOG_NAME
        if resume and ckpt_path.exists():
            ckpt = read_checkpoint(ckpt_path, map_location=device)
            same = (ckpt.get("student_spec") == student.spec()
                    and _resume_key(ckpt.get("train_config") or {}) == _resume_key(dataclasses.asdict(cfg))
                    and ckpt.get("objective") == dict(objective.weights)
                    and (ckpt.get("objective_probes") or {}) == dict(objective.probes)
                    and _plain(ckpt.get("extra") or {}) == _plain(extra or {}))
            if not same:
                warnings.warn(f"checkpoint {ckpt_path} was made with another student/config/objective/metadata "
                              "(e.g. another teacher); "
                              "training from scratch and overwriting it", stacklevel=2)
                ckpt = None
        else:
            ckpt = None
        if ckpt is not None:
            student.load_state_dict(ckpt["student_state"])
            opt.load_state_dict(ckpt["optimizer"])
            sched.load_state_dict(ckpt["scheduler"])
            gen.set_state(ckpt["generator"])
            if ckpt.get("probe_generator") is not None:
                probe_gen.set_state(ckpt["probe_generator"])
            start = int(ckpt["step"])
            elapsed_before = float(ckpt.get("elapsed", 0.0))
            history = [h for h in ckpt.get("history", []) if h["step"] <= start]
        # keep the log consistent with the checkpoint we resume from
        lines = [json.dumps(h) for h in history]
        log_path.write_text("".join(line + "\n" for line in lines))

    def checkpoint(step: int) -> None:
        if out is None:
            return
        save_checkpoint(out / CHECKPOINT_NAME, student, extra=extra, optimizer=opt.state_dict(),
                        scheduler=sched.state_dict(), generator=gen.get_state(),
                        probe_generator=probe_gen.get_state(), step=step,
                        train_config=dataclasses.asdict(cfg), objective=dict(objective.weights),
                        objective_probes=dict(objective.probes), history=history,
                        elapsed=elapsed_before + time.perf_counter() - t0)

    n = data.n
    bs = min(cfg.batch_size, n)
    x_probe = getattr(data, "x0", None) if getattr(data, "x0", None) is not None else getattr(data, "x", None)
    if isinstance(x_probe, torch.Tensor):
        check_training_memory(student, x_probe[:2], bs)
    t0 = time.perf_counter()
    loss_value = float(history[-1]["loss"]) if history else float("nan")
    bar = progress(range(start, cfg.steps), initial=start, total=cfg.steps, enabled=cfg.progress,
                   desc=f"train[{objective.name}]")
    student.train()
    for step in bar:
        idx = torch.randperm(n, generator=gen)[:bs].to(device)
        batch = data.subset(idx)
        loss, terms = objective(student, batch, generator=probe_gen)
        loss_value = float(loss.detach())
        if not math.isfinite(loss_value):
            raise NonFiniteLossError(step + 1, loss_value, terms)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(student.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        done = step + 1
        if done % cfg.log_every == 0 or done == cfg.steps:
            rec = {"step": done, "loss": loss_value, "terms": terms, "lr": sched.get_last_lr()[0],
                   "time": time.perf_counter() - t0}
            history.append(rec)
            if out is not None:
                with open(out / LOG_NAME, "a") as fh:
                    fh.write(json.dumps(rec) + "\n")
            bar.set_postfix(loss=f"{loss_value:.3e}")
            if stop_when is not None and done != cfg.steps:
                student.eval()
                stop = bool(stop_when(done, student))
                student.train()
                if stop:
                    break
        if cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done != cfg.steps:
            checkpoint(done)
    else:
        done = cfg.steps
    bar.close()
    student.eval()
    checkpoint(done)
    return TrainResult(history, loss_value, done, elapsed_before + time.perf_counter() - t0, resumed_from=start)

"""The continual learner every method shares: the task loop, the SGD step, replay plumbing, evaluation and
field-retention tracking. A method is a subclass that changes :meth:`ContinualLearner.loss_terms` (what is
minimised on one incoming batch), :meth:`ContinualLearner.training_stream` (what a task trains on) or
:meth:`ReplayLearner.snapshot` (what the buffer stores besides ``x, y, logits, task``).

Protocol (as in the DER paper): tasks arrive one after another; each is trained for ``epochs`` passes of
minibatches of ``batch_size`` with plain SGD (no momentum, no weight decay). Before the first task and after every
task the model is evaluated on the test data of *all* tasks, giving the accuracies ``b_j`` of the initial network
and two ``T × T`` accuracy matrices ``A`` (in %):

* class-IL: ``argmax`` over all ``C`` logits (the task is unknown at test time). On a domain-incremental benchmark
  this is the domain-IL accuracy: every task uses all ``C`` classes and the same head;
* task-IL:  ``argmax`` over the logits of the true task's classes only (the other logits are masked to ``−∞``);
  NaN on domain-incremental benchmarks, where a task owns every class.

Field retention: after task ``j`` is learned, the field of a fixed subset of task ``j``'s test inputs (the first
``n_retention``; never trained on) is recorded; after the last task it is recomputed and compared (``1 − relative
drift``, :mod:`~testbed.continual.sketch`, averaged over the past tasks ``j < T − 1``) in four ways:

* trajectory retention — of the stage states ``h_s(x)``;
* Jacobian retention (training probes) — of the sketches ``J_s(x) v_k`` along the ``n_probes`` directions the
  field-preservation penalty also uses (on other inputs: the buffer's);
* Jacobian retention (fresh probes) — of sketches ``J_s(x) u_k`` along ``n_fresh_probes`` directions drawn from a
  stream of their own, which no method ever trains on;
* exact Jacobian retention — of the whole Jacobians ``∂h_s/∂x`` of the first ``n_exact`` of those inputs
  (Frobenius norm over the stacked matrices; :func:`~testbed.continual.sketch.exact_jacobians`); ``n_exact = 0``
  (the default) skips it (NaN), as a large backbone must (the references of all tasks are held in memory: at most
  :data:`EXACT_JACOBIAN_MAX_FLOATS` floats).

Speed options (off by default, numbers unchanged when off): ``channels_last`` stores the network's 4-D weights and
the image batches in NHWC order; ``amp`` runs each training forward pass under :func:`torch.autocast` — bfloat16 on
the CPU, float16 with a :class:`torch.amp.GradScaler` on CUDA — while the field-preservation penalty, the stored
logits and every evaluation stay in float32.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from testbed.config import ConfigError, check_nonneg, check_nonneg_int, check_positive, check_positive_int
from testbed.continual.augment import random_crop_flip
from testbed.continual.backbones import StagedNet
from testbed.continual.buffer import BufferBatch, ReservoirBuffer
from testbed.continual.metrics import average_accuracy, backward_transfer, forgetting, forward_transfer
from testbed.continual.sketch import eval_mode, exact_jacobians, field_snapshot, make_probes, retention
from testbed.continual.tasks import Benchmark, TaskStream
from testbed.datasets import LabeledData
from testbed.seeding import DATA_SEED, derived_seed, generator

Tensor = torch.Tensor
#: padding of the random-crop augmentation (pixels on every side), as in the DER paper's CIFAR protocol
CROP_PADDING = 4
#: salt of the fresh probes' stream (:func:`~testbed.seeding.derived_seed`), apart from the training probes'
FRESH_PROBE_SALT = 2
#: the most floats the exact-Jacobian references of all tasks may take (4 · 10⁷ floats = 160 MB)
EXACT_JACOBIAN_MAX_FLOATS = 40_000_000


@dataclasses.dataclass
class LearnerConfig:
    """Hyperparameters of one learner (validated on construction).

    ``alpha`` weighs DER's logit-matching term, ``beta`` DER++'s label term on a second buffer draw, ``gamma`` the
    field-preservation term (``jvp_weight`` the share of its Jacobian-sketch part); ``minibatch_size`` is the size of
    each buffer draw. ``augment`` (image benchmarks): random crop + flip of the stream batch and of every buffer
    draw (:mod:`~testbed.continual.augment`); ``channels_last`` and ``amp``: see the module docstring.
    """

    lr: float = 0.03
    batch_size: int = 10
    minibatch_size: int = 10
    epochs: int = 1
    buffer_size: int = 0
    alpha: float = 0.2
    beta: float = 1.0
    gamma: float = 1.0
    jvp_weight: float = 1.0
    field_refresh: bool = True
    n_probes: int = 4
    n_retention: int = 256
    n_fresh_probes: int = 16
    n_exact: int = 0
    augment: bool = False
    channels_last: bool = False
    amp: bool = False
    seed: int = 0
    device: str = "cpu"
    progress: bool = False

    def __post_init__(self) -> None:
        check_positive("lr", self.lr)
        for name in ("batch_size", "minibatch_size", "epochs", "n_probes", "n_retention", "n_fresh_probes"):
            check_positive_int(name, getattr(self, name))
        check_nonneg_int("buffer_size", self.buffer_size)
        check_nonneg_int("n_exact", self.n_exact)
        check_nonneg_int("seed", self.seed)
        for name in ("alpha", "beta", "gamma", "jvp_weight"):
            check_nonneg(name, getattr(self, name))
        for name in ("field_refresh", "augment", "channels_last", "amp", "progress"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, got {getattr(self, name)!r}")


@dataclasses.dataclass
class TaskResult:
    """Everything one run of a task sequence produced."""

    acc_class_il: np.ndarray  # (T, T) in %
    acc_task_il: np.ndarray  # (T, T) in % (NaN on domain-incremental benchmarks)
    trajectory_retention: list[float]  # per past task j < T-1
    jacobian_retention: list[float]
    train_seconds: float
    final_loss: float
    val_class_il: np.ndarray | None = None   # (T,) final class-IL accuracy (%) per task on the validation split
    init_class_il: np.ndarray | None = None  # (T,) class-IL accuracy (%) of the initial network on every task
    init_task_il: np.ndarray | None = None   # (T,) task-IL accuracy (%) of the initial network
    jacobian_retention_fresh: list[float] = dataclasses.field(default_factory=list)  # per past task, fresh probes
    jacobian_retention_exact: list[float] = dataclasses.field(default_factory=list)  # per past task, full Jacobian

    def summary(self) -> dict[str, float]:
        """Average accuracies, BWT, FWT and forgetting (class-IL and task-IL) and the mean retentions."""
        nan = float("nan")

        def mean(values: list[float]) -> float:
            return float(np.mean(values)) if values else nan

        return {
            "avg_acc_class_il": average_accuracy(self.acc_class_il),
            "avg_acc_task_il": average_accuracy(self.acc_task_il),
            "bwt": backward_transfer(self.acc_class_il),
            "forgetting": forgetting(self.acc_class_il),
            "fwt": forward_transfer(self.acc_class_il, self.init_class_il) if self.init_class_il is not None else nan,
            "bwt_task_il": backward_transfer(self.acc_task_il),
            "forgetting_task_il": forgetting(self.acc_task_il),
            "fwt_task_il": forward_transfer(self.acc_task_il, self.init_task_il)
            if self.init_task_il is not None else nan,
            "trajectory_retention": mean(self.trajectory_retention),
            "jacobian_retention": mean(self.jacobian_retention),
            "jacobian_retention_fresh": mean(self.jacobian_retention_fresh),
            "jacobian_retention_exact": mean(self.jacobian_retention_exact),
            "val_avg_acc_class_il": float(np.mean(self.val_class_il)) if self.val_class_il is not None else nan,
            "train_seconds": self.train_seconds,
            "final_loss": self.final_loss,
        }


def _cuda_grad_scaler() -> torch.amp.GradScaler:
    """A CUDA loss scaler for float16 training (``torch.amp.GradScaler``; ``torch.cuda.amp`` before torch 2.3)."""
    scaler = getattr(torch.amp, "GradScaler", None)
    return scaler("cuda") if scaler is not None else torch.cuda.amp.GradScaler()


class ContinualLearner:
    """Fine-tuning: plain SGD on the current task's cross-entropy. Every other method builds on this class."""

    name = "finetune"
    uses_buffer = False

    def __init__(self, net: StagedNet, benchmark: Benchmark, cfg: LearnerConfig) -> None:
        self.cfg = cfg
        self.device = torch.device(cfg.device)
        self.task_classes = benchmark.task_classes
        self.n_classes = benchmark.n_classes
        self.input_shape = benchmark.input_shape
        self.scenario = benchmark.scenario
        self.pad_fill = benchmark.meta.get("pad_fill", 0.0)
        for flag in ("augment", "channels_last"):
            if getattr(cfg, flag) and len(self.input_shape) != 3:
                raise ConfigError(f"{flag}=true needs image inputs (C, H, W); benchmark {benchmark.name!r} has "
                                  f"inputs of shape {self.input_shape}")
        self.net = net.to(self.device)
        if cfg.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.amp_dtype = (torch.float16 if self.device.type == "cuda" else torch.bfloat16) if cfg.amp else None
        self.scaler = _cuda_grad_scaler() if cfg.amp and self.device.type == "cuda" else None
        self.opt = torch.optim.SGD(self.net.parameters(), lr=cfg.lr)
        self.gen = torch.Generator().manual_seed(cfg.seed)  # minibatch order, buffer draws, augmentation
        self.probes = make_probes(cfg.n_probes, self.input_shape, seed=derived_seed(cfg.seed, DATA_SEED, stride=1),
                                  device=self.device)
        self.fresh_probes = make_probes(cfg.n_fresh_probes, self.input_shape,
                                        seed=derived_seed(cfg.seed, FRESH_PROBE_SALT), device=self.device)
        self.buffer: ReservoirBuffer | None = None
        if self.uses_buffer:
            if cfg.buffer_size <= 0:
                raise ConfigError(f"method {self.name!r} needs buffer_size > 0, got {cfg.buffer_size}")
            self.buffer = ReservoirBuffer(cfg.buffer_size, generator(cfg.seed, 1, stride=1), self.device)
        self._last_logits: Tensor | None = None

    # ------------------------------------------------------------------------------------------ hooks
    def training_stream(self, benchmark: Benchmark, task: int) -> TaskStream:
        """The samples task ``task`` trains on (the task's own training split)."""
        return benchmark.stream([task], "train")

    def loss_terms(self, x: Tensor, y: Tensor, task: int) -> dict[str, Tensor]:
        """``{"ce": CE(f(x), y)}`` over all ``C`` classes; stores the logits for the buffer."""
        logits = self.net(self.augment(x))
        self._last_logits = logits.detach().float()
        return {"ce": F.cross_entropy(logits, y)}

    def after_step(self, x: Tensor, y: Tensor, task: int) -> None:
        """Called after each optimiser step with the (un-augmented) batch; replay methods fill the buffer."""

    def end_task(self, task: int) -> None:
        """Called once task ``task`` is learned (before it is evaluated)."""

    # ------------------------------------------------------------------------------------------ training
    def augment(self, x: Tensor) -> Tensor:
        """Random crop (padding 4, filled with the benchmark's black pixel) and horizontal flip per image when
        ``cfg.augment`` (:func:`~testbed.continual.augment.random_crop_flip`, drawn from ``self.gen``); else ``x``."""
        if not self.cfg.augment:
            return x
        return random_crop_flip(x, self.gen, CROP_PADDING, self.pad_fill)

    def to_layout(self, x: Tensor) -> Tensor:
        """``x`` on the learner's device, in NHWC order when ``cfg.channels_last`` (image batches only)."""
        x = x.to(self.device)
        return x.contiguous(memory_format=torch.channels_last) if self.cfg.channels_last and x.ndim == 4 else x

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """Mixed precision for the training forward pass when ``cfg.amp`` (else nothing)."""
        if self.amp_dtype is None:
            yield
            return
        with torch.autocast(device_type=self.device.type, dtype=self.amp_dtype):
            yield

    def observe(self, x: Tensor, y: Tensor, task: int) -> float:
        """One SGD step on the sum of :meth:`loss_terms`; returns the loss."""
        self.net.train()
        self.opt.zero_grad(set_to_none=True)
        with self.autocast():
            loss = sum(self.loss_terms(x, y, task).values())
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{self.name}: non-finite loss {loss.item()} on task {task}; lower lr")
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.opt)
            self.scaler.update()
        else:
            loss.backward()
            self.opt.step()
        self.after_step(x, y, task)
        return float(loss.detach())

    def fit_task(self, benchmark: Benchmark, task: int) -> float:
        """Train on task ``task`` for ``epochs`` shuffled passes; returns the mean loss of the last pass."""
        stream = self.training_stream(benchmark, task)
        bs = self.cfg.batch_size
        n_batches = math.ceil(stream.n / bs)
        bar = None
        if self.cfg.progress:
            from testbed.progress import progress

            bar = progress(total=self.cfg.epochs * n_batches, desc=f"{self.name} task {task + 1}")
        losses: list[float] = []
        for _ in range(self.cfg.epochs):
            losses = []
            perm = torch.randperm(stream.n, generator=self.gen).to(self.device)
            for k in range(n_batches):
                x, y = stream.batch(perm[k * bs:(k + 1) * bs])
                losses.append(self.observe(self.to_layout(x), y.to(self.device), task))
                if bar is not None:
                    bar.update()
        if bar is not None:
            bar.close()
        return float(np.mean(losses)) if losses else float("nan")

    # ------------------------------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def predict_logits(self, data: TaskStream | Tensor, chunk: int = 1000) -> Tensor:
        """Logits (eval mode, float32) of a stream's inputs or of an input tensor, ``chunk`` samples at a time."""
        if isinstance(data, TaskStream):
            parts = [data.inputs(idx) for idx in data.chunks(chunk)]
        else:
            parts = [data[i:i + chunk] for i in range(0, data.shape[0], chunk)]
        with eval_mode(self.net):
            return torch.cat([self.net(self.to_layout(p)) for p in parts])

    def task_mask(self, task: int) -> Tensor:
        """Boolean mask over the ``C`` classes that belong to ``task``."""
        mask = torch.zeros(self.n_classes, dtype=torch.bool, device=self.device)
        mask[list(self.task_classes[task])] = True
        return mask

    def accuracies(self, data: LabeledData | TaskStream, task: int) -> tuple[float, float]:
        """``(class-IL, task-IL)`` accuracy in % of ``data`` (all of task ``task``); task-IL is NaN on
        domain-incremental benchmarks."""
        stream = data if isinstance(data, TaskStream) else TaskStream.of(data, task)
        logits = self.predict_logits(stream)
        y = stream.y.to(self.device)
        cil = 100.0 * float((logits.argmax(1) == y).double().mean())
        if self.scenario != "class_il":
            return cil, float("nan")
        masked = logits.masked_fill(~self.task_mask(task), float("-inf"))
        return cil, 100.0 * float((masked.argmax(1) == y).double().mean())

    def field_reference(self, x: Tensor, probes: Tensor | None = None) -> tuple[list[Tensor], list[Tensor]]:
        """Field snapshot (eval mode, no graph) of inputs ``x`` with probe ``i mod n`` of ``probes`` (default: the
        training probes) for sample ``i``."""
        probes = self.probes if probes is None else probes
        idx = torch.arange(x.shape[0], device=self.device) % probes.shape[0]
        with eval_mode(self.net):
            return field_snapshot(self.net, self.to_layout(x), probes, idx, create_graph=False)

    def retention_reference(self, x: Tensor) -> dict[str, list[Tensor]]:
        """Everything retention compares for inputs ``x``: stage states, sketches along the training probes and
        along the fresh probes, and the exact Jacobians of the first ``n_exact`` inputs."""
        states, sketches = self.field_reference(x)
        fresh = self.field_reference(x, self.fresh_probes)[1]
        ref = {"trajectory": states, "jacobian": sketches, "jacobian_fresh": fresh}
        if self.cfg.n_exact:
            ref["jacobian_exact"] = exact_jacobians(self.net, self.to_layout(x[: self.cfg.n_exact]))
        return ref

    def check_exact_budget(self, x: Tensor, n_tasks: int) -> None:
        """Refuse an ``n_exact`` whose exact-Jacobian references would exceed :data:`EXACT_JACOBIAN_MAX_FLOATS`."""
        if not self.cfg.n_exact:
            return
        with torch.no_grad(), eval_mode(self.net):
            widths = sum(h[0].numel() for h in self.net.stages(self.to_layout(x[:1])))
        floats = n_tasks * min(self.cfg.n_exact, x.shape[0]) * widths * x[0].numel()
        if floats > EXACT_JACOBIAN_MAX_FLOATS:
            raise ConfigError(f"n_exact={self.cfg.n_exact}: the exact Jacobians of {n_tasks} tasks would take "
                              f"{floats:.2e} floats (> {EXACT_JACOBIAN_MAX_FLOATS:.0e}) on this backbone; "
                              "set n_exact=0 (or fewer samples)")

    # ------------------------------------------------------------------------------------------ the sequence
    def learn(self, benchmark: Benchmark) -> TaskResult:
        """Evaluate the initial network; train on every task in order, evaluating on every task after each; measure
        field retention on past tasks. The benchmark is moved to the learner's device once, for the whole run."""
        bench = benchmark.to(self.device)
        t_count = bench.n_tasks
        acc_c = np.zeros((t_count, t_count))
        acc_t = np.zeros((t_count, t_count))
        tests = [bench.stream([j], "test") for j in range(t_count)]
        probe_x = [s.head(self.cfg.n_retention) for s in tests]
        self.check_exact_budget(probe_x[0], t_count)
        init = np.array([self.accuracies(tests[j], j) for j in range(t_count)]).reshape(t_count, 2)
        refs: list[dict[str, list[Tensor]]] = []
        seconds, last_loss = 0.0, float("nan")
        for task in range(t_count):
            t0 = time.perf_counter()
            last_loss = self.fit_task(bench, task)
            self.end_task(task)
            seconds += time.perf_counter() - t0
            refs.append(self.retention_reference(probe_x[task]))
            for j in range(t_count):
                acc_c[task, j], acc_t[task, j] = self.accuracies(tests[j], j)
        kept: dict[str, list[float]] = {key: [] for key in refs[0]}
        for j in range(t_count - 1):
            now = self.retention_reference(probe_x[j])
            for key in kept:
                kept[key].append(retention(now[key], refs[j][key]))
        val = None
        if bench.val is not None:     # the final network on the validation split (for choosing hyperparameters)
            val = np.array([self.accuracies(bench.stream([j], "val"), j)[0] for j in range(t_count)])
        return TaskResult(acc_c, acc_t, kept["trajectory"], kept["jacobian"], seconds, last_loss, val, init[:, 0],
                          init[:, 1], kept["jacobian_fresh"], kept.get("jacobian_exact", []))


class ReplayLearner(ContinualLearner):
    """A learner with a reservoir buffer of ``(x, y, logits, task)`` filled after every step (plus whatever
    :meth:`snapshot` adds). Subclasses draw from it in :meth:`loss_terms`."""

    uses_buffer = True

    def snapshot(self, x: Tensor, slots: Tensor) -> dict[str, Tensor]:
        """Extra tensors to store for inputs ``x`` entering ``slots`` (none here)."""
        return {}

    def after_step(self, x: Tensor, y: Tensor, task: int) -> None:
        assert self.buffer is not None and self._last_logits is not None
        positions, slots = self.buffer.plan(x.shape[0])
        if slots.numel() == 0:
            return
        pos = positions.to(x.device)
        extra = self.snapshot(x[pos], slots)
        full = {"x": x[pos], "y": y[pos], "logits": self._last_logits[pos],
                "task": torch.full((pos.numel(),), task, dtype=torch.long, device=x.device), **extra}
        self.buffer.write(torch.arange(pos.numel()), slots, **full)

    def draw(self) -> BufferBatch | None:
        """An independent uniform draw of ``minibatch_size`` buffer samples (None while the buffer is empty)."""
        assert self.buffer is not None
        return None if self.buffer.is_empty() else self.buffer.sample(self.cfg.minibatch_size, self.gen)

    def replay_logits(self, batch: BufferBatch) -> Tensor:
        """The current network's logits on (augmented) buffer inputs."""
        return self.net(self.augment(batch.x))


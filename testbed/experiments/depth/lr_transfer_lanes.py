"""The batched trainer of the ``lr_transfer`` sub-study: every (seed, ``η``) of one (task, variant, ``L``) trained
at once as stacked "lanes" (:class:`Lanes`, :func:`train_lanes`), plus the task data, the networks and the library
reference path (:func:`train_reference`) the tests compare each lane with.

``cfg`` is the depth-scaling config; the settings read here are shared with the other training sub-studies:
``cfg.flow_system``, ``cfg.n_train``, ``cfg.n_test`` (flow task data), ``cfg.width``, ``cfg.steps``,
``cfg.batch_size`` and ``cfg.device``. See :mod:`testbed.experiments.depth.lr_transfer` for the protocol.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from typing import Any

import torch

Tensor = torch.Tensor

LOSS_NAMES = {"flow": "relative MSE", "digits": "cross entropy"}


# ----------------------------------------------------------------------------------------------- tasks
@dataclasses.dataclass
class TaskData:
    """Train/validation/test tensors of one task: inputs ``x`` and targets ``y`` (flow: ``φ_T(x₀)``; digits:
    labels). The validation split is carved out of the training data; the optimal ``η`` is located on it."""

    task: str
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    input_dim: int
    output_dim: int
    train_set: Any = None  # the TrajectoryData / LabeledData behind x_train, y_train (for testbed.train.train)
    x_val: Tensor | None = None
    y_val: Tensor | None = None

    def to(self, device: str | torch.device, dtype: torch.dtype) -> TaskData:
        def mv(t: Tensor) -> Tensor:
            return t.to(device=device, dtype=dtype) if t.is_floating_point() else t.to(device=device)

        return dataclasses.replace(self, x_train=mv(self.x_train), y_train=mv(self.y_train),
                                   x_test=mv(self.x_test), y_test=mv(self.y_test),
                                   x_val=None if self.x_val is None else mv(self.x_val),
                                   y_val=None if self.y_val is None else mv(self.y_val))


VAL_FRACTION = 0.2   # of the training data, held out to locate the optimal learning rate


def _carve(train_set, y: Tensor | None) -> tuple[Any, Any]:
    """``(train, validation)``: :data:`VAL_FRACTION` of ``train_set`` (stratified by ``y`` when given)."""
    from testbed.seeding import DATA_SEED
    from testbed.selection import split_indices

    n = int(train_set.x0.shape[0] if hasattr(train_set, "x0") else train_set.x.shape[0])
    keep, val = split_indices(n, VAL_FRACTION, DATA_SEED + 2, y)
    return train_set.subset(keep), train_set.subset(val)


def task_data(task: str, cfg) -> TaskData:
    """Flow: ``cfg.n_train``/``cfg.n_test`` teacher endpoints of ``cfg.flow_system`` (:func:`make_splits`, one
    observation interval). Digits: the stratified 75/25 split of :func:`~testbed.datasets.load_digits`. In both,
    :data:`VAL_FRACTION` of the training data (stratified for digits) becomes the validation split."""
    if task == "flow":
        import systems
        from testbed.experiments.common import make_splits

        system = systems.get_system(cfg.flow_system)
        full, te, _ = make_splits(system, cfg.n_train, cfg.n_test, 1)
        tr, va = _carve(full, None)
        return TaskData(task, tr.x0, tr.endpoints, te.x0, te.endpoints, system.dim, system.dim, tr, va.x0,
                        va.endpoints)
    from testbed.datasets import load_digits

    full, te = load_digits(seed=0, dtype=torch.float64)
    tr, va = _carve(full, full.y)
    return TaskData(task, tr.x, tr.y, te.x, te.y, tr.input_dim, tr.n_classes, tr, va.x, va.y)


def build_model(task: str, data: TaskData, variant: dict[str, Any], n_layers: int, width: int, seed: int):
    """The untied :class:`~testbed.students.ResidualNet` (flow) / :class:`~testbed.students.ResidualClassifier`
    (digits) of ``variant``, residual-stream and hidden width ``width``, built under ``torch.manual_seed(seed)``."""
    from testbed.students.classifier import ResidualClassifier, ResidualNet

    torch.manual_seed(seed)
    cls = ResidualNet if task == "flow" else ResidualClassifier
    return cls(data.input_dim, data.output_dim, dim=width, n_layers=n_layers, width=width,
               hidden_layers=int(variant["block_depth"]) - 1, tied=False, branch_scaling=variant["parameterization"])


def _correction(variant: dict[str, Any]) -> float | None:
    return float(variant["correction"]) if "+corr" in str(variant["variant"]) else None


def _optimizer(variant: dict[str, Any]) -> str:
    return str(variant.get("optimizer", "adam"))


def lane_losses(task: str, pred: Tensor, target: Tensor) -> Tensor:
    """Per-lane loss of predictions ``(K, B, ·)``: flow — relative MSE ``Σ_B‖ŷ−y‖²/Σ_B‖y‖²`` (as the ``endpoint``
    objective); digits — mean cross entropy (as ``classify``)."""
    if task == "flow":
        return (pred - target).pow(2).sum((1, 2)) / (target.pow(2).sum((1, 2)) + 1e-12)
    K, B, C = pred.shape
    return torch.nn.functional.cross_entropy(pred.reshape(K * B, C), target.reshape(K * B),
                                             reduction="none").reshape(K, B).mean(1)


class Lanes:
    """``K`` copies ("lanes") of one architecture trained at once, each with its own learning rate and data stream.

    The lanes of one (task, variant, ``L``) are every (seed, ``η``) pair; their weights are stacked along a leading
    axis (one tensor per role, e.g. all first-layer branch weights ``(K, L, w, n)``), so one step costs a few
    batched matmuls per layer instead of ``K`` separate small networks. The forward pass is exactly the
    :class:`~testbed.students.ResidualNet` one, ``y = W_out h_L + b_out``, ``h_0 = W_in x + b_in``,
    ``h_{l+1} = h_l + m·g_l(h_l)`` with ``g_l = W σ(h) + b`` (block depth 1) or ``W₂ σ(W₁h + b₁) + b₂`` (block
    depth 2), σ = tanh; the per-role learning-rate factors come from :func:`testbed.parameterization.param_groups`
    for the lanes' ``optimizer`` (Adam, or plain SGD: :meth:`step`).
    Lanes never mix: a lane that diverges (NaN/inf) leaves the others untouched.
    """

    def __init__(self, models: Sequence[torch.nn.Module], base_lrs: Sequence[float], parameterization: str,
                 correction: float | None, optimizer: str = "adam") -> None:
        from testbed.parameterization import OPTIMIZERS, param_groups

        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
        self.optimizer = optimizer

        m0 = models[0]
        flow = m0.flow
        if flow.activation != "tanh" or flow.tied or flow.time_conditioned or flow.hidden_layers > 1:
            raise ValueError("Lanes implement untied, autonomous tanh blocks of depth 1 or 2 only")
        self.block_depth = flow.hidden_layers + 1
        self.multiplier = float(flow.multiplier)
        self.n_layers = flow.n_layers
        self.params: dict[str, Tensor] = {}
        self.factors: dict[str, float] = {}
        rate = {id(p): g["lr"] for g in param_groups(m0, 1.0, parameterization, optimizer, correction)
                for p in g["params"]}
        layers = flow.blocks[0].linear_names()  # the branch's weight matrices in order (FieldMLP)
        roles = {"embed.weight": [m0.embed.weight], "embed.bias": [m0.embed.bias],
                 "head.weight": [m0.head.weight], "head.bias": [m0.head.bias]}
        for i, layer in enumerate(layers):
            for kind in ("weight", "bias"):
                roles[f"block{i}.{kind}"] = [b.get_parameter(f"{layer}.{kind}") for b in flow.blocks]
        for name, ps in roles.items():
            f = {rate[id(p)] for p in ps}
            if len(f) != 1:
                raise ValueError(f"parameters of role {name} have different learning-rate factors {f}")
            self.factors[name] = f.pop()
        for name in roles:
            per_model = []
            for m in models:
                mf = m.flow
                if name.startswith("block"):
                    i, kind = name[5:].split(".")
                    per_model.append(torch.stack([b.get_parameter(f"{layers[int(i)]}.{kind}").detach()
                                                  for b in mf.blocks]))
                else:
                    per_model.append(m.get_parameter(name).detach())
            self.params[name] = torch.stack(per_model).clone().requires_grad_(True)
        self.base_lrs = torch.as_tensor(list(base_lrs), dtype=torch.float64)
        self.exp_avg = {k: torch.zeros_like(p) for k, p in self.params.items()}
        self.exp_avg_sq = {k: torch.zeros_like(p) for k, p in self.params.items()}
        self.n_steps = 0

    @property
    def k(self) -> int:
        return int(self.base_lrs.numel())

    def forward(self, x: Tensor) -> Tensor:
        """Outputs ``(K, B, d_out)`` for inputs ``(K, B, d_in)`` (or ``(B, d_in)``, shared by every lane)."""
        P = self.params
        if x.dim() == 2:
            x = x.unsqueeze(0).expand(self.k, *x.shape)
        h = torch.baddbmm(P["embed.bias"].unsqueeze(1), x, P["embed.weight"].transpose(1, 2))
        if self.block_depth == 1:
            for w, b in zip(P["block0.weight"].unbind(1), P["block0.bias"].unbind(1), strict=True):
                h = h + self.multiplier * torch.baddbmm(b.unsqueeze(1), torch.tanh(h), w.transpose(1, 2))
        else:
            for w1, b1, w2, b2 in zip(P["block0.weight"].unbind(1), P["block0.bias"].unbind(1),
                                      P["block1.weight"].unbind(1), P["block1.bias"].unbind(1), strict=True):
                a = torch.tanh(torch.baddbmm(b1.unsqueeze(1), h, w1.transpose(1, 2)))
                h = h + self.multiplier * torch.baddbmm(b2.unsqueeze(1), a, w2.transpose(1, 2))
        return torch.baddbmm(P["head.bias"].unsqueeze(1), h, P["head.weight"].transpose(1, 2))

    @torch.no_grad()
    def adam_step(self, scale: float, alive: Tensor, betas: tuple[float, float] = (0.9, 0.999),
                  eps: float = 1e-8) -> None:
        """One Adam step (PyTorch's update, no weight decay) with lane rate ``η_k·factor_role·scale``; lanes with
        ``alive = False`` are not updated."""
        self.n_steps += 1
        b1, b2 = betas
        bc1, bc2 = 1 - b1 ** self.n_steps, 1 - b2 ** self.n_steps
        for name, p in self.params.items():
            g, m, v = p.grad, self.exp_avg[name], self.exp_avg_sq[name]
            m.lerp_(g, 1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            denom = v.sqrt().div_(math.sqrt(bc2)).add_(eps)
            shape = (self.k,) + (1,) * (p.dim() - 1)
            rate = self.base_lrs.to(p) * alive.to(p) * (self.factors[name] * scale / bc1)
            p.addcdiv_(m * rate.reshape(shape), denom, value=-1.0)  # a dead lane's rate is 0: it stays put
            p.grad = None

    @torch.no_grad()
    def sgd_step(self, scale: float, alive: Tensor) -> None:
        """One plain SGD step (PyTorch's ``SGD`` without momentum or weight decay: ``p ← p − rate·∇p``) with lane
        rate ``η_k·factor_role·scale``; lanes with ``alive = False`` are not updated."""
        self.n_steps += 1
        for name, p in self.params.items():
            shape = (self.k,) + (1,) * (p.dim() - 1)
            rate = self.base_lrs.to(p) * alive.to(p) * (self.factors[name] * scale)
            p.sub_(p.grad * rate.reshape(shape))
            p.grad = None

    def step(self, scale: float, alive: Tensor) -> None:
        """One step of this lane set's optimizer (:meth:`adam_step` or :meth:`sgd_step`)."""
        if self.optimizer == "sgd":
            self.sgd_step(scale, alive)
        else:
            self.adam_step(scale, alive)

    @torch.no_grad()
    def load_lane(self, model: torch.nn.Module, lane: int) -> torch.nn.Module:
        """Copy lane ``lane``'s weights into ``model`` (same architecture); returns ``model``."""
        layers = model.flow.blocks[0].linear_names()  # the branch's weight matrices in order (FieldMLP)
        for name, p in self.params.items():
            if name.startswith("block"):
                i, kind = name[5:].split(".")
                for l, b in enumerate(model.flow.blocks):
                    b.get_parameter(f"{layers[int(i)]}.{kind}").copy_(p[lane, l])
            else:
                model.get_parameter(name).copy_(p[lane])
        return model


def cosine(step: int, steps: int) -> float:
    """Cosine schedule factor ``½(1 + cos(π·step/steps))`` (as :class:`~testbed.train.TrainConfig` ``"cosine"``)."""
    return 0.5 * (1.0 + math.cos(math.pi * min(step, steps) / steps))


def train_lanes(task: str, data: TaskData, variant: dict[str, Any], n_layers: int, lrs: Sequence[float],
                seeds: Sequence[int], cfg, dtype: torch.dtype = torch.float32) -> list[dict[str, Any]]:
    """Train every (seed, ``η``) of one (task, variant, ``L``) at once (:class:`Lanes`); one result row each.

    Lane (seed ``s``, ``η``) reproduces ``testbed.train.train`` with ``TrainConfig(steps, batch_size, lr=η,
    seed=s, lr_schedule="cosine", grad_clip=0)`` and :func:`~testbed.parameterization.param_groups` on the network
    of :func:`build_model` (same initial weights, same minibatch stream ``randperm(n, Generator(s))[:B]``).
    A lane whose minibatch loss turns non-finite stops there (``diverged_step``, 1-based, as
    :class:`~testbed.train.NonFiniteLossError` reports it) and gets loss ``inf``. ``wall_s`` is the group's
    training time divided by its number of lanes.
    """
    device = torch.device(cfg.device)
    d = data.to(device, dtype)
    lanes_spec = [(int(s), float(lr)) for s in seeds for lr in lrs]
    models = {s: build_model(task, data, variant, n_layers, cfg.width, s).to(dtype) for s in dict.fromkeys(seeds)}
    lanes = Lanes([models[s] for s, _ in lanes_spec], [lr for _, lr in lanes_spec], variant["parameterization"],
                  _correction(variant), _optimizer(variant))
    for k, p in lanes.params.items():
        lanes.params[k] = p.detach().to(device).requires_grad_(True)
    lanes.exp_avg = {k: v.to(device) for k, v in lanes.exp_avg.items()}
    lanes.exp_avg_sq = {k: v.to(device) for k, v in lanes.exp_avg_sq.items()}
    n = d.x_train.shape[0]
    bs = min(cfg.batch_size, n)
    gens = {s: torch.Generator().manual_seed(s) for s in models}
    seed_of_lane = [s for s, _ in lanes_spec]
    alive = torch.ones(lanes.k, dtype=torch.bool, device=device)
    diverged_step = [0] * lanes.k
    t0 = time.perf_counter()
    for step in range(cfg.steps):
        idx = {s: torch.randperm(n, generator=g)[:bs] for s, g in gens.items()}
        lane_idx = torch.stack([idx[s] for s in seed_of_lane]).to(device)
        loss = lane_losses(task, lanes.forward(d.x_train[lane_idx]), d.y_train[lane_idx])
        bad = ~torch.isfinite(loss.detach()) & alive
        if bool(bad.any()):
            for k in torch.nonzero(bad).flatten().tolist():
                diverged_step[k] = step + 1
            alive &= ~bad
        if not bool(alive.any()):
            break
        torch.where(alive, loss, torch.zeros_like(loss)).sum().backward()
        lanes.step(cosine(step, cfg.steps), alive)
    wall = (time.perf_counter() - t0) / lanes.k
    with torch.no_grad():
        tr = lane_losses(task, lanes.forward(d.x_train), d.y_train.unsqueeze(0).expand(lanes.k, *d.y_train.shape))
        te_out = lanes.forward(d.x_test)
        te = lane_losses(task, te_out, d.y_test.unsqueeze(0).expand(lanes.k, *d.y_test.shape))
        va = (lane_losses(task, lanes.forward(d.x_val), d.y_val.unsqueeze(0).expand(lanes.k, *d.y_val.shape))
              if d.x_val is not None else torch.full((lanes.k,), float("nan"), dtype=torch.float64))
        acc = ((te_out.argmax(-1) == d.y_test).double().mean(1) if task == "digits"
               else torch.full((lanes.k,), float("nan"), dtype=torch.float64))
    rows = []
    for k, (s, lr) in enumerate(lanes_spec):
        train_loss, val_loss, test_loss, a = float(tr[k]), float(va[k]), float(te[k]), float(acc[k])
        div = diverged_step[k] > 0 or not (math.isfinite(train_loss) and math.isfinite(test_loss))
        if div:
            train_loss = val_loss = test_loss = float("inf")
            a = float("nan") if task == "flow" else 0.0
        rows.append({"task": task, **variant, "n_layers": int(n_layers), "lr": lr, "seed": s, "diverged": bool(div),
                     "diverged_step": diverged_step[k], "train_loss": train_loss, "val_loss": val_loss,
                     "test_loss": test_loss,
                     "test_accuracy": a, "loss_name": LOSS_NAMES[task], "steps": cfg.steps, "wall_s": wall})
    return rows


def train_reference(task: str, data: TaskData, variant: dict[str, Any], n_layers: int, lr: float, seed: int, cfg,
                    dtype: torch.dtype = torch.float64) -> tuple[torch.nn.Module, float]:
    """The same run through the library loop :func:`testbed.train.train` (for checking :func:`train_lanes`):
    returns the trained model and its test loss (``inf`` on :class:`~testbed.train.NonFiniteLossError`)."""
    from testbed.parameterization import param_groups
    from testbed.train import NonFiniteLossError, TrainConfig, train

    model = build_model(task, data, variant, n_layers, cfg.width, seed).to(dtype)
    groups = param_groups(model, lr, variant["parameterization"], _optimizer(variant), _correction(variant))
    tcfg = TrainConfig(steps=cfg.steps, batch_size=cfg.batch_size, lr=lr, seed=seed, grad_clip=0.0,
                       lr_schedule="cosine", optimizer=_optimizer(variant), progress=False, log_every=cfg.steps,
                       checkpoint_every=0)
    try:
        train(model, "endpoint" if task == "flow" else "classify", data.train_set, tcfg, param_groups=groups)
    except NonFiniteLossError:
        return model, float("inf")
    d = data.to("cpu", dtype)
    with torch.no_grad():
        loss = float(lane_losses(task, model.cpu()(d.x_test).unsqueeze(0), d.y_test.unsqueeze(0))[0])
    return model, loss if math.isfinite(loss) else float("inf")


__all__ = ["LOSS_NAMES", "Lanes", "TaskData", "build_model", "cosine", "lane_losses", "task_data", "train_lanes",
           "train_reference"]

"""Learning-rate transfer across depth: SP vs Depth-μP, block depth 1 vs 2, with and without the correction.

Claims under test (Tensor Programs VI, arXiv 2310.02244; arXiv 2512.21075): with the Depth-μP rule (branch
multiplier ``a/√L``, Adam learning rate ``η/√L`` on branch weights) and one-matrix blocks ``W·σ(h)`` the
optimal base learning rate ``η*`` does not move with depth ``L``; under SP (multiplier 1, one ``η``) it drifts;
with two-matrix blocks ``W₂σ(W₁h)`` Depth-μP loses transfer, and multiplying the first internal layer's learning
rate by ``L^γ`` (``cfg.correction_exponent``) restores it.

Protocol. For every task (``flow``: regression of the teacher flow map ``x₀ ↦ φ_T(x₀)`` of ``cfg.flow_system``
with a :class:`~testbed.students.ResidualNet` ``d → n → d``; ``digits``: a
:class:`~testbed.students.ResidualClassifier` ``64 → n → 10`` on scikit-learn's 8×8 digits, full stratified
train/test split), every variant (each parameterization × block depth, plus Depth-μP + block depth 2 + the
first-layer correction), depth ``L``, base learning rate ``η`` and seed: build the untied network (residual
stream and hidden width ``cfg.width``, tanh) under ``torch.manual_seed(seed)`` (so every ``η`` starts from the
same weights), train ``cfg.steps`` Adam steps (learning rates per parameter group from
:func:`testbed.parameterization.param_groups`) of
batch ``cfg.batch_size`` with a **cosine** schedule (``η_t = η·½(1 + cos(πt/T))``; the peak rate is ``η`` at the
start, where instabilities show, and the annealed end makes the final loss a property of ``η`` rather than of
the last minibatch's noise) and **no gradient clipping** (so a too-large ``η`` is not rescued). Then evaluate,
in float32, the final loss on the whole training set and on the test set — flow: relative MSE
``Σ‖ŷ − φ_T(x₀)‖²/Σ‖φ_T(x₀)‖²``; digits: cross entropy (and accuracy). A run whose loss turns NaN/inf
(:class:`~testbed.train.NonFiniteLossError`, or a non-finite evaluation) is recorded with loss ``inf`` and
``diverged = True``; it can never be an optimum.

Implementation: all (seed, ``η``) runs of one (task, variant, ``L``) are trained together as stacked "lanes"
(:class:`Lanes`, :func:`train_lanes`) — one batched matmul per layer for all of them, several times faster than
separate runs on a CPU and far better use of a GPU. Each lane reproduces :func:`testbed.train.train` with
the same settings to rounding error (:func:`train_reference` is that library path; the tests compare them).

Transfer metrics, per (task, variant), from the seed-aggregated test loss
``ℓ(L, η) = exp(mean_seeds ln loss)`` (``inf`` if any seed diverged):

* optimal learning rate per ``L``: the grid argmin ``η_i``, refined by the vertex of the parabola through
  ``(log₂η_j, ln ℓ_j)``, ``j = i−1, i, i+1`` (:func:`refine_optimum`; an argmin on the grid edge, or next to a
  diverged neighbour, stays on the grid and is flagged ``at_edge``);
* spread ``max_L log₂η*(L) − min_L log₂η*(L)`` in octaves (:func:`octave_spread`);
* drift exponent ``α``, the least-squares slope of ``log₂η*`` against ``log₂L`` (``η* ∝ L^α``;
  :func:`drift_exponent`): ``α ≈ 0`` is transfer;
* transfer regret ``ℓ(L_max, η̂(L_min)) / min_η ℓ(L_max, η)``: the cost of using the grid optimum of the smallest
  depth at the largest depth without retuning (1 = free, ``inf`` = it diverges).

Outputs in ``out/``: ``results.csv`` (one row per run, :data:`RESULT_COLUMNS`, written last), ``optima.csv``
(one row per task × variant × ``L``, :data:`OPTIMA_COLUMNS`), ``transfer.csv`` (one row per task × variant,
:data:`TRANSFER_COLUMNS`), figures ``lr_curves.{png,pdf}`` (test loss vs ``η``, one curve per ``L``, a panel per
task × variant) and ``optimal_lr.{png,pdf}`` (``η*`` vs ``L``, log–log, one line per variant).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from testbed.results import read_csv, write_csv

Tensor = torch.Tensor

RESULT_COLUMNS = ["task", "variant", "parameterization", "block_depth", "correction", "n_layers", "lr", "seed",
                  "diverged", "diverged_step", "train_loss", "test_loss", "test_accuracy", "loss_name", "steps",
                  "wall_s"]
OPTIMA_COLUMNS = ["task", "variant", "parameterization", "block_depth", "correction", "n_layers", "grid_lr",
                  "grid_loss", "optimal_lr", "optimal_loss", "log2_optimal_lr", "at_edge", "n_diverged"]
TRANSFER_COLUMNS = ["task", "variant", "parameterization", "block_depth", "correction", "depths",
                    "spread_octaves", "drift_exponent", "n_at_edge", "lr_tuned_at_min_depth", "min_depth",
                    "max_depth", "loss_transferred", "loss_best_at_max_depth", "transfer_regret"]
TRANSFER_OCTAVES = 1.0  # a spread of η* across depth at most this many octaves counts as "transfers"
DRIFT_TOL = 0.15  # |α| at most this counts as "no drift" (over L = 4…64 that is ≤ 0.6 octave of systematic drift)
LOSS_NAMES = {"flow": "relative MSE", "digits": "cross entropy"}
CLIP_DECADES = 1e4  # lr_curves panels show losses up to this factor above the panel's best (the rest is clipped)


# ----------------------------------------------------------------------------------------------- pure helpers
def parabola_vertex(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """Vertex ``(x*, y*)`` of the parabola through three points ``(x_k, y_k)`` (any spacing).

    With divided differences ``d₁ = (y₁−y₀)/(x₁−x₀)``, ``d₂ = (y₂−y₁)/(x₂−x₁)`` and curvature
    ``c = (d₂−d₁)/(x₂−x₀)`` the parabola is ``y₀ + d₁(x−x₀) + c(x−x₀)(x−x₁)``, so
    ``x* = (x₀+x₁)/2 − d₁/(2c)``. If ``c ≤ 0`` (no interior minimum) the middle point is returned.
    """
    x0, x1, x2 = (float(v) for v in x)
    y0, y1, y2 = (float(v) for v in y)
    d1 = (y1 - y0) / (x1 - x0)
    d2 = (y2 - y1) / (x2 - x1)
    c = (d2 - d1) / (x2 - x0)
    if not c > 0:
        return x1, y1
    xs = 0.5 * (x0 + x1) - d1 / (2 * c)
    return xs, y0 + d1 * (xs - x0) + c * (xs - x0) * (xs - x1)


def refine_optimum(lrs: Sequence[float], losses: Sequence[float]) -> dict[str, Any]:
    """Optimal learning rate from a loss-vs-lr table (non-finite losses = diverged, never optimal).

    ``i = argmin_j loss_j`` over finite losses; if ``i`` has finite neighbours on both sides, the optimum is the
    vertex of the parabola through ``(log₂η_j, ln loss_j)``, ``j = i−1..i+1`` (it lies between the neighbours
    because ``loss_i`` is the smallest); otherwise the grid point is kept and ``at_edge`` is True. Returns
    ``grid_lr``, ``grid_loss``, ``optimal_lr``, ``optimal_loss`` (the vertex value ``exp(y*)``), ``at_edge``
    (all NaN/True when every run diverged).
    """
    order = np.argsort(np.asarray(lrs, dtype=float))
    eta = np.asarray(lrs, dtype=float)[order]
    loss = np.asarray(losses, dtype=float)[order]
    finite = np.isfinite(loss) & (loss > 0)
    if not finite.any():
        nan = float("nan")
        return {"grid_lr": nan, "grid_loss": float("inf"), "optimal_lr": nan, "optimal_loss": float("inf"),
                "at_edge": True}
    i = int(np.argmin(np.where(finite, loss, np.inf)))
    out = {"grid_lr": float(eta[i]), "grid_loss": float(loss[i]), "optimal_lr": float(eta[i]),
           "optimal_loss": float(loss[i]), "at_edge": True}
    if 0 < i < len(eta) - 1 and finite[i - 1] and finite[i + 1]:
        xs, ys = parabola_vertex(np.log2(eta[i - 1:i + 2]), np.log(loss[i - 1:i + 2]))
        out.update(optimal_lr=float(2.0 ** xs), optimal_loss=float(math.exp(ys)), at_edge=False)
    return out


def octave_spread(optimal_lrs: Sequence[float]) -> float:
    """``max log₂η* − min log₂η*`` over depths (octaves); NaN entries (all runs diverged) are skipped."""
    v = np.log2(np.asarray(optimal_lrs, dtype=float))
    v = v[np.isfinite(v)]
    return float(v.max() - v.min()) if v.size else float("nan")


def drift_exponent(depths: Sequence[float], optimal_lrs: Sequence[float]) -> float:
    """Least-squares slope ``α`` of ``log₂η*`` against ``log₂L`` (``η* ∝ L^α``); NaN with fewer than 2 depths.

    ``α = Σ(u−ū)(v−v̄)/Σ(u−ū)²`` with ``u = log₂L``, ``v = log₂η*``.
    """
    u = np.log2(np.asarray(depths, dtype=float))
    v = np.log2(np.asarray(optimal_lrs, dtype=float))
    ok = np.isfinite(u) & np.isfinite(v)
    u, v = u[ok], v[ok]
    if u.size < 2 or np.ptp(u) == 0:
        return float("nan")
    du = u - u.mean()
    return float((du * (v - v.mean())).sum() / (du * du).sum())


def aggregate_loss(losses: Sequence[float]) -> float:
    """Seed aggregate ``exp(mean ln loss)``; ``inf`` if any seed diverged (non-finite loss)."""
    a = np.asarray(losses, dtype=float)
    if a.size == 0 or not np.isfinite(a).all():
        return float("inf")
    return float(np.exp(np.log(np.maximum(a, 1e-300)).mean()))


# ----------------------------------------------------------------------------------------------- variants
def variants(cfg) -> list[dict[str, Any]]:
    """The (parameterization, block depth, correction) combinations: every parameterization × block depth,
    plus Depth-μP + block depth 2 + ``L^γ`` first-layer correction when both are selected."""
    out = [{"variant": p, "parameterization": p, "block_depth": b, "correction": 0.0}
           for p in cfg.parameterizations for b in cfg.block_depths]
    if "depth_mup" in cfg.parameterizations and 2 in cfg.block_depths:
        out.append({"variant": "depth_mup+corr", "parameterization": "depth_mup", "block_depth": 2,
                    "correction": float(cfg.correction_exponent)})
    return out


def variant_label(variant: str, block_depth: int, correction: float = 0.0) -> str:
    """Human-readable name, e.g. ``Depth-μP, b=2, +L^0.5 corr.``"""
    names = {"standard": "SP", "depth_mup": "Depth-μP", "ode": "ODE (T/L)", "depth_mup+corr": "Depth-μP"}
    label = f"{names.get(variant, variant)}, b={int(block_depth)}"
    if variant.endswith("+corr"):
        label += f", +L^{float(correction):g} corr."
    return label


def _key(r: dict[str, Any]) -> tuple[str, str, int]:
    return str(r["task"]), str(r["variant"]), int(r["block_depth"])


# ----------------------------------------------------------------------------------------------- tasks
@dataclasses.dataclass
class TaskData:
    """Train/test tensors of one task: inputs ``x`` and targets ``y`` (flow: ``φ_T(x₀)``; digits: labels)."""

    task: str
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    input_dim: int
    output_dim: int
    train_set: Any = None  # the TrajectoryData / LabeledData behind x_train, y_train (for testbed.train.train)

    def to(self, device: str | torch.device, dtype: torch.dtype) -> TaskData:
        def mv(t: Tensor) -> Tensor:
            return t.to(device=device, dtype=dtype) if t.is_floating_point() else t.to(device=device)

        return dataclasses.replace(self, x_train=mv(self.x_train), y_train=mv(self.y_train),
                                   x_test=mv(self.x_test), y_test=mv(self.y_test))


def task_data(task: str, cfg) -> TaskData:
    """Flow: ``cfg.n_train``/``cfg.n_test`` teacher endpoints of ``cfg.flow_system`` (:func:`make_splits`, one
    observation interval). Digits: the stratified 75/25 split of :func:`~testbed.datasets.load_digits`."""
    if task == "flow":
        import systems
        from testbed.experiments.common import make_splits

        system = systems.get_system(cfg.flow_system)
        tr, te, _ = make_splits(system, cfg.n_train, cfg.n_test, 1)
        return TaskData(task, tr.x0, tr.endpoints, te.x0, te.endpoints, system.dim, system.dim, tr)
    from testbed.datasets import load_digits

    tr, te = load_digits(seed=0, dtype=torch.float64)
    return TaskData(task, tr.x, tr.y, te.x, te.y, tr.input_dim, tr.n_classes, tr)


def build_model(task: str, data: TaskData, variant: dict[str, Any], n_layers: int, width: int, seed: int):
    """The untied :class:`~testbed.students.ResidualNet` (flow) / :class:`~testbed.students.ResidualClassifier`
    (digits) of ``variant``, residual-stream and hidden width ``width``, built under ``torch.manual_seed(seed)``."""
    from testbed.students.classifier import ResidualClassifier, ResidualNet

    torch.manual_seed(seed)
    cls = ResidualNet if task == "flow" else ResidualClassifier
    return cls(data.input_dim, data.output_dim, dim=width, n_layers=n_layers, width=width,
               hidden_layers=int(variant["block_depth"]) - 1, tied=False, branch_scaling=variant["parameterization"])


def _correction(variant: dict[str, Any]) -> float | None:
    return float(variant["correction"]) if str(variant["variant"]).endswith("+corr") else None


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
    depth 2), σ = tanh; the per-role learning-rate factors come from :func:`testbed.parameterization.param_groups`.
    Lanes never mix: a lane that diverges (NaN/inf) leaves the others untouched.
    """

    def __init__(self, models: Sequence[torch.nn.Module], base_lrs: Sequence[float], parameterization: str,
                 correction: float | None) -> None:
        from testbed.parameterization import param_groups

        m0 = models[0]
        flow = m0.flow
        if flow.activation != "tanh" or flow.tied or flow.time_conditioned or flow.hidden_layers > 1:
            raise ValueError("Lanes implement untied, autonomous tanh blocks of depth 1 or 2 only")
        self.block_depth = flow.hidden_layers + 1
        self.multiplier = float(flow.multiplier)
        self.n_layers = flow.n_layers
        self.params: dict[str, Tensor] = {}
        self.factors: dict[str, float] = {}
        rate = {id(p): g["lr"] for g in param_groups(m0, 1.0, parameterization, "adam", correction)
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
                  _correction(variant))
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
        lanes.adam_step(cosine(step, cfg.steps), alive)
    wall = (time.perf_counter() - t0) / lanes.k
    with torch.no_grad():
        tr = lane_losses(task, lanes.forward(d.x_train), d.y_train.unsqueeze(0).expand(lanes.k, *d.y_train.shape))
        te_out = lanes.forward(d.x_test)
        te = lane_losses(task, te_out, d.y_test.unsqueeze(0).expand(lanes.k, *d.y_test.shape))
        acc = ((te_out.argmax(-1) == d.y_test).double().mean(1) if task == "digits"
               else torch.full((lanes.k,), float("nan"), dtype=torch.float64))
    rows = []
    for k, (s, lr) in enumerate(lanes_spec):
        train_loss, test_loss, a = float(tr[k]), float(te[k]), float(acc[k])
        div = diverged_step[k] > 0 or not (math.isfinite(train_loss) and math.isfinite(test_loss))
        if div:
            train_loss = test_loss = float("inf")
            a = float("nan") if task == "flow" else 0.0
        rows.append({"task": task, **variant, "n_layers": int(n_layers), "lr": lr, "seed": s, "diverged": bool(div),
                     "diverged_step": diverged_step[k], "train_loss": train_loss, "test_loss": test_loss,
                     "test_accuracy": a, "loss_name": LOSS_NAMES[task], "steps": cfg.steps, "wall_s": wall})
    return rows


def train_reference(task: str, data: TaskData, variant: dict[str, Any], n_layers: int, lr: float, seed: int, cfg,
                    dtype: torch.dtype = torch.float64) -> tuple[torch.nn.Module, float]:
    """The same run through the library loop :func:`testbed.train.train` (for checking :func:`train_lanes`):
    returns the trained model and its test loss (``inf`` on :class:`~testbed.train.NonFiniteLossError`)."""
    from testbed.parameterization import param_groups
    from testbed.train import NonFiniteLossError, TrainConfig, train

    model = build_model(task, data, variant, n_layers, cfg.width, seed).to(dtype)
    groups = param_groups(model, lr, variant["parameterization"], "adam", _correction(variant))
    tcfg = TrainConfig(steps=cfg.steps, batch_size=cfg.batch_size, lr=lr, seed=seed, grad_clip=0.0,
                       lr_schedule="cosine", optimizer="adam", progress=False, log_every=cfg.steps, checkpoint_every=0)
    try:
        train(model, "endpoint" if task == "flow" else "classify", data.train_set, tcfg, param_groups=groups)
    except NonFiniteLossError:
        return model, float("inf")
    d = data.to("cpu", dtype)
    with torch.no_grad():
        loss = float(lane_losses(task, model.cpu()(d.x_test).unsqueeze(0), d.y_test.unsqueeze(0))[0])
    return model, loss if math.isfinite(loss) else float("inf")
# ----------------------------------------------------------------------------------------------- metrics
def optima(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (task, variant, block depth, ``L``): grid and parabola-refined optimum of the seed-aggregated
    test loss (:func:`aggregate_loss`, :func:`refine_optimum`)."""
    out: list[dict[str, Any]] = []
    for key in sorted({_key(r) for r in rows}):
        sel = [r for r in rows if _key(r) == key]
        for L in sorted({int(r["n_layers"]) for r in sel}):
            at_L = [r for r in sel if int(r["n_layers"]) == L]
            lrs = sorted({float(r["lr"]) for r in at_L})
            losses = [aggregate_loss([float(r["test_loss"]) for r in at_L if float(r["lr"]) == lr]) for lr in lrs]
            opt = refine_optimum(lrs, losses)
            first = at_L[0]
            out.append({"task": key[0], "variant": key[1], "parameterization": first["parameterization"],
                        "block_depth": key[2], "correction": float(first["correction"]), "n_layers": L, **opt,
                        "log2_optimal_lr": math.log2(opt["optimal_lr"]) if opt["optimal_lr"] > 0 else float("nan"),
                        "n_diverged": sum(str(r["diverged"]) == "True" for r in at_L)})
    return out


def transfer(rows: list[dict[str, Any]], opt_rows: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """One row per (task, variant, block depth): octave spread and drift exponent of ``η*(L)``, and the transfer
    regret ``ℓ(L_max, η̂(L_min)) / min_η ℓ(L_max, η)`` (grid optimum ``η̂`` at the smallest depth)."""
    opt_rows = optima(rows) if opt_rows is None else opt_rows
    out: list[dict[str, Any]] = []
    for key in sorted({_key(r) for r in opt_rows}):
        sel = sorted((r for r in opt_rows if _key(r) == key), key=lambda r: int(r["n_layers"]))
        depths = [int(r["n_layers"]) for r in sel]
        etas = [float(r["optimal_lr"]) for r in sel]
        lo, hi = depths[0], depths[-1]
        eta0 = float(sel[0]["grid_lr"])
        at_hi = [r for r in rows if _key(r) == key and int(r["n_layers"]) == hi]
        transferred = aggregate_loss([float(r["test_loss"]) for r in at_hi if float(r["lr"]) == eta0]) \
            if math.isfinite(eta0) else float("inf")
        best = float(sel[-1]["grid_loss"])
        regret = transferred / best if math.isfinite(best) and best > 0 else float("nan")
        out.append({"task": key[0], "variant": key[1], "parameterization": sel[0]["parameterization"],
                    "block_depth": key[2], "correction": float(sel[0]["correction"]),
                    "depths": " ".join(str(d) for d in depths), "spread_octaves": octave_spread(etas),
                    "drift_exponent": drift_exponent(depths, etas),
                    "n_at_edge": sum(str(r["at_edge"]) == "True" for r in sel), "lr_tuned_at_min_depth": eta0,
                    "min_depth": lo, "max_depth": hi, "loss_transferred": transferred,
                    "loss_best_at_max_depth": best, "transfer_regret": regret})
    return out


# ----------------------------------------------------------------------------------------------- run / plot
def run(cfg, out: Path) -> list[dict[str, Any]]:
    """Train every (task, variant, ``L``, ``η``, seed); write ``optima.csv``, ``transfer.csv``, the figures and
    finally ``results.csv``. Returns the per-run rows."""
    from testbed.progress import progress

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.csv").unlink(missing_ok=True)
    rows: list[dict[str, Any]] = []
    vs = variants(cfg)
    n_runs = len(cfg.tasks) * len(vs) * len(cfg.lr_depths) * len(cfg.lr_grid) * len(cfg.seeds)
    bar = progress(total=n_runs, enabled=cfg.progress, desc="lr_transfer")
    for task in cfg.tasks:
        data = task_data(task, cfg)
        for v in vs:
            for L in cfg.lr_depths:
                rows += train_lanes(task, data, v, int(L), cfg.lr_grid, cfg.seeds, cfg)
                bar.update(len(cfg.lr_grid) * len(cfg.seeds))
    bar.close()
    opt_rows = optima(rows)
    write_csv(out / "optima.csv", opt_rows, OPTIMA_COLUMNS)
    write_csv(out / "transfer.csv", transfer(rows, opt_rows), TRANSFER_COLUMNS)
    write_csv(out / "results.csv", rows, RESULT_COLUMNS)
    return rows


def _normalise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """CSV rows back to typed values (``inf`` strings, booleans)."""
    fixed = []
    for r in rows:
        r = dict(r)
        for k in ("lr", "train_loss", "test_loss", "test_accuracy", "correction"):
            if k in r and r[k] != "":
                r[k] = float(r[k])
        r["diverged"] = str(r.get("diverged")) == "True"
        fixed.append(r)
    return fixed


def plot(out: Path) -> list[Path]:
    """Redraw ``lr_curves`` and ``optimal_lr`` from ``out/results.csv``."""
    out = Path(out)
    return _draw(_normalise(read_csv(out / "results.csv")), out)


def _draw(rows: list[dict[str, Any]], out: Path) -> list[Path]:
    import matplotlib.pyplot as plt
    from matplotlib.transforms import blended_transform_factory

    from testbed.plotting import color_for, save_figure, use_style

    use_style()
    opt_rows = optima(rows)
    tr = {_key(r): r for r in transfer(rows, opt_rows)}
    tasks = list(dict.fromkeys(str(r["task"]) for r in rows))
    keys = list(dict.fromkeys((str(r["variant"]), int(r["block_depth"])) for r in rows))
    depths = sorted({int(r["n_layers"]) for r in rows})
    colors = {L: color_for(f"L={L}", i) for i, L in enumerate(depths)}
    lr_lo, lr_hi = min(float(r["lr"]) for r in rows), max(float(r["lr"]) for r in rows)
    paths: list[Path] = []

    # ---- loss vs lr, one panel per task × variant
    nr, nc = len(tasks), len(keys)
    fig, axes = plt.subplots(nr, nc, figsize=(2.1 * nc + 0.4, 2.0 * nr + 0.3), squeeze=False, sharex=True)
    for i, task in enumerate(tasks):
        for j, (v, b) in enumerate(keys):
            ax = axes[i][j]
            sel = [r for r in rows if str(r["task"]) == task and str(r["variant"]) == v and int(r["block_depth"]) == b]
            if not sel:
                ax.set_visible(False)
                continue
            corr = float(sel[0]["correction"])
            top = blended_transform_factory(ax.transData, ax.transAxes)
            for L in depths:
                at_L = [r for r in sel if int(r["n_layers"]) == L]
                lrs = sorted({float(r["lr"]) for r in at_L})
                agg = np.array([aggregate_loss([float(r["test_loss"]) for r in at_L if float(r["lr"]) == lr])
                                for lr in lrs])
                ok = np.isfinite(agg)
                ax.plot(np.array(lrs)[ok], agg[ok], marker="o", ms=2.5, lw=1, color=colors[L], label=f"L={L}")
                bad = [lr for lr, a in zip(lrs, agg, strict=True) if not np.isfinite(a)]
                if bad:
                    ax.scatter(bad, [0.97] * len(bad), marker="x", s=14, color=colors[L], transform=top,
                               clip_on=False)
                o = next((r for r in opt_rows if _key(r) == (task, v, b) and int(r["n_layers"]) == L), None)
                if o is not None and math.isfinite(o["optimal_loss"]):
                    ax.plot([o["optimal_lr"]], [o["optimal_loss"]], marker="*", ms=7, color=colors[L],
                            mec="k", mew=0.4, ls="none")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlim(lr_lo / 1.5, lr_hi * 1.5)  # every grid lr, diverged ones (× at the top) included
            finite = [float(r["test_loss"]) for r in sel if math.isfinite(float(r["test_loss"]))]
            if finite and max(finite) > CLIP_DECADES * min(finite):  # a blown-up (finite) loss would flatten the rest
                ax.set_ylim(top=CLIP_DECADES * min(finite))
            t = tr.get((task, v, b))
            sub = "" if t is None else f"\nspread {t['spread_octaves']:.1f} oct, α={t['drift_exponent']:+.2f}"
            ax.set_title(f"{task}: {variant_label(v, b, corr)}{sub}")
            if i == nr - 1:
                ax.set_xlabel("base learning rate η")
            if j == 0:
                ax.set_ylabel(f"test {LOSS_NAMES[task]}")
    axes[0][0].legend(frameon=False, fontsize=6, handlelength=1.2)
    fig.text(0.995, 0.001, "★ parabola-refined optimum, × diverged", ha="right", va="bottom", fontsize=6)
    fig.tight_layout()
    paths += save_figure(fig, out / "lr_curves")

    # ---- optimal lr vs L, one panel per task
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.6 * len(tasks), 3.4), squeeze=False)
    grid = sorted({float(r["lr"]) for r in rows})
    for i, task in enumerate(tasks):
        ax = axes[0][i]
        for j, (v, b) in enumerate(keys):
            sel = sorted((r for r in opt_rows if _key(r) == (task, v, b)), key=lambda r: int(r["n_layers"]))
            if not sel:
                continue
            c = color_for(f"{v}-{b}", j)
            ls = "-" if b == 1 else "--"
            Ls = [int(r["n_layers"]) for r in sel]
            eta = [float(r["optimal_lr"]) for r in sel]
            t = tr[(task, v, b)]
            ax.plot(Ls, eta, color=c, ls=ls, lw=1.2,
                    label=f"{variant_label(v, b, float(sel[0]['correction']))} (α={t['drift_exponent']:+.2f})")
            for L, e, r in zip(Ls, eta, sel, strict=True):
                edge = str(r["at_edge"]) == "True"
                ax.plot([L], [e], marker="o", ms=4, color=c, mfc="white" if edge else c, ls="none")
        for g in (grid[0], grid[-1]):
            ax.axhline(g, color="0.7", lw=0.6, ls=":", zorder=0)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log", base=2)
        ax.set_xticks(depths, [str(L) for L in depths])
        ax.set_xlabel("depth L")
        ax.set_ylabel("optimal base learning rate η*")
        ax.set_title(f"{task}: η*(L)\n(hollow: optimum on the grid edge; dotted: grid range)")
        ax.legend(frameon=False, fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)
    fig.tight_layout()
    paths += save_figure(fig, out / "optimal_lr")
    return paths


# ----------------------------------------------------------------------------------------------- summary
def _drifts(x: float) -> bool:
    return abs(x) > DRIFT_TOL


def _transfers(x: float) -> bool:
    return abs(x) <= DRIFT_TOL


# claim text, spread test, drift-exponent claim text, drift test (per variant; block depth appended for Depth-μP)
_CLAIMS = {
    "standard": ("SP: η* drifts with depth (spread > {t:g} octave)", lambda s: s > TRANSFER_OCTAVES,
                 "SP with Adam: η* shrinks with depth (α < −{a:g})", lambda a: a < -DRIFT_TOL),
    "depth_mup1": ("Depth-μP, block depth 1: η* transfers across depth (spread ≤ {t:g} octave)",
                   lambda s: s <= TRANSFER_OCTAVES, "Depth-μP, block depth 1: no drift (|α| ≤ {a:g})", _transfers),
    "depth_mup2": ("Depth-μP, block depth 2: transfer breaks (spread > {t:g} octave)", lambda s: s > TRANSFER_OCTAVES,
                   "Depth-μP, block depth 2: η* drifts (|α| > {a:g})", _drifts),
    "depth_mup+corr": ("Depth-μP, block depth 2 + first-layer correction: transfer restored (spread ≤ {t:g} octave)",
                       lambda s: s <= TRANSFER_OCTAVES,
                       "Depth-μP, block depth 2 + first-layer correction: no drift (|α| ≤ {a:g})", _transfers),
}
_NO_CLAIM = ("no claim (reported only)", None, "no claim (reported only)", None)


def _verdict(ok: bool | None) -> str:
    return "not tested" if ok is None else ("consistent" if ok else "NOT seen")


def _check(test, x: float) -> bool | None:
    return None if test is None or not math.isfinite(x) else bool(test(x))


def summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per task × variant: spread (octaves), drift exponent ``α``, transfer regret; plus paired comparisons (SP vs
    Depth-μP at b=1, b=2 vs b=1 and uncorrected vs corrected b=2 under Depth-μP) of the spread and of ``|α|``.
    Each ``claim`` states the paper's claim, the criterion (spread ≤ :data:`TRANSFER_OCTAVES` octave, ``|α| ≤``
    :data:`DRIFT_TOL`) and whether the measurement is consistent with it; optima on the grid edge are noted
    (their spread and drift are then bounds)."""
    rows = _normalise(rows)
    tr = transfer(rows)
    out: list[dict[str, Any]] = []
    by: dict[tuple[str, str, int], dict[str, Any]] = {}
    for t in tr:
        task, v, b = t["task"], t["variant"], int(t["block_depth"])
        by[(task, v, b)] = t
        name = f"{task} {variant_label(v, b, t['correction'])}"
        text, test, dtext, dtest = _CLAIMS.get(v if v in ("standard", "depth_mup+corr") else f"{v}{b}", _NO_CLAIM)
        s, alpha = t["spread_octaves"], t["drift_exponent"]
        edge = f"; {t['n_at_edge']} optimum(s) on the grid edge" if t["n_at_edge"] else ""
        out.append({"key": f"{name}: spread of log2 η* across L [octaves]", "value": s,
                    "claim": f"{text.format(t=TRANSFER_OCTAVES)} — {_verdict(_check(test, s))}{edge}"})
        out.append({"key": f"{name}: drift exponent α (η* ∝ L^α)", "value": alpha,
                    "claim": f"{dtext.format(a=DRIFT_TOL)} — {_verdict(_check(dtest, alpha))}{edge}"})
        out.append({"key": f"{name}: transfer regret (loss at L={t['max_depth']} with η tuned at L={t['min_depth']} "
                           "/ best)", "value": t["transfer_regret"],
                    "claim": "1 = transferring η costs nothing; inf = the transferred η diverges"})
    for task in dict.fromkeys(t["task"] for t in tr):
        pairs = [(("standard", 1), ("depth_mup", 1), "SP − Depth-μP (b=1)", "SP drifts more than Depth-μP"),
                 (("depth_mup", 2), ("depth_mup", 1), "Depth-μP b=2 − b=1",
                  "block depth 2 drifts more than block depth 1 under Depth-μP"),
                 (("depth_mup", 2), ("depth_mup+corr", 2), "Depth-μP b=2 uncorrected − corrected",
                  "the first-layer correction reduces the drift of block depth 2")]
        for x, y, what, claim in pairs:
            tx, ty = by.get((task, *x)), by.get((task, *y))
            if tx is None or ty is None:
                continue
            d = tx["spread_octaves"] - ty["spread_octaves"]
            out.append({"key": f"{task}: {what}: spread [octaves]", "value": d,
                        "claim": f"{claim} (> 0) — {_verdict(_check(lambda z: z > 0, d))}"})
            d = abs(tx["drift_exponent"]) - abs(ty["drift_exponent"])
            out.append({"key": f"{task}: {what}: |drift exponent α|", "value": d,
                        "claim": f"{claim} (> 0) — {_verdict(_check(lambda z: z > 0, d))}"})
    return out


__all__ = ["OPTIMA_COLUMNS", "RESULT_COLUMNS", "TRANSFER_COLUMNS", "aggregate_loss", "drift_exponent",
           "Lanes", "octave_spread", "optima", "parabola_vertex", "plot", "refine_optimum", "run", "summary",
           "task_data", "train_lanes", "train_reference", "transfer", "variants"]

"""Multi-path tasks: an outcome (class label or endpoint) reached along paths of which only some are observed.

Every task builds, from a seeded generator, the same four things:

* ``train``: inputs, outcomes and the *true* intermediate states at the observation layers ``l_1..l_K`` for every
  training input, plus the mask ``observed`` of the inputs whose path the learner may see;
* ``student(seed)``: a fresh student whose hidden states live in the coordinates of the observations;
* ``evals``: named evaluation sets — ``validation`` (after :func:`hold_out_validation`: inputs carved out of
  ``train``, for choosing hyperparameters), ``seen`` (fresh inputs from the training distribution), an *unseen-path*
  set (``unseen_region``: initial states from a region held out of training; ``unseen_route``: route
  combinations never trained on), ``shifted`` and ``noisy`` (OOD inputs, outcomes from the same ground truth);
* :meth:`MultipathTask.path_data` turns ``train`` into the :class:`~testbed.path_data.PathData` of the
  ``aligned`` (supervise the observed states only) or ``over`` (a target at every depth for every input,
  made up by interpolation where nothing was observed) objective.

Tasks:

* :func:`transport_task` — a 2-D data set (moons / spirals / circles) carried by a transport teacher flow
  (:mod:`systems.flows.transport`); labels are the teacher's ``1[⟨w, φ_T(x0)⟩ > b]``;
* :func:`route_task` — regression of the endpoint reached by a *route*: a composition of three elementary
  closed-form flows (rotation, two sine shears; they do not commute) over ``S`` time segments;
* :func:`digits_task` — scikit-learn digits; the observed intermediate structure is a trained teacher
  network's hidden states at chosen depths; the student shares the teacher's (frozen) input embedding.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

import systems
from testbed.datasets import LabeledData, load_digits
from testbed.path_data import PathData, aligned_paths, dense_paths, observation_layers
from testbed.seeding import DATA_SEED
from testbed.selection import split_indices
from testbed.students.augmented import AugmentedResidualNet
from testbed.students.classifier import ResidualClassifier
from testbed.train import TrainConfig
from testbed.train import train as train_loop

Tensor = torch.Tensor
VARIANTS = ("aligned", "over")


@dataclasses.dataclass
class EvalSet:
    """Inputs ``x`` with labels ``y`` (classification) or endpoints (regression), and optionally the true
    states at the observation layers ``states`` ``(N, K, d)`` and the true law along them (for field metrics)."""

    x: Tensor
    y: Tensor | None = None
    endpoints: Tensor | None = None
    states: Tensor | None = None


@dataclasses.dataclass
class MultipathTask:
    """A multi-path task (see the module docstring)."""

    name: str
    kind: str                      # "classification" | "regression"
    n_layers: int
    obs_layers: Tensor             # (K,)
    x: Tensor                      # training inputs
    x0_state: Tensor               # (N, d) the observed coordinates of h_0 (anchor of the dense targets)
    states: Tensor                 # (N, K, d) true states at obs_layers
    observed: Tensor               # (N,) bool
    evals: dict[str, EvalSet]
    make_student: Callable[[int], nn.Module]
    y: Tensor | None = None
    n_classes: int = 0
    endpoints: Tensor | None = None
    law: Callable[[Tensor | float, Tensor], Tensor] | None = None   # the true law f*(t, state), if known
    teacher_logits: Tensor | None = None   # (N, n_classes) a teacher network's logits on the training inputs
    info: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def n_train(self) -> int:
        return self.x.shape[0]

    def path_data(self, variant: str) -> PathData:
        """Training data for the ``aligned`` or ``over``-constrained field objective (identical outcomes)."""
        if variant == "aligned":
            layers, targets, mask = aligned_paths(self.states, self.obs_layers, self.observed)
        elif variant == "over":
            layers, targets, mask = dense_paths(self.x0_state, self.states, self.obs_layers, self.observed,
                                                self.n_layers)
        else:
            raise ValueError(f"unknown field-objective variant {variant!r}; use one of {', '.join(VARIANTS)}")
        return PathData(self.x, layers, targets, mask, y=self.y, n_classes=self.n_classes,
                        endpoints=self.endpoints, teacher_logits=self.teacher_logits,
                        meta={"task": self.name, "variant": variant})


def hold_out_validation(task: MultipathTask, fraction: float, seed: int = DATA_SEED) -> MultipathTask:
    """``task`` with a validation split carved out of its training inputs (:func:`~testbed.selection.split_indices`).

    The held-out inputs leave every training field (inputs, outcomes, states, observed mask, teacher logits) and
    become ``evals["validation"]`` (inputs, outcomes, true states). Nothing outside the training set is touched,
    so a hyperparameter chosen on ``validation`` has seen no test input."""
    if "validation" in task.evals:
        raise ValueError(f"task {task.name!r} already has a validation split")
    keep, val = split_indices(task.n_train, fraction, seed + 1, task.y if task.kind == "classification" else None)

    def part(v: Tensor | None, idx: Tensor) -> Tensor | None:
        return None if v is None else v[idx]

    ev = EvalSet(task.x[val], y=part(task.y, val), endpoints=part(task.endpoints, val), states=task.states[val])
    info = {**task.info, "n_train": int(keep.numel()), "n_validation": int(val.numel()),
            "n_observed": int(task.observed[keep].sum())}
    return dataclasses.replace(
        task, x=task.x[keep], x0_state=task.x0_state[keep], states=task.states[keep], observed=task.observed[keep],
        y=part(task.y, keep), endpoints=part(task.endpoints, keep), teacher_logits=part(task.teacher_logits, keep),
        evals={"validation": ev, **task.evals}, info=info)


def _observed_mask(n: int, fraction: float, gen: torch.Generator) -> Tensor:
    k = int(round(fraction * n))
    mask = torch.zeros(n, dtype=torch.bool)
    mask[torch.randperm(n, generator=gen)[:k]] = True
    return mask


# ------------------------------------------------------------------ transport classification
def transport_task(system: str, *, n_train: int, n_test: int, n_layers: int, n_obs: int, observed_fraction: float,
                   wedge_deg: tuple[float, float], noise_std: float, width: int, hidden_layers: int,
                   seed: int = DATA_SEED, dtype: torch.dtype = torch.float32) -> MultipathTask:
    """Classify a 2-D data set from the endpoint of the flow that carries it (see the module docstring).

    Initial states in the polar wedge ``wedge_deg`` about the data set's centre are held out of training
    (``unseen_region``); ``shifted`` is the data set moved by the system's ``ood_shift``; ``noisy`` adds
    ``N(0, noise_std²)`` to fresh in-distribution inputs. Labels everywhere are the teacher's.
    """
    s = systems.get_system(system)
    if not isinstance(s, systems.flows.TransportFlow):
        raise ValueError(f"{system!r} is not a transport flow; use one of moons_shear, spiral_twist, circles_lift")
    gen = torch.Generator().manual_seed(seed)
    lo, hi = (math.radians(a) for a in wedge_deg)

    def in_wedge(x0: Tensor) -> Tensor:
        a = s.polar_angle(x0)
        return (a >= lo) & (a < hi)

    def draw(n: int, wedge: bool) -> Tensor:
        out, got = [], 0
        while got < n:
            x0 = s.sample_id(4 * n, gen)
            x0 = x0[in_wedge(x0) == wedge]
            out.append(x0)
            got += x0.shape[0]
        return torch.cat(out)[:n]

    T = float(s.horizon)
    obs = observation_layers(n_layers, n_obs)
    times = torch.cat([torch.zeros(1, dtype=torch.float64), obs.double() * T / n_layers])

    def states_of(x0: Tensor) -> Tensor:
        return s.flow(x0, times)[1:].transpose(0, 1).contiguous()                  # (N, K, 3)

    def eval_set(x0: Tensor) -> EvalSet:
        return EvalSet(x0[:, :2].to(dtype), s.classify(x0), states=states_of(x0).to(dtype))

    x0 = draw(n_train, wedge=False)
    seen = draw(n_test, wedge=False)
    noisy = seen + noise_std * torch.randn(seen.shape, generator=gen, dtype=seen.dtype) * torch.tensor([1., 1., 0.],
                                                                                                       dtype=seen.dtype)
    evals = {"seen": eval_set(seen), "unseen_region": eval_set(draw(n_test, wedge=True)),
             "shifted": eval_set(s.sample_ood(n_test, gen)), "noisy": eval_set(noisy)}

    def make_student(student_seed: int) -> nn.Module:
        torch.manual_seed(student_seed)
        return AugmentedResidualNet(2, 2, aug_dim=1, n_layers=n_layers, horizon=T, width=width,
                                    hidden_layers=hidden_layers, tied=True, head="linear").to(dtype)

    return MultipathTask(
        name=f"transport:{system}", kind="classification", n_layers=n_layers, obs_layers=obs,
        x=x0[:, :2].to(dtype), x0_state=x0.to(dtype), states=states_of(x0).to(dtype),
        observed=_observed_mask(n_train, observed_fraction, gen), evals=evals, make_student=make_student,
        y=s.classify(x0), n_classes=2, law=s.vector_field,
        info={"system": system, "label_agreement": float((s.classify(s.sample_data(2000, gen)[0])
                                                           == torch.arange(2000) % 2).double().mean())})


# ------------------------------------------------------------------ multi-route regression
ROUTE_FLOWS = ("rotate", "shear_x", "shear_y")


def elementary_flow(kind: str, x: Tensor, tau: float, strength: float) -> Tensor:
    """Closed-form flow of one elementary law for time ``tau``:

    ``rotate``  ``x' = ω J x``            → rotation by ``ω τ``;
    ``shear_x`` ``x1' = a sin(x2)``        → ``x1 + a τ sin x2``;
    ``shear_y`` ``x2' = a sin(x1)``        → ``x2 + a τ sin x1``  (``ω = a = strength``).
    """
    x1, x2 = x[..., 0], x[..., 1]
    if kind == "rotate":
        c, s = math.cos(strength * tau), math.sin(strength * tau)
        return torch.stack([c * x1 - s * x2, s * x1 + c * x2], -1)
    if kind == "shear_x":
        return torch.stack([x1 + strength * tau * torch.sin(x2), x2], -1)
    if kind == "shear_y":
        return torch.stack([x1, x2 + strength * tau * torch.sin(x1)], -1)
    raise ValueError(f"unknown elementary flow {kind!r}; use one of {', '.join(ROUTE_FLOWS)}")


def elementary_law(kind: str, x: Tensor, strength: float) -> Tensor:
    """The vector field of :func:`elementary_flow`."""
    x1, x2 = x[..., 0], x[..., 1]
    if kind == "rotate":
        return strength * torch.stack([-x2, x1], -1)
    if kind == "shear_x":
        return torch.stack([strength * torch.sin(x2), torch.zeros_like(x1)], -1)
    return torch.stack([torch.zeros_like(x1), strength * torch.sin(x1)], -1)


def route_code(route: tuple[int, ...]) -> Tensor:
    """One-hot code of a route: segment ``s`` active flow ``route[s]`` → ``(S·3,)``."""
    code = torch.zeros(len(route), len(ROUTE_FLOWS))
    code[torch.arange(len(route)), torch.tensor(route)] = 1.0
    return code.reshape(-1)


def route_states(x0: Tensor, routes: list[tuple[int, ...]], horizon: float, strength: float) -> Tensor:
    """States at the segment boundaries ``t = T/S, 2T/S, …, T``: ``(N, S, 2)`` for per-input ``routes``."""
    S = len(routes[0])
    tau = horizon / S
    out = torch.empty(x0.shape[0], S, 2, dtype=x0.dtype)
    by_route: dict[tuple[int, ...], list[int]] = {}
    for i, r in enumerate(routes):
        by_route.setdefault(r, []).append(i)
    for r, idx in by_route.items():
        x = x0[idx]
        for s in range(S):
            x = elementary_flow(ROUTE_FLOWS[r[s]], x, tau, strength)
            out[idx, s] = x
    return out


def route_task(*, n_segments: int, n_seen_routes: int, n_train: int, n_test: int, n_layers: int,
               observed_fraction: float, noise_std: float, width: int, hidden_layers: int, strength: float = 1.5,
               horizon: float = 1.0, seed: int = DATA_SEED, dtype: torch.dtype = torch.float32) -> MultipathTask:
    """Regress the endpoint of ``x0 ∈ [−1.5, 1.5]²`` carried along a route (``S`` segments, each one of the
    three elementary flows for ``T/S``). ``n_seen_routes`` of the ``3^S`` routes are trained on; the others
    are ``unseen_route``. The observed states are those at the segment boundaries. The student carries the
    route code as a constant context and its branch reads the code of the active segment
    (:class:`~testbed.students.augmented.AugmentedResidualNet` with ``context_blocks = S``): one learned field
    ``f_θ(x, c)`` for the three laws, so unseen combinations are in reach exactly when each law is learned —
    and an endpoint loss leaves room for per-segment errors that cancel on the trained combinations only."""
    if n_layers % n_segments:
        raise ValueError(f"n_layers={n_layers} must be a multiple of n_segments={n_segments}")
    all_routes = list(itertools.product(range(len(ROUTE_FLOWS)), repeat=n_segments))
    if not 0 < n_seen_routes < len(all_routes):
        raise ValueError(f"n_seen_routes must lie in [1, {len(all_routes) - 1}], got {n_seen_routes}")
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(all_routes), generator=gen).tolist()
    seen_routes = [all_routes[i] for i in perm[:n_seen_routes]]
    unseen_routes = [all_routes[i] for i in perm[n_seen_routes:]]
    obs = torch.arange(1, n_segments, dtype=torch.long) * (n_layers // n_segments)   # interior boundaries

    def draw(n: int, routes: list[tuple[int, ...]], low: float = -1.5, high: float = 1.5,
             noise: float = 0.0) -> tuple[Tensor, Tensor, Tensor]:
        x0 = low + (high - low) * torch.rand(n, 2, generator=gen, dtype=torch.float64)
        if noise:
            x0 = x0 + noise * torch.randn(n, 2, generator=gen, dtype=torch.float64)
        pick = torch.randint(len(routes), (n,), generator=gen).tolist()
        rs = [routes[i] for i in pick]
        st = route_states(x0, rs, horizon, strength)
        x = torch.cat([x0, torch.stack([route_code(r) for r in rs]).double()], 1)
        return x.to(dtype), x0.to(dtype), st.to(dtype)

    def eval_set(x: Tensor, st: Tensor) -> EvalSet:
        return EvalSet(x, endpoints=st[:, -1], states=st[:, :-1])

    x, x0, st = draw(n_train, seen_routes)
    evals = {
        "seen": eval_set(*draw(n_test, seen_routes)[::2]),
        "unseen_route": eval_set(*draw(n_test, unseen_routes)[::2]),
        "shifted": eval_set(*draw(n_test, seen_routes, 1.0, 2.5)[::2]),
        "noisy": eval_set(*draw(n_test, seen_routes, noise=noise_std)[::2]),
    }
    ctx = n_segments * len(ROUTE_FLOWS)

    def make_student(student_seed: int) -> nn.Module:
        torch.manual_seed(student_seed)
        return AugmentedResidualNet(2, 2, context_dim=ctx, context_blocks=n_segments, n_layers=n_layers,
                                    horizon=horizon, width=width, hidden_layers=hidden_layers, tied=True,
                                    head="observe").to(dtype)

    return MultipathTask(
        name="routes", kind="regression", n_layers=n_layers, obs_layers=obs, x=x, x0_state=x0,
        states=st[:, :-1].contiguous(), observed=_observed_mask(n_train, observed_fraction, gen), evals=evals,
        make_student=make_student, endpoints=st[:, -1].contiguous(),
        info={"n_routes": len(all_routes), "seen_routes": [list(r) for r in seen_routes]})


# ------------------------------------------------------------------ digits with a teacher's representations
def shift_images(x: Tensor, dx: int, dy: int, side: int = 8) -> Tensor:
    """Translate flattened ``side×side`` images by ``(dx, dy)`` pixels, filling with zeros."""
    img = x.reshape(-1, side, side)
    out = torch.zeros_like(img)
    ys = slice(max(dy, 0), side + min(dy, 0))
    xs = slice(max(dx, 0), side + min(dx, 0))
    ys_src = slice(max(-dy, 0), side + min(-dy, 0))
    xs_src = slice(max(-dx, 0), side + min(-dx, 0))
    out[:, ys, xs] = img[:, ys_src, xs_src]
    return out.reshape(x.shape)


def digits_task(*, n_labeled: int, n_layers: int, n_obs: int, observed_fraction: float, noise_std: float,
                width: int, hidden_layers: int, dim: int, teacher_steps: int, seed: int = DATA_SEED,
                dtype: torch.dtype = torch.float32) -> MultipathTask:
    """Few-label digits with a teacher's intermediate representations as the observed paths.

    A teacher :class:`ResidualClassifier` is trained (cross-entropy, Adam, ``teacher_steps``) on the full
    training split; the student (same architecture, the teacher's input embedding copied and frozen so that
    both propagate in the same coordinates) sees ``n_labeled`` labelled training digits and, for a fraction of
    them, the teacher's hidden states at ``n_obs`` depths. ``shifted`` moves test images one pixel to the
    right (a logistic regression drops from 96% to 41% under it); ``noisy`` adds ``N(0, noise_std²)``
    (pixels in [0, 1]).
    """
    train, test = load_digits(seed=0, dtype=dtype)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    teacher = ResidualClassifier(64, 10, dim=dim, n_layers=n_layers, width=width, hidden_layers=hidden_layers)
    teacher = teacher.to(dtype)
    train_loop(teacher, "classify", train,
               TrainConfig(steps=teacher_steps, batch_size=128, lr=3e-3, seed=seed, grad_clip=1.0, progress=False))
    teacher.eval()
    obs = observation_layers(n_layers, n_obs)

    @torch.no_grad()
    def states_of(x: Tensor) -> Tensor:
        return teacher.flow.trajectory(teacher.initial_state(x))[obs].transpose(0, 1).contiguous()

    # a class-balanced labelled subset
    per_class = max(n_labeled // 10, 1)
    idx = torch.cat([torch.nonzero(train.y == c).flatten()[torch.randperm(int((train.y == c).sum()),
                                                                          generator=gen)[:per_class]]
                     for c in range(10)])
    sub: LabeledData = train.subset(idx)
    noisy = (test.x + noise_std * torch.randn(test.x.shape, generator=gen, dtype=test.x.dtype)).clamp(0, 1)
    shifted = shift_images(test.x, 1, 0)
    evals = {name: EvalSet(x, test.y, states=states_of(x)) for name, x in
             (("seen", test.x), ("shifted", shifted), ("noisy", noisy))}

    def make_student(student_seed: int) -> nn.Module:
        torch.manual_seed(student_seed)
        st = ResidualClassifier(64, 10, dim=dim, n_layers=n_layers, width=width, hidden_layers=hidden_layers)
        st = st.to(dtype)
        st.embed.load_state_dict(teacher.embed.state_dict())
        st.embed.requires_grad_(False)
        return st

    with torch.no_grad():
        x0_state = teacher.initial_state(sub.x)
        teacher_acc = teacher.accuracy(test.x, test.y)
        teacher_logits = teacher(sub.x)
    return MultipathTask(
        name="digits", kind="classification", n_layers=n_layers, obs_layers=obs, x=sub.x, x0_state=x0_state,
        states=states_of(sub.x), observed=_observed_mask(sub.n, observed_fraction, gen), evals=evals,
        make_student=make_student, y=sub.y, n_classes=10, teacher_logits=teacher_logits,
        info={"teacher_accuracy": teacher_acc, "teacher_training_examples": train.n})

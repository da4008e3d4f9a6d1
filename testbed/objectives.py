"""Training objectives: what part of the propagation field a loss constrains.

Every term is a *relative* mean-squared error, ``Σ‖pred − target‖² / Σ‖target‖²`` over the batch (and the
times / matrix entries it covers), so terms are scale-free and can be mixed across systems:

* ``endpoint``      ``h_L(x_0)`` vs ``φ_T(x_0)`` — the boundary of the field only;
* ``trajectory``    ``h_{l_k}(x_0)`` vs ``φ_{t_k}(x_0)`` at every observation time ``t_k`` (``k ≥ 1``);
* ``vector_field``  ``f_θ(t_k, x_k)`` vs ``f*(t_k, x_k)`` at the teacher's states along the data;
* ``jacobian``      ``∂f_θ/∂x`` vs ``∂f*/∂x`` at the same states (torch.func ``vmap(jacrev)``; or, with
                    ``probes={"jacobian": k}``, the unbiased estimate ``(1/k) Σ_j ‖u_jᵀ(∂f_θ/∂x − ∂f*/∂x)‖²`` over
                    Rademacher probes ``u_j``, one vector–Jacobian product each instead of ``d``:
                    :mod:`testbed.field.probes`; the denominator ``Σ‖∂f*/∂x‖_F²`` stays exact).

Regularisers of the student's own field (no teacher needed; scale-free, averaged over the batch):

* ``kinetic``        ``T·Σ_{i,l} ‖h_{l+1,i} − h_{l,i}‖²/Δt / Σ_i ‖h_{0,i}‖²`` — the discrete kinetic energy
                     ``∫‖ḣ‖² dt`` of the propagation field (RNODE, Finlay et al. 2020) relative to the input
                     scale (the denominator is not differentiated);
* ``jacobian_norm``  ``T²·mean_{i,l} ‖∂f_θ/∂x(t_l, h_{l,i})‖_F² / d`` — the squared Frobenius norm of the
                     field's Jacobian along the student's own trajectory (exact, via torch.func; or the
                     ``k``-probe estimate with ``probes={"jacobian_norm": k}``).

Classification (a :class:`~testbed.datasets.LabeledData` batch and a
:class:`~testbed.students.ResidualClassifier`):

* ``cross_entropy``  mean cross-entropy of the logits; ``kinetic`` and ``jacobian_norm`` then act on the
                     classifier's hidden propagation field ``h_0 = embed(x)``.

Partially observed paths (a :class:`~testbed.path_data.PathData` batch):

* ``observed_path``  ``Σ m_nk ‖obs(h_{l_k}(x_n)) − s_nk‖² / Σ m_nk ‖s_nk‖²`` over the observed (input, depth)
                     pairs only (mask ``m``); ``obs`` is the model's ``observe`` read-out (identity if none).

* ``distill``        ``Σ_n m_n KL(softmax(z*_n) ‖ softmax(z_θ(x_n))) / Σ_n m_n`` — logit distillation (temperature
                     1) from a teacher's logits ``z*`` on the observed inputs only (``m_n = 1`` where any state
                     of ``x_n`` is observed): the same inputs and the same teacher as ``observed_path``, but
                     only the teacher's *output*, not its interior.

An :class:`Objective` is a weighted sum of named terms, built from a preset name (``"endpoint"``,
``"field"``, …) or a spec like ``"endpoint=1,trajectory=1,vector_field=0.5"``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from testbed.config import ConfigError
from testbed.field.jacobians import vector_field_jacobian
from testbed.field.probes import frobenius_sq_estimate
from testbed.students.base import Student

Tensor = torch.Tensor


def relative_mse(pred: Tensor, target: Tensor, eps: float = 1e-12) -> Tensor:
    """``Σ‖pred − target‖² / Σ‖target‖²`` (sum over every element)."""
    return (pred - target).pow(2).sum() / (target.pow(2).sum() + eps)


class _Cache:
    """Per-batch cache so several terms share one forward pass.

    ``student`` is the propagation field (for a classifier: its ``flow``), ``x0`` the initial states,
    ``full_trajectory`` all ``L+1`` layer states, ``trajectory`` the states at the data's observation times.
    """

    def __init__(self, model, batch, probes: Mapping[str, int] | None = None,
                 generator: torch.Generator | None = None) -> None:
        self.model, self.batch = model, batch
        self.probes: Mapping[str, int] = probes or {}
        self.generator = generator   # draws the random probes (None: torch's global generator)
        self.student: Student = getattr(model, "flow", model)
        self._full: Tensor | None = None
        self._x0: Tensor | None = None
        self._obs: Tensor | None = None

    @property
    def embedded(self) -> bool:
        """Whether the model maps inputs into a hidden stream (``initial_state``) and reads out with ``head``."""
        return hasattr(self.model, "initial_state")

    @property
    def x0(self) -> Tensor:
        if self._x0 is None:
            inputs = self.batch.x if hasattr(self.batch, "x") else self.batch.x0
            self._x0 = self.model.initial_state(inputs) if self.embedded else inputs
        return self._x0

    @property
    def full_trajectory(self) -> Tensor:
        if self._full is None:
            self._full = self.student.trajectory(self.x0)
        return self._full

    @property
    def trajectory(self) -> Tensor:
        if self._full is not None:
            return self._full[self.student.time_indices(self.batch.t)]
        if self._obs is None:
            self._obs = self.student.trajectory(self.x0, self.batch.t)
        return self._obs


def endpoint_term(cache: _Cache) -> Tensor:
    if cache.embedded:  # a network with a read-out: its output against the target endpoint
        return relative_mse(cache.model.head(cache.full_trajectory[-1]), cache.batch.endpoints)
    return relative_mse(cache.trajectory[-1], cache.batch.endpoints)


def _state_space_only(cache: _Cache, term: str) -> None:
    if cache.embedded:
        raise ConfigError(f"the {term!r} term compares hidden states with teacher states; it needs a student "
                          "that lives in the teacher's state space (not an embedded ResidualNet)")


def trajectory_term(cache: _Cache) -> Tensor:
    _state_space_only(cache, "trajectory")
    return relative_mse(cache.trajectory[1:], cache.batch.states[1:])


def vector_field_term(cache: _Cache) -> Tensor:
    _state_space_only(cache, "vector_field")
    b, f = cache.batch, cache.student.vector_field
    pred = torch.stack([f(b.t[k], b.states[k]) for k in range(b.t.numel())])
    return relative_mse(pred, b.velocities)


def student_jacobian(student: Student, t: Tensor | float, x: Tensor) -> Tensor:
    """``∂f_θ/∂x`` at each row of ``x`` (shape (B, d) → (B, d, d)), differentiable in θ."""
    return vector_field_jacobian(student.vector_field, t, x)


def jacobian_term(cache: _Cache) -> Tensor:
    b = cache.batch
    if b.jacobians is None:
        raise ConfigError("the 'jacobian' objective term needs data made with with_jacobians=True")
    k = cache.probes.get("jacobian", 0)
    if k:
        f = cache.student.vector_field
        num = sum(frobenius_sq_estimate(lambda x, t=float(b.t[i]): f(t, x), b.states[i], b.jacobians[i], n_probes=k,
                                        generator=cache.generator)
                  for i in range(b.t.numel()))
        return num / (b.jacobians.pow(2).sum() + 1e-12)
    pred = torch.stack([student_jacobian(cache.student, b.t[k], b.states[k]) for k in range(b.t.numel())])
    return relative_mse(pred, b.jacobians)


def kinetic_term(cache: _Cache) -> Tensor:
    traj, s = cache.full_trajectory, cache.student
    inc = traj[1:] - traj[:-1]
    dt = s.horizon / s.n_layers
    return s.horizon * inc.pow(2).sum() / dt / (traj[0].detach().pow(2).sum() + 1e-12)


def jacobian_norm_term(cache: _Cache) -> Tensor:
    traj, s = cache.full_trajectory, cache.student
    t = s.layer_times
    k = cache.probes.get("jacobian_norm", 0)
    if k:
        sq = sum(frobenius_sq_estimate(lambda x, tl=float(t[l]): s.vector_field(tl, x), traj[l], n_probes=k,
                                       generator=cache.generator)
                 for l in range(s.n_layers))
        return s.horizon ** 2 * sq / (s.n_layers * traj.shape[1]) / s.dim
    jac = torch.stack([student_jacobian(s, t[l], traj[l]) for l in range(s.n_layers)])
    return s.horizon ** 2 * jac.pow(2).sum(dim=(-2, -1)).mean() / s.dim


def cross_entropy_term(cache: _Cache) -> Tensor:
    if getattr(cache.batch, "y", None) is None:
        raise ConfigError("the 'cross_entropy' objective term needs labelled data (LabeledData)")
    logits = cache.model.head(cache.full_trajectory[-1])
    return torch.nn.functional.cross_entropy(logits, cache.batch.y)


def observed_path_term(cache: _Cache) -> Tensor:
    """``Σ_{n,k} m_nk ‖obs(h_{l_k}(x_n)) − s_nk‖² / Σ_{n,k} m_nk ‖s_nk‖²`` over the observed entries of a
    :class:`~testbed.path_data.PathData` batch (``obs`` is the model's ``observe`` read-out, else the identity).

    Entries with mask 0 contribute nothing; a batch with no observation gives 0 (with a graph, so the total
    loss stays differentiable)."""
    b = cache.batch
    if not hasattr(b, "path_mask"):
        raise ConfigError("the 'observed_path' objective term needs PathData (path_layers/path_targets/path_mask)")
    states = cache.full_trajectory[b.path_layers]                     # (K, N, D)
    observe = getattr(cache.model, "observe", None)
    pred = (observe(states) if observe is not None else states).transpose(0, 1)   # (N, K, d)
    m = b.path_mask.to(pred.dtype)
    err = ((pred - b.path_targets).pow(2).sum(-1) * m).sum()
    norm = (b.path_targets.pow(2).sum(-1) * m).sum()
    return err / (norm + 1e-12)   # no observation in the batch: err = 0 exactly, still on the graph


def distill_term(cache: _Cache) -> Tensor:
    """``Σ_n m_n KL(p*_n ‖ p_θ,n) / Σ_n m_n`` with ``p = softmax(logits)`` (temperature 1) over the inputs of a
    :class:`~testbed.path_data.PathData` batch whose path is observed (``m_n = max_k path_mask[n, k]``); a batch
    with none gives 0 on the graph."""
    b = cache.batch
    if getattr(b, "teacher_logits", None) is None:
        raise ConfigError("the 'distill' objective term needs PathData with teacher_logits (a teacher network)")
    logp = torch.log_softmax(cache.model.head(cache.full_trajectory[-1]), -1)
    logq = torch.log_softmax(b.teacher_logits.to(logp.dtype), -1)
    kl = (logq.exp() * (logq - logp)).sum(-1)                          # (N,)
    m = b.path_mask.amax(-1).to(kl.dtype) if b.path_mask.numel() else torch.zeros_like(kl)
    return (kl * m).sum() / m.sum().clamp_min(1.0)


TERMS: dict[str, Callable[[_Cache], Tensor]] = {
    "endpoint": endpoint_term,
    "trajectory": trajectory_term,
    "vector_field": vector_field_term,
    "jacobian": jacobian_term,
    "kinetic": kinetic_term,
    "jacobian_norm": jacobian_norm_term,
    "cross_entropy": cross_entropy_term,
    "observed_path": observed_path_term,
    "distill": distill_term,
}

PRESETS: dict[str, dict[str, float]] = {
    "endpoint": {"endpoint": 1.0},
    "trajectory": {"endpoint": 1.0, "trajectory": 1.0},
    "field": {"endpoint": 1.0, "trajectory": 1.0, "vector_field": 1.0},
    "field+jacobian": {"endpoint": 1.0, "trajectory": 1.0, "vector_field": 1.0, "jacobian": 0.1},
    "classify": {"cross_entropy": 1.0},
}
#: terms that can be estimated with random probes instead of dense Jacobians (``Objective.probes``)
PROBE_TERMS = ("jacobian", "jacobian_norm")
#: the law-recovery ladder (ODE and PDE studies): endpoint only; + the observed states (no law term); + the law at
#: those states; + its Jacobian
LAW_OBJECTIVES = ("endpoint", "trajectory", "field", "field+jacobian")


@dataclass(frozen=True)
class Objective:
    """``L = Σ_name w_name · term_name``; zero-weight terms are not evaluated.

    ``probes`` maps a Jacobian term (:data:`PROBE_TERMS`) to its number of Rademacher probes per state (0 or absent:
    the exact dense Jacobian). Probe estimates are unbiased for the term's value and its gradient; they are drawn
    from the ``generator`` passed to the call (:func:`testbed.train.train` passes a probe stream of its own, apart
    from the minibatch order), else from torch's global generator.
    """

    weights: Mapping[str, float]
    name: str = "custom"
    probes: Mapping[str, int] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.weights:
            raise ConfigError("an objective needs at least one term")
        for k, w in self.weights.items():
            if k not in TERMS:
                raise ConfigError(f"unknown objective term {k!r}; known terms: {', '.join(TERMS)}")
            if isinstance(w, bool) or not (isinstance(w, (int, float)) and w >= 0 and w == w and w != float("inf")):
                raise ConfigError(f"weight of objective term {k!r} must be a finite number ≥ 0, got {w!r}")
        if all(w == 0 for w in self.weights.values()):
            raise ConfigError("all objective weights are zero")
        for k, n in self.probes.items():
            if k not in PROBE_TERMS:
                raise ConfigError(f"probes: {k!r} has no probe estimator; terms with one: {', '.join(PROBE_TERMS)}")
            if k not in self.weights:
                raise ConfigError(f"probes: term {k!r} is not in the objective ({', '.join(self.weights)})")
            if isinstance(n, bool) or not isinstance(n, int) or n < 0:
                raise ConfigError(f"probes: the number of probes for {k!r} must be an integer ≥ 0, got {n!r}")

    @property
    def needs_jacobians(self) -> bool:
        return self.weights.get("jacobian", 0.0) > 0

    def __call__(self, student, batch, generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, float]]:
        """Return the total loss and the value of each term (as floats, for logging); ``generator`` draws the
        random probes of probe-estimated terms (None: torch's global generator)."""
        cache = _Cache(student, batch, self.probes, generator)
        total: Tensor | None = None
        terms: dict[str, float] = {}
        for k, w in self.weights.items():
            if w == 0:
                continue
            v = TERMS[k](cache)
            terms[k] = float(v.detach())
            total = w * v if total is None else total + w * v
        assert total is not None
        return total, terms


def make_objective(spec: str | Mapping[str, float] | Objective,
                   probes: Mapping[str, int] | None = None) -> Objective:
    """An :class:`Objective` from a preset name, a ``"term=w,term=w"`` string or a mapping; ``probes`` (term →
    number of probes) applies to the terms of the objective that have an estimator (others are ignored, so one
    setting can serve a whole ladder of objectives)."""
    if probes:
        base = make_objective(spec)
        keep = {k: n for k, n in probes.items() if k in base.weights or k not in PROBE_TERMS}
        return dataclasses.replace(base, probes={**base.probes, **keep})
    if isinstance(spec, Objective):
        return spec
    if isinstance(spec, Mapping):
        return Objective(dict(spec))
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"objective must be a preset name, 'term=weight,...' or a mapping, got {spec!r}")
    if spec in PRESETS:
        return Objective(dict(PRESETS[spec]), name=spec)
    if "=" not in spec:
        raise ConfigError(f"unknown objective {spec!r}; presets: {', '.join(PRESETS)} (or 'term=w,term=w')")
    weights: dict[str, float] = {}
    for part in spec.split(","):
        key, _, val = part.partition("=")
        if key.strip() in weights:
            raise ConfigError(f"objective term {key.strip()!r} is given twice in {spec!r}")
        try:
            weights[key.strip()] = float(val)
        except ValueError:
            raise ConfigError(f"bad weight {val!r} for objective term {key.strip()!r}") from None
    return Objective(weights, name=spec)



def needs_jacobians(objectives) -> bool:
    """Whether any of ``objectives`` (names, mappings or :class:`Objective`) has a teacher-Jacobian term, i.e. its
    training data must be made with ``with_jacobians=True``."""
    return any(make_objective(o).needs_jacobians for o in objectives)

"""Constructed students: exact constructions that keep the endpoint ``h_L(x0)`` and change the interior of the field.

Every wrapper here is itself a :class:`~testbed.students.base.Student` (so every field metric applies) whose
endpoint map equals its base's to round-off, while the trajectory, the layer Jacobians and the continuous law
differ — by an amount set by one knob. They show which field metrics are properties of the *function*
``x0 ↦ h_L`` (endpoint Jacobian, ``log|det ∂h_L/∂h_0|``) and which are properties of the *field* (length,
kinetic energy, curvature, layer conditioning).

* :class:`Conjugated` — ``h'_l = ψ_{t_l}(h_l)`` for invertible maps ``ψ_t`` with ``ψ_0 = ψ_T = id``
  (:class:`LinearConjugacy` ``ψ_t(h) = expm(s(t)B) h``; :class:`Translation`; :class:`Shear`);
* :class:`Detour` — a conjugation by a translation or shear that goes out and comes back;
* :class:`ExactFlowStudent` — the teacher's exact flow sampled on the layer grid (the reference model);
* :class:`Reparameterized` — the same flow run on a warped clock ``h_l = φ_{τ(t_l)}(x0)``.

The wrappers' :meth:`spec` describes them (JSON-able) but they are *not* rebuildable by
:func:`testbed.students.build_student` (so they are not in its registry): they hold a live base model or system.
They were ``testbed.field.equivalence``; import them from :mod:`testbed.students`.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.func import jvp

from testbed.students.base import Student

if TYPE_CHECKING:  # annotations only: the students package does not import the systems at run time
    from systems.base import TeacherFlow

Tensor = torch.Tensor

_END_TOL = 1e-12


def _json(x: Any) -> Any:
    if isinstance(x, Tensor):
        return x.detach().cpu().tolist()
    if isinstance(x, dict):
        return {k: _json(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json(v) for v in x]
    return x


def _base_spec(base: Student) -> dict[str, Any]:
    """``{"kind": …, **base.spec()}`` (wrappers' specs already carry their kind)."""
    return {"kind": base.kind, **_json(base.spec())}


# ================================================================================ time profiles
class SineBump:
    """``a(t) = A·sin(πt/T)`` on ``[0, T]`` — zero at both ends (exactly, in floating point), peak ``A`` at
    ``T/2``; ``a'(t) = A·(π/T)·cos(πt/T)``."""

    def __init__(self, amplitude: float, horizon: float) -> None:
        self.amplitude, self.horizon = float(amplitude), float(horizon)

    def __call__(self, t: Tensor | float) -> float:
        u = float(t) / self.horizon
        return self.amplitude * math.sin(math.pi * min(u, 1.0 - u))  # sin(πu) = sin(π(1-u)): exact 0 at u = 1

    def rate(self, t: Tensor | float) -> float:
        return self.amplitude * math.pi / self.horizon * math.cos(math.pi * float(t) / self.horizon)


# ================================================================================ conjugating maps
class TimeMap(nn.Module):
    """A time-dependent invertible map ``ψ_t`` on ``R^d`` with ``ψ_0 = ψ_T = id``.

    Subclasses implement ``forward(t, h) = ψ_t(h)``, ``inverse(t, y) = ψ_t^{-1}(y)`` and
    ``pushforward(t, x, v) = ∂_tψ_t(x) + Dψ_t(x)·v`` — the velocity of ``y = ψ_t(x)`` when ``x`` moves with
    velocity ``v``, i.e. the conjugated law ``f'(t, y) = pushforward(t, ψ_t^{-1}(y), f(t, ψ_t^{-1}(y)))``.
    All act row-wise on ``(..., d)``.
    """

    horizon: float

    @abstractmethod
    def forward(self, t: Tensor | float, h: Tensor) -> Tensor: ...

    @abstractmethod
    def inverse(self, t: Tensor | float, y: Tensor) -> Tensor: ...

    @abstractmethod
    def pushforward(self, t: Tensor | float, x: Tensor, v: Tensor) -> Tensor: ...

    @abstractmethod
    def spec(self) -> dict[str, Any]: ...


class LinearConjugacy(TimeMap):
    """``ψ_t(h) = M(t) h`` with ``M(t) = expm(s(t)·B)``, ``s(t) = strength·sin(πt/T)``.

    Exact inverse ``M(t)^{-1} = expm(−s(t)B)``; since ``B`` commutes with ``M``, ``M'(t)M(t)^{-1} = s'(t)B`` and
    the conjugated law is ``f'(t, y) = s'(t)·B y + M(t) f(t, M(t)^{-1} y)``. ``cond(M(T/2)) = e^{strength·(λ_max −
    λ_min)}`` for symmetric ``B``. Default ``B = diag(linspace(1, −1, d))`` (traceless: ``det M = 1``).
    """

    def __init__(self, dim: int, horizon: float, strength: float = 1.0, B: Tensor | None = None) -> None:
        super().__init__()
        if B is None:
            B = torch.diag(torch.linspace(1.0, -1.0, dim, dtype=torch.float64)) if dim > 1 else torch.ones(1, 1)
        B = torch.as_tensor(B, dtype=torch.float64)
        if B.shape != (dim, dim):
            raise ValueError(f"B must have shape ({dim}, {dim}), got {tuple(B.shape)}")
        self.register_buffer("B", B.clone())
        self.diagonal = bool(torch.equal(B, torch.diag(torch.diagonal(B))))  # fast path: M = diag(e^{s·b_i})
        self.horizon, self.strength = float(horizon), float(strength)
        self.s = SineBump(strength, horizon)

    def matrix(self, t: Tensor | float, sign: float = 1.0) -> Tensor:
        """``M(t)`` (``sign=+1``) or ``M(t)^{-1}`` (``sign=-1``), in float64."""
        sB = (sign * self.s(t)) * self.B.double()
        return torch.diag(torch.exp(torch.diagonal(sB))) if self.diagonal else torch.linalg.matrix_exp(sB)

    def forward(self, t: Tensor | float, h: Tensor) -> Tensor:
        return h @ self.matrix(t).to(h).mT

    def inverse(self, t: Tensor | float, y: Tensor) -> Tensor:
        return y @ self.matrix(t, -1.0).to(y).mT

    def pushforward(self, t: Tensor | float, x: Tensor, v: Tensor) -> Tensor:
        M, B = self.matrix(t).to(x), self.B.to(x)
        return self.s.rate(t) * (x @ (B @ M).mT) + v @ M.mT

    def spec(self) -> dict[str, Any]:
        return {"map": "linear", "strength": self.strength, "B": _json(self.B)}


class Translation(TimeMap):
    """``ψ_t(h) = h + a(t)·c`` with ``a(t) = amplitude·sin(πt/T)``; law ``f'(t, y) = a'(t)c + f(t, y − a(t)c)``."""

    def __init__(self, direction: Tensor, horizon: float, amplitude: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("c", torch.as_tensor(direction, dtype=torch.float64).clone())
        self.horizon, self.amplitude = float(horizon), float(amplitude)
        self.a = SineBump(amplitude, horizon)

    def forward(self, t: Tensor | float, h: Tensor) -> Tensor:
        return h + self.a(t) * self.c.to(h)

    def inverse(self, t: Tensor | float, y: Tensor) -> Tensor:
        return y - self.a(t) * self.c.to(y)

    def pushforward(self, t: Tensor | float, x: Tensor, v: Tensor) -> Tensor:
        return v + self.a.rate(t) * self.c.to(v)

    def spec(self) -> dict[str, Any]:
        return {"map": "translation", "amplitude": self.amplitude, "direction": _json(self.c)}


def sine_sum(h1: Tensor, out_dim: int) -> Tensor:
    """Default shear profile ``g(h₁) = (Σ_i sin h₁_i)·1`` in ``R^{out_dim}``."""
    return torch.sin(h1).sum(-1, keepdim=True).expand(*h1.shape[:-1], out_dim)


def sine_sum_jvp(h1: Tensor, v1: Tensor, out_dim: int) -> tuple[Tensor, Tensor]:
    """``(g(h₁), Dg(h₁)·v₁)`` for :func:`sine_sum`: ``Dg(h₁)v₁ = (Σ_i cos h₁_i · v₁_i)·1``."""
    dg = (torch.cos(h1) * v1).sum(-1, keepdim=True).expand(*h1.shape[:-1], out_dim)
    return sine_sum(h1, out_dim), dg


class Shear(TimeMap):
    """Nonlinear, exactly invertible shear on the split ``h = (h₁, h₂)``, ``h₁ = h[..., :k]``:

    ``ψ_t(h₁, h₂) = (h₁, h₂ + a(t)·g(h₁))``, ``ψ_t^{-1}(y₁, y₂) = (y₁, y₂ − a(t)·g(y₁))``,
    ``a(t) = amplitude·sin(πt/T)``; pushforward ``(v₁, v₂ + a'(t)g(x₁) + a(t)·Dg(x₁)v₁)`` (a JVP).
    ``g: R^k → R^{d−k}`` acts row-wise (default :func:`sine_sum`; a custom ``g`` is differentiated with
    :func:`torch.func.jvp`).
    """

    def __init__(self, dim: int, horizon: float, amplitude: float = 1.0, split: int | None = None,
                 g: Callable[[Tensor], Tensor] | None = None) -> None:
        super().__init__()
        k = dim // 2 if split is None else int(split)
        if not 0 < k < dim:
            raise ValueError(f"split must be in 1..{dim - 1}, got {k}")
        self.dim, self.k, self.horizon, self.amplitude = dim, k, float(horizon), float(amplitude)
        self.a = SineBump(amplitude, horizon)
        self.g_name = "sine_sum" if g is None else getattr(g, "__name__", type(g).__name__)
        self.g = (lambda h1: sine_sum(h1, dim - k)) if g is None else g
        self._default_g = g is None

    def _shift(self, coeff: float, h: Tensor) -> Tensor:
        h1, h2 = h[..., : self.k], h[..., self.k:]
        return torch.cat([h1, h2 + coeff * self.g(h1)], dim=-1)

    def forward(self, t: Tensor | float, h: Tensor) -> Tensor:
        return self._shift(self.a(t), h)

    def inverse(self, t: Tensor | float, y: Tensor) -> Tensor:
        return self._shift(-self.a(t), y)

    def pushforward(self, t: Tensor | float, x: Tensor, v: Tensor) -> Tensor:
        x1, v1, v2 = x[..., : self.k], v[..., : self.k], v[..., self.k:]
        if self._default_g:
            gx, dg = sine_sum_jvp(x1, v1, self.dim - self.k)
        else:
            gx, dg = jvp(self.g, (x1,), (v1,))
        return torch.cat([v1, v2 + self.a.rate(t) * gx + self.a(t) * dg], dim=-1)

    def spec(self) -> dict[str, Any]:
        return {"map": "shear", "amplitude": self.amplitude, "split": self.k, "g": self.g_name}


# ================================================================================ conjugated students
class Conjugated(Student):
    """The base field seen through ``ψ_t``: ``h'_l = ψ_{t_l}(h_l)``.

    ``step'_l(h) = ψ_{t_{l+1}}(base.step(l, ψ_{t_l}^{-1}(h)))`` (``ψ`` is skipped at ``l = 0`` and ``l = L``, where
    it is the identity, so ``h'_L = h_L`` exactly up to the round-off of ``ψ ∘ ψ^{-1}`` inside);
    layer Jacobians ``J'_l = Dψ_{t_{l+1}} J_l Dψ_{t_l}^{-1}``; continuous law
    ``f'(t, y) = ∂_tψ_t(x) + Dψ_t(x) f(t, x)`` at ``x = ψ_t^{-1}(y)``. Since ``Σ_l log|det J'_l|`` telescopes,
    ``log|det ∂h_L/∂h_0|`` and ``∂h_L/∂h_0`` itself are unchanged.

    Layer conditioning: ``cond(J'_l) ≤ cond(Dψ_{t_{l+1}})·cond(J_l)·cond(Dψ_{t_l})``, about ``cond(M)²`` for a linear
    ``ψ`` when ``J_l`` mixes the eigen-directions of ``B`` (e.g. ``≈ cond(M)²·sin²(ωΔt)`` for a rotation by ``ωΔt``).
    Near-identity layers ``J_l = I + Δt·G`` gain less: ``M_{l+1}M_l^{-1}`` is well conditioned and only the
    ``Δt·G`` part is stretched.
    """

    kind = "conjugated"

    def __init__(self, base: Student, psi: TimeMap) -> None:
        super().__init__()
        if abs(float(psi.horizon) - float(base.horizon)) > _END_TOL * max(1.0, float(base.horizon)):
            raise ValueError(f"map horizon {psi.horizon} != base horizon {base.horizon}")
        self.base, self.psi = base, psi
        self.dim, self.n_layers, self.horizon = base.dim, base.n_layers, float(base.horizon)

    @classmethod
    def linear(cls, base: Student, strength: float = 1.0, B: Tensor | None = None) -> Conjugated:
        """Conjugation by ``expm(strength·sin(πt/T)·B)`` (see :class:`LinearConjugacy`)."""
        return cls(base, LinearConjugacy(base.dim, base.horizon, strength, B))

    def _t(self, l: int) -> float:
        return float(self.layer_times[l])

    def step(self, l: int, h: Tensor) -> Tensor:
        x = h if l == 0 else self.psi.inverse(self._t(l), h)
        x = self.base.step(l, x)
        return x if l + 1 == self.n_layers else self.psi(self._t(l + 1), x)

    def vector_field(self, t: Tensor | float, x: Tensor) -> Tensor:
        z = self.psi.inverse(t, x)
        return self.psi.pushforward(t, z, self.base.vector_field(t, z))

    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "rebuildable": False, "base": _base_spec(self.base), "psi": self.psi.spec()}

    def extra_repr(self) -> str:
        return f"psi={self.psi.spec()}"


class Detour(Conjugated):
    """Go out along a direction and come back: :class:`Conjugated` by a :class:`Translation`
    (``mode="translation"``, ``h'_l = h_l + a(t_l)·c``, default ``c = 1/√d``) or a :class:`Shear`
    (``mode="shear"``), with ``a(t) = amplitude·sin(πt/T)``.

    For a translation with an even number of layers, ``Σ_l |a(t_{l+1}) − a(t_l)| = 2·amplitude``, so the
    trajectory length ``Λ'`` satisfies ``|Λ' − 2·amplitude·‖c‖| ≤ Λ`` (triangle inequality), and likewise
    ``|√E' − √E_a| ≤ √E`` with ``E_a = Σ_l (Δa_l)²‖c‖²/Δt`` (Minkowski).
    """

    kind = "detour"

    def __init__(self, base: Student, amplitude: float = 1.0, direction: Tensor | None = None,
                 mode: str = "translation", split: int | None = None,
                 g: Callable[[Tensor], Tensor] | None = None) -> None:
        if mode == "translation":
            if direction is None:
                direction = torch.full((base.dim,), 1.0 / math.sqrt(base.dim), dtype=torch.float64)
            psi: TimeMap = Translation(direction, base.horizon, amplitude)
        elif mode == "shear":
            psi = Shear(base.dim, base.horizon, amplitude, split, g)
        else:
            raise ValueError(f"unknown detour mode {mode!r}; use 'translation' or 'shear'")
        super().__init__(base, psi)
        self.mode, self.amplitude = mode, float(amplitude)


# ================================================================================ exact flows and clocks
class ExactFlowStudent(Student):
    """The teacher's exact flow on the layer grid: ``h_l = φ_{t_l}(x0)``, ``step_l = φ_{t_l → t_{l+1}}``
    (the system's closed-form, torch-differentiable ``flow``); ``vector_field = f*``. The reference model."""

    kind = "exact_flow"

    def __init__(self, system: TeacherFlow, n_layers: int, horizon: float | None = None) -> None:
        super().__init__()
        if not getattr(system, "closed_form", False):
            raise ValueError(f"{system.name}: needs a closed-form (differentiable) flow")
        if isinstance(n_layers, bool) or int(n_layers) != n_layers or n_layers <= 0:
            raise ValueError(f"n_layers must be a positive integer, got {n_layers!r}")
        self.system = system
        self.dim, self.n_layers = int(system.dim), int(n_layers)
        self.horizon = float(system.horizon if horizon is None else horizon)

    def transport(self, h: Tensor, s0: float, s1: float) -> Tensor:
        """``φ_{s0 → s1}(h)``: the state at time ``s1`` of the solution through ``h`` at time ``s0``."""
        if s1 == s0:
            return h
        return self.system.flow(h, torch.tensor([float(s0), float(s1)], dtype=torch.float64))[-1]

    def step(self, l: int, h: Tensor) -> Tensor:
        t = self.layer_times
        return self.transport(h, float(t[l]), float(t[l + 1]))

    def vector_field(self, t: Tensor | float, x: Tensor) -> Tensor:
        return self.system.vector_field(t, x)

    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "rebuildable": False, "system": self.system.name,
                "params": _json(self.system.params()), "n_layers": self.n_layers, "horizon": self.horizon}


class TimeWarp:
    """An increasing clock ``τ: [0, T] → [0, T]`` with ``τ(0) = 0``, ``τ(T) = T``; ``rate(t) = τ'(t)``."""

    horizon: float

    @abstractmethod
    def __call__(self, t: float) -> float: ...

    @abstractmethod
    def rate(self, t: float) -> float: ...

    @abstractmethod
    def spec(self) -> dict[str, Any]: ...


class PowerWarp(TimeWarp):
    """``τ(t) = T·(t/T)^p`` (``p > 0``), ``τ'(t) = p·(t/T)^{p−1}`` (singular at 0 for ``p < 1``)."""

    def __init__(self, p: float, horizon: float) -> None:
        if not p > 0:
            raise ValueError(f"power p must be > 0, got {p}")
        self.p, self.horizon = float(p), float(horizon)

    def __call__(self, t: float) -> float:
        return self.horizon * (float(t) / self.horizon) ** self.p

    def rate(self, t: float) -> float:
        return self.p * (float(t) / self.horizon) ** (self.p - 1)

    def spec(self) -> dict[str, Any]:
        return {"warp": "power", "p": self.p}


class SineWarp(TimeWarp):
    """``τ(t) = t − ε·T/(2π)·sin(2πt/T)`` (increasing for ``|ε| < 1``), ``τ'(t) = 1 − ε·cos(2πt/T)``."""

    def __init__(self, eps: float, horizon: float) -> None:
        if not abs(eps) < 1:
            raise ValueError(f"|eps| must be < 1, got {eps}")
        self.eps, self.horizon = float(eps), float(horizon)

    def __call__(self, t: float) -> float:
        t = float(t)
        return t - self.eps * self.horizon / (2 * math.pi) * math.sin(2 * math.pi * t / self.horizon)

    def rate(self, t: float) -> float:
        return 1.0 - self.eps * math.cos(2 * math.pi * float(t) / self.horizon)

    def spec(self) -> dict[str, Any]:
        return {"warp": "sine", "eps": self.eps}


class Reparameterized(Student):
    """The exact flow of ``base`` on a warped clock: ``h_l = φ_{τ(t_l)}(x0)``.

    ``step_l = φ_{τ_l → τ_{l+1}}`` with ``τ_l = τ(t_l)`` (``τ_0 = 0``, ``τ_L = T`` exactly), so ``h_L = φ_T(x0)``;
    law ``f'(t, y) = τ'(t)·f*(τ(t), y)`` (for an autonomous system ``τ'(t)·f*(y)``). ``tau`` is a
    :class:`TimeWarp` or a power ``p`` (:class:`PowerWarp`). Trajectory length → ``∫‖f*‖ ds`` is invariant
    under the warp; kinetic energy → ``∫ τ'(t)²‖f*(φ_{τ(t)})‖² dt`` is not.
    """

    kind = "reparameterized"

    def __init__(self, base: ExactFlowStudent, tau: TimeWarp | float) -> None:
        super().__init__()
        if not isinstance(base, ExactFlowStudent):
            raise TypeError("Reparameterized needs an ExactFlowStudent (a flow it can evaluate at any time)")
        self.base = base
        self.dim, self.n_layers, self.horizon = base.dim, base.n_layers, base.horizon
        self.tau = PowerWarp(float(tau), self.horizon) if isinstance(tau, (int, float)) else tau
        T = self.horizon
        if abs(float(self.tau.horizon) - T) > _END_TOL * max(1.0, T):
            raise ValueError(f"warp horizon {self.tau.horizon} != base horizon {T}")
        taus = [self.tau(float(t)) for t in self.layer_times]
        if abs(taus[0]) > 1e-9 * T or abs(taus[-1] - T) > 1e-9 * T:
            raise ValueError(f"warp must fix the ends: τ(0) = {taus[0]}, τ(T) = {taus[-1]}, T = {T}")
        taus[0], taus[-1] = 0.0, T
        if any(b <= a for a, b in zip(taus, taus[1:], strict=False)):
            raise ValueError("warp must be strictly increasing on the layer grid")
        self.warped_times: list[float] = taus  # python floats: immune to .float() / .to(dtype)

    def step(self, l: int, h: Tensor) -> Tensor:
        return self.base.transport(h, self.warped_times[l], self.warped_times[l + 1])

    def vector_field(self, t: Tensor | float, x: Tensor) -> Tensor:
        return self.tau.rate(float(t)) * self.base.vector_field(self.tau(float(t)), x)

    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "rebuildable": False, "base": _base_spec(self.base), "tau": self.tau.spec()}

    def extra_repr(self) -> str:
        return f"tau={self.tau.spec()}"


__all__ = ["Conjugated", "Detour", "ExactFlowStudent", "LinearConjugacy", "PowerWarp", "Reparameterized", "Shear",
           "SineBump", "SineWarp", "TimeMap", "TimeWarp", "Translation", "sine_sum", "sine_sum_jvp"]

"""Solver consistency: re-integrate a vector field with other step counts and solvers.

Given a field ``f(t, x)`` (a student's learned law or a teacher's true law), the *reference* is its
``L``-step solve with ``reference_method`` (for a residual student with ODE scaling, forward Euler at ``L``
steps *is* the network). For each other solve ``s`` (fixed-step methods at ``L'`` steps, adaptive methods
at tolerance ``rtol``/``atol``) we report

* endpoint change    ``sqrt(Σ_i ‖x^s_i(T) − x^ref_i(T)‖² / Σ_i ‖x^ref_i(T)‖²)``,
* trajectory change  the same relative L2 over the common grid ``t_k = k·T/G`` (``k = 1..G``) where ``G``
  is the greatest common divisor of all fixed step counts,
* ``nfev``           function evaluations the solve used,
* ``converged_error`` (when an adaptive method is run) the relative L2 endpoint distance to the first
  adaptive solve — the field's own converged flow ``Φ_T``. Against ``L'`` it falls like ``C·L'^{-p}`` with
  ``p`` the solver's order for a smooth field (:func:`observed_order` fits ``p``);
* ``target_error``   (when a ``target`` endpoint is given, e.g. the teacher's ``φ_T(x_0)``) the relative L2
  error of the re-integrated endpoint against it: a learned law approaches the target as ``L'`` grows,
  an endpoint fit is best at ``L' = L`` and drifts away elsewhere.

The reference solve itself is the first row (``is_reference = True``, zero change).

A field that encodes a law converges as ``L'`` grows (at the solver's order) and its reference sits within
the discretisation error of the coarse grid; a field that only fits an endpoint at one step size moves.
Because every field has a discretisation floor, compare a student's curve with its teacher's.

Every solve is bounded: an adaptive solve stops with :class:`~testbed.errors.DivergenceError` after
``max_nfev`` field evaluations (default :data:`MAX_NFEV`) or as soon as a state is NaN/inf or exceeds
``STATE_BOUND × max(1, max|x_0|)`` in absolute value, so a diverged field never hangs a run; a fixed-step
solve whose stored states would not fit in memory is refused before it starts.

Adaptive solvers in torchdiffeq treat the batch as one system (shared step sizes). We solve the batch
together at a tight tolerance (default ``rtol=1e-7``), so each sample is accurate to that tolerance whatever
shares its batch; pass ``per_sample=True`` to give every sample its own steps and error control
(:func:`testbed.field.adaptive.dopri5_per_sample`: all samples in one tensor program, the solution of each
independent of its batch-mates, per-sample NFEs in ``nfev_min``/``nfev_max``; other adaptive methods are then
solved one sample at a time).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torchdiffeq import odeint

from testbed.config import ConfigError
from testbed.errors import DivergenceError
from testbed.field.adaptive import dopri5_per_sample
from testbed.field.metrics import relative_l2
from testbed.fitting import loglog_slope
from testbed.grid import grid_indices
from testbed.limits import check_memory
from testbed.solvers import ADAPTIVE_METHODS, FIXED_STEP_METHODS, LOOP_METHODS

Tensor = torch.Tensor
Field = Callable[[Tensor, Tensor], Tensor]

#: field evaluations one adaptive solve may use (the teachers and trained students here need < 5,000)
MAX_NFEV = 100_000
#: an adaptive solve stops when ``max|x| > STATE_BOUND · max(1, max|x_0|)``
STATE_BOUND = 1e8
#: after this many evaluations a solve whose progress projects past ``10 × max_nfev`` is stopped early
STALL_CHECK_NFEV = 2_000


class _Counted:
    """``f`` with a call counter (a plain callable: an ``nn.Module`` wrapper costs ~10 µs per evaluation)."""

    def __init__(self, f: Field) -> None:
        self.f, self.nfev = f, 0

    def __call__(self, t: Tensor, x: Tensor) -> Tensor:
        self.nfev += 1
        return self.f(t, x)


class _Guarded(_Counted):
    """``f`` with a call counter, an evaluation budget and a state-size guard (for adaptive solves)."""

    def __init__(self, f: Field, method: str, max_nfev: int, bound: float, t0: float, t1: float) -> None:
        super().__init__(f)
        self.method, self.max_nfev, self.bound = method, max_nfev, bound
        self.t0, self.span = t0, abs(t1 - t0)

    def __call__(self, t: Tensor, x: Tensor) -> Tensor:
        size = float(x.detach().abs().max()) if x.numel() else 0.0
        if not size <= self.bound:  # also catches NaN
            raise DivergenceError(f"{self.method} solve diverged: state max|x| = {size:.3g} at t = {float(t):.4g} "
                                  f"(bound {self.bound:.3g}) after {self.nfev} field evaluations")
        if self.nfev >= self.max_nfev:
            raise DivergenceError(f"{self.method} solve exceeded its budget of {self.max_nfev:,} field evaluations "
                                  f"at t = {float(t):.4g} (state max|x| = {size:.3g}): the field is too stiff or "
                                  "diverged")
        if self.nfev == STALL_CHECK_NFEV and self.span > 0:
            done = abs(float(t) - self.t0) / self.span
            if done * 10 * self.max_nfev < self.nfev:
                raise DivergenceError(f"{self.method} solve stalled: {self.nfev:,} field evaluations reached only "
                                      f"t = {float(t):.3g} of [{self.t0:g}, {self.t0 + self.span:g}] (projected "
                                      f"more than 10 × its budget of {self.max_nfev:,}): the field is too stiff or "
                                      "diverged")
        return super().__call__(t, x)


_ONE_THIRD, _TWO_THIRDS = 1 / 3, 2 / 3


def fixed_step_solve(f: Field, x0: Tensor, grid: Tensor, method: str) -> Tensor:
    """States on ``grid`` by a fixed-step explicit method, step by step in a plain loop.

    The same arithmetic as ``torchdiffeq.odeint`` with ``method`` (euler; explicit midpoint; ``rk4`` = the
    3/8-rule Runge–Kutta that torchdiffeq's ``rk4`` uses), without its per-step bookkeeping (~45–100 µs per
    step), so re-integrations are at least as fast as torchdiffeq's. Returns shape ``(len(grid), *x0.shape)``.
    """
    xs = [x0]
    x = x0
    for k in range(grid.numel() - 1):
        t0, t1 = grid[k], grid[k + 1]
        dt = t1 - t0
        if method == "euler":
            dx = dt * f(t0, x)
        elif method == "midpoint":
            half_dt = 0.5 * dt
            dx = dt * f(t0 + half_dt, x + f(t0, x) * half_dt)
        elif method == "rk4":
            k1 = f(t0, x)
            k2 = f(t0 + dt * _ONE_THIRD, x + dt * k1 * _ONE_THIRD)
            k3 = f(t0 + dt * _TWO_THIRDS, x + dt * (k2 - k1 * _ONE_THIRD))
            k4 = f(t1, x + dt * (k1 - k2 + k3))
            dx = (k1 + 3 * (k2 + k3) + k4) * dt * 0.125
        else:
            raise ConfigError(f"unknown fixed-step method {method!r}; use one of {', '.join(LOOP_METHODS)}")
        x = x + dx
        xs.append(x)
    return torch.stack(xs)


def integrate(f: Field, x0: Tensor, horizon: float, method: str = "euler", n_steps: int | None = None,
              times: Tensor | None = None, rtol: float = 1e-7, atol: float = 1e-9,
              max_nfev: int = MAX_NFEV) -> tuple[Tensor, int]:
    """Solve ``dx/dt = f(t, x)`` on ``[0, T]``; return states at ``times`` (default ``[0, T]``) and NFE.

    Fixed-step methods (:data:`testbed.solvers.LOOP_METHODS`) take ``n_steps`` equal steps (``times`` must lie on
    that grid; the ``n_steps + 1`` stored states must fit in memory); adaptive methods
    (:data:`testbed.solvers.ADAPTIVE_METHODS`) use ``rtol``/``atol`` and at most ``max_nfev`` evaluations, and stop
    on exploding or non-finite states (:class:`~testbed.errors.DivergenceError`).
    """
    if times is None:
        times = torch.tensor([0.0, horizon], dtype=torch.float64)
    counted = _Counted(f)
    if method in LOOP_METHODS:
        if n_steps is None or isinstance(n_steps, bool) or int(n_steps) != n_steps or n_steps <= 0:
            raise ConfigError(f"step count must be a positive integer, got {n_steps!r}")
        check_memory((int(n_steps) + 1) * x0.numel() * x0.element_size(),
                     f"a {method} solve with {int(n_steps):,} steps of a {tuple(x0.shape)} state")
        try:
            idx = grid_indices(times, horizon, int(n_steps))  # on the original times, before any float32 cast
        except ValueError as err:
            raise ConfigError(f"output {err}") from None
        grid = torch.linspace(0.0, horizon, int(n_steps) + 1, dtype=x0.dtype, device=x0.device)
        sol = fixed_step_solve(counted, x0, grid, method)
        return sol[idx], counted.nfev
    if method in FIXED_STEP_METHODS:
        raise ConfigError(f"fixed-step method {method!r} is not in the testbed's step loop; use one of "
                          f"{', '.join(LOOP_METHODS)} (or an adaptive method: {', '.join(ADAPTIVE_METHODS)})")
    times = torch.as_tensor(times).to(dtype=x0.dtype, device=x0.device)
    if method in ADAPTIVE_METHODS:
        bound = STATE_BOUND * max(1.0, float(x0.detach().abs().max()) if x0.numel() else 1.0)
        guarded = _Guarded(f, method, max_nfev, bound, float(times[0]), float(times[-1]))
        sol = odeint(guarded, x0, times, method=method, rtol=rtol, atol=atol)
        return sol, guarded.nfev
    raise ConfigError(f"unknown solver {method!r}; use one of {', '.join(LOOP_METHODS + ADAPTIVE_METHODS)}")


@dataclass
class ConsistencyResult:
    """One row per re-integration; ``reference`` describes the solve every row is compared with."""

    reference: dict
    rows: list[dict] = field(default_factory=list)

    def endpoint_changes(self) -> list[float]:
        return [r["endpoint_change"] for r in self.rows if not r.get("is_reference")]

    @property
    def summary(self) -> float:
        """Relative endpoint change between the reference and the converged (first adaptive) solve:
        how far the ``L``-step network is from the exact flow of its own field. Falls back to the
        finest fixed-step solve when no adaptive method was run."""
        adaptive = [r for r in self.rows if r["n_steps"] is None]
        if adaptive:
            return float(adaptive[0]["endpoint_change"])
        fixed = [r for r in self.rows if not r.get("is_reference")]
        return float(max(fixed, key=lambda r: r["n_steps"])["endpoint_change"]) if fixed else float("nan")

    def mean_change(self) -> float:
        """Mean relative endpoint change over all re-integrations (reference excluded)."""
        vals = [r["endpoint_change"] for r in self.rows if not r.get("is_reference")]
        return float(sum(vals) / len(vals)) if vals else float("nan")

    def change(self, method: str, n_steps: int | None = None) -> float:
        for r in self.rows:
            if r.get("is_reference"):
                continue
            if r["method"] == method and (n_steps is None or r["n_steps"] == n_steps):
                return r["endpoint_change"]
        raise KeyError((method, n_steps))


def observed_order(rows: Sequence[dict], method: str, key: str = "converged_error",
                   floor: float = 1e-9) -> float:
    """Least-squares slope ``p`` of ``log e = log C − p·log L'`` over the fixed-step rows of ``method``.

    ``e`` is ``key`` (default: distance to the converged solve); points with ``e ≤ floor`` (at the adaptive
    tolerance) are left out. NaN when fewer than two points remain.
    """
    pts = [(float(r["n_steps"]), float(r[key])) for r in rows
           if r.get("method") == method and r.get("n_steps") not in (None, "") and key in r
           and r[key] == r[key] and float(r[key]) > floor]
    pts = sorted(set(pts))  # the reference row repeats the L-step solve
    if len(pts) < 2:
        return float("nan")
    return -loglog_slope([n for n, _ in pts], [e for _, e in pts])


def is_autonomous(f: Field) -> bool:
    """Whether ``f`` ignores its time argument, as far as its owner says (a teacher's or a student's
    ``autonomous``: an untied or time-conditioned student is not); False when unknown (always safe)."""
    return bool(getattr(getattr(f, "__self__", None), "autonomous", False))


def default_step_counts(n_layers: int) -> list[int]:
    """``{L/4, L/2, 2L, 4L}`` (the fractional ones only where they are whole numbers ≥ 1)."""
    out = [n_layers // d for d in (4, 2) if n_layers % d == 0 and n_layers // d >= 1]
    return out + [2 * n_layers, 4 * n_layers]


@torch.no_grad()
def solver_consistency(f: Field, x0: Tensor, horizon: float, n_layers: int,
                       step_counts: Sequence[int] | None = None, methods: Sequence[str] = ("euler",),
                       adaptive: Sequence[str] = ("dopri5",), reference_method: str = "euler",
                       rtol: float = 1e-7, atol: float = 1e-9, per_sample: bool = False,
                       target: Tensor | None = None) -> ConsistencyResult:
    """Re-integrate ``f`` at each step count × fixed-step method and with each adaptive method.

    The reference is the ``n_layers``-step ``reference_method`` solve (the network itself for an ODE-scaled
    residual student).
    """
    if isinstance(n_layers, bool) or not isinstance(n_layers, int) or n_layers <= 0:
        raise ConfigError(f"n_layers must be a positive integer, got {n_layers!r}")
    steps = list(default_step_counts(n_layers) if step_counts is None else step_counts)
    for i, s in enumerate(steps):
        if isinstance(s, bool) or not isinstance(s, numbers.Integral) or s <= 0:
            raise ConfigError(f"step counts must be positive integers, got {s!r}")
        steps[i] = int(s)
    g = n_layers
    for s in steps:
        g = math.gcd(g, s)
    common = torch.linspace(0.0, horizon, g + 1, dtype=torch.float64)
    ref, ref_nfev = integrate(f, x0, horizon, reference_method, n_layers, common)
    result = ConsistencyResult({"method": reference_method, "n_steps": n_layers, "nfev": ref_nfev,
                                "grid_points": g})

    def add(method: str, n: int | None, sol: Tensor, nfev: int, is_reference: bool = False) -> None:
        row = {
            "method": method, "n_steps": n, "step_ratio": (n / n_layers) if n else float("nan"),
            "endpoint_change": relative_l2(sol[-1], ref[-1]),
            "trajectory_change": relative_l2(sol[1:], ref[1:]),
            "nfev": nfev, "is_reference": is_reference,
        }
        if target is not None:
            row["target_error"] = relative_l2(sol[-1], target.to(sol.dtype))
        result.rows.append(row)

    solves: list[tuple[str, int | None, Tensor, int, bool]] = [(reference_method, n_layers, ref, ref_nfev, True)]
    nfev_rows: dict[int, Tensor] = {}     # per-sample evaluation counts of the per-sample adaptive solves
    for m in methods:
        for s in steps:
            sol, nfev = integrate(f, x0, horizon, m, s, common)
            solves.append((m, s, sol, nfev, False))
    for m in adaptive:
        if per_sample and m == "dopri5":
            sol, per_row = dopri5_per_sample(f, x0, common.to(x0.dtype), rtol, atol, autonomous=is_autonomous(f),
                                             max_nfev=MAX_NFEV)
            solves.append((m, None, sol, int(per_row.sum()), False))
            nfev_rows[len(solves) - 1] = per_row
        elif per_sample:
            sols, nfev = [], 0
            for i in range(x0.shape[0]):
                si, ni = integrate(f, x0[i: i + 1], horizon, m, None, common, rtol, atol)
                sols.append(si)
                nfev += ni
            solves.append((m, None, torch.cat(sols, dim=1), nfev, False))
        else:
            sol, nfev = integrate(f, x0, horizon, m, None, common, rtol, atol)
            solves.append((m, None, sol, nfev, False))
    converged = next((sol for _, n, sol, _, _ in solves if n is None), None)
    for i, (m, n, sol, nfev, is_ref) in enumerate(solves):
        add(m, n, sol, nfev, is_ref)
        if i in nfev_rows:
            result.rows[-1].update(nfev_min=int(nfev_rows[i].min()), nfev_max=int(nfev_rows[i].max()))
        if converged is not None:
            result.rows[-1]["converged_error"] = relative_l2(sol[-1], converged[-1])
    return result

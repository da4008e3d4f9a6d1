"""Method-of-lines PDE teachers on a periodic 1-D grid: the shared base class :class:`PDESystem`.

A PDE ``u_t = L u + N(u)`` on the periodic interval ``[0, ℓ)`` is discretised in space on ``N = n_grid`` points
``x_j = j·dx``, ``dx = ℓ/N``; the state is the vector of grid values ``u_j(t) ≈ u(x_j, t)`` (``dim = N``) and the
teacher *law* is the semi-discrete right-hand side ``f(u) = L_h u + N_h(u)`` (finite differences or Fourier
pseudo-spectral, per system). The linear part ``L_h`` is always shift invariant, hence diagonal in the discrete
Fourier basis with symbol ``λ_k`` (:meth:`PDESystem.symbol`). The teacher *flow* is the flow of this ODE system:

* linear PDEs (``linear = True``): the exact solution ``u(t) = F⁻¹ diag(e^{λ_k t}) F u0`` of the semi-discrete
  system (``F`` the DFT);
* semilinear PDEs: ETDRK4 (:mod:`systems.pdes.etdrk4`) with the linear part integrated exactly and substeps
  ``≤`` :meth:`PDESystem.max_step`, chosen per system for a global error of about ``1e-9`` on in-distribution
  data over the horizon (checked in the tests against DOP853 at ``rtol = 1e-13``, or classical RK4 with a tiny
  step for Kuramoto–Sivashinsky).

Both are torch (batched, differentiable). :meth:`PDESystem.flow_jacobian` is the exact propagator
``F⁻¹ diag(e^{λt}) F`` for linear PDEs and the exact tangent-linear ETDRK4 map otherwise (what
``vmap(jacfwd(flow))`` computes, without its overhead).

Initial states (all parameters are dataclass fields, so the registry's ``get_system`` validates them):

* in distribution (:meth:`PDESystem.sample_id`): the band-limited random Fourier series
  ``u0(x) = Σ_{k=1..K} a_k cos(2πkx/ℓ) + b_k sin(2πkx/ℓ)`` with ``K = id_k_max`` and i.i.d.
  ``a_k, b_k ~ N(0, σ²)``, ``σ = id_amplitude/√K``. It has zero mean and expected mean square
  ``E[(1/ℓ)∫u0² dx] = K σ² = id_amplitude²`` (so ``id_amplitude`` is the expected RMS amplitude; pointwise
  ``u0(x) ~ N(0, id_amplitude²)``). Its support is the span of the modes ``1..id_k_max``.
* out of distribution (:meth:`PDESystem.sample_ood`): the same construction with ``K = ood_k_max`` and RMS
  ``ood_amplitude``. The expected fraction ``(ood_k_max - id_k_max)/ood_k_max`` of its energy lies in the modes
  ``id_k_max < k ≤ ood_k_max`` that no ID sample contains (almost surely every OOD sample has some), and its
  amplitude differs when ``ood_amplitude ≠ id_amplitude``. Validation requires one of the two to differ.

Samples are drawn in float64 from ``generator`` and then cast, so a float32 sample is the rounded float64 one.

Norms: :meth:`PDESystem.mean` is the grid mean ``(1/N) Σ_j u_j``, :meth:`PDESystem.l2_norm` the discrete
``L²(0, ℓ)`` norm ``(dx Σ_j u_j²)^{1/2}``, :meth:`PDESystem.energy` is ``½‖u‖²`` in that norm and
:meth:`PDESystem.rms` is ``‖u‖/√ℓ``.

Explicit students: :meth:`PDESystem.check_stability` compares the forward-Euler (or RK2/RK4) amplification
``|R(hλ)|`` of ``h = T/n_steps`` on the teacher's eigenvalues with 1 and raises (or warns) naming the constraint.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import warnings
from typing import ClassVar

import torch

from systems.base import SystemSpecError, TeacherFlow, Tensor, as_time_grid
from systems.flows._common import check_real, float_state
from systems.pdes.etdrk4 import etdrk4_solve, etdrk4_solve_tangent
from systems.pdes.operators import Stencil, apply_symbol, circulant_row, symbol_matrix

TWO_PI = 2.0 * math.pi


class ResolutionWarning(UserWarning):
    """The grid is too coarse for the parameters (e.g. a large grid Reynolds number for Burgers)."""


class StabilityWarning(UserWarning):
    """An explicit step of the asked size is unstable on the teacher's spectrum (see ``check_stability``)."""


# stability polynomials R(z) of the explicit methods a student may use, and their stability interval on the
# negative real axis [-bound, 0]
_STABILITY = {
    "euler": ((1.0, 1.0), 2.0),
    "midpoint": ((1.0, 1.0, 0.5), 2.0),
    "heun": ((1.0, 1.0, 0.5), 2.0),
    "rk4": ((1.0, 1.0, 0.5, 1.0 / 6.0, 1.0 / 24.0), 2.785293563405282),
}


@dataclasses.dataclass(frozen=True)
class StabilityReport:
    """Explicit-method stability of ``n_steps`` equal steps over the horizon on the teacher's spectrum.

    Attributes:
        method:        ``"euler"``, ``"midpoint"``/``"heun"`` (RK2) or ``"rk4"``.
        n_steps:       number of steps L over ``[0, T]``; ``h = T/L``.
        h:             the step.
        max_abs_eig:   ``ρ = max |λ|`` over the eigenvalues considered.
        stiffness:     ``h·ρ`` (for a real negative spectrum stability needs ``h·ρ ≤ bound``).
        bound:         the method's stability interval on the negative real axis (2 for Euler, 2.785 for RK4).
        amplification: ``max |R(hλ)|`` over the eigenvalues with ``Re λ ≤ 0`` (``R(z) = 1 + z`` for Euler);
                       absolute stability means ``≤ 1``.
        growth:        ``amplification ** n_steps``, the worst spurious amplification over the horizon.
        stable:        ``amplification ≤ 1 + 1e-12``, or ``growth ≤ max_growth`` when that was given.
        min_steps:     the smallest ``n_steps`` meeting the same criterion (None if none up to 2^20).
    """

    method: str
    n_steps: int
    h: float
    max_abs_eig: float
    stiffness: float
    bound: float
    amplification: float
    growth: float
    stable: bool
    min_steps: int | None


def check_int(system: str, name: str, value, low: int | None = None) -> None:
    """Raise :class:`SystemSpecError` naming ``name`` unless ``value`` is an int (not bool) ``≥ low``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise SystemSpecError(f"{system}: parameter {name!r} must be an integer, got {value!r}")
    if low is not None and value < low:
        raise SystemSpecError(f"{system}: parameter {name!r} must be >= {low}, got {value!r}")


@dataclasses.dataclass(repr=False)
class PDESystem(TeacherFlow):
    """Base class of the periodic 1-D method-of-lines teachers (see the module docstring for the conventions).

    Parameters (dataclass fields; subclasses add their coefficients):
        horizon:      T.
        n_grid:       N grid points (``dim = N``); at least 8, even for spectral schemes.
        length:       ℓ, the period (default 2π, so the wavenumbers are the integers).
        id_k_max:     highest Fourier mode of in-distribution initial states (``1 ≤ id_k_max``).
        id_amplitude: their expected RMS amplitude.
        ood_k_max:    highest mode of OOD initial states (``id_k_max ≤ ood_k_max < N/2``).
        ood_amplitude: their expected RMS amplitude.

    Class attributes: ``linear`` (the flow is the exact exponential of the semi-discrete operator) and
    ``spectral`` (the scheme uses the FFT and needs an even ``n_grid``; a property where it depends on a
    ``scheme`` parameter).

    API beyond :class:`~systems.base.TeacherFlow`: ``dim``/``dx``/``grid()``; the law's pieces ``symbol()``,
    ``apply_linear(u)``, ``linear_matrix()``, ``nonlinear_hat(v)``, ``nonlinear_jvp_hat(v, dv)`` and the
    matrix-free ``jvp(t, u, v)``; ``flow(x0, t, max_step=None)``, ``flow_jacobian(x0, t, max_step=None)``,
    ``propagator(t)`` (linear), ``max_step()``; samplers ``fourier_series``/``sample_id``/``sample_ood``;
    diagnostics ``mean``, ``l2_norm``, ``energy``, ``rms``, ``mode_amplitudes``, ``eigenvalues(states)``,
    ``check_stability(n_steps, method, states, max_growth, action)``. Subclasses implement ``symbol`` and, if
    semilinear, ``nonlinear_hat``/``nonlinear_jvp_hat``/``jvp``/``jacobian`` (and may override
    ``vector_field`` with a stencil).
    """

    name: ClassVar[str] = "pde"
    autonomous: ClassVar[bool] = True
    closed_form: ClassVar[bool] = False
    linear: ClassVar[bool] = False
    spectral: ClassVar[bool] = True
    min_grid: ClassVar[int] = 8

    horizon: float = 1.0
    n_grid: int = 32
    length: float = TWO_PI
    id_k_max: int = 3
    id_amplitude: float = 1.0
    ood_k_max: int = 6
    ood_amplitude: float = 1.0

    # ------------------------------------------------------------------ geometry
    @property
    def dim(self) -> int:  # type: ignore[override]
        """State dimension: the number of grid points."""
        return int(self.n_grid)

    @property
    def flow_kind(self) -> str:
        return "exact semi-discrete flow" if self.linear else "ETDRK4"

    @property
    def dx(self) -> float:
        """Grid spacing ``ℓ/N``."""
        return float(self.length) / int(self.n_grid)

    def grid(self, dtype: torch.dtype = torch.float64, device=None) -> Tensor:
        """Grid points ``x_j = j·dx``, ``j = 0..N-1``."""
        return torch.arange(self.n_grid, dtype=dtype, device=device) * self.dx

    # nominal per-point boxes (3σ of the Gaussian samples); informative only, e.g. for plots: samples are
    # Gaussian random fields, not uniform in a box, and may leave them
    @property
    def id_low(self) -> tuple[float, ...]:  # type: ignore[override]
        return (-3.0 * float(self.id_amplitude),) * self.dim

    @property
    def id_high(self) -> tuple[float, ...]:  # type: ignore[override]
        return (3.0 * float(self.id_amplitude),) * self.dim

    @property
    def ood_low(self) -> tuple[float, ...]:  # type: ignore[override]
        return (-3.0 * max(float(self.ood_amplitude), float(self.id_amplitude)),) * self.dim

    @property
    def ood_high(self) -> tuple[float, ...]:  # type: ignore[override]
        return (3.0 * max(float(self.ood_amplitude), float(self.id_amplitude)),) * self.dim

    # ------------------------------------------------------------------ validation
    def max_mode(self) -> int:
        """Highest Fourier mode an initial state may contain (``ood_k_max`` is checked against it)."""
        return (int(self.n_grid) - 1) // 2

    def validate(self) -> None:
        n = self.name
        check_int(n, "n_grid", self.n_grid, low=self.min_grid)
        if self.spectral and self.n_grid % 2:
            raise SystemSpecError(f"{n}: parameter 'n_grid' must be even for the spectral scheme, got {self.n_grid}")
        check_real(n, "length", self.length, positive=True)
        check_int(n, "id_k_max", self.id_k_max, low=1)
        check_int(n, "ood_k_max", self.ood_k_max, low=int(self.id_k_max))
        if self.ood_k_max > self.max_mode():
            raise SystemSpecError(f"{n}: parameter 'ood_k_max' = {self.ood_k_max} exceeds the highest mode "
                                  f"{self.max_mode()} this scheme resolves on n_grid = {self.n_grid}")
        check_real(n, "id_amplitude", self.id_amplitude, positive=True)
        check_real(n, "ood_amplitude", self.ood_amplitude, positive=True)
        if self.ood_k_max == self.id_k_max and float(self.ood_amplitude) == float(self.id_amplitude):
            raise SystemSpecError(f"{n}: parameters 'ood_k_max' and 'ood_amplitude' equal the ID ones; the OOD "
                                  "distribution would be the ID distribution")

    # ------------------------------------------------------------------ the semi-discrete law
    def symbol(self, dtype: torch.dtype = torch.float64, device=None) -> Tensor:
        """Fourier symbol ``λ_k`` (complex, on the rfft modes ``k = 0..N//2``) of the linear part ``L_h``."""
        raise NotImplementedError

    def apply_linear(self, u: Tensor) -> Tensor:
        """``L_h u`` along the last axis (by FFT)."""
        return apply_symbol(self.symbol(u.dtype, u.device), u)

    def nonlinear_hat(self, v: Tensor) -> Tensor:
        """``rfft(N_h(irfft(v)))`` for the rfft coefficients ``v`` (zero for a linear PDE)."""
        return torch.zeros_like(v)

    def nonlinear_jvp_hat(self, v: Tensor, dv: Tensor) -> Tensor:
        """``∂N̂/∂v (v) · dv`` in Fourier space (``v`` broadcastable against ``dv``); zero for a linear PDE."""
        return torch.zeros_like(dv)

    def vector_field(self, t, x: Tensor) -> Tensor:
        """The semi-discrete law ``f(u) = L_h u + N_h(u)`` for ``u`` of shape ``(..., N)``."""
        self._check_state(x)
        n = x.shape[-1]
        v = torch.fft.rfft(x, dim=-1)
        lam = self.symbol(x.dtype, x.device).to(v.dtype)
        return torch.fft.irfft(lam * v + self.nonlinear_hat(v), n=n, dim=-1)

    def jvp(self, t, u: Tensor, v: Tensor) -> Tensor:
        """Matrix-free Jacobian action ``J(u) v = ∂f/∂u (u) · v`` (``u``, ``v`` broadcastable, grid last)."""
        return self.apply_linear(v)

    def linear_matrix(self, dtype: torch.dtype = torch.float64, device=None) -> Tensor:
        """Dense ``N x N`` matrix of ``L_h``."""
        return symbol_matrix(self.symbol(torch.float64), self.n_grid).to(dtype=dtype, device=device)

    def jacobian(self, t, x: Tensor) -> Tensor:
        """Dense ``∂f/∂u``, shape ``(..., N, N)`` (here: the linear part; semilinear systems override)."""
        self._check_state(x)
        A = self.linear_matrix(x.dtype, x.device)
        return A.expand(*x.shape[:-1], self.dim, self.dim).clone()

    # ------------------------------------------------------------------ flows
    def max_step(self) -> float:
        """Largest ETDRK4 substep (semilinear systems); see the subclass for the rule."""
        return float(self.horizon) / 64

    def flow(self, x0: Tensor, t, max_step: float | None = None) -> Tensor:
        """``u(t_k)`` from ``u(t_0) = x0``, shape ``(len(t), *x0.shape)``; computed in float64, returned in
        ``x0``'s dtype; differentiable in ``x0``.

        Linear PDEs: exact exponential of the semi-discrete operator. Semilinear: ETDRK4 with each interval of
        ``t`` split into equal substeps ``≤ max_step`` (default :meth:`max_step`).
        """
        x0 = float_state(x0)
        self._check_state(x0)
        tg = as_time_grid(t)
        u = x0.to(torch.float64)
        if self.linear:
            tau = (tg - tg[0]).to(u.device)
            lam = self.symbol(torch.float64, u.device)
            prop = torch.exp(tau.reshape(-1, *([1] * u.ndim)) * lam)           # (K, 1.., modes)
            out = torch.fft.irfft(prop * torch.fft.rfft(u, dim=-1), n=self.n_grid, dim=-1)
            out = torch.cat([u[None], out[1:]])                                    # t_0: x0 exactly
        else:
            out = etdrk4_solve(u, tg, self.symbol(torch.float64, u.device), self.nonlinear_hat,
                               self._step(max_step))
        return out.to(x0.dtype)

    def propagator(self, t, dtype: torch.dtype = torch.float64) -> Tensor:
        """Linear PDEs: the exact propagators ``exp((t_k - t_0) L_h)``, shape ``(len(t), N, N)``."""
        if not self.linear:
            raise NotImplementedError(f"{self.name} is not linear; use flow_jacobian")
        tg = as_time_grid(t)
        lam = self.symbol(torch.float64)
        props = [symbol_matrix(torch.exp(float(s - tg[0]) * lam), self.n_grid) for s in tg]
        return torch.stack(props).to(dtype)

    def flow_jacobian(self, x0: Tensor, t, rtol: float = 1e-10, atol: float = 1e-12,
                      max_step: float | None = None) -> Tensor:
        """``∂u(t_k)/∂u0``, shape ``(len(t), *x0.shape[:-1], N, N)``.

        Linear PDEs: the exact propagator ``F⁻¹ diag(e^{λ(t_k - t_0)}) F``. Semilinear: the exact derivative of
        the discrete ETDRK4 flow (the same steps as :meth:`flow`), propagated stage by stage with
        :meth:`nonlinear_jvp_hat` (equal to ``vmap(jacfwd(flow))`` but ~20x faster). ``rtol``/``atol`` are
        unused (kept for the base signature).
        """
        x0 = float_state(x0)
        self._check_state(x0)
        tg = as_time_grid(t)
        d = self.dim
        batch = x0.shape[:-1]
        if self.linear:
            M = self.propagator(tg).to(x0.device)
            return M.reshape(tg.numel(), *([1] * len(batch)), d, d).expand(tg.numel(), *batch, d, d) \
                .to(x0.dtype).clone()
        step = self._step(max_step)
        flat = x0.detach().to(torch.float64).reshape(-1, d)
        eye = torch.eye(d, dtype=torch.float64, device=flat.device).expand(flat.shape[0], d, d)
        _, tangents = etdrk4_solve_tangent(flat, eye, tg, self.symbol(torch.float64, flat.device),
                                           self.nonlinear_hat, self.nonlinear_jvp_hat, step)   # (K, B, j, i)
        return tangents.transpose(-1, -2).reshape(tg.numel(), *batch, d, d).to(x0.dtype)

    def _step(self, max_step: float | None) -> float:
        step = self.max_step() if max_step is None else max_step
        if isinstance(step, bool) or not isinstance(step, numbers.Real) or not (step > 0 and math.isfinite(step)):
            raise SystemSpecError(f"{self.name}: max_step must be a positive finite number, got {max_step!r}")
        return float(step)

    # ------------------------------------------------------------------ samplers
    def fourier_series(self, n: int, k_max: int, amplitude: float, generator: torch.Generator | None = None,
                       dtype: torch.dtype = torch.float64) -> Tensor:
        """``n`` random series ``Σ_{k=1..k_max} a_k cos(2πkx/ℓ) + b_k sin(2πkx/ℓ)`` on the grid,
        ``a_k, b_k ~ N(0, amplitude²/k_max)`` i.i.d. (expected RMS ``amplitude``); drawn in float64, then cast."""
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
            raise SystemSpecError(f"{self.name}: number of samples must be a non-negative integer, got {n!r}")
        sigma = float(amplitude) / math.sqrt(k_max)
        coef = torch.randn(int(n), 2, k_max, generator=generator, dtype=torch.float64) * sigma
        k = torch.arange(1, k_max + 1, dtype=torch.float64)
        phase = (TWO_PI / float(self.length)) * k[:, None] * self.grid()[None, :]          # (K, N)
        u = coef[:, 0] @ torch.cos(phase) + coef[:, 1] @ torch.sin(phase)
        return u.to(dtype)

    def sample_id(self, n: int, generator: torch.Generator | None = None,
                  dtype: torch.dtype = torch.float64) -> Tensor:
        """``n`` in-distribution initial states: modes ``1..id_k_max``, expected RMS ``id_amplitude``."""
        return self.fourier_series(n, int(self.id_k_max), float(self.id_amplitude), generator, dtype)

    def sample_ood(self, n: int, generator: torch.Generator | None = None,
                   dtype: torch.dtype = torch.float64) -> Tensor:
        """``n`` OOD initial states: modes ``1..ood_k_max``, expected RMS ``ood_amplitude``."""
        return self.fourier_series(n, int(self.ood_k_max), float(self.ood_amplitude), generator, dtype)

    # ------------------------------------------------------------------ diagnostics
    def mean(self, u: Tensor) -> Tensor:
        """Grid mean ``(1/N) Σ_j u_j`` (= ``(1/ℓ) ∫ u dx`` for the trapezoid rule), shape ``u.shape[:-1]``."""
        return u.mean(-1)

    def l2_norm(self, u: Tensor) -> Tensor:
        """Discrete ``L²(0, ℓ)`` norm ``(dx Σ_j u_j²)^{1/2}``."""
        return torch.sqrt(self.dx * (u * u).sum(-1))

    def energy(self, u: Tensor) -> Tensor:
        """``½ ‖u‖²`` in the discrete ``L²`` norm."""
        return 0.5 * self.dx * (u * u).sum(-1)

    def rms(self, u: Tensor) -> Tensor:
        """Root mean square ``(1/N Σ_j u_j²)^{1/2}``."""
        return torch.sqrt((u * u).mean(-1))

    def mode_amplitudes(self, u: Tensor) -> Tensor:
        """Amplitudes ``√(a_k² + b_k²)`` of ``u = Σ_k a_k cos(2πkx/ℓ) + b_k sin(2πkx/ℓ)``, ``k = 0..N//2``
        (entry 0 is ``|mean|``; exact for band-limited ``u`` with ``k < N/2``)."""
        v = torch.fft.rfft(u, dim=-1).abs() * (2.0 / self.n_grid)
        v[..., 0] = v[..., 0] / 2
        return v

    def eigenvalues(self, states: Tensor | None = None) -> Tensor:
        """Eigenvalues of the semi-discrete law's Jacobian (complex, 1-D).

        Linear PDEs: the symbol ``λ_k`` on the rfft modes (every eigenvalue, up to conjugation). Semilinear:
        the eigenvalues of ``J(u)`` at ``states`` (default: 8 ID samples from seed 0 and their states at
        ``T/2`` and ``T``).
        """
        if self.linear:
            return self.symbol(torch.float64)
        if states is None:
            u0 = self.sample_id(8, torch.Generator().manual_seed(0))
            states = self.flow(u0, [0.0, 0.5 * float(self.horizon), float(self.horizon)]).reshape(-1, self.dim)
        states = torch.as_tensor(states, dtype=torch.float64).reshape(-1, self.dim)
        return torch.linalg.eigvals(self.jacobian(0.0, states)).reshape(-1)

    def check_stability(self, n_steps: int, method: str = "euler", states: Tensor | None = None,
                        max_growth: float | None = None, action: str = "raise") -> StabilityReport:
        """Is an explicit ``method`` with ``n_steps`` equal steps of ``h = T/n_steps`` stable on the teacher?

        The method's stability polynomial ``R`` (``1 + z`` for forward Euler, the residual network's layer) is
        evaluated at ``z = hλ`` for the :meth:`eigenvalues` ``λ`` with ``Re λ ≤ 0`` (growing modes are physics,
        not instability). Absolute stability is ``max |R(hλ)| ≤ 1``; for a real negative spectrum this is the CFL
        / stiffness condition ``h·max|λ| ≤ bound`` (2 for Euler and RK2, 2.785 for RK4). A purely imaginary
        spectrum (transport) is never absolutely stable under Euler or RK2; pass ``max_growth`` to accept a
        bounded spurious growth ``max|R|^{n_steps} ≤ max_growth`` over the horizon instead. ``states``: where to
        linearise a semilinear law (see :meth:`eigenvalues`; ignored for linear PDEs).

        ``action``: ``"raise"`` (:class:`SystemSpecError` naming the constraint), ``"warn"``
        (:class:`StabilityWarning`) or ``"ignore"``; the :class:`StabilityReport` is returned unless raised.
        """
        if method not in _STABILITY:
            raise SystemSpecError(f"{self.name}: unknown method {method!r}; known: {', '.join(_STABILITY)}")
        if action not in ("raise", "warn", "ignore"):
            raise SystemSpecError(f"{self.name}: action must be 'raise', 'warn' or 'ignore', got {action!r}")
        check_int(self.name, "n_steps", n_steps, low=1)
        if max_growth is not None:
            check_real(self.name, "max_growth", max_growth, positive=True)
        poly, bound = _STABILITY[method]
        lam = self.eigenvalues(states).to(torch.complex128)
        lam = lam[lam.real <= 1e-12 * max(1.0, float(lam.abs().max()))]
        T = float(self.horizon)
        rho = float(lam.abs().max()) if lam.numel() else 0.0

        def amp(n: int) -> float:
            z = (T / n) * lam
            r = torch.zeros_like(z)
            for c in reversed(poly):
                r = r * z + c
            return float(r.abs().max()) if lam.numel() else 1.0

        def ok(n: int) -> bool:
            a = amp(n)
            if max_growth is None:
                return a <= 1.0 + 1e-12
            return n * math.log(max(a, 1e-300)) <= math.log(max_growth)

        a = amp(int(n_steps))
        stable = ok(int(n_steps))
        min_steps = None
        hi = 1
        while hi <= 2 ** 20 and not ok(hi):
            hi *= 2
        if hi <= 2 ** 20:
            lo = hi // 2            # not ok (or 0)
            while hi - lo > 1:
                mid = (lo + hi) // 2
                lo, hi = (lo, mid) if ok(mid) else (mid, hi)
            min_steps = hi
        h = T / int(n_steps)
        growth = math.exp(min(700.0, int(n_steps) * math.log(max(a, 1e-300))))
        report = StabilityReport(method, int(n_steps), h, rho, h * rho, bound, a, growth, stable, min_steps)
        if not stable and action != "ignore":
            need = f"n_steps >= {min_steps}" if min_steps is not None else "an implicit or exponential integrator"
            crit = "|R(hλ)| <= 1" if max_growth is None else f"max|R(hλ)|^n_steps <= max_growth = {max_growth:g}"
            msg = (f"{self.name}: explicit {method} with n_steps = {n_steps} (h = T/n_steps = {h:.4g}) is unstable: "
                   f"stiffness h·max|λ| = {h * rho:.4g} vs the {method} stability bound {bound:.4g} on the negative "
                   f"real axis; max |R(hλ)| = {a:.6g} (spurious growth {growth:.3g} over the horizon) violates "
                   f"{crit}; CFL/stiffness constraint needs {need}")
            if action == "raise":
                raise SystemSpecError(msg)
            warnings.warn(msg, StabilityWarning, stacklevel=2)
        return report


class SchemeChoice:
    """Mixin for linear PDEs offered in several spatial discretisations: a dataclass field ``scheme`` taking one
    of the class attribute ``SCHEMES`` (``"spectral"`` = the FFT scheme, which makes :attr:`spectral` true)."""

    SCHEMES: ClassVar[tuple[str, ...]] = ("spectral",)
    scheme: str

    @property
    def spectral(self) -> bool:
        return self.scheme == "spectral"

    def check_scheme(self) -> None:
        """Raise :class:`SystemSpecError` naming ``scheme`` unless it is one of ``SCHEMES``."""
        if self.scheme not in self.SCHEMES:
            raise SystemSpecError(f"{self.name}: parameter 'scheme' must be one of {self.SCHEMES}, "  # type: ignore[attr-defined]
                                  f"got {self.scheme!r}")

    def circulant_stencil(self) -> Stencil:
        """The full circulant row of the spectral operator ``L_h`` as a stencil (offsets ``-N/2+1 .. N/2``)."""
        n = self.n_grid  # type: ignore[attr-defined]
        row = circulant_row(self.symbol(), n)  # type: ignore[attr-defined]
        offsets = tuple(range(-n // 2 + 1, n // 2 + 1))
        return Stencil(offsets, tuple(float(row[m % n]) for m in offsets))

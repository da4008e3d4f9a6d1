"""A sparse-regression baseline (SINDy; Brunton, Proctor & Kutz 2016) behind the student interface.

The learned law is ``f̂(x) = Θ(x) Ξ``: ``Θ(x)`` the monomials ``Π_j x_j^{p_kj}`` of total degree ≤ ``degree``
(a declared library) and ``Ξ`` (n_features × d) sparse coefficients from sequentially thresholded least squares
(STLSQ, via PySINDy: optional extra ``[sindy]``). As a :class:`~testbed.students.base.Student` it evaluates ``f̂`` in
torch (so every field metric, Jacobian and re-integration applies unchanged) and its "network" is ``L`` classical
RK4 steps of ``f̂`` over ``[0, T]`` — the fixed-step flow of the law it found.

Two information-matched fits (:func:`fit_sindy`), on exactly the training data the neural students see:

* ``states``  derivatives estimated from the observed states alone (second-order finite differences along each
  trajectory's observation times) — the information of the ``trajectory`` objective;
* ``field``   the observed vector-field samples ``f*(x_k)`` at those states — the information of ``field``.

The STLSQ threshold is chosen on a validation split (:func:`select_threshold`): for ``field`` the relative error of
``f̂`` against the validation velocities, for ``states`` the relative error of the RK4 roll-out against the
validation trajectories' observed states (what each variant may see).
"""

from __future__ import annotations

import itertools
import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from testbed.config import ConfigError
from testbed.students.base import Student

Tensor = torch.Tensor
VARIANTS = ("states", "field")
#: STLSQ thresholds tried (relative to the columns' scale: PySINDy's ``normalize_columns``); 0 = least squares
THRESHOLDS = (0.0, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3)


def monomial_powers(dim: int, degree: int) -> np.ndarray:
    """Exponents ``p`` (n_features, dim) of every monomial of total degree ≤ ``degree``, constant first, degree by
    degree, each degree in lexicographic order of the variables."""
    rows = [np.zeros(dim, dtype=int)]
    for deg in range(1, degree + 1):
        for combo in itertools.combinations_with_replacement(range(dim), deg):
            p = np.zeros(dim, dtype=int)
            for j in combo:
                p[j] += 1
            rows.append(p)
    return np.stack(rows)


def features(x: Tensor, powers: Tensor) -> Tensor:
    """``Θ(x)``: ``(..., d)`` → ``(..., n_features)``, ``Θ_k = Π_j x_j^{p_kj}``."""
    return torch.prod(x[..., None, :] ** powers.to(x.dtype), dim=-1)


class SindyStudent(Student):
    """``f̂(x) = Θ(x) Ξ`` with ``L`` RK4 steps over ``[0, T]`` as its propagation field."""

    def __init__(self, dim: int, n_layers: int, horizon: float, degree: int, coefficients: Tensor | None = None,
                 variant: str = "field", threshold: float = 0.0) -> None:
        super().__init__()
        self.dim, self.n_layers, self.horizon = int(dim), int(n_layers), float(horizon)
        self.degree, self.variant, self.threshold = int(degree), str(variant), float(threshold)
        powers = torch.as_tensor(monomial_powers(self.dim, self.degree))
        self.register_buffer("powers", powers)
        coef = torch.zeros(len(powers), self.dim, dtype=torch.float64) if coefficients is None else coefficients
        self.coef = torch.nn.Parameter(torch.as_tensor(coef, dtype=torch.float64).clone(), requires_grad=False)

    def vector_field(self, t: Tensor | float, x: Tensor) -> Tensor:
        return features(x, self.powers) @ self.coef.to(x.dtype)

    def step(self, l: int, h: Tensor) -> Tensor:
        dt = self.horizon / self.n_layers
        t = l * dt
        k1 = self.vector_field(t, h)
        k2 = self.vector_field(t + dt / 2, h + dt / 2 * k1)
        k3 = self.vector_field(t + dt / 2, h + dt / 2 * k2)
        k4 = self.vector_field(t + dt, h + dt * k3)
        return h + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)

    @property
    def autonomous(self) -> bool:
        return True

    @property
    def n_terms(self) -> int:
        """Number of nonzero coefficients (the sparsity SINDy found)."""
        return int(torch.count_nonzero(self.coef))

    def spec(self) -> dict[str, Any]:
        return {"dim": self.dim, "n_layers": self.n_layers, "horizon": self.horizon, "degree": self.degree,
                "variant": self.variant, "threshold": self.threshold}


# ------------------------------------------------------------------------------------------------ fitting
def _pysindy():
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pysindy
    except ImportError as err:
        raise ConfigError("the SINDy baseline needs the optional extra: pip install "
                          f"'propagation-field-testbed[sindy]' (or pip install pysindy) — {err}") from None
    return pysindy


def finite_difference_velocities(t: Tensor, states: Tensor) -> Tensor:
    """Finite-difference ``dx/dt`` along each trajectory: ``states`` (K+1, N, d) on the grid ``t`` (K+1,),
    non-uniform allowed — second order (central inside, one-sided at the ends) when K + 1 ≥ 3, first order for two
    points; a single observation has no derivative (ValueError)."""
    if states.shape[0] < 2:
        raise ValueError("finite differences need at least two observation times")
    x = states.detach().to(torch.float64).numpy()
    tt = t.detach().to(torch.float64).numpy()
    return torch.from_numpy(np.gradient(x, tt, axis=0, edge_order=2 if len(tt) > 2 else 1))


def fit_coefficients(x: np.ndarray, xdot: np.ndarray, degree: int, threshold: float) -> np.ndarray:
    """STLSQ coefficients ``Ξ`` (n_features, d) of ``xdot ≈ Θ(x) Ξ`` in the :func:`monomial_powers` order."""
    ps = _pysindy()
    d = x.shape[1]
    opt = ps.STLSQ(threshold=threshold, alpha=1e-8, normalize_columns=True, max_iter=50)
    model = ps.SINDy(optimizer=opt, feature_library=ps.PolynomialLibrary(degree=degree, include_bias=True))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")           # STLSQ warns when a threshold eliminates every term
        model.fit(x, t=1.0, x_dot=xdot)
    lib_powers = np.asarray(model.feature_library.powers_)            # (n_features, d) in PySINDy's order
    ours = monomial_powers(d, degree)
    index = {tuple(p): i for i, p in enumerate(lib_powers)}
    coef = np.asarray(model.coefficients())                           # (d, n_features)
    return np.stack([coef[:, index[tuple(p)]] for p in ours])         # (n_features, d), our order


def training_pairs(data, variant: str) -> tuple[np.ndarray, np.ndarray]:
    """``(x, xdot)`` rows the ``variant`` may use: every observed state with its observed velocity (``field``) or its
    finite-difference estimate from the observed states (``states``)."""
    if variant not in VARIANTS:
        raise ConfigError(f"SINDy variant must be one of {VARIANTS}, got {variant!r}")
    xdot = data.velocities if variant == "field" else finite_difference_velocities(data.t, data.states)
    d = data.states.shape[-1]
    return (data.states.detach().to(torch.float64).reshape(-1, d).numpy(),
            xdot.detach().to(torch.float64).reshape(-1, d).numpy())


def validation_error(student: SindyStudent, val_data) -> float:
    """What the threshold is chosen on: relative L2 error of ``f̂`` vs the validation velocities (``field``), or of
    the RK4 roll-out vs the validation trajectories' observed states (``states``); ``inf`` if it diverges."""
    with torch.no_grad():
        if student.variant == "field":
            pred = torch.stack([student.vector_field(float(t), s) for t, s in zip(val_data.t, val_data.states,
                                                                                   strict=True)])
            target = val_data.velocities
        else:
            pred = student.trajectory(val_data.x0.to(torch.float64), val_data.t.to(torch.float64))[1:]
            target = val_data.states[1:]
        err = float((pred - target).norm() / target.norm().clamp_min(1e-300))
    return err if math.isfinite(err) else math.inf


@dataclass
class SindyFit:
    """The chosen student and every candidate threshold's validation error."""

    student: SindyStudent
    validation: dict[float, float]


def fit_sindy(train_data, val_data, *, variant: str, n_layers: int, horizon: float, degree: int = 3,
              thresholds: tuple[float, ...] = THRESHOLDS) -> SindyFit:
    """Fit every threshold on ``train_data`` and keep the one with the smallest validation error (ties: the larger
    threshold, the sparser law)."""
    x, xdot = training_pairs(train_data, variant)
    d = x.shape[1]
    results: dict[float, tuple[float, SindyStudent]] = {}
    for th in thresholds:
        coef = fit_coefficients(x, xdot, degree, th)
        s = SindyStudent(d, n_layers, horizon, degree, torch.from_numpy(coef), variant=variant, threshold=th)
        results[th] = (validation_error(s, val_data), s)
    best = min(results.values(), key=lambda r: (r[0], -r[1].threshold))
    return SindyFit(best[1], {th: r[0] for th, r in results.items()})

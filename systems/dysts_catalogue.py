"""The ``dysts`` catalogue of chaotic flows (Gilpin 2021; optional extra ``[dysts]``) as teachers: ``dysts:Lorenz``.

Each flow keeps its published parameters and right-hand side (dysts' numpy ``rhs``, vectorised over a batch
``(N, d)``), in float64, with dysts' analytic Jacobian where it has one (:func:`has_analytic_jacobian`; checked
against central differences on load) and the complex-step / central-difference Jacobian of :mod:`systems.user`
otherwise. What dysts does not fix is chosen from its metadata:

* **horizon** ``T = min(HORIZON_PERIODS · period, HORIZON_LYAPUNOV / λ_max)`` — a quarter of the dominant period,
  capped at half a Lyapunov time ``1/λ_max``, so the flow map over ``[0, T]`` stays learnable (nearby states have
  separated by at most ``e^{1/2}`` ≈ 1.6× through the chaos);
* **boxes** from the statistics of dysts' reference trajectory on the attractor (``mean``, ``std`` per coordinate):
  ID initial states uniform in ``mean ± ID_STDS·std``, OOD states in ``mean ± k·std`` minus the ID box, with ``k``
  the widest of :data:`OOD_STDS` from which the flow stays bounded over ``T`` (some attractors sit in a bounded
  basin: beyond it states escape to infinity).

A flow whose metadata lack these, whose reference flow blows up from ID states within ``T`` (unbounded
coordinates), or that is too stiff for DOP853 at ``rtol = 1e-11`` raises one :class:`~systems.base.SystemSpecError`
line with the reason (:func:`systems.user.check_flow`); a benchmark over the catalogue records it and goes on.
"""

from __future__ import annotations

import difflib
import math
import warnings
from typing import Any

import numpy as np

from systems.base import SystemSpecError, TeacherFlow

PREFIX = "dysts:"
HORIZON_PERIODS = 0.25
HORIZON_LYAPUNOV = 0.5
ID_STDS = 1.0
#: the OOD box: the widest of these (in attractor standard deviations) from which the flow stays bounded over T
OOD_STDS = (2.0, 1.5, 1.25)


def _flows_module():
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")          # "Numba not installed": plain numpy is fine for batches
            import dysts.flows as flows
    except ImportError as err:
        raise SystemSpecError("dysts systems need the optional extra: pip install 'propagation-field-testbed[dysts]'"
                              f" (or pip install dysts) — {err}") from None
    return flows


def catalogue() -> list[str]:
    """Names of every dysts flow (``dysts:NAME`` refers to one)."""
    flows = _flows_module()
    from dysts.systems import get_attractor_list

    return [n for n in get_attractor_list() if hasattr(flows, n)]


def model(name: str) -> Any:
    """The dysts model object ``name`` (its default, published parameters)."""
    flows = _flows_module()
    if not hasattr(flows, name):
        close = difflib.get_close_matches(name, catalogue(), n=3)
        hint = f" Did you mean {', '.join(PREFIX + c for c in close)}?" if close else ""
        raise SystemSpecError(f"unknown dysts system {name!r}.{hint}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return getattr(flows, name)()


def has_analytic_jacobian(name: str) -> bool:
    return bool(model(name).has_jacobian())


def _stack_coords(values: Any, n: int) -> np.ndarray:
    """dysts' ``rhs`` returns one array (or scalar) per coordinate: broadcast each to ``(n,)``, stack → ``(n, d)``
    (complex input stays complex, so the complex-step Jacobian applies)."""
    return np.stack([np.broadcast_to(np.asarray(v), (n,)) for v in values], axis=-1)


def _vectorised(m: Any, d: int, x0: np.ndarray) -> bool:
    """Whether dysts' ``rhs`` of ``m`` is right on a batch: tried on ``d + 1`` states near ``x0`` (a row count other
    than ``d``, where a per-state ``rhs`` that unpacks ``x, y, z = X`` would silently misread the batch) against the
    states one at a time."""
    probe = x0[None, :] * (1.0 + 0.01 * np.arange(d + 1)[:, None]) + 1e-3 * np.arange(d + 1)[:, None]
    rows = np.stack([np.asarray(m.rhs(r, 0.0), dtype=float).reshape(d) for r in probe])
    try:
        out = _stack_coords(m.rhs(probe, 0.0), d + 1)
    except (ValueError, TypeError, IndexError, AttributeError):
        return False
    return out.shape == rows.shape and bool(np.allclose(out, rows, rtol=1e-10, atol=1e-12))


def description(name: str, ood_stds: float = OOD_STDS[0]) -> dict[str, Any]:
    """The :class:`systems.user.FlowSpec` keys of ``dysts:name`` (horizon and boxes from its metadata)."""
    m = model(name)
    ref = PREFIX + name
    d = int(np.size(m.ic))
    period, lyap = getattr(m, "period", None), getattr(m, "maximum_lyapunov_estimated", None)
    mean, std = getattr(m, "mean", None), getattr(m, "std", None)
    candidates = []
    if period is not None and math.isfinite(float(period)) and float(period) > 0:
        candidates.append(HORIZON_PERIODS * float(period))
    if lyap is not None and math.isfinite(float(lyap)) and float(lyap) > 0:
        candidates.append(HORIZON_LYAPUNOV / float(lyap))
    if not candidates:
        raise SystemSpecError(f"system {ref!r}: dysts metadata give neither a period nor a Lyapunov exponent to "
                              "choose the horizon from")
    if mean is None or std is None or np.size(mean) != d or np.size(std) != d \
            or not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std))):
        raise SystemSpecError(f"system {ref!r}: dysts metadata have no finite attractor mean/std to place the boxes")
    mean, std = np.asarray(mean, float), np.maximum(np.asarray(std, float), 1e-6)

    if getattr(m, "delay", False):
        raise SystemSpecError(f"system {ref!r}: a delay differential equation (its state is a history, not a point "
                              "in R^d): not an ODE flow")
    # dysts' numpy rhs is vectorised for most flows (decided once, on a probe batch); the rest go row by row
    batched = _vectorised(m, d, mean)

    def field(t, x):
        x = np.asarray(x)
        if batched:
            return _stack_coords(m.rhs(x, t), x.shape[0])
        return np.stack([np.asarray(m.rhs(row, t)).reshape(d) for row in x]) if len(x) else np.zeros((0, d))

    spec: dict[str, Any] = {
        "name": ref, "vector_field": field, "dim": d, "horizon": min(candidates),
        "id_box": (mean - ID_STDS * std, mean + ID_STDS * std),
        "ood_box": (mean - ood_stds * std, mean + ood_stds * std),
        "autonomous": not bool(getattr(m, "nonautonomous", False)),
    }
    if m.has_jacobian():
        def jacobian(t, x):
            x = np.asarray(x)
            return np.stack([np.asarray(m.jac(row, t), dtype=float) for row in x]) if len(x) else np.zeros((0, d, d))

        spec["jacobian"] = jacobian
    return spec


def dysts_flow_class(ref: str) -> type[TeacherFlow]:
    """The checked :class:`TeacherFlow` class of ``dysts:NAME``."""
    from systems import user

    name = ref[len(PREFIX):]
    for i, k in enumerate(OOD_STDS):
        cls = user.flow_class(user.FlowSpec.from_mapping(description(name, k), f"system {ref!r}"), ref)
        try:
            user.check_flow(cls(), f"system {ref!r}")
            return cls
        except SystemSpecError as err:
            if "from OOD states" not in str(err) or i == len(OOD_STDS) - 1:
                raise
    raise AssertionError("unreachable")

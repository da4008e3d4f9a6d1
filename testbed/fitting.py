"""Power-law fits on log-log axes: observed convergence orders, scaling exponents."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def loglog_slope(xs: Sequence[float], ys: Sequence[float], floor: float = 0.0) -> float:
    """Least-squares slope ``s`` of ``log y = c + s·log x`` (``y ∝ x^s``) over the points with finite ``x > 0``
    and finite ``y > floor``. An observed convergence order is ``−s``. NaN when fewer than two points remain or
    all ``x`` coincide.
    """
    pts = [(float(x), float(y)) for x, y in zip(xs, ys, strict=True)
           if math.isfinite(float(x)) and float(x) > 0 and math.isfinite(float(y)) and float(y) > floor]
    if len(pts) < 2:
        return float("nan")
    lx = np.log([p[0] for p in pts])
    ly = np.log([p[1] for p in pts])
    lxc = lx - lx.mean()
    den = float((lxc * lxc).sum())
    return float((lxc * (ly - ly.mean())).sum() / den) if den > 0 else float("nan")


__all__ = ["loglog_slope"]

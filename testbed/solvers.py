"""The ODE solver names the testbed accepts: one table for the neural-ODE student and the consistency metric.

Every name is a :func:`torchdiffeq.odeint` method.

* :data:`FIXED_STEP_METHODS` — fixed-step methods (torchdiffeq's ``options={"step_size": …}``): the
  :class:`~testbed.students.NeuralODEStudent` takes any of them;
* :data:`ADAPTIVE_METHODS` — adaptive (error-controlled) methods (``rtol``/``atol``): the neural-ODE student and
  :func:`testbed.field.consistency.integrate` take any of them;
* :data:`LOOP_METHODS` — the fixed-step methods the testbed's own step loop implements
  (:func:`testbed.field.consistency.fixed_step_solve`, the same arithmetic as torchdiffeq without its per-step
  bookkeeping); :func:`testbed.field.consistency.integrate` re-integrates at a step count with these only.
"""

from __future__ import annotations

#: torchdiffeq fixed-step methods
FIXED_STEP_METHODS = ("euler", "midpoint", "rk4", "explicit_adams", "implicit_adams")
#: torchdiffeq adaptive methods
ADAPTIVE_METHODS = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun")
#: fixed-step methods of the testbed's own loop (a subset of FIXED_STEP_METHODS)
LOOP_METHODS = ("euler", "midpoint", "rk4")

__all__ = ["ADAPTIVE_METHODS", "FIXED_STEP_METHODS", "LOOP_METHODS"]

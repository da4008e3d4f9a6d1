"""An example of a system written outside the package: the unforced, damped Duffing oscillator as a *plain
description* (numpy, no import of this package needed).

    x' = y,   y' = −δ y − α x − β x³          (δ = 0.3, α = −1, β = 1: a double well)

Run it with ``testbed run law-recovery --quick --system systems/examples/user_duffing.py:DUFFING``. The Jacobian is
not given: it is derived by the complex step (the field is written with numpy operations that accept complex
input), and the flow by the DOP853 reference; both are checked on load.
"""

import numpy as np

DELTA, ALPHA, BETA = 0.3, -1.0, 1.0


def field(t, x):
    """``f(t, x)`` for a batch ``x`` of shape (N, 2)."""
    p, q = x[:, 0], x[:, 1]
    return np.stack([q, -DELTA * q - ALPHA * p - BETA * p**3], axis=1)


DUFFING = {
    "name": "duffing",
    "vector_field": field,
    "dim": 2,
    "horizon": 2.0,
    "id_box": ([-1.5, -1.0], [1.5, 1.0]),
    "ood_box": ([-2.0, -1.5], [2.0, 1.5]),
}

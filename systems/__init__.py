"""Ground-truth propagation laws: analytic teacher flows (and, later, PDE method-of-lines laws).

>>> import systems
>>> vdp = systems.get_system("van_der_pol", mu=1.0)
>>> systems.list_systems()  # doctest: +ELLIPSIS
[...]
"""

# importing the families registers them
from systems import flows  # noqa: E402,F401  (registration side effect)
from systems.base import SystemSpecError, TeacherFlow, as_time_grid
from systems.registry import get_system, list_systems, register, system_class, system_parameters

__all__ = [
    "SystemSpecError",
    "TeacherFlow",
    "as_time_grid",
    "get_system",
    "list_systems",
    "register",
    "system_class",
    "system_parameters",
]

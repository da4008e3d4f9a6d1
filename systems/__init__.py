"""Ground-truth propagation laws: analytic teacher flows (``systems.flows``) and method-of-lines PDE laws on a
periodic 1-D grid (``systems.pdes``: heat, advection, Burgers, Allen–Cahn, Kuramoto–Sivashinsky), all in one
registry.

>>> import systems
>>> vdp = systems.get_system("van_der_pol", mu=1.0)
>>> systems.list_systems()  # doctest: +ELLIPSIS
[...]
"""

# importing the families registers them
from systems import flows, pdes  # noqa: E402,F401  (registration side effect)
from systems.base import SystemSpecError, TeacherFlow, as_time_grid
from systems.registry import canonical_name, get_system, list_systems, register, system_class, system_parameters

__all__ = [
    "SystemSpecError",
    "TeacherFlow",
    "as_time_grid",
    "canonical_name",
    "get_system",
    "list_systems",
    "register",
    "system_class",
    "system_parameters",
]

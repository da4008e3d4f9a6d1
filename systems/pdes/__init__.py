"""Method-of-lines PDE teachers on a periodic 1-D grid (state = the grid values, ``dim = n_grid``).

Importing this package registers every system. Conventions (grid, samplers, norms, flows, stability checks)
are in :mod:`systems.pdes.base`; shared operators in :mod:`systems.pdes.operators`, the ETDRK4 integrator in
:mod:`systems.pdes.etdrk4`.

========================  ========================  ============================================================
system                    module                    law, discretisation, flow
========================  ========================  ============================================================
``heat``                  ``heat``                  ``u_t = ν u_xx``; 3-point FD or spectral; exact
``advection``             ``advection``             ``u_t = -c u_x``; spectral or upwind; exact
``burgers``               ``burgers``               ``u_t = -u u_x + ν u_xx``; pseudo-spectral, 2/3 rule; ETDRK4
``allen_cahn``            ``allen_cahn``            ``u_t = ε u_xx + u - u³``; Fourier collocation; ETDRK4
``kuramoto_sivashinsky``  ``kuramoto_sivashinsky``  ``u_t = -u u_x - u_xx - u_xxxx``; pseudo-spectral; ETDRK4
========================  ========================  ============================================================
"""

from systems.pdes import advection, allen_cahn, burgers, heat, kuramoto_sivashinsky  # noqa: F401  (registration)
from systems.pdes.advection import Advection
from systems.pdes.allen_cahn import AllenCahn
from systems.pdes.base import PDESystem, ResolutionWarning, StabilityReport, StabilityWarning
from systems.pdes.burgers import Burgers
from systems.pdes.heat import Heat
from systems.pdes.kuramoto_sivashinsky import KuramotoSivashinsky

__all__ = [
    "Advection",
    "AllenCahn",
    "Burgers",
    "Heat",
    "KuramotoSivashinsky",
    "PDESystem",
    "ResolutionWarning",
    "StabilityReport",
    "StabilityWarning",
]

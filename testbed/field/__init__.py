"""Field metrics: Jacobians along the propagation field, path sensitivity, law error, solver consistency."""

from testbed.field.consistency import (
    ConsistencyResult,
    default_step_counts,
    integrate,
    solver_consistency,
)
from testbed.field.jacobians import layer_jacobians, path_jacobians, vector_field_jacobian
from testbed.field.metrics import (
    PathSensitivity,
    endpoint_error,
    flow_jacobian_error,
    law_error,
    path_sensitivity,
    relative_l2,
    trajectory_error,
)

__all__ = [
    "ConsistencyResult", "PathSensitivity", "default_step_counts", "endpoint_error", "flow_jacobian_error",
    "integrate", "law_error", "layer_jacobians", "path_jacobians", "path_sensitivity", "relative_l2",
    "solver_consistency", "trajectory_error", "vector_field_jacobian",
]

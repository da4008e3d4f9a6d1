"""Field metrics: Jacobians along the propagation field, path sensitivity, law error, solver consistency,
field geometry (length, energy, curvature, layer conditioning) and matrix-free spectral norms (batched Lanczos).

The endpoint-equivalent constructions (conjugation, detour, warped clock, exact flow) are students:
:mod:`testbed.students.constructed`, exported by :mod:`testbed.students`."""

from testbed.field.consistency import (
    ConsistencyResult,
    default_step_counts,
    integrate,
    solver_consistency,
)
from testbed.field.geometry import (
    SUMMARY_KEYS,
    FieldGeometry,
    endpoint_sensitivity,
    field_geometry,
    geometry_from_tensors,
    jacobian_spectra,
    kinetic_energy,
    mean_curvature,
    path_logdet,
    total_curvature,
    trajectory_length,
    turning_angles,
)
from testbed.field.jacobians import layer_jacobians, path_jacobians, vector_field_jacobian
from testbed.field.lanczos import lanczos_extremes
from testbed.field.metrics import (
    PathSensitivity,
    endpoint_error,
    flow_jacobian_error,
    interior_error,
    is_aliased,
    law_error,
    path_sensitivity,
    relative_l2,
    trajectory_error,
)
from testbed.field.monitor import FieldMonitor, lightning_callback
from testbed.field.record import FieldRecord, record
from testbed.field.report import FieldReport, Retention, field_report, field_retention
from testbed.field.spectral import layer_spectral_norms, path_spectral_norms

__all__ = [
    "SUMMARY_KEYS", "FieldGeometry", "endpoint_sensitivity", "field_geometry", "geometry_from_tensors",
    "jacobian_spectra", "kinetic_energy", "mean_curvature", "path_logdet", "total_curvature",
    "trajectory_length", "turning_angles",
    "ConsistencyResult", "PathSensitivity", "default_step_counts", "endpoint_error", "flow_jacobian_error",
    "integrate", "interior_error", "is_aliased", "law_error", "layer_jacobians", "path_jacobians",
    "path_sensitivity", "relative_l2",
    "solver_consistency", "trajectory_error", "vector_field_jacobian",
    "lanczos_extremes", "layer_spectral_norms", "path_spectral_norms", "FieldRecord", "record",
    "FieldReport", "Retention", "field_report", "field_retention", "FieldMonitor", "lightning_callback",
]

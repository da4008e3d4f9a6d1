"""Students: residual networks (tied / untied, branch scalings, MLP or local-stencil branches) and neural
ODEs behind one interface, plus a residual classifier (embedding → propagation field → read-out), the adapter for
any model's residual stages, and constructed students (:mod:`testbed.students.constructed`: the teacher's exact
flow, warped clocks, conjugations and detours, which keep the endpoint map and change the field's interior).

``build_student(kind, **kwargs)`` constructs by registry name; ``student.spec()`` gives back the kwargs (the
adapter and the constructed students wrap live objects and are not in the registry).
"""

from __future__ import annotations

import inspect
from typing import Any

from testbed.config import ConfigError, lookup
from testbed.limits import build_checked
from testbed.students.augmented import AugmentedResidualNet, ContextResidualStudent
from testbed.students.base import Student
from testbed.students.classifier import ResidualClassifier, ResidualNet
from testbed.students.constructed import (
    Conjugated,
    Detour,
    ExactFlowStudent,
    LinearConjugacy,
    PowerWarp,
    Reparameterized,
    Shear,
    SineBump,
    SineWarp,
    TimeMap,
    TimeWarp,
    Translation,
)
from testbed.students.neural_ode import NeuralODEStudent
from testbed.students.residual import BRANCH_SCALINGS, ResidualStudent
from testbed.students.smooth import SmoothResidualStudent
from testbed.students.stages import ResidualStages

STUDENTS: dict[str, type] = {
    "residual": ResidualStudent,
    "neural_ode": NeuralODEStudent,
    "residual_classifier": ResidualClassifier,
    "residual_net": ResidualNet,
    "smooth_residual": SmoothResidualStudent,
    "augmented_residual_net": AugmentedResidualNet,
}


def build_student(kind: str, **kwargs: Any) -> Any:
    """Build the student registered as ``kind``; unknown kinds or arguments raise :class:`ConfigError`, and a
    student whose weights would not fit in memory is refused before allocation (measured on the meta device)."""
    cls = lookup(STUDENTS, kind, "student")
    valid = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise ConfigError(f"unknown argument(s) {unknown} for student {kind!r}; valid: {', '.join(valid)}")
    return build_checked(cls, kwargs, f"student {kind!r}")


__all__ = ["AugmentedResidualNet", "BRANCH_SCALINGS", "ContextResidualStudent", "NeuralODEStudent",
           "ResidualClassifier", "ResidualNet", "ResidualStages", "ResidualStudent", "STUDENTS",
           "SmoothResidualStudent", "Student", "build_student",
           "Conjugated", "Detour", "ExactFlowStudent", "LinearConjugacy", "PowerWarp", "Reparameterized", "Shear",
           "SineBump", "SineWarp", "TimeMap", "TimeWarp", "Translation"]

"""Propagation-field testbed: students, objectives, field metrics, training, experiments and the CLI.

The public API in one namespace (names resolve on first use, so ``import testbed`` alone loads no torch)::

    import testbed

    flow = testbed.get_system("van_der_pol")                          # ground truth (systems/)
    student = testbed.build_student("residual", dim=2, n_layers=32)   # students
    testbed.train(student, "field", data, testbed.TrainConfig(steps=500))
    testbed.law_error(student.vector_field, test_data)                 # field metrics
    testbed.solver_consistency(student.vector_field, x0, 1.0, 32)
    rows = testbed.load_results("runs/law-recovery")                  # results as a DataFrame
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

__version__ = "0.1.0"

#: public name → (module, attribute)
_EXPORTS: dict[str, tuple[str, str]] = {
    # ground truth
    **{n: ("systems", n) for n in ("get_system", "list_systems", "system_class", "TeacherFlow")},
    "register_system": ("systems", "register"),
    "make_trajectories": ("systems.data", "make_trajectories"),
    "TrajectoryData": ("systems.data", "TrajectoryData"),
    # students
    **{n: ("testbed.students", n) for n in (
        "build_student", "Student", "ResidualStudent", "NeuralODEStudent", "ResidualClassifier", "ResidualNet",
        "ResidualStages", "STUDENTS")},
    # objectives and training
    **{n: ("testbed.objectives", n) for n in ("Objective", "make_objective")},
    **{n: ("testbed.train", n) for n in ("TrainConfig", "TrainResult", "load_student", "read_checkpoint",
                                         "save_checkpoint")},
    # field metrics
    **{n: ("testbed.field", n) for n in (
        "endpoint_error", "trajectory_error", "law_error", "flow_jacobian_error", "relative_l2", "path_sensitivity",
        "layer_jacobians", "path_jacobians", "vector_field_jacobian", "jacobian_spectra", "field_geometry",
        "solver_consistency", "integrate", "default_step_counts", "layer_spectral_norms", "path_spectral_norms",
        "record", "field_report", "field_retention", "FieldMonitor")},
    **{n: ("testbed.evaluate", n) for n in ("evaluate_student", "teacher_reference", "rollout")},
    # experiments and results
    **{n: ("testbed.experiments", n) for n in ("get_experiment", "list_experiments")},
    "load_results": ("testbed.results", "load"),
    **{n: ("testbed.errors", n) for n in ("CheckpointError", "DivergenceError", "ResourceError")},
    "ConfigError": ("testbed.config", "ConfigError"),
}

__all__ = sorted([*_EXPORTS, "train"])


class _Package(types.ModuleType):
    """``testbed.train`` is both the function and the name of the submodule defining it. Importing a submodule
    binds it as a package attribute; here that binding keeps the function instead, so ``testbed.train(...)``
    works however (and whenever) ``testbed.train`` gets imported, and ``import testbed`` itself stays free of
    torch until a name is used."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "train" and isinstance(value, types.ModuleType):
            value = value.train
        super().__setattr__(name, value)

    def __reduce__(self) -> tuple:  # pickled by name, like any module (cloudpickle dispatches on the exact type)
        return importlib.import_module, (self.__name__,)


sys.modules[__name__].__class__ = _Package
_EXPORTS["train"] = ("testbed.train", "train")


def __getattr__(name: str) -> Any:
    try:
        module, attr = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'testbed' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])

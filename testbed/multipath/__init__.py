"""Multi-path tasks (transport classification, multi-route regression, digits with a teacher's
representations) and their metrics; the study that uses them is :mod:`testbed.experiments.multipath`."""

from testbed.multipath.evaluate import SPLITS, evaluate, outputs_on_grid
from testbed.multipath.tasks import (
    VARIANTS,
    EvalSet,
    MultipathTask,
    digits_task,
    route_task,
    transport_task,
)

__all__ = ["SPLITS", "VARIANTS", "EvalSet", "MultipathTask", "digits_task", "evaluate", "outputs_on_grid",
           "route_task", "transport_task"]

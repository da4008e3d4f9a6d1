"""Joint training (upper bound): task ``t`` trains on the union of the training data of tasks ``0 … t``
(shuffled together, ``epochs`` passes, continuing from the current weights), so the final model has seen every
class (every domain, on domain-incremental benchmarks) i.i.d. in its last stage. Loss ``CE(f(x), y)`` as for
fine-tuning. The union is read through one :class:`~testbed.continual.tasks.TaskStream`, so a domain benchmark's
tasks are not materialised side by side."""

from __future__ import annotations

from testbed.continual.base import ContinualLearner
from testbed.continual.tasks import Benchmark, TaskStream


class Joint(ContinualLearner):
    """Trains on everything seen so far: no forgetting pressure (costs ``Σ_t (t+1)`` task passes)."""

    name = "joint"

    def training_stream(self, benchmark: Benchmark, task: int) -> TaskStream:
        return benchmark.stream(list(range(task + 1)), "train")

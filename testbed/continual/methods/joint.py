"""Joint training (upper bound): task ``t`` trains on the union of the training data of tasks ``0 … t``
(shuffled together, ``epochs`` passes, continuing from the current weights), so the final model has seen every
class i.i.d. in its last stage. Loss ``CE(f(x), y)`` as for fine-tuning."""

from __future__ import annotations

from testbed.continual.base import ContinualLearner
from testbed.continual.data import SplitBenchmark
from testbed.datasets import LabeledData


class Joint(ContinualLearner):
    """Trains on everything seen so far: no forgetting pressure (costs ``Σ_t (t+1)`` task passes)."""

    name = "joint"

    def training_data(self, benchmark: SplitBenchmark, task: int) -> LabeledData:
        return benchmark.union(list(range(task + 1)), "train")

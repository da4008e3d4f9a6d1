"""Fine-tuning (lower bound): SGD on the current task's cross-entropy only, ``L = CE(f(x), y)``.

The behaviour is entirely the shared base's; this file names it."""

from __future__ import annotations

from testbed.continual.base import ContinualLearner


class FineTune(ContinualLearner):
    """No replay, no regularisation: catastrophic forgetting in class-IL."""

    name = "finetune"

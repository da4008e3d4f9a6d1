"""Experience Replay (ER) with a reservoir buffer: the incoming batch ``(x, y)`` and a buffer draw
``(x_b, y_b)`` are concatenated and trained with one cross-entropy,

    L = CE(f([x; x_b]), [y; y_b])     (mean over the concatenated batch, as in the DER code).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from testbed.continual.base import ReplayLearner

Tensor = torch.Tensor


class ER(ReplayLearner):
    """Rehearsal of stored labels."""

    name = "er"

    def loss_terms(self, x: Tensor, y: Tensor, task: int) -> dict[str, Tensor]:
        batch = self.draw()
        if batch is None:
            return super().loss_terms(x, y, task)
        logits = self.net(self.augment(torch.cat([x, batch.x])))
        self._last_logits = logits[: x.shape[0]].detach().float()
        return {"ce": F.cross_entropy(logits, torch.cat([y, batch.y]))}

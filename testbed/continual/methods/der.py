"""Dark Experience Replay (DER; Buzzega et al., NeurIPS 2020): the buffer stores the logits ``z`` the network
produced when a sample entered it; a buffer draw ``(x_b, z_b)`` is matched in logit space,

    L = CE(f(x), y) + α · MSE(f(x_b), z_b)      (MSE = mean over samples and logits).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from testbed.continual.base import ReplayLearner

Tensor = torch.Tensor


class DER(ReplayLearner):
    """Replay of past responses (dark knowledge) instead of labels."""

    name = "der"

    def loss_terms(self, x: Tensor, y: Tensor, task: int) -> dict[str, Tensor]:
        terms = super().loss_terms(x, y, task)
        batch = self.draw()
        if batch is not None:
            terms["logit_replay"] = self.cfg.alpha * F.mse_loss(self.replay_logits(batch), batch.logits)
        return terms

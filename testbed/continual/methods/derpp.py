"""DER++ (Buzzega et al., NeurIPS 2020): DER plus a label term on a *second, independent* buffer draw,

    L = CE(f(x), y) + α · MSE(f(x_b1), z_b1) + β · CE(f(x_b2), y_b2).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from testbed.continual.methods.der import DER

Tensor = torch.Tensor


class DERPP(DER):
    """DER with label replay on an independent draw."""

    name = "derpp"

    def loss_terms(self, x: Tensor, y: Tensor, task: int) -> dict[str, Tensor]:
        terms = super().loss_terms(x, y, task)
        batch = self.draw()
        if batch is not None:
            terms["label_replay"] = self.cfg.beta * F.cross_entropy(self.replay_logits(batch), batch.y)
        return terms

"""Field preservation (paper A, "Continual learning"): besides ``(x, y, logits)`` the buffer stores, for every
sample at insertion time, its field snapshot — stage states ``h̃_s = h_s(x)`` and a Jacobian sketch
``s̃_s = J_s(x) v_k`` along the slot's fixed random probe ``v_k`` (``k = slot mod n_probes``). On a further,
independent buffer draw ``B`` the drift of both is penalised:

    L_FP = γ · (1/S) Σ_s [ D(h_s(x_B), h̃_{s,B}) + λ_J · D(J_s(x_B) v_{k(B)}, s̃_{s,B}) ],
    D(a, b) = ‖a − b‖² / sg(‖a‖² + ‖b‖²)        (norms over the buffer draw B, sg = stop-gradient, D ≤ 2)

(``λ_J`` = ``jvp_weight``; snapshots and penalty use eval mode, so BatchNorm does not couple samples, and float32,
also when the host loss runs under mixed precision).
With ``field_refresh`` (default) the snapshots of the samples of task ``t`` are retaken once task ``t`` is learned,
so the anchor is the field *of the learned task* rather than of a half-trained network at insertion time; samples
of later tasks keep their insertion-time snapshots until their own task ends.
:class:`FieldPreservation` is a mixin: ``ERFP = FieldPreservation + ER``, ``DERPPFP = FieldPreservation + DER++``.
"""

from __future__ import annotations

import torch

from testbed.continual.base import ReplayLearner
from testbed.continual.methods.derpp import DERPP
from testbed.continual.methods.er import ER
from testbed.continual.sketch import eval_mode, field_snapshot, squared_relative_drift

Tensor = torch.Tensor


class FieldPreservation(ReplayLearner):
    """Mixin: store field snapshots in the buffer and add ``L_FP`` to the host method's loss."""

    def n_stages(self) -> int:
        return len(self.net.stage_names)

    def snapshot(self, x: Tensor, slots: Tensor) -> dict[str, Tensor]:
        probe = slots.to(self.device) % self.cfg.n_probes
        with eval_mode(self.net):
            states, sketches = field_snapshot(self.net, x, self.probes, probe, create_graph=False)
        out = {"probe": probe, **super().snapshot(x, slots)}
        for s, (h, j) in enumerate(zip(states, sketches, strict=True)):
            out[f"state{s}"], out[f"jvp{s}"] = h, j
        return out

    def end_task(self, task: int) -> None:
        super().end_task(task)
        if not self.cfg.field_refresh or self.buffer is None or self.buffer.is_empty():
            return
        every = self.buffer.all()
        slots = (every.task == task).nonzero().flatten()
        for chunk in slots.split(256):
            snap = self.snapshot(every.x[chunk], chunk)
            self.buffer.write(torch.arange(chunk.numel()), chunk.cpu(), **snap)

    def field_loss(self) -> Tensor | None:
        """``L_FP / γ`` on an independent buffer draw (None while the buffer is empty)."""
        batch = self.draw()
        if batch is None:
            return None
        with eval_mode(self.net), torch.autocast(self.device.type, enabled=False):  # float32 even under amp
            states, sketches = field_snapshot(self.net, batch.x, self.probes, batch.probe)
        stored_h = [batch.tensors[f"state{s}"] for s in range(self.n_stages())]
        stored_j = [batch.tensors[f"jvp{s}"] for s in range(self.n_stages())]
        loss = squared_relative_drift(states, stored_h)
        if self.cfg.jvp_weight > 0:
            loss = loss + self.cfg.jvp_weight * squared_relative_drift(sketches, stored_j)
        return loss

    def loss_terms(self, x: Tensor, y: Tensor, task: int) -> dict[str, Tensor]:
        terms = super().loss_terms(x, y, task)
        if self.cfg.gamma > 0:
            fl = self.field_loss()
            if fl is not None:
                terms["field"] = self.cfg.gamma * fl
        return terms


class ERFP(FieldPreservation, ER):
    """ER + field preservation."""

    name = "er_fp"


class DERPPFP(FieldPreservation, DERPP):
    """DER++ + field preservation."""

    name = "derpp_fp"

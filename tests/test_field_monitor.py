"""FieldMonitor in a plain loop (rows every k steps, JSON lines, the model's mode restored, path sensitivity within the
loose tolerance of the dense value) and as a Lightning callback (skipped without the extra)."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from testbed.field.monitor import FieldMonitor, lightning_callback
from testbed.field.report import field_report


class Res(nn.Module):
    def __init__(self, d: int = 6) -> None:
        super().__init__()
        self.f = nn.Sequential(nn.Linear(d, 16), nn.Tanh(), nn.Linear(16, d))

    def forward(self, x):
        return x + 0.3 * self.f(x)


def resnet(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(Res(), Res(), Res(), Res())


def test_monitor_in_a_plain_training_loop(tmp_path):
    model = resnet()
    probe = torch.randn(8, 6)
    mon = FieldMonitor(model, probe, every=3, path=tmp_path / "field.jsonl")
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = torch.randn(32, 6), torch.randn(32, 6)
    for step in range(7):
        mon(step)
        loss = (model(x) - y).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert [r["step"] for r in mon.history] == [0, 3, 6] and model.training
    lines = [json.loads(s) for s in (tmp_path / "field.jsonl").read_text().splitlines()]
    assert lines == mon.history
    dense = field_report(model.eval(), probe, route="dense")
    assert mon.summary()["path_sensitivity"] == pytest.approx(dense.path_sensitivity, rel=1e-2)
    assert mon.summary()["trajectory_length"] == pytest.approx(dense.trajectory_length, rel=1e-6)
    with pytest.raises(Exception, match="every"):
        FieldMonitor(model, probe, every=0)


def test_lightning_callback_calls_the_monitor():
    lightning = pytest.importorskip("lightning")

    class Module(lightning.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = resnet(1)

        def training_step(self, batch, batch_idx):
            x, y = batch
            return (self.net(x) - y).pow(2).mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.05)

    module = Module()
    data = torch.utils.data.TensorDataset(torch.randn(16, 6), torch.randn(16, 6))
    loader = torch.utils.data.DataLoader(data, batch_size=4)
    mon = FieldMonitor(module.net, torch.randn(4, 6), every=2)
    trainer = lightning.Trainer(max_steps=4, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                                enable_model_summary=False, accelerator="cpu", devices=1,
                                callbacks=[lightning_callback(mon)])
    trainer.fit(module, loader)
    assert [r["step"] for r in mon.history] == [2, 4]      # global steps after each optimiser step: 1, 2, 3, 4
    assert all(r["path_sensitivity"] > 0 for r in mon.history)

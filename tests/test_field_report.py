"""``field_report`` and ``field_retention`` on models the testbed did not build: the dense and matrix-free routes
agree with each other and with dense Jacobians of the composed blocks; retention is 1 for an unchanged model and
matches its definition for a perturbed one."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from testbed.field.report import field_report, field_retention
from testbed.field.retention import retention

pytestmark = pytest.mark.usefixtures("float64_default")


def encoder(seed: int = 0, layers: int = 3) -> nn.Module:
    torch.manual_seed(seed)
    layer = nn.TransformerEncoderLayer(d_model=8, nhead=2, dim_feedforward=16, dropout=0.0, batch_first=True)
    return nn.TransformerEncoder(layer, num_layers=layers, enable_nested_tensor=False).eval()


def test_dense_report_matches_the_composed_models_jacobian():
    enc = encoder()
    x = torch.randn(2, 4, 8)
    rep = field_report(enc, x, route="dense")
    assert rep.route == "dense" and rep.dim == 32 and len(rep.path_spectral) == 4 and len(rep.block_spectral) == 3
    J = torch.func.vmap(torch.func.jacrev(lambda v: enc(v.reshape(1, 4, 8)).reshape(-1)))(x.reshape(2, -1))
    assert rep.path_sensitivity == pytest.approx(float(torch.linalg.matrix_norm(J, ord=2).mean()), rel=1e-10)
    # (LayerNorm removes the mean direction: these Jacobians are singular, log|det| is rounding — checked below on
    # an MLP ResNet instead)
    assert rep.path_spectral[-1] == pytest.approx(1.0) and rep.path_logdet[-1] == pytest.approx(0.0, abs=1e-12)
    frame = pytest.importorskip("pandas") and rep.to_frame()
    assert list(frame["depth"]) == [0, 1, 2, 3] and math.isnan(frame["block_spectral"].iloc[-1])
    assert rep.to_dict()["blocks"] == ["layers.0", "layers.1", "layers.2"]


def test_log_volume_of_an_mlp_resnet():
    torch.manual_seed(3)

    class Res(nn.Module):
        def __init__(self):
            super().__init__()
            self.f = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 4))

        def forward(self, x):
            return x + 0.5 * self.f(x)

    model = nn.Sequential(Res(), Res(), Res()).eval()
    x = torch.randn(5, 4)
    rep = field_report(model, x)
    J = torch.func.vmap(torch.func.jacrev(lambda v: model(v[None])[0]))(x)
    assert rep.path_logdet[0] == pytest.approx(float(torch.linalg.slogdet(J).logabsdet.mean()), rel=1e-10)


def test_matrix_free_route_agrees_with_dense():
    enc = encoder(1)
    x = torch.randn(2, 4, 8)
    dense = field_report(enc, x, route="dense")
    free = field_report(enc, x, route="matrix_free", tol=1e-9)
    assert free.route == "matrix_free"
    for a, b in zip(free.path_spectral, dense.path_spectral, strict=True):
        assert a == pytest.approx(b, rel=1e-6)
    for a, b in zip(free.block_spectral, dense.block_spectral, strict=True):
        assert a == pytest.approx(b, rel=1e-6)
    for a, b in zip(free.path_frobenius, dense.path_frobenius, strict=True):
        assert a == pytest.approx(b, rel=1e-9)
    assert all(math.isnan(v) for v in free.path_logdet)
    assert free.trajectory_length == pytest.approx(dense.trajectory_length, rel=1e-12)


def test_retention_is_one_for_an_unchanged_model_and_follows_its_definition():
    enc = encoder(2)
    x = torch.randn(3, 4, 8)
    same = field_retention(enc, encoder(2), x, n_probes=2, seed=5)
    assert same.trajectory == pytest.approx(1.0, abs=1e-12) and same.jacobian == pytest.approx(1.0, abs=1e-12)
    moved = encoder(2)
    with torch.no_grad():
        moved.layers[1].linear2.weight.mul_(1.5)
    r = field_retention(enc, moved, x, n_probes=2, seed=5)
    from testbed.field.record import record

    ra, rb = record(moved, x), record(enc, x)
    assert r.trajectory == pytest.approx(retention(list(ra.states[1:]), list(rb.states[1:])), rel=1e-12)
    assert r.trajectory < 1.0 and r.jacobian < 1.0 and r.seed == 5 and r.n_probes == 2
    # the first block's output is untouched by a change in block 1
    assert float((ra.states[1] - rb.states[1]).abs().max()) == 0.0

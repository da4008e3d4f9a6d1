"""The field of any model: recorded blocks of an MLP ResNet, a conv ResNet stage and a TransformerEncoder (batch
first or not, causal mask) reproduce the model's own intermediate states, and their path Jacobian ∂h_L/∂h_0 equals
the dense Jacobian of the composed blocks; a testbed student is recorded as itself."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from testbed.config import ConfigError
from testbed.field import layer_jacobians, path_jacobians, path_sensitivity
from testbed.field.record import record
from testbed.students import ResidualStudent

pytestmark = pytest.mark.usefixtures("float64_default")


class Res(nn.Module):
    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x):
        return x + self.body(x)


def endpoint_jacobian(rec):
    _, jacs = layer_jacobians(rec.student, rec.x0)
    return path_jacobians(jacs)[0]


def dense_composed(f, x0_flat):
    return torch.func.vmap(torch.func.jacrev(f))(x0_flat)


def test_mlp_resnet_states_and_path_jacobian():
    torch.manual_seed(0)
    model = nn.Sequential(*[Res(nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 5))) for _ in range(4)]).eval()
    x = torch.randn(3, 5)
    rec = record(model, x)
    assert rec.names == ["0", "1", "2", "3"] and rec.states.shape == (5, 3, 5)
    h = x
    for l, block in enumerate(model):
        assert torch.equal(rec.states[l], h)
        h = block(h)
    assert torch.allclose(rec.states[-1], model(x), atol=0)
    J = dense_composed(lambda v: model(v[None])[0], x)
    assert float((endpoint_jacobian(rec) - J).abs().max()) < 1e-12
    assert path_sensitivity(rec.student, rec.x0).total == pytest.approx(
        float(torch.linalg.matrix_norm(J, ord=2).mean()), rel=1e-12)


@pytest.mark.parametrize("batch_first", [True, False])
def test_transformer_encoder_with_a_causal_mask(batch_first):
    torch.manual_seed(1)
    layer = nn.TransformerEncoderLayer(d_model=8, nhead=2, dim_feedforward=16, dropout=0.0, batch_first=batch_first)
    enc = nn.TransformerEncoder(layer, num_layers=3, enable_nested_tensor=False).eval()
    S, B = 4, 2
    x = torch.randn(B, S, 8) if batch_first else torch.randn(S, B, 8)
    mask = nn.Transformer.generate_square_subsequent_mask(S)
    rec = record(_Masked(enc, mask), x)
    assert rec.names == ["enc.layers.0", "enc.layers.1", "enc.layers.2"] and rec.shape == (S, 8)
    out = enc(x, mask=mask)
    out_b = out if batch_first else out.transpose(0, 1)
    assert torch.allclose(rec.unflatten(rec.states[-1]), out_b, atol=1e-12)

    def composed(v):                                   # one sample, flattened (S·8,)
        xs = v.reshape(1, S, 8) if batch_first else v.reshape(S, 1, 8)
        y = enc(xs, mask=mask)
        return y.reshape(-1)

    J = dense_composed(composed, rec.x0)
    assert float((endpoint_jacobian(rec) - J).abs().max()) < 1e-10


class _Masked(nn.Module):
    def __init__(self, enc, mask):
        super().__init__()
        self.enc, self.mask = enc, mask

    def forward(self, x):
        return self.enc(x, mask=self.mask, is_causal=True)


def test_conv_resnet_stage_skips_the_downsampling_block():
    torch.manual_seed(2)

    def block(c):
        return Res(nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(),
                                 nn.Conv2d(c, c, 3, padding=1)))

    model = nn.Sequential(block(3), block(3), nn.Conv2d(3, 4, 3, stride=2, padding=1)).eval()
    x = torch.randn(2, 3, 6, 6)
    rec = record(model, x, blocks=["0", "1", "2"])
    assert rec.names == ["0", "1"] and rec.shape == (3, 6, 6)
    assert rec.skipped and rec.skipped[0]["block"] == "2" and rec.skipped[0]["out_shape"] == (2, 4, 3, 3)
    J = dense_composed(lambda v: model[1](model[0](v.reshape(1, 3, 6, 6))).reshape(-1), rec.x0)
    assert float((endpoint_jacobian(rec) - J).abs().max()) < 1e-10


def test_testbed_student_is_recorded_as_itself():
    torch.manual_seed(3)
    s = ResidualStudent(dim=2, n_layers=6, width=8)
    x = torch.randn(4, 2)
    rec = record(s, x)
    assert rec.student is s and torch.equal(rec.states, s.trajectory(x))
    assert path_sensitivity(rec.student, rec.x0).total == path_sensitivity(s, x).total


def test_unchained_blocks_and_batch_carrying_arguments_are_refused():
    torch.manual_seed(4)
    model = nn.Sequential(Res(nn.Linear(3, 3)), Res(nn.Linear(3, 3)), Res(nn.Linear(3, 3))).eval()
    with pytest.raises(ConfigError, match="one chain"):
        record(model, torch.randn(2, 3), blocks=["0", "2"])
    with pytest.raises(ConfigError, match="no submodule"):
        record(model, torch.randn(2, 3), blocks=["7"])
    layer = nn.TransformerEncoderLayer(d_model=4, nhead=1, dim_feedforward=8, dropout=0.0, batch_first=True)
    enc = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False).eval()
    pad = torch.zeros(3, 5, dtype=torch.bool)

    class Padded(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = enc

        def forward(self, x):
            return self.enc(x, src_key_padding_mask=pad)

    with pytest.raises(ConfigError, match="src_key_padding_mask"):
        record(Padded().eval(), torch.randn(3, 5, 4))


def test_matrix_free_layer_norms_of_a_recorded_transformer_match_dense():
    """Generic blocks go through the autograd (jvp/vjp) maps of the batched Lanczos: per-layer ‖J_l‖₂ of a recorded
    TransformerEncoder against dense Jacobians + SVD."""
    from testbed.field import layer_spectral_norms

    torch.manual_seed(5)
    layer = nn.TransformerEncoderLayer(d_model=8, nhead=2, dim_feedforward=16, dropout=0.0, batch_first=True)
    enc = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False).eval()
    rec = record(enc, torch.randn(2, 4, 8))
    spectra = layer_spectral_norms(rec.student, rec.x0, tol=1e-9)
    _, jacs = layer_jacobians(rec.student, rec.x0)
    dense = torch.linalg.matrix_norm(jacs, ord=2)
    assert float(((spectra.spectral - dense).abs() / dense).max()) < 1e-6

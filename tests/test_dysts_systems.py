"""The dysts catalogue as teachers (optional extra ``[dysts]``; skipped without it): the Lorenz law and Jacobian
against their closed forms, the horizon and boxes from the metadata, non-vectorised flows applied row by row, delay
equations refused with a reason, and a dysts flow through ``testbed run``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import systems

pytest.importorskip("dysts")
from systems import dysts_catalogue  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def test_lorenz_law_jacobian_horizon_and_boxes_from_the_published_model():
    s = systems.get_system("dysts:Lorenz")
    m = dysts_catalogue.model("Lorenz")
    sigma, rho, beta = m.params["sigma"], m.params["rho"], m.params["beta"]
    x = s.sample_id(7, torch.Generator().manual_seed(0))
    p, q, r = x[:, 0], x[:, 1], x[:, 2]
    law = torch.stack([sigma * (q - p), p * (rho - r) - q, p * q - beta * r], -1)
    assert float((s.vector_field(0.0, x) - law).abs().max()) < 1e-12
    z = torch.zeros_like(p)
    jac = torch.stack([torch.stack([z - sigma, z + sigma, z], -1), torch.stack([rho - r, z - 1, -p], -1),
                       torch.stack([q, p, z - beta], -1)], -2)
    assert float((s.jacobian(0.0, x) - jac).abs().max()) < 1e-12
    assert float(s.horizon) == pytest.approx(min(0.25 * m.period, 0.5 / m.maximum_lyapunov_estimated), rel=1e-12)
    assert np.allclose(s.id_low, np.asarray(m.mean) - np.asarray(m.std)) and s.dim == 3
    lo, hi = torch.tensor(s.id_low), torch.tensor(s.id_high)
    assert bool(((x >= lo) & (x <= hi)).all())
    # the flow is the reference integral of that law (a chaotic flow: no closed form)
    t = torch.tensor([0.0, float(s.horizon)], dtype=torch.float64)
    end = s.flow(x[:2], t)[-1]
    assert torch.isfinite(end).all() and not torch.allclose(end, x[:2])


@pytest.mark.parametrize("name", ["BeerRNN", "MultiChua", "Lorenz96"])
def test_non_vectorised_dysts_flows_are_applied_row_by_row(name):
    """Flows whose rhs unpacks one state: a batch of exactly d states must not be misread as one state."""
    s = systems.get_system("dysts:" + name)
    m = dysts_catalogue.model(name)
    x = s.sample_id(s.dim, torch.Generator().manual_seed(1))           # N == d rows: the ambiguous case
    rows = np.stack([np.asarray(m.rhs(r, 0.0), dtype=float) for r in x.numpy()])
    assert np.allclose(s.vector_field(0.0, x).numpy(), rows, rtol=1e-12, atol=1e-12)


def test_delay_equations_and_unknown_names_are_refused_with_a_reason():
    with pytest.raises(systems.SystemSpecError, match="delay differential equation"):
        systems.get_system("dysts:MackeyGlass")
    with pytest.raises(systems.SystemSpecError, match="Did you mean dysts:Lorenz"):
        systems.get_system("dysts:Lorenzz")
    assert "Lorenz" in dysts_catalogue.catalogue() and len(dysts_catalogue.catalogue()) > 100


def test_a_dysts_flow_through_testbed_run(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "testbed", "run", "law-recovery", "--quick", "--system", "dysts:Rossler",
           "--out", str(out), "--no-progress", "--threads", "1", "--set", "steps=5", "n_train=16", "n_test=8",
           "objectives=endpoint,field", "match_endpoint=0"]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert (out / "results.csv").read_text().count("dysts:Rossler") == 2

"""The endpoint-equivalence experiment end to end (tiny settings) and its pieces against known results."""

from __future__ import annotations

import math

import pytest
import torch

import systems
from testbed.config import ConfigError
from testbed.experiments import endpoint_equivalence as ee
from testbed.experiments import get_experiment
from testbed.results import read_csv
from testbed.students import ExactFlowStudent

TINY = dict(seeds=(0,), depths=(4,), tied=(True, False), widths=(8,), init_scales=(0.5,),
            regularizers=("none", "kinetic"),
            target_error=0.3, band_ratio=4.0, max_steps=120, check_every=10, n_train=64, n_test=32, batch_size=32,
            digits_dim=6, digits_target_accuracy=0.6, conjugation_strengths=(3.0,), detour_amplitudes=(4.0,),
            warp_powers=(3.0,), construct_depth=8, n_eval=16, progress=False)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ee")
    rows = ee.run(ee.EndpointEquivalenceConfig(**TINY), out)
    ee.plot(out)
    return out, rows


def test_consistency_steps_span_l_over_8_to_8l():
    assert ee.consistency_steps(16) == [2, 4, 8, 16, 32, 64, 128]
    assert ee.consistency_steps(4) == [1, 2, 4, 8, 16, 32]


def test_exact_flow_is_consistent_and_shows_the_solver_orders():
    """The teacher's exact flow: network endpoint = converged solve of its own law; orders 1, 2, 4."""
    spiral = systems.get_system("linear_spiral")
    x0 = spiral.sample_id(8, torch.Generator().manual_seed(0))
    metrics, curves = ee.evaluate_field(ExactFlowStudent(spiral, 16), x0, {"model_id": "exact"})
    assert metrics["consistency_error"] < 1e-6
    assert metrics["order_euler"] == pytest.approx(1.0, abs=0.25)
    assert metrics["order_midpoint"] == pytest.approx(2.0, abs=0.3)
    assert metrics["order_rk4"] == pytest.approx(4.0, abs=0.4)
    assert all(c["model_id"] == "exact" for c in curves)


def test_spread_reports_ratio_and_range():
    rows = [{"task": "flow", "in_band": True, "source": "trained", "group": "trained",
             **{m: 1.0 for m in ee.FIELD_METRICS}} for _ in range(2)]
    rows[1].update(kinetic_energy=250.0, logdet=-3.0)
    out = {(r["group"], r["metric"]): r for r in ee.spread(rows)}
    ke = out[("in band (trained + constructed)", "kinetic_energy")]
    assert ke["max_over_min"] == 250.0 and ke["orders_of_magnitude"] == pytest.approx(math.log10(250))
    ld = out[("in band, trained only", "logdet")]
    assert math.isnan(ld["max_over_min"]) and ld["range"] == 4.0


def test_tiny_run_outputs_and_endpoint_equivalence(tiny_run):
    out, rows = tiny_run
    for name in ee.OUTPUT_FILES:
        assert (out / name).stat().st_size > 0, name
    assert get_experiment("endpoint-equivalence") is ee
    table = read_csv(out / "results.csv")
    assert len(table) == len(rows)
    by = {r["model_id"]: r for r in rows}
    # trained: the early stop fires at a check (every 10 steps) or at the budget
    for r in rows:
        if r["source"] == "trained":
            assert r["steps_trained"] % 10 == 0 and r["steps_trained"] <= TINY["max_steps"]
    # constructed from the exact flow: endpoint at round-off, interior very different
    assert by["flow-exact"]["endpoint_metric"] < 1e-12
    assert by["flow-exact-warp3"]["endpoint_metric"] < 1e-12
    assert by["flow-exact-conj3"]["jac_condition_max"] > 100 * by["flow-exact"]["jac_condition_max"]
    assert by["flow-exact-detour4"]["trajectory_length"] > 1.5 * by["flow-exact"]["trajectory_length"]
    # a warped clock keeps the path (length) but raises the kinetic energy
    assert by["flow-exact-warp3"]["trajectory_length"] == pytest.approx(by["flow-exact"]["trajectory_length"],
                                                                         rel=0.05)
    assert by["flow-exact-warp3"]["kinetic_energy"] > 1.3 * by["flow-exact"]["kinetic_energy"]
    # the endpoint map (and so its Jacobian) is unchanged by every construction
    for mid in ("flow-exact-warp3", "flow-exact-conj3", "flow-exact-detour4"):
        assert by[mid]["path_sensitivity"] == pytest.approx(by["flow-exact"]["path_sensitivity"], rel=1e-8)
    # constructions on the first in-band student keep its endpoint metric exactly
    for task in ("flow", "digits"):
        base = next(r for r in rows if r["task"] == task and r["source"] == "trained" and r["in_band"])
        for r in rows:
            if r["task"] == task and r.get("group") == "student":
                assert r["endpoint_metric"] == pytest.approx(base["endpoint_metric"], abs=1e-12)
    spread = read_csv(out / "spread.csv")
    cond = next(s for s in spread if s["task"] == "flow" and s["metric"] == "jac_condition_max"
                and s["group"] == "exact-flow family")
    assert cond["orders_of_magnitude"] > 2


@pytest.mark.parametrize("bad, match", [
    (dict(system="nope"), "nope"),
    (dict(regularizers=("l2",)), "regularizers"),
    (dict(band_ratio=0.5), "band_ratio"),
    (dict(digits_target_accuracy=1.5), "digits_target_accuracy"),
    (dict(depths=()), "depths"),
])
def test_config_rejects_bad_values(bad, match):
    with pytest.raises((ConfigError, systems.SystemSpecError), match=match):
        ee.EndpointEquivalenceConfig(**{**TINY, **bad})


def test_report_counts_the_band_and_separates_trained_from_constructed_spread(tmp_path):
    """Trained models in the band differ 2× in every metric, constructed ones 1000×: the report says trained models
    alone reach an order of magnitude in 0 metrics, and counts the band per source."""
    from testbed.experiments import endpoint_equivalence as ee
    from testbed.results import write_csv

    rows = []
    for i, (source, in_band, v) in enumerate([("trained", True, 1.0), ("trained", True, 2.0), ("trained", False, 50.0),
                                              ("constructed", True, 1000.0)]):
        rows.append({"task": "flow", "model_id": f"m{i}", "source": source, "group": "x", "in_band": in_band,
                     **{m: (v if m != "logdet" else -1.0) for m in ee.FIELD_METRICS}})
    write_csv(tmp_path / "results.csv", rows)
    text = ee.report(tmp_path)
    assert "3 trained models, 2 of them in the endpoint band; 1 constructed models in the band" in text
    assert "Trained models alone (n = 2) span at least one order of magnitude in 0 of" in text
    assert "| trajectory_length | 1e+03× = 3.00 decades (3) | 2× = 0.30 decades (2) |" in text

"""The law benchmark end to end on tiny settings (a failing system is a row with its reason; the others go on) and
its aggregate tables against hand-computed values."""

from __future__ import annotations

import math

import pytest

from testbed.config import ConfigError
from testbed.experiments import get_experiment, law_benchmark
from testbed.results import is_true, read_csv, write_csv

pytest.importorskip("pysindy")

BAD = "SPEC = {'vector_field': lambda t, x: x**2, 'dim': 1, 'horizon': 5.0, 'id_box': ([1.0], [2.0])}\n"


def test_tiny_benchmark_records_failures_and_scores_every_method(tmp_path):
    bad = tmp_path / "blowup.py"
    bad.write_text(BAD)
    cfg = law_benchmark.LawBenchmarkConfig(systems=("lotka_volterra", f"{bad}:SPEC"), seeds=(0,), n_train=32,
                                           n_test=16, steps=5, n_layers=8, width=8, progress=False)
    rows = law_benchmark.run(cfg, tmp_path / "out")
    assert get_experiment("law-benchmark") is law_benchmark
    ok = [r for r in rows if r["status"] == "ok"]
    failed = [r for r in rows if r["status"] == "failed"]
    assert {r["method"] for r in ok} == set(law_benchmark.METHODS) and all(r["system"] == "lotka_volterra" for r in ok)
    assert len(failed) == 5 and all("shorten the horizon" in r["reason"] for r in failed)
    sindy = next(r for r in ok if r["method"] == "sindy_field")
    assert sindy["law_error_id"] < 1e-8                      # a quadratic law, in standardized coordinates too
    agg = {a["method"]: a for a in read_csv(tmp_path / "out" / "aggregate.csv")}
    assert agg["field"]["n_systems"] == 1 and agg["field"]["n_failed_systems"] == 1
    text = law_benchmark.report(tmp_path / "out")
    assert "| `sindy_field` | 1 | 1 |" in text
    assert law_benchmark.plot(tmp_path / "out")


def test_aggregate_and_comparisons_from_hand_values(tmp_path):
    rows = []
    law = {"a": {"endpoint": 0.9, "field": 0.1, "trajectory": 0.5, "sindy_states": 0.6, "sindy_field": 1e-15},
           "b": {"endpoint": 0.4, "field": 0.2, "trajectory": 0.3, "sindy_states": 0.2, "sindy_field": 0.8},
           "c": {"endpoint": 0.6, "field": 0.1, "trajectory": 0.4, "sindy_states": 0.9, "sindy_field": 0.05}}
    for system, vals in law.items():
        for method, v in vals.items():
            for seed in (0, 1):          # two seeds with the same value: the per-system mean is v
                rows.append({"system": system, "method": method, "seed": seed, "status": "ok", "law_error_id": v,
                             "law_error_ood": 2 * v, "endpoint_error": 0.1, "trajectory_error": 0.1,
                             "rollout_error_2T": 0.1})
    write_csv(tmp_path / "results.csv", rows)
    law_benchmark.derive(tmp_path)
    agg = {a["method"]: a for a in read_csv(tmp_path / "aggregate.csv")}
    assert agg["endpoint"]["law_error_id_median"] == pytest.approx(0.6)
    assert agg["endpoint"]["law_error_id_q25"] == pytest.approx(0.5)      # numpy's linear percentile of 0.4, 0.6, 0.9
    assert agg["endpoint"]["law_error_id_q75"] == pytest.approx(0.75)
    comp = {c["system"]: c for c in read_csv(tmp_path / "comparisons.csv")}
    assert comp["a"]["endpoint_over_field"] == pytest.approx(9.0) and is_true(comp["a"]["field_wins"])
    assert not is_true(comp["b"]["field_wins"]) and is_true(comp["c"]["field_wins"])   # 2× no; 6× yes
    assert is_true(comp["b"]["sindy_field_fails"]) and is_true(comp["a"]["sindy_field_wins"])
    text = law_benchmark.report(tmp_path)
    assert "by ≥ 3× (per-system mean law error): 2 of 3 systems" in text
    assert "law error > 0.5): 1 of 3 systems (b)" in text
    assert math.isfinite(agg["sindy_field"]["law_error_id_median"])


def test_config_expands_default_and_refuses_bad_values():
    cfg = law_benchmark.LawBenchmarkConfig(seeds=(0,))
    assert set(law_benchmark.BUILTIN) <= set(cfg.systems)
    with pytest.raises(ConfigError, match="methods"):
        law_benchmark.LawBenchmarkConfig(methods=("gradient_boosting",))
    with pytest.raises(ConfigError, match="standardize"):
        law_benchmark.LawBenchmarkConfig(systems=("van_der_pol",), standardize="yes")

"""Config plumbing: unknown keys, typed command-line overrides, objective specs."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from testbed.config import ConfigError, apply_overrides, from_dict, parse_value
from testbed.experiments.law_recovery import LawRecoveryConfig
from testbed.field.consistency import solver_consistency
from testbed.objectives import make_objective


def test_from_dict_rejects_unknown_keys_with_a_suggestion():
    with pytest.raises(ConfigError, match=r"'n_layer' \(did you mean 'n_layers'\?\)"):
        from_dict(LawRecoveryConfig, {"n_layer": 8})
    cfg = from_dict(LawRecoveryConfig, {"n_layers": 16}, steps=10)
    assert (cfg.n_layers, cfg.steps) == (16, 10)


def test_overrides_are_parsed_by_field_type():
    cfg = apply_overrides(LawRecoveryConfig(), ["n_layers=64", "lr=1e-3", "progress=false", "systems=duffing,lorenz63",
                                                "seeds=3,4"])
    assert cfg.n_layers == 64 and cfg.lr == 1e-3 and cfg.progress is False
    assert cfg.systems == ("duffing", "lorenz63") and cfg.seeds == (3, 4)
    with pytest.raises(ConfigError, match="progress"):
        apply_overrides(LawRecoveryConfig(), ["progress=maybe"])
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides(LawRecoveryConfig(), ["n_layers"])
    with pytest.raises(ConfigError, match="n_layers"):  # validated again after the override
        apply_overrides(LawRecoveryConfig(), ["n_layers=0"])
    assert parse_value("none", "int | None") is None
    assert dataclasses.replace(cfg) == cfg


def test_objective_specs():
    obj = make_objective("endpoint=1,trajectory=0.5")
    assert dict(obj.weights) == {"endpoint": 1.0, "trajectory": 0.5}
    with pytest.raises(ConfigError, match="twice"):
        make_objective("endpoint=1,endpoint=2")
    with pytest.raises(ConfigError, match="endpoint"):
        make_objective({"endpoint": True})


def test_consistency_accepts_numpy_integer_step_counts():
    x0 = torch.ones(3, 1, dtype=torch.float64)
    res = solver_consistency(lambda t, x: -x, x0, 1.0, 8, [np.int64(4), 16], adaptive=())
    assert [r["n_steps"] for r in res.rows] == [8, 4, 16]
    # Euler on x' = -x: (1 - 1/4)^4 vs (1 - 1/8)^8, relative to the latter
    expected = abs(0.75**4 - 0.875**8) / 0.875**8
    assert res.rows[1]["endpoint_change"] == pytest.approx(expected, rel=1e-12)


def test_sequence_overrides_accept_brackets():
    from testbed.config import parse_value

    assert parse_value("[4, 8]", tuple[int, ...]) == (4, 8)
    assert parse_value("(true,false)", tuple[bool, ...]) == (True, False)
    assert parse_value("4,8", tuple[int, ...]) == (4, 8)
    assert parse_value("[]", tuple[int, ...]) == ()
    # JSON-style quoted strings, as a shell user writes them: --set systems='["dysts:Lorenz", 'x']'
    assert parse_value('["dysts:Lorenz", \'van_der_pol\']', tuple[str, ...]) == ("dysts:Lorenz", "van_der_pol")
    assert parse_value('"a"', tuple[str, ...]) == ("a",)
    assert parse_value('["a, b", "c"]', tuple[str, ...]) == ("a, b", "c")  # a JSON list keeps commas in items
    assert parse_value("['a\'b']", tuple[str, ...]) == ("a'b",)  # not JSON: split, then quotes stripped
    assert parse_value('[4, 8.0]', tuple[float, ...]) == (4.0, 8.0)

"""CLI options that depend on the experiment: --study (sub-studies) and --system (one or many systems)."""

from __future__ import annotations

import pytest

from testbed import cli
from testbed.experiments import depth_scaling, get_experiment, list_experiments


@pytest.mark.parametrize("argv, needle", [
    (["run", "depth-scaling", "--quick", "--study", "nope"], "nope"),
    (["run", "law-recovery", "--quick", "--study", "convergence"], "has no such option"),
    (["run", "endpoint-equivalence", "--quick", "--system", "van_der_pol", "duffing"], "takes one value, got 2"),
    (["run", "depth-scaling", "--quick", "--set", "block_depths=[3]"], "block_depths"),
])
def test_cli_rejects_options_an_experiment_does_not_take(argv, needle, capsys, tmp_path):
    assert cli.main(argv + ["--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("testbed: error:") and needle in err


def test_every_experiment_is_listed_with_config_and_quick_mode():
    assert set(list_experiments()) == {"law-recovery", "pde-law-recovery", "endpoint-equivalence", "depth-scaling",
                                       "multipath", "continual", "law-benchmark"}
    for name in list_experiments():
        exp = get_experiment(name)
        assert isinstance(exp.quick_config(), exp.Config)
        assert callable(exp.run) and callable(exp.plot)


def test_depth_scaling_quick_config_selects_sub_studies():
    cfg = depth_scaling.quick_config(studies=("weight_reuse",))
    assert cfg.studies == ("weight_reuse",)
    assert depth_scaling.STUDIES["convergence"].__name__.endswith("depth.convergence")


def test_repeated_set_flags_accumulate():
    """``--set a=1 --set b=2`` applies both overrides (argparse's default would keep only the last)."""
    from testbed.cli import build_parser

    ns = build_parser().parse_args(["run", "law-recovery", "--set", "steps=5", "n_obs=2", "--set", "width=8"])
    assert ns.overrides == ["steps=5", "n_obs=2", "width=8"]


def test_every_subcommand_help_renders():
    """argparse expands %-formatting in help strings: a bare '%' (as in '95% CI') breaks `testbed X --help`."""
    from testbed.cli import build_parser

    parser = build_parser()
    assert "usage" in parser.format_help()
    for action in parser._subparsers._group_actions:
        for name, sub in action.choices.items():
            assert sub.format_help().startswith("usage"), name

"""Hyperparameters chosen on validation data (:mod:`testbed.selection`), the validation split of the multi-path
tasks, the logit-distillation term, and the multi-path study's derived tables (choice, test metrics at the choice,
paired differences) on hand-made results whose answers are known."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy import stats as st

from testbed.config import ConfigError
from testbed.experiments import get_experiment
from testbed.multipath.tasks import hold_out_validation, route_task, transport_task
from testbed.objectives import make_objective
from testbed.path_data import PathData
from testbed.results import read_csv, write_csv
from testbed.selection import SelectionRule, rows_at_choice, select, validation_indices


def _rows(table: dict[float, list[float]], group: str = "a") -> list[dict]:
    return [{"method": group, "lam": lam, "seed": s, "val_loss": v, "test": 100 * lam + s}
            for lam, vals in table.items() for s, v in enumerate(vals)]


# ------------------------------------------------------------------ the rule
def test_select_takes_the_best_seed_mean_and_reads_the_test_rows_there():
    # seed means: λ=0.1 → 0.5, λ=1 → 0.3, λ=10 → 0.4 (seed 0 alone would pick λ=10: the mean decides)
    rows = _rows({0.1: [0.5, 0.5], 1.0: [0.35, 0.25], 10.0: [0.2, 0.6]})
    rule = SelectionRule("lam", "val_loss", "min")
    choice = select(rows, rule, ("method",))[("a",)]
    assert choice.value == 1.0
    assert choice.validation[1.0].mean == pytest.approx(0.3)
    assert choice.validation[10.0].n == 2
    # the 95% t half-width of (0.2, 0.6): t_{0.975,1}·s/√2 with s = 0.2√2
    assert choice.validation[10.0].half_width == pytest.approx(st.t.ppf(0.975, 1) * 0.2, rel=1e-12)
    picked = rows_at_choice(rows, {("a",): choice}, rule, ("method",))
    assert [r["test"] for r in picked] == [100.0, 101.0]
    table = choice.as_rows(("method",), "lam")
    assert [r["selected"] for r in table] == [False, True, False]


def test_select_max_mode_ties_and_nan_candidates():
    rule = SelectionRule("lam", "val_score", "max")
    rows = [{"g": 1, "lam": lam, "val_score": v} for lam, v in ((3.0, 0.9), (2.0, 0.9), (1.0, math.nan), (4.0, 0.8))]
    choice = select(rows, rule, ("g",))[(1,)]
    assert choice.value == 2.0                          # tie at 0.9 → the smaller λ; NaN-only λ = 1 skipped
    with pytest.raises(ValueError, match="finite val_score"):
        select([{"g": 1, "lam": 1.0, "val_score": math.nan}], rule, ("g",))


def test_rule_refuses_a_test_metric_and_unknown_modes():
    with pytest.raises(ConfigError, match="validation"):
        SelectionRule("lam", "seen")
    with pytest.raises(ConfigError, match="mode"):
        SelectionRule("lam", "val_loss", "best")
    assert "smallest mean val_loss" in SelectionRule("lam", "val_loss").describe()


# ------------------------------------------------------------------ the validation split
def test_validation_indices_are_stratified_and_sized():
    y = torch.arange(10).repeat_interleave(10)          # 10 classes × 10
    idx = validation_indices(100, 0.2, torch.Generator().manual_seed(0), y)
    assert idx.numel() == 20 and torch.bincount(y[idx], minlength=10).tolist() == [2] * 10
    idx = validation_indices(7, 0.2, torch.Generator().manual_seed(0))
    assert idx.numel() == 1 and idx.unique().numel() == 1
    with pytest.raises(ValueError, match="fraction"):
        validation_indices(10, 1.0, torch.Generator())


@pytest.mark.parametrize("make", [
    lambda: transport_task("moons_shear", n_train=40, n_test=8, n_layers=4, n_obs=1, observed_fraction=0.5,
                           wedge_deg=(60.0, 120.0), noise_std=0.1, width=8, hidden_layers=1),
    lambda: route_task(n_segments=3, n_seen_routes=9, n_train=40, n_test=8, n_layers=6, observed_fraction=0.5,
                       noise_std=0.1, width=8, hidden_layers=1),
])
def test_hold_out_validation_removes_the_inputs_from_training(make):
    task = make()
    split = hold_out_validation(task, 0.25)
    ev = split.evals["validation"]
    assert split.n_train + ev.x.shape[0] == task.n_train == 40 and ev.x.shape[0] == 10
    # disjoint, and together exactly the original training inputs with their states and outcomes
    both = torch.cat([split.x, ev.x])
    assert torch.unique(both, dim=0).shape[0] == 40
    order = [int(torch.nonzero((task.x == row).all(1)).flatten()[0]) for row in ev.x]
    assert torch.equal(ev.states, task.states[order])
    if task.kind == "classification":
        assert torch.equal(ev.y, task.y[order]) and set(ev.y.tolist()) == set(split.y.tolist())
    else:
        assert torch.equal(ev.endpoints, task.endpoints[order])
    assert split.observed.numel() == split.n_train and split.info["n_validation"] == 10
    with pytest.raises(ValueError, match="already"):
        hold_out_validation(split, 0.25)


# ------------------------------------------------------------------ logit distillation
def test_distill_term_is_the_masked_mean_kl():
    torch.manual_seed(0)

    class Head(torch.nn.Module):
        """h_0 = x, no layers; the head is a fixed linear map (so the logits are known)."""

        def __init__(self):
            super().__init__()
            self.w = torch.randn(3, 4, dtype=torch.float64)
            self.flow = self

        def initial_state(self, x):
            return x

        def trajectory(self, h0):
            return h0[None]

        def head(self, h):
            return h @ self.w

    model = Head()
    x = torch.randn(5, 3, dtype=torch.float64)
    teacher = torch.randn(5, 4, dtype=torch.float64)
    mask = torch.tensor([[1.0], [0.0], [1.0], [0.0], [1.0]], dtype=torch.float64)
    data = PathData(x, torch.tensor([1]), torch.zeros(5, 1, 3, dtype=torch.float64), mask,
                    y=torch.zeros(5, dtype=torch.long), n_classes=4, teacher_logits=teacher)
    loss, _ = make_objective("distill=1")(model, data)
    p = torch.softmax(teacher, -1)
    kl = (p * (torch.log(p) - torch.log_softmax(x @ model.w, -1))).sum(-1)
    assert float(loss) == pytest.approx(float(kl[[0, 2, 4]].mean()), rel=1e-12)
    same = data.replace(teacher_logits=x @ model.w)
    assert float(make_objective("distill=1")(model, same)[0]) == pytest.approx(0.0, abs=1e-14)
    with pytest.raises(ValueError, match="teacher_logits"):
        PathData(x, torch.tensor([1]), torch.zeros(5, 1, 3), mask.float(), y=torch.zeros(5, dtype=torch.long),
                 n_classes=4, teacher_logits=teacher[:, :3])
    with pytest.raises(ConfigError, match="teacher_logits"):
        make_objective("distill=1")(model, data.replace(teacher_logits=None))


# ------------------------------------------------------------------ the study's derived tables
def test_multipath_derive_chooses_on_validation_not_on_test(tmp_path):
    """λ = 10 has the best test accuracy but the worse validation loss: the table reports λ = 1."""
    exp = get_experiment("multipath")
    rows = []
    for seed in range(4):
        rows.append({"task": "digits", "variant": "endpoint", "lam": 0.0, "seed": seed, "metric": "accuracy",
                     "seen": 0.80 + 0.01 * seed, "val_loss": 0.9, "nll": 0.7})
        rows.append({"task": "digits", "variant": "aligned", "lam": 1.0, "seed": seed, "metric": "accuracy",
                     "seen": 0.85 + 0.01 * seed + 0.002 * seed ** 2, "val_loss": 0.5, "nll": 0.6})
        rows.append({"task": "digits", "variant": "aligned", "lam": 10.0, "seed": seed, "metric": "accuracy",
                     "seen": 0.95, "val_loss": 0.6, "nll": 0.5})
    write_csv(tmp_path / "results.csv", rows)
    (tmp_path / "results.json").write_text(json.dumps({"config": {"select_on": "val_loss"}}))
    exp.derive(tmp_path)
    chosen = json.loads((tmp_path / "selection.json").read_text())["selected_lambda"]
    assert chosen == {"digits": {"aligned": 1.0}}
    sel = read_csv(tmp_path / "selected.csv")
    assert {(r["variant"], r["lam"]) for r in sel} == {("endpoint", 0.0), ("aligned", 1.0)} and len(sel) == 8
    pair = next(r for r in read_csv(tmp_path / "paired.csv") if r["metric"] == "seen")
    d = np.array([0.05 + 0.002 * s ** 2 for s in range(4)])
    assert pair["a"] == "aligned" and pair["lam_a"] == 1.0 and pair["n"] == 4
    assert pair["mean_diff"] == pytest.approx(d.mean(), rel=1e-9)
    hw = st.t.ppf(0.975, 3) * d.std(ddof=1) / 2
    assert pair["hi"] - pair["mean_diff"] == pytest.approx(hw, rel=1e-9)
    assert pair["p_sign_flip"] == pytest.approx(2 / 16)             # all four differences positive: exact 2/2⁴


def test_multipath_config_declares_the_rule():
    exp = get_experiment("multipath")
    with pytest.raises(ConfigError, match="select_on"):
        exp.quick_config(select_on="seen")
    with pytest.raises(ConfigError, match="val_fraction"):
        exp.quick_config(val_fraction=0.6)
    with pytest.raises(ConfigError, match="include 0"):
        exp.quick_config(lambdas=(0.1, 1.0))
    assert exp.selection_rule("classification", "val_score").mode == "max"
    assert exp.selection_rule("regression", "val_score").mode == "min"


def test_a_sweep_over_tasks_chooses_on_all_seeds_of_the_merged_rows(tmp_path):
    """Cells split by task and seed; the merged folder's choice uses every seed (not one cell's), the cells' copies
    of the derived tables are not concatenated, and results.json carries the tree the sweep started from."""
    from testbed.results import git_state
    from testbed.sweep import load_spec, run_sweep
    from testbed.sweep.figures import from_sweep

    spec = tmp_path / "spec.toml"
    spec.write_text('experiment = "multipath"\nquick = true\nseeds = [0, 1]\n\n[fixed]\nsteps = 15\nn_test = 16\n'
                    'n_train = 30\nwidth = 8\nlambdas = [0.0, 1.0, 10.0]\n\n[grid]\n'
                    'tasks = [["routes"], ["spiral_twist"]]\n')
    res = run_sweep(load_spec(spec), tmp_path / "out", sequential=True, threads=1, progress=False)
    assert res.ran == 4 and not res.failed
    from_sweep(tmp_path / "out", tmp_path / "figs", log=lambda *_: None)
    merged = tmp_path / "figs" / "merged"
    rows = read_csv(merged / "results.csv")
    assert len(rows) == 2 * 2 * (1 + 2 * 2) and "tasks" not in rows[0]
    sel = read_csv(merged / "selection.csv")
    assert len(sel) == 2 * 2 * 2 and all(r["n"] == 2 for r in sel)          # every candidate over both seeds
    for task in ("routes", "spiral_twist"):
        for variant in ("aligned", "over"):
            cands = {r["lam"]: r["val_loss"] for r in rows if r["task"] == task and r["variant"] == variant}
            means = {lam: np.mean([r["val_loss"] for r in rows if r["task"] == task and r["variant"] == variant
                                   and r["lam"] == lam]) for lam in cands}
            chosen = json.loads((merged / "selection.json").read_text())["selected_lambda"][task][variant]
            assert chosen == min(means, key=means.get)
    meta = json.loads((merged / "results.json").read_text())
    assert meta["commit"] == git_state()["commit"] and meta["dirty"] == git_state()["dirty"]
    assert len(meta["runs"]) == 4 and meta["selection"]["regression"]["metric"] == "val_loss"

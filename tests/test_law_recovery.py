"""End-to-end tests of the law-recovery experiment and the CLI (tiny settings, CPU)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy.linalg import expm

import systems
from testbed import cli
from testbed.config import ConfigError
from testbed.evaluate import evaluate_student, teacher_reference
from testbed.experiments import common, get_experiment, law_recovery
from testbed.field.consistency import default_step_counts
from testbed.results import read_csv
from testbed.students.residual import ResidualStudent

TINY = dict(systems=("linear_spiral",), objectives=("endpoint", "field"), students=("residual",), seeds=(0,),
            n_layers=8, n_obs=4, width=16, hidden_layers=1, n_train=64, n_test=32, steps=150, batch_size=32,
            match_endpoint=0.0, progress=False)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("law")
    rows = law_recovery.run(law_recovery.LawRecoveryConfig(**TINY), out)
    law_recovery.plot(out)
    return out, rows


def test_tiny_run_writes_complete_results(tiny_run):
    out, rows = tiny_run
    for name in ("results.csv", "consistency.csv", "results.json", "summary.csv", "paired.csv", "law_recovery.png",
                 "law_error.pdf", "aliasing.png"):
        assert (out / name).stat().st_size > 0, name
    table = read_csv(out / "results.csv")
    assert len(table) == 2 == len(rows)            # match_endpoint = 0: the equal-budget rows only
    required = ["system", "student", "regime", "objective", "seed", "endpoint_error", "law_error_id",
                "law_error_ood"]
    assert list(table[0])[: len(required)] == required
    assert {r["regime"] for r in table} == {"budget"} and {r["student"] for r in table} == {"residual"}
    for r in table:
        for k in required[5:] + ["consistency_error", "path_sensitivity"]:
            assert math.isfinite(r[k]) and r[k] >= 0, (k, r[k])
    # the CSV holds the numbers run() returned, to full precision
    assert table[0]["law_error_id"] == rows[0]["law_error_id"]
    curves = read_csv(out / "consistency.csv")
    teacher = [c for c in curves if c["objective"] == "teacher"]
    assert {c["n_steps"] for c in teacher if c["method"] == "euler"} == {8, 2, 4, 16, 32}
    # the teacher's L-step Euler endpoint error is the floor: the dopri5 solve of f* hits the truth
    dop = next(c for c in teacher if c["method"] == "dopri5")
    assert dop["target_error"] < 1e-5
    meta = json.loads((out / "results.json").read_text())
    assert meta["experiment"] == "law-recovery" and meta["seeds"] == [0]
    assert (out / "checkpoints" / "linear_spiral-residual-field-L8-s0" / "checkpoint.pt").exists()


def _linear_law_student(system, n_layers: int, M=None) -> ResidualStudent:
    """A tied, ODE-scaled (m = Δt) residual student whose branch is exactly ``f(x) = M x`` (default: the linear
    spiral's own law ``A``): W₂ relu(W₁ x) with W₁ = [I; −I], W₂ = [M, −M] and zero biases is M relu(x) − M relu(−x)."""
    s = ResidualStudent(2, n_layers=n_layers, horizon=float(system.horizon), width=4, hidden_layers=1, tied=True,
                        activation="relu", branch_scaling="ode").double()
    M = system.matrix_tensor() if M is None else torch.as_tensor(M, dtype=torch.float64)
    eye = torch.eye(2, dtype=torch.float64)
    first, last = s.blocks[0].net[0], s.blocks[0].net[2]
    with torch.no_grad():
        first.weight.copy_(torch.cat([eye, -eye]))
        last.weight.copy_(torch.cat([M, -M], 1))
        first.bias.zero_()
        last.bias.zero_()
    return s


def test_teacher_law_as_the_student_scores_zero_law_error_and_the_euler_error():
    """Evaluated through the experiment's metrics, a student whose field is exactly f* has law error 0 (ID and
    OOD), the teacher's own consistency numbers, and trajectory / endpoint / flow-Jacobian errors equal to forward
    Euler's global error, computed here independently: h_l = (I + ΔtA)^l x₀ against φ_t(x₀) = expm(tA) x₀ (scipy)."""
    system = systems.get_system("linear_spiral")
    L, n_obs = 8, 4
    _, test_id, test_ood = common.make_splits(system, 8, 32, n_obs)
    steps = default_step_counts(L)
    ev = evaluate_student(_linear_law_student(system, L), teacher_reference(system, test_id, test_ood, L, steps),
                          steps)
    m = ev.metrics
    assert m["law_error_id"] < 1e-15 and m["law_error_ood"] < 1e-15
    assert m["consistency_error"] == pytest.approx(m["teacher_consistency_error"], rel=1e-12)
    assert m["consistency_error_mean"] == pytest.approx(ev.consistency.mean_change(), rel=1e-12)
    assert abs(m["consistency_excess"]) < 1e-12 * m["teacher_consistency_error"]

    A, T = system.matrix_tensor().numpy(), float(system.horizon)
    P = np.eye(2) + (T / L) * A  # one Euler step

    def euler_error(x0: np.ndarray, ks) -> float:
        pred = np.stack([x0 @ np.linalg.matrix_power(P, k * L // n_obs).T for k in ks])
        exact = np.stack([x0 @ expm(k * T / n_obs * A).T for k in ks])
        return float(np.sqrt(((pred - exact) ** 2).sum() / (exact**2).sum()))

    x0_id, x0_ood = test_id.x0.numpy(), test_ood.x0.numpy()
    assert m["trajectory_error"] == pytest.approx(euler_error(x0_id, range(1, n_obs + 1)), rel=1e-10)
    assert m["interior_error"] == pytest.approx(euler_error(x0_id, range(1, n_obs)), rel=1e-10)   # t_k < T only
    assert m["aliased"] is False
    assert m["endpoint_error"] == pytest.approx(euler_error(x0_id, [n_obs]), rel=1e-10)
    assert m["endpoint_error_ood"] == pytest.approx(euler_error(x0_ood, [n_obs]), rel=1e-10)
    # ∂h_L/∂h_0 = P^L for every input, against ∂φ_T/∂x_0 = expm(TA)
    PL, E = np.linalg.matrix_power(P, L), expm(T * A)
    assert m["flow_jacobian_error"] == pytest.approx(np.linalg.norm(PL - E) / np.linalg.norm(E), rel=1e-9)
    assert m["trajectory_error"] > 0.1  # L = 8 Euler steps over T = 5: far from the exact flow


def test_same_seed_same_numbers(tiny_run, tmp_path):
    _, rows = tiny_run
    again = law_recovery.run(law_recovery.LawRecoveryConfig(**TINY), tmp_path)
    for a, b in zip(rows, again, strict=True):
        for k in ("endpoint_error", "law_error_id", "consistency_error", "path_sensitivity"):
            assert a[k] == b[k], k


def test_failed_run_leaves_no_complete_looking_results(tmp_path, monkeypatch):
    (tmp_path / "results.csv").write_text("stale\n")

    def boom(*args, **kwargs):
        raise FloatingPointError("simulated divergence")

    monkeypatch.setattr(common, "train", boom)
    with pytest.raises(FloatingPointError):
        law_recovery.run(law_recovery.LawRecoveryConfig(**TINY), tmp_path)
    assert not (tmp_path / "results.csv").exists()


@pytest.mark.parametrize("bad, match", [
    (dict(systems=("no_such_system",)), "no_such_system"),
    (dict(n_layers=0), "n_layers"),
    (dict(n_layers=10, n_obs=4), "multiple"),
    (dict(seeds=()), "seeds"),
    (dict(objectives=("endpoint=-1",)), "endpoint"),
    (dict(lr=float("nan")), "lr"),
])
def test_bad_config_is_rejected_naming_the_value(bad, match):
    with pytest.raises(Exception, match=match):
        law_recovery.LawRecoveryConfig(**{**TINY, **bad})


def test_cli_bad_input_exits_nonzero_with_a_clear_message(capsys, tmp_path):
    cases = [
        (["run", "law-recovery", "--quick", "--system", "nope", "--out", str(tmp_path)], "unknown system 'nope'"),
        (["run", "law-recovery", "--quick", "--set", "depth=3", "--out", str(tmp_path)], "unknown config key 'depth'"),
        (["run", "law-recovery", "--quick", "--set", "n_layers=-4", "--out", str(tmp_path)], "n_layers"),
        (["run", "no-such-experiment"], "unknown experiment"),
        (["consistency", str(tmp_path / "missing.pt")], "no checkpoint"),
    ]
    for argv, msg in cases:
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert msg in err, (argv, err)
    assert not (tmp_path / "results.csv").exists()


def test_cli_list_names_systems_and_experiments(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("van_der_pol", "lorenz63", "double_gyre", "law-recovery", "law-benchmark", "dysts:NAME"):
        assert name in out


def test_cli_consistency_on_a_saved_student(tiny_run, capsys):
    out, _ = tiny_run
    ckpt = out / "checkpoints" / "linear_spiral-residual-field-L8-s0" / "checkpoint.pt"
    assert cli.main(["consistency", str(ckpt), "--steps", "4,8,16,32", "--n", "16", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    euler = {r["n_steps"]: r for r in rep["student"] if r["method"] == "euler"}
    assert set(euler) == {4, 8, 16, 32}
    assert euler[8]["endpoint_change"] == 0.0  # L = 8: the reference is the network itself
    assert rep["system"] == "linear_spiral" and len(rep["teacher"]) == len(rep["student"])
    # the teacher's Euler error vs the exact flow falls with L' (first order)
    t_err = {r["n_steps"]: r["target_error"] for r in rep["teacher"] if r["method"] == "euler"}
    assert t_err[32] < t_err[16] < t_err[8] < t_err[4]
    assert cli.main(["consistency", str(ckpt), "--steps", "0,8"]) != 0


def test_registry_and_plot_command(tiny_run, capsys):
    out, _ = tiny_run
    assert get_experiment("law-recovery") is law_recovery
    assert get_experiment("law_recovery") is law_recovery  # either spelling; the canonical name is hyphenated
    assert get_experiment("Law_Recovery").NAME == "law-recovery"
    with pytest.raises(ConfigError, match="law-recovery"):
        get_experiment("law-recover")
    (out / "law_recovery.png").unlink()
    assert cli.main(["plot", "law-recovery", "--out", str(out)]) == 0
    assert (out / "law_recovery.png").stat().st_size > 10_000


@pytest.mark.slow
def test_quick_main_job_runs_end_to_end(tmp_path):
    """The README's main job (`testbed run law-recovery --quick`) on 2 CPU cores."""
    torch.set_num_threads(1)
    rc = cli.main(["run", "law-recovery", "--quick", "--no-progress", "--out", str(tmp_path)])
    assert rc == 0
    rows = read_csv(tmp_path / "results.csv")
    assert {r["system"] for r in rows} == {"van_der_pol", "linear_spiral", "lotka_volterra"}
    assert {r["objective"] for r in rows} == set(law_recovery.OBJECTIVES)
    assert {r["regime"] for r in rows} == {"budget", "matched"}
    for name in ("law_recovery.pdf", "law_error.png", "aliasing.png", "summary.csv", "paired.csv"):
        assert (tmp_path / name).exists(), name


def test_matched_regime_reads_a_validation_split_and_counts_misses(tmp_path, monkeypatch):
    """match_endpoint > 0: the same run gives the equal-budget student (after every step) and the matched one (the
    weights at the first check where the endpoint error on a split carved from the *training* data is in the band).
    A reachable band is entered before the budget ends; an unreachable one is a miss, kept and counted. The
    band watcher only ever sees training trajectories."""
    from testbed.experiments import law_recovery as lr

    seen: list[torch.Tensor] = []

    class Spy(lr.BandWatch):
        def __init__(self, val_data, target, *args, **kwargs):
            seen.append(val_data.x0.clone())
            super().__init__(val_data, target, *args, **kwargs)

    monkeypatch.setattr(lr, "BandWatch", Spy)
    base = dict(systems=("linear_spiral",), objectives=("endpoint",), steps=400, n_train=40, n_test=16,
                n_layers=8, n_obs=4, width=8, progress=False)
    easy = {r["regime"]: r for r in lr.run(lr.quick_config(**base, match_endpoint=0.9), tmp_path / "easy")}
    hard = {r["regime"]: r for r in lr.run(lr.quick_config(**base, match_endpoint=1e-9), tmp_path / "hard")}
    assert easy["budget"]["steps_trained"] == 400 and easy["matched"]["reached_band"] is True
    assert easy["matched"]["steps_trained"] < 400 and easy["matched"]["val_endpoint_error"] <= 0.9
    assert easy["matched"]["endpoint_error"] != easy["budget"]["endpoint_error"]     # an earlier copy of the weights
    assert (tmp_path / "easy" / "checkpoints" / "linear_spiral-residual-endpoint-L8-s0" / "matched"
            / "checkpoint.pt").exists()
    # re-running into the same folder resumes the finished checkpoints: the matched student is read back, not lost
    again = {r["regime"]: r for r in lr.run(lr.quick_config(**base, match_endpoint=0.9), tmp_path / "easy")}
    for k in ("reached_band", "steps_trained", "endpoint_error", "law_error_id", "val_endpoint_error"):
        assert again["matched"][k] == easy["matched"][k], k
    assert hard["matched"]["reached_band"] is False and hard["matched"]["steps_trained"] == 400
    assert hard["matched"]["endpoint_error"] == hard["budget"]["endpoint_error"]     # a miss: the final weights
    summary = read_csv(tmp_path / "hard" / "summary.csv")
    miss = next(s for s in summary if s["regime"] == "matched")
    assert (miss["n"], miss["n_trained"], miss["n_reached"]) == (0, 1, 0)           # counted, not averaged
    train, test_id, _ = lr.make_splits(systems.get_system("linear_spiral"), 40, 16, 4, torch.float64)
    val = seen[0]
    assert val.shape[0] == 8                                                       # 20% of 40
    assert all(bool((train.x0 == v).all(1).any()) for v in val)                   # every one a training input
    assert not any(bool((test_id.x0 == v).all(1).any()) for v in val)             # none a test input
    with pytest.raises(ConfigError, match="match_endpoint"):
        lr.quick_config(match_endpoint=1.5)


def _rotation(theta: float) -> np.ndarray:
    return np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])


def test_the_aliased_spiral_law_is_detected_and_its_rate_is_the_alias():
    """On x' = Ax (A = −aI + wJ, T = 5) the L-step Euler network with branch M_alias = (R(−2π/L)·expm(ΔtA) − I)/Δt has
    exactly the flow map φ_T = expm(TA) (R(−2π) = I, and the factors commute) and a different law: its endpoint error
    is 0, its interior states are rotated by −2πk/n_obs, and it is flagged aliased. Its rotation rate is
    e^{−aΔt} sin(wΔt − 2π/L)/Δt ≈ w − 2π/T. The consistent law M* = (expm(ΔtA) − I)/Δt (also endpoint error 0) is not
    flagged, and its law error is the closed form ‖M* − A‖/‖A‖ (both commute with J, so the ratio is the same
    for every state)."""
    from testbed.experiments.law.figures import rotation_rate

    system = systems.get_system("linear_spiral")
    L, n_obs, T, a, w = 32, 8, float(system.horizon), float(system.a), float(system.w)
    dt = T / L
    A = system.matrix_tensor().numpy()
    step = expm(dt * A)
    M_alias = (_rotation(-2 * math.pi / L) @ step - np.eye(2)) / dt
    M_star = (step - np.eye(2)) / dt
    _, test_id, test_ood = common.make_splits(system, 8, 32, n_obs)
    ref = teacher_reference(system, test_id, test_ood, L, default_step_counts(L))
    alias = evaluate_student(_linear_law_student(system, L, M_alias), ref).metrics
    true = evaluate_student(_linear_law_student(system, L, M_star), ref).metrics
    assert alias["endpoint_error"] < 1e-12 and true["endpoint_error"] < 1e-12
    assert alias["aliased"] is True and true["aliased"] is False
    assert alias["interior_error"] > 0.5 and true["interior_error"] < 1e-12
    assert alias["law_error_id"] > 1.0
    assert true["law_error_id"] == pytest.approx(np.linalg.norm(M_star - A) / np.linalg.norm(A), rel=1e-9)
    rate_alias = rotation_rate(_linear_law_student(system, L, M_alias).vector_field, system)
    assert rate_alias == pytest.approx(math.exp(-a * dt) * math.sin(w * dt - 2 * math.pi / L) / dt, rel=1e-9)
    assert rate_alias == pytest.approx(w - 2 * math.pi / T, abs=0.02)
    rate_true = rotation_rate(_linear_law_student(system, L, M_star).vector_field, system)
    assert rate_true == pytest.approx(math.exp(-a * dt) * math.sin(w * dt) / dt, rel=1e-9)


def test_state_supervision_alone_recovers_a_linear_law():
    """Mechanism: a tanh residual student trained on observed states only (no vector-field term) on a linear spiral
    with a horizon too short to alias (T = 1, rotation 1 rad) learns the law. Its best possible law at depth L is the
    Euler-consistent M* = (expm(ΔtA) − I)/Δt, whose law error ‖M* − A‖/‖A‖ ≈ Δt·|λ|/2 is the floor; the trained
    student gets within 0.02 of it. (At this short horizon the endpoint map of a linear flow also pins the law —
    the endpoint-only student lands near the same floor; the contrast needs a horizon long enough to alias, pinned
    by the test above.)"""
    system = systems.get_system("linear_spiral", horizon=1.0)
    L, n_obs = 16, 4
    A = system.matrix_tensor().numpy()
    dt = 1.0 / L
    floor = np.linalg.norm((expm(dt * A) - np.eye(2)) / dt - A) / np.linalg.norm(A)
    train, test_id, test_ood = common.make_splits(system, 128, 64, n_obs)
    ref = teacher_reference(system, test_id, test_ood, L, default_step_counts(L))
    torch.manual_seed(0)
    s = ResidualStudent(2, n_layers=L, horizon=1.0, width=32, hidden_layers=1, tied=True, init_scale=0.1).double()
    common.fit(s, "trajectory=1", train, seed=0, steps=500, batch_size=64, lr=1e-2, grad_clip=1.0, progress=False,
               run_dir=None)
    m = evaluate_student(s, ref).metrics
    assert floor == pytest.approx(0.03, abs=0.01)
    assert m["law_error_id"] < floor + 0.02
    assert m["interior_error"] < 0.02


def test_derive_tables_pair_on_shared_seeds_and_count_misses(tmp_path):
    """derive(): summary over the in-band rows with n_trained / n_reached, and paired log-ratios against the
    endpoint-trained student over the seeds both have (matched: both in the band), checked on known numbers."""
    from testbed.results import write_csv

    rows = []
    for seed, (e, f) in enumerate([(0.4, 0.1), (0.8, 0.2), (0.2, 0.05)]):
        for regime in ("budget", "matched"):
            for obj, law in (("endpoint", e), ("field", f)):
                reached = not (regime == "matched" and obj == "field" and seed == 2)
                rows.append({"system": "s", "student": "residual", "regime": regime, "objective": obj, "seed": seed,
                             "endpoint_error": 0.05, "law_error_id": law, "law_error_ood": 2 * law,
                             "trajectory_error": law, "interior_error": law, "consistency_excess": law - e,
                             "reached_band": reached if regime == "matched" else "", "n_layers": 32, "width": 8})
    write_csv(tmp_path / "results.csv", rows)
    law_recovery.derive(tmp_path)
    summary = {(r["regime"], r["objective"]): r for r in read_csv(tmp_path / "summary.csv")}
    assert summary[("budget", "field")]["n"] == 3 and summary[("matched", "field")]["n"] == 2
    assert (summary[("matched", "field")]["n_trained"], summary[("matched", "field")]["n_reached"]) == (3, 2)
    assert summary[("budget", "endpoint")]["law_error_id_mean"] == pytest.approx((0.4 + 0.8 + 0.2) / 3)
    pairs = {(p["regime"], p["metric"]): p for p in read_csv(tmp_path / "paired.csv")}
    for regime, n in (("budget", 3), ("matched", 2)):
        p = pairs[(regime, "law_error_id")]
        assert (p["a"], p["b"], p["n"]) == ("field", "endpoint", n)
        assert p["ratio"] == pytest.approx(0.25, rel=1e-12)                       # every seed: field = endpoint / 4
        assert p["scale"] == "log10"
    lin = pairs[("budget", "consistency_excess")]                                  # a signed metric: plain difference
    assert lin["scale"] == "linear" and lin["mean_diff"] == pytest.approx(-(0.3 + 0.6 + 0.15) / 3)
    text = law_recovery.report(tmp_path)
    assert "[2/3 in band]" in text and "0.25×" in text

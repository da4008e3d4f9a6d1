"""Training loop: determinism, exact resume after an interruption, NaN guard, learning-rate schedule,
checkpoint round trip, config validation and a loss that actually goes down."""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterator

import pytest
import torch

import systems
from systems.data import TrajectoryData, make_trajectories
from testbed import objectives
from testbed.config import ConfigError
from testbed.objectives import make_objective
from testbed.students import ResidualStudent
from testbed.train import CHECKPOINT_NAME, LOG_NAME, NonFiniteLossError, TrainConfig, load_student, train

pytestmark = pytest.mark.usefixtures("float64_default")

HORIZON = 2.0


@pytest.fixture(scope="module")
def data() -> TrajectoryData:
    sys = systems.get_system("linear_spiral", horizon=HORIZON)
    return make_trajectories(sys, 32, 4, generator=torch.Generator().manual_seed(7))


def make_student(seed: int = 0) -> ResidualStudent:
    torch.manual_seed(seed)
    return ResidualStudent(dim=2, n_layers=8, horizon=HORIZON, width=16, tied=True)


def cfg(**kw) -> TrainConfig:
    base = dict(steps=40, batch_size=16, lr=1e-2, log_every=1, checkpoint_every=10, progress=False, seed=3)
    base.update(kw)
    return TrainConfig(**base)


def strip_time(history):
    return [{k: v for k, v in h.items() if k != "time"} for h in history]


def assert_same_weights(a, b, tol=0.0):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert float((sa[k] - sb[k]).abs().max()) <= tol, k


@contextlib.contextmanager
def interrupted_at_call(monkeypatch: pytest.MonkeyPatch, n: int, term: str = "vector_field") -> Iterator[None]:
    """Inside the block the ``n``-th evaluation of objective term ``term`` raises ``KeyboardInterrupt`` (a Ctrl-C
    mid-run), which the block must raise; the term is restored on leaving."""
    calls = {"n": 0}
    original = objectives.TERMS[term]

    def exploding(cache):
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt
        return original(cache)

    monkeypatch.setitem(objectives.TERMS, term, exploding)
    try:
        with pytest.raises(KeyboardInterrupt):
            yield
    finally:
        monkeypatch.setitem(objectives.TERMS, term, original)


# ---------------------------------------------------------------------------------------------- determinism
def test_same_seed_same_run(data):
    runs = []
    for _ in range(2):
        s = make_student()
        res = train(s, "field", data, cfg(steps=25, grad_clip=1.0))
        runs.append((s, res))
    assert_same_weights(runs[0][0], runs[1][0])
    assert strip_time(runs[0][1].history) == strip_time(runs[1][1].history)
    assert len(runs[0][1].history) == 25 and runs[0][1].final_loss == runs[0][1].history[-1]["loss"]
    # a different data seed gives a different run (the test above is not vacuous)
    s3 = make_student()
    train(s3, "field", data, cfg(steps=25, grad_clip=1.0, seed=4))
    assert float((s3.blocks[0].net[0].weight - runs[0][0].blocks[0].net[0].weight).detach().abs().max()) > 1e-8


def test_cosine_and_constant_schedules(data):
    res = train(make_student(), "endpoint", data, cfg(steps=8, lr=0.02))
    for rec in res.history:
        k = rec["step"]
        assert rec["lr"] == pytest.approx(0.02 * 0.5 * (1 + math.cos(math.pi * k / 8)), rel=1e-12, abs=1e-15)
    assert res.history[-1]["lr"] == pytest.approx(0.0, abs=1e-15)
    res = train(make_student(), "endpoint", data, cfg(steps=5, lr=0.02, lr_schedule="constant"))
    assert all(rec["lr"] == 0.02 for rec in res.history)


# ---------------------------------------------------------------------------------------------- resume
def test_resume_after_interruption_reproduces_uninterrupted_run(data, tmp_path, monkeypatch):
    a = make_student()
    res_a = train(a, "field", data, cfg(), out_dir=tmp_path / "a")

    b = make_student()
    with interrupted_at_call(monkeypatch, 25):
        train(b, "field", data, cfg(), out_dir=tmp_path / "b")
    ckpt = torch.load(tmp_path / "b" / CHECKPOINT_NAME, weights_only=False)
    assert ckpt["step"] == 20
    # the interrupted run had logged steps 21..24 after its last checkpoint
    logged = [json.loads(line)["step"] for line in (tmp_path / "b" / LOG_NAME).read_text().splitlines()]
    assert logged == list(range(1, 25))

    b2 = make_student(seed=99)  # weights come from the checkpoint, not from the init
    res_b = train(b2, "field", data, cfg(), out_dir=tmp_path / "b")
    assert res_b.resumed_from == 20
    assert_same_weights(a, b2, tol=1e-12)
    assert strip_time(res_b.history) == strip_time(res_a.history)
    assert res_b.final_loss == res_a.final_loss
    log = [json.loads(line) for line in (tmp_path / "b" / LOG_NAME).read_text().splitlines()]
    steps = [r["step"] for r in log]
    assert steps == list(range(1, 41))  # no duplicates, no gaps
    log_a = [json.loads(line) for line in (tmp_path / "a" / LOG_NAME).read_text().splitlines()]
    assert [r["loss"] for r in log] == [r["loss"] for r in log_a]

    # resuming a finished run does nothing
    b3 = make_student(seed=5)
    res_c = train(b3, "field", data, cfg(), out_dir=tmp_path / "b")
    assert res_c.resumed_from == 40 and res_c.final_loss == res_a.final_loss
    assert_same_weights(a, b3)


def test_resume_with_other_config_starts_over(data, tmp_path):
    train(make_student(), "endpoint", data, cfg(steps=10), out_dir=tmp_path)
    s = make_student()
    with pytest.warns(UserWarning, match="another student/config/objective"):
        res = train(s, "endpoint", data, cfg(steps=10, lr=5e-3), out_dir=tmp_path)
    assert res.resumed_from == 0
    fresh = make_student()
    train(fresh, "endpoint", data, cfg(steps=10, lr=5e-3))
    assert_same_weights(s, fresh)


# ---------------------------------------------------------------------------------------------- NaN guard
def test_nan_student_raises_naming_the_step(data):
    s = make_student()
    with torch.no_grad():
        s.blocks[0].net[0].weight[0, 0] = float("nan")
    with pytest.raises(NonFiniteLossError, match="at step 1") as err:
        train(s, "field", data, cfg(steps=5))
    assert err.value.step == 1 and math.isnan(err.value.loss)
    assert set(err.value.terms) == {"endpoint", "trajectory", "vector_field"}


def test_nan_midway_raises_naming_the_step(data, monkeypatch):
    calls = {"n": 0}
    original = objectives.TERMS["endpoint"]

    def flaky(cache):
        calls["n"] += 1
        v = original(cache)
        return v * float("inf") if calls["n"] == 3 else v

    monkeypatch.setitem(objectives.TERMS, "endpoint", flaky)
    with pytest.raises(NonFiniteLossError, match="at step 3") as err:
        train(make_student(), "endpoint", data, cfg(steps=10))
    assert err.value.step == 3


def test_trajectory_data_rejects_non_finite_values(data):
    states = data.states.clone()
    states[1, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="'states'"):
        TrajectoryData(data.t, states, data.velocities)
    vel = data.velocities.clone()
    vel[0, 2, 1] = float("inf")
    with pytest.raises(ValueError, match="'velocities'"):
        TrajectoryData(data.t, data.states, vel)
    jac = torch.zeros(data.t.numel(), data.n, 2, 2)
    jac[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="'jacobians'"):
        TrajectoryData(data.t, data.states, data.velocities, jac)


def test_jacobian_objective_needs_jacobian_data(data):
    with pytest.raises(ConfigError, match="Jacobians"):
        train(make_student(), "field+jacobian", data, cfg(steps=2))


# ---------------------------------------------------------------------------------------------- learning
def test_training_reduces_the_loss(data):
    s = make_student()
    obj = make_objective("field")
    with torch.no_grad():
        before = float(obj(s, data)[0])
    res = train(s, obj, data, cfg(steps=300, batch_size=16, lr=1e-2, log_every=50, checkpoint_every=0))
    with torch.no_grad():
        after = float(obj(s, data)[0])
    assert after < 0.2 * before
    assert res.history[-1]["step"] == 300 and len(res.history) == 6
    assert not s.training  # left in eval mode


def test_load_student_round_trip(data, tmp_path):
    s = make_student()
    train(s, "endpoint", data, cfg(steps=5), out_dir=tmp_path, extra={"note": "hi"})
    for where in (tmp_path, tmp_path / CHECKPOINT_NAME):
        loaded, ckpt = load_student(where)
        assert isinstance(loaded, ResidualStudent)
        assert loaded.spec() == s.spec()
        assert next(loaded.parameters()).dtype == torch.float64
        assert ckpt["extra"] == {"note": "hi"} and ckpt["step"] == 5
        assert_same_weights(loaded, s)
        with torch.no_grad():
            assert torch.equal(loaded(data.x0), s(data.x0))
            assert torch.equal(loaded.trajectory(data.x0), s.trajectory(data.x0))
    with pytest.raises(FileNotFoundError):
        load_student(tmp_path / "nowhere")


@pytest.mark.parametrize("field,value", [
    ("steps", 0), ("steps", 2.5), ("lr", -1.0), ("lr", 0.0), ("lr", float("nan")), ("lr_schedule", "foo"),
    ("batch_size", 0), ("weight_decay", -0.1), ("grad_clip", -1.0), ("seed", -1), ("log_every", 0),
    ("checkpoint_every", -5),
])
def test_train_config_rejects_bad_values(field, value):
    with pytest.raises(ConfigError, match=field):
        TrainConfig(**{field: value})


def test_probe_estimated_terms_resume_exactly_and_leave_the_minibatch_order_alone(tmp_path, monkeypatch):
    """Probes have their own seeded stream, saved in the checkpoint: an interrupted probe run resumes to the
    uninterrupted weights, and the minibatches a run draws do not depend on whether probes are drawn."""
    from testbed.objectives import make_objective

    sys_ = systems.get_system("linear_spiral", horizon=HORIZON)
    jdata = make_trajectories(sys_, 32, 4, generator=torch.Generator().manual_seed(7), with_jacobians=True)
    obj = make_objective("field+jacobian", probes={"jacobian": 1})
    a = make_student()
    train(a, obj, jdata, cfg(steps=30), out_dir=tmp_path / "a")
    with interrupted_at_call(monkeypatch, 15):
        train(make_student(), obj, jdata, cfg(steps=30), out_dir=tmp_path / "b")
    b = make_student(seed=99)
    res = train(b, obj, jdata, cfg(steps=30), out_dir=tmp_path / "b")
    assert res.resumed_from == 10
    assert_same_weights(a, b)
    # minibatch indices drawn by a dense and a probe run are the same sequence
    seen: dict[str, list] = {"dense": [], "probe": []}
    real = torch.randperm

    for key, o in (("dense", make_objective("field+jacobian")), ("probe", obj)):
        def spy(n, *args, _key=key, **kw):
            out = real(n, *args, **kw)
            seen[_key].append(out[:4].tolist())
            return out
        monkeypatch.setattr(torch, "randperm", spy)
        train(make_student(), o, jdata, cfg(steps=5))
        monkeypatch.setattr(torch, "randperm", real)
    assert seen["dense"] == seen["probe"] and len(seen["dense"]) == 5

"""Continual-learning machinery: reservoir buffer, metrics, task-IL masking, field sketches and the method losses."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import stats

from testbed.continual import LearnerConfig, ReservoirBuffer, build_learner
from testbed.continual.backbones import DerMLP, ReducedResNet18, ResidualStaged, StagedNet
from testbed.continual.base import TaskResult
from testbed.continual.data import DomainBenchmark, SplitBenchmark, split_classes
from testbed.continual.metrics import average_accuracy, backward_transfer, forgetting, forward_transfer
from testbed.continual.sketch import field_snapshot, make_probes, relative_drift, retention
from testbed.continual.transforms import Permutation
from testbed.datasets import LabeledData


# --------------------------------------------------------------------------------------------- buffer
def test_reservoir_inclusion_is_uniform():
    n_stream, capacity, trials = 200, 20, 300
    counts = np.zeros(n_stream)
    for trial in range(trials):
        buf = ReservoirBuffer(capacity, torch.Generator().manual_seed(trial))
        for start in range(0, n_stream, 10):
            buf.add(x=torch.arange(start, start + 10, dtype=torch.float32).view(-1, 1))
        held = buf.all().x.flatten().long()
        assert len(buf) == capacity and held.unique().numel() == capacity and buf.seen == n_stream
        counts[held.numpy()] += 1
    expected = trials * capacity / n_stream  # inclusion probability capacity / N for every item
    assert abs(counts.mean() - expected) < 1e-9
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert stats.chi2.sf(chi2, n_stream - 1) > 1e-3
    # early and late items are kept equally often (no recency bias)
    assert abs(counts[:100].mean() - counts[100:].mean()) < 0.15 * expected


def test_buffer_fills_then_samples_without_replacement():
    buf = ReservoirBuffer(5, torch.Generator().manual_seed(0))
    pos, slots = buf.add(x=torch.arange(3.0).view(-1, 1), y=torch.tensor([0, 1, 2]))
    assert slots.tolist() == [0, 1, 2] and pos.tolist() == [0, 1, 2] and len(buf) == 3
    draw = buf.sample(10)
    assert len(draw) == 3 and sorted(draw.x.flatten().tolist()) == [0.0, 1.0, 2.0]
    assert torch.equal(draw.y, draw.x.flatten().long())
    with pytest.raises(ValueError, match="empty"):
        ReservoirBuffer(3).sample(1)


# --------------------------------------------------------------------------------------------- metrics
def test_metric_formulas_on_a_hand_made_matrix():
    acc = np.array([[90.0, 0.0, 0.0], [60.0, 80.0, 0.0], [50.0, 70.0, 85.0]])
    assert average_accuracy(acc) == pytest.approx((50 + 70 + 85) / 3)
    assert backward_transfer(acc) == pytest.approx(((50 - 90) + (70 - 80)) / 2)  # -25
    assert forgetting(acc) == pytest.approx(((90 - 50) + (80 - 70)) / 2)  # 25
    # the best earlier value, not the diagonal, defines forgetting
    acc2 = np.array([[40.0, 0.0, 0.0], [70.0, 80.0, 0.0], [55.0, 80.0, 90.0]])
    assert forgetting(acc2) == pytest.approx(((70 - 55) + (80 - 80)) / 2)  # 7.5
    assert backward_transfer(acc2) == pytest.approx(((55 - 40) + 0) / 2)  # +7.5
    assert backward_transfer(np.array([[3.0]])) == 0.0 and forgetting(np.array([[3.0]])) == 0.0
    with pytest.raises(ValueError, match="square"):
        average_accuracy(np.zeros((2, 3)))


# --------------------------------------------------------------------------------------------- fixtures
def _toy_benchmark(n_per_class: int = 8, dim: int = 6) -> SplitBenchmark:
    g = torch.Generator().manual_seed(0)
    y = torch.arange(4).repeat_interleave(n_per_class)
    x = torch.randn(y.numel(), dim, generator=g) + 2.0 * F.one_hot(y, dim).float()
    data = LabeledData(x, y, 4)
    return SplitBenchmark("toy", data, data, split_classes(4, 2), (dim,))


class _FixedLogits(StagedNet):
    """Logits ``10·onehot(9 - y_hint) + 5·onehot(y_hint)`` where ``y_hint`` is stored in the input's first entry."""

    stage_names = ("h",)

    def __init__(self) -> None:
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def forward_stages(self, x):
        y = x[:, 0].long()
        logits = 5.0 * F.one_hot(y, 10) + 10.0 * F.one_hot(9 - y, 10) + 0 * self.dummy
        return logits.float(), [x]


def test_task_il_masks_logits_to_the_tasks_classes():
    y = torch.tensor([0, 1, 0, 1])
    data = LabeledData(torch.stack([y.float(), torch.zeros(4)], 1), y, 10)
    bench = SplitBenchmark("fixed", data, data, split_classes(10, 5), (2,))
    learner = build_learner("finetune", _FixedLogits(), bench, LearnerConfig())
    class_il, task_il = learner.accuracies(data, 0)
    assert class_il == 0.0  # class 9 / 8 always wins over all logits
    assert task_il == 100.0  # masked to classes {0, 1}, the true class wins


# --------------------------------------------------------------------------------------------- sketches
def test_jvp_sketch_equals_finite_differences():
    torch.manual_seed(0)
    net = ResidualStaged(input_dim=5, n_classes=4, dim=6, n_layers=4, width=8).double()
    x = torch.randn(7, 5, dtype=torch.float64)
    probes = make_probes(3, (5,), seed=0).double()
    idx = torch.arange(7) % 3
    states, sketches = field_snapshot(net, x, probes, idx)
    v, eps = probes[idx], 1e-6
    with torch.no_grad():
        plus, minus, plain = net.stages(x + eps * v), net.stages(x - eps * v), net.stages(x)
    assert len(states) == len(net.stage_names) == 4
    for h, s, p, m, h0 in zip(states, sketches, plus, minus, plain, strict=True):
        torch.testing.assert_close(s, (p - m) / (2 * eps), rtol=1e-6, atol=1e-8)
        torch.testing.assert_close(h, h0)
    assert float(probes.flatten(1).norm(dim=1).sub(1).abs().max()) < 1e-6  # unit norm (drawn in float32)


def test_retention_is_one_when_unchanged_and_drops_after_perturbation():
    bench = _toy_benchmark()
    torch.manual_seed(0)
    learner = build_learner("finetune", DerMLP(6, 4, hidden=16), bench, LearnerConfig())
    x = bench.test.x[:20]
    ref_h, ref_j = learner.field_reference(x)
    again_h, again_j = learner.field_reference(x)
    assert retention(again_h, ref_h) == 1.0 and retention(again_j, ref_j) == 1.0
    with torch.no_grad():
        learner.net.fc1.weight.mul_(1.1)
    new_h, new_j = learner.field_reference(x)
    assert retention(new_h, ref_h) < 1.0 and retention(new_j, ref_j) < 1.0
    # ReLU is positively homogeneous: scaling W1 and b1 by 1.1 scales h1 exactly by 1.1 → drift 0.1 at stage 1
    with torch.no_grad():
        learner.net.fc1.bias.mul_(1.1)
    h11, _ = learner.field_reference(x)
    assert relative_drift(h11[:1], ref_h[:1]) == pytest.approx(0.1, rel=1e-5)


# --------------------------------------------------------------------------------------------- losses
def _filled(method: str, **kw) -> tuple:
    bench = _toy_benchmark()
    torch.manual_seed(0)
    cfg = LearnerConfig(buffer_size=8, minibatch_size=8, lr=0.05, **kw)
    learner = build_learner(method, DerMLP(6, 4, hidden=16), bench, cfg)
    data = bench.task_data(0)
    for k in range(0, 8, 4):  # 8 samples offered: the buffer holds exactly them
        learner.observe(data.x[k:k + 4], data.y[k:k + 4], 0)
    return learner, bench


def test_der_and_derpp_terms_match_their_formulas():
    learner, bench = _filled("derpp", alpha=0.3, beta=0.7)
    buf = learner.buffer.all()
    x, y = bench.task_data(1).x[:4], bench.task_data(1).y[:4]
    terms = learner.loss_terms(x, y, 1)  # each draw = the whole buffer (8 of 8), in some order
    with torch.no_grad():
        z = learner.net(buf.x)
    assert terms["ce"].item() == pytest.approx(float(F.cross_entropy(learner.net(x), y).detach()), rel=1e-5)
    assert terms["logit_replay"].item() == pytest.approx(0.3 * float(F.mse_loss(z, buf.logits)), rel=1e-5)
    assert terms["label_replay"].item() == pytest.approx(0.7 * float(F.cross_entropy(z, buf.y)), rel=1e-5)
    assert set(learner.buffer.data) == {"x", "y", "logits", "task"}


def test_derpp_draws_two_independent_batches():
    learner, bench = _filled("derpp")
    learner.cfg.minibatch_size = 3
    drawn = []
    original = learner.draw

    def spy():
        b = original()
        drawn.append(b.index.tolist())
        return b

    learner.draw = spy
    learner.loss_terms(bench.task_data(1).x[:4], bench.task_data(1).y[:4], 1)
    assert len(drawn) == 2 and all(len(d) == 3 for d in drawn)
    learner.loss_terms(bench.task_data(1).x[:4], bench.task_data(1).y[:4], 1)
    assert len({tuple(d) for d in drawn}) > 1  # the draws are not one fixed batch


def test_er_concatenates_buffer_and_stream():
    learner, bench = _filled("er")
    buf = learner.buffer.all()
    x, y = bench.task_data(1).x[:4], bench.task_data(1).y[:4]
    terms = learner.loss_terms(x, y, 1)
    logits = learner.net(torch.cat([x, buf.x]))
    assert terms["ce"].item() == pytest.approx(F.cross_entropy(logits, torch.cat([y, buf.y])).item(), rel=1e-5)


def test_field_preservation_snapshot_and_penalty():
    learner, bench = _filled("derpp_fp", gamma=2.0)
    buf = learner.buffer.all()
    assert {"state0", "state1", "jvp0", "jvp1", "probe"} <= set(learner.buffer.data)
    assert torch.equal(buf.probe, buf.index % learner.cfg.n_probes)
    states, sketches = field_snapshot(learner.net, buf.x, learner.probes, buf.probe)
    last = slice(4, 8)  # the last batch was snapshotted after the last step: nothing has changed since
    torch.testing.assert_close(buf.state1[last], states[1][last].detach())
    torch.testing.assert_close(buf.jvp0[last], sketches[0][last].detach())
    assert not torch.allclose(buf.state0[:4], states[0][:4])  # the first batch saw the net before step 2
    learner.end_task(0)  # task 0 learned: its samples' snapshots are retaken from the current field
    buf = learner.buffer.all()
    torch.testing.assert_close(buf.state0, states[0].detach())
    assert learner.field_loss().item() == pytest.approx(0.0, abs=1e-10)
    with torch.no_grad():
        learner.net.fc2.weight.add_(0.1 * torch.randn_like(learner.net.fc2.weight))
    loss = learner.field_loss()
    assert loss.item() > 1e-4
    learner.net.zero_grad()
    loss.backward()
    assert learner.net.fc2.weight.grad.abs().sum() > 0 and learner.net.classifier.weight.grad is None
    terms = learner.loss_terms(bench.task_data(1).x[:4], bench.task_data(1).y[:4], 1)
    assert {"ce", "logit_replay", "label_replay", "field"} <= set(terms)
    assert terms["field"].item() == pytest.approx(2.0 * loss.item(), rel=1e-5)  # another draw of all 8


def test_learning_is_deterministic_given_seed():
    bench = _toy_benchmark()
    results = []
    for _ in range(2):
        torch.manual_seed(3)
        learner = build_learner("derpp", DerMLP(6, 4, hidden=16), bench,
                                LearnerConfig(buffer_size=6, minibatch_size=4, batch_size=4, seed=3))
        results.append(learner.learn(bench))
    np.testing.assert_array_equal(results[0].acc_class_il, results[1].acc_class_il)
    assert results[0].trajectory_retention == results[1].trajectory_retention


def test_replay_methods_need_a_buffer_and_resnet_exposes_stages():
    bench = _toy_benchmark()
    from testbed.config import ConfigError

    with pytest.raises(ConfigError, match="buffer_size"):
        build_learner("der", DerMLP(6, 4), bench, LearnerConfig(buffer_size=0))
    with pytest.raises(ConfigError, match="lr"):
        LearnerConfig(lr=-1.0)
    net = ReducedResNet18(n_classes=100).eval()
    logits, hs = net.forward_stages(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 100)
    assert [tuple(h.shape[1:]) for h in hs] == [(20, 32, 32), (40, 16, 16), (80, 8, 8), (160, 4, 4)]


# --------------------------------------------------------------------------------------------- forward transfer
def test_forward_transfer_formula_on_a_hand_made_matrix():
    acc = np.array([[90.0, 15.0, 12.0], [60.0, 80.0, 30.0], [50.0, 70.0, 85.0]])
    init = np.array([10.0, 12.0, 9.0])
    # FWT = mean over t ≥ 1 of A[t−1, t] − b_t = ((15 − 12) + (30 − 9)) / 2
    assert forward_transfer(acc, init) == pytest.approx(12.0)
    assert forward_transfer(np.array([[40.0]]), np.array([10.0])) == 0.0
    with pytest.raises(ValueError, match="one entry per task"):
        forward_transfer(acc, init[:2])
    r = TaskResult(acc, acc, [1.0, 1.0], [1.0, 1.0], 0.0, 0.0, None, init, init)
    assert r.summary()["fwt"] == pytest.approx(12.0) and r.summary()["fwt_task_il"] == pytest.approx(12.0)


# --------------------------------------------------------------------------------------------- domain-IL
def _toy_domain(n_tasks: int = 3) -> DomainBenchmark:
    bench = _toy_benchmark()
    perms = tuple(Permutation(torch.randperm(6, generator=torch.Generator().manual_seed(t))) for t in range(n_tasks))
    return DomainBenchmark("toy_domain", bench.train, bench.test, perms, (6,))


def test_domain_il_learner_uses_one_head_and_reports_no_task_il():
    bench = _toy_domain()
    torch.manual_seed(0)
    learner = build_learner("er", DerMLP(6, 4, hidden=16), bench,
                            LearnerConfig(buffer_size=8, minibatch_size=4, batch_size=4, lr=0.1, n_retention=8))
    cil, til = learner.accuracies(bench.stream([1], "test"), 1)
    with torch.no_grad():
        pred = learner.net(bench.task_data(1, "test").x).argmax(1)
    assert cil == pytest.approx(100 * float((pred == bench.test.y).double().mean())) and np.isnan(til)
    result = learner.learn(bench)
    assert result.acc_class_il.shape == (3, 3) and np.isnan(result.acc_task_il).all()
    s = result.summary()
    assert np.isnan(s["avg_acc_task_il"]) and np.isfinite([s["avg_acc_class_il"], s["bwt"], s["fwt"]]).all()
    assert s["fwt"] == pytest.approx(np.mean([result.acc_class_il[t - 1, t] - result.init_class_il[t]
                                              for t in (1, 2)]))
    assert set(learner.buffer.all().task.tolist()) <= {0, 1, 2} and len(learner.buffer) == 8
    # the buffer holds transformed inputs: every stored row is some training row under its task's permutation
    every = learner.buffer.all()
    for x, t in zip(every.x, every.task.tolist(), strict=True):
        assert (bench.transforms[t](bench.train.x) == x).all(dim=1).any()
    joint = build_learner("joint", DerMLP(6, 4, hidden=16), bench, LearnerConfig(batch_size=4, n_retention=8))
    stream = joint.training_stream(bench, 2)  # tasks 0, 1, 2 through one stream over one copy of the inputs
    assert stream.n == 3 * bench.train.n and stream.source is bench.train.x
    assert np.isfinite(joint.learn(bench).summary()["fwt"])


# --------------------------------------------------------------------------------------------- augmentation, speed
def _toy_images(pad_fill=(-1.0, 0.0, 1.0)) -> SplitBenchmark:
    g = torch.Generator().manual_seed(0)
    y = torch.arange(4).repeat_interleave(6)
    x = torch.randn(y.numel(), 3, 8, 8, generator=g) + y.view(-1, 1, 1, 1).float()
    data = LabeledData(x, y, 4)
    return SplitBenchmark("toy_images", data, data, split_classes(4, 2), (3, 8, 8), {"pad_fill": pad_fill})


def test_stream_and_replays_are_augmented_but_the_buffer_stores_raw_inputs(monkeypatch):
    bench = _toy_images()
    torch.manual_seed(0)
    learner = build_learner("derpp", ReducedResNet18(4, nf=2), bench,
                            LearnerConfig(buffer_size=6, minibatch_size=3, batch_size=6, augment=True))
    assert learner.pad_fill == (-1.0, 0.0, 1.0)
    seen = []
    original = learner.augment
    monkeypatch.setattr(learner, "augment", lambda x: (seen.append(x.clone()), original(x))[1])
    x, y = bench.task_data(0).x[:6], bench.task_data(0).y[:6]
    learner.observe(x, y, 0)  # empty buffer: only the stream batch is augmented
    assert len(seen) == 1 and torch.equal(seen[0], x)
    assert torch.equal(learner.buffer.all().x, x)  # stored un-augmented
    stored = {tuple(r.flatten().tolist()) for r in learner.buffer.all().x}
    learner.observe(bench.task_data(1).x[:6], bench.task_data(1).y[:6], 1)
    assert len(seen) == 4  # stream + DER draw + DER++ draw, each augmented afresh (the draws: raw buffer rows)
    assert all(tuple(r.flatten().tolist()) in stored for d in seen[2:] for r in d) and len(seen[2]) == 3
    assert not torch.equal(original(x), x)
    from testbed.config import ConfigError

    with pytest.raises(ConfigError, match="augment=true needs image inputs"):
        build_learner("er", DerMLP(6, 4), _toy_benchmark(), LearnerConfig(buffer_size=4, augment=True))
    with pytest.raises(ConfigError, match="channels_last=true needs image inputs"):
        build_learner("finetune", DerMLP(6, 4), _toy_benchmark(), LearnerConfig(channels_last=True))
    with pytest.raises(ConfigError, match="amp must be true or false"):
        LearnerConfig(amp="yes")


@pytest.mark.parametrize(("method", "channels_last", "amp"), [
    ("derpp_fp", False, True), ("er", True, False), ("derpp", True, True),
])
def test_channels_last_and_amp_tiny_runs_are_finite(method, channels_last, amp):
    bench = _toy_images()
    torch.manual_seed(0)
    learner = build_learner(method, ReducedResNet18(4, nf=4), bench, LearnerConfig(
        buffer_size=8, minibatch_size=4, batch_size=6, augment=True, channels_last=channels_last, amp=amp,
        n_retention=4, lr=0.05))
    assert learner.amp_dtype == (torch.bfloat16 if amp else None) and learner.scaler is None  # CPU: bf16, no scaler
    result = learner.learn(bench)
    s = result.summary()
    assert np.isfinite([s["avg_acc_class_il"], s["avg_acc_task_il"], s["bwt"], s["fwt"], s["final_loss"],
                        s["trajectory_retention"], s["jacobian_retention"]]).all()
    assert 0.0 <= s["avg_acc_class_il"] <= 100.0
    conv = learner.net.layers[0][0].conv1.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) == channels_last
    assert learner.buffer.data["logits"].dtype == torch.float32 and learner.buffer.data["x"].dtype == torch.float32

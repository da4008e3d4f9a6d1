"""The `continual` experiment: config validation, the published hyperparameters, end-to-end runs and the CLI."""

from __future__ import annotations

import copy
import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from testbed.cli import main
from testbed.config import ConfigError
from testbed.continual import LearnerConfig, build_learner
from testbed.continual.backbones import ReducedResNet18, build_backbone
from testbed.continual.data import load_benchmark
from testbed.continual.fake_data import write_cifar, write_mnist_idx
from testbed.continual.sketch import retention
from testbed.experiments import continual, get_experiment
from testbed.results import is_true, read_csv


def test_registered_and_config_validated():
    assert get_experiment("continual") is continual
    with pytest.raises(ConfigError, match="benchmarks"):
        continual.ContinualConfig(benchmarks=("split_fashion",))
    with pytest.raises(ConfigError, match="continual method"):
        continual.ContinualConfig(methods=("ewc",))
    with pytest.raises(ConfigError, match="gammas"):
        continual.ContinualConfig(gammas=(-1.0,))
    with pytest.raises(ConfigError, match="gammas"):
        continual.ContinualConfig(gammas=(1.0, 1.0))
    with pytest.raises(ConfigError, match="val_fraction > 0"):
        continual.ContinualConfig(gammas=(0.3, 1.0), val_fraction=0.0)
    with pytest.raises(ConfigError, match="val_fraction"):
        continual.ContinualConfig(val_fraction=0.5)
    with pytest.raises(ConfigError, match="buffer_sizes"):
        continual.ContinualConfig(buffer_sizes=(0,))
    with pytest.raises(ConfigError, match="epochs"):
        continual.ContinualConfig(epochs=0)
    with pytest.raises(ConfigError, match="backbone"):
        continual.ContinualConfig(backbone="vgg")
    for name in ("seq_cifar10", "perm_mnist", "rot_mnist", "seq-cifar10"):
        assert continual.ContinualConfig(benchmarks=(name,)).benchmarks == (name.replace("-", "_"),)
    with pytest.raises(ConfigError, match="augment=true needs image benchmarks; perm_mnist has flat inputs"):
        continual.ContinualConfig(benchmarks=("seq_cifar10", "perm_mnist"), augment=True)
    with pytest.raises(ConfigError, match="channels_last=true needs image benchmarks"):
        continual.ContinualConfig(channels_last=True)   # default benchmark: split_mnist
    with pytest.raises(ConfigError, match="amp must be true or false"):
        continual.ContinualConfig(amp="yes")
    with pytest.raises(ConfigError, match="limit"):
        continual.ContinualConfig(limit=-1)
    cfg = continual.ContinualConfig(benchmarks=("seq_cifar10",), augment=False, channels_last=True, amp=True)
    assert continual.hyperparameters(cfg, "seq_cifar10", "er", 200)["augment"] is False


# The DER authors' Seq-MNIST grid-search results, typed in from mammoth's utils/best_args.py (aimagelab/mammoth,
# best_args['seq-mnist']; 'sgd' is fine-tuning), independently of testbed.experiments.continual.PAPER_HPARAMS.
# (method, buffer) -> (lr, minibatch_size, alpha, beta); None = the method has no such hyperparameter.
DER_BEST_ARGS_SEQ_MNIST = {
    ("finetune", 200): (0.03, None, None, None),
    ("er", 200): (0.01, 10, None, None),
    ("er", 500): (0.1, 10, None, None),
    ("der", 200): (0.03, 10, 0.2, None),
    ("der", 500): (0.03, 128, 1.0, None),
    ("derpp", 200): (0.03, 128, 0.2, 1.0),
    ("derpp", 500): (0.03, 10, 1.0, 0.5),
}


# The same file's best_args['perm-mnist'], ['rot-mnist'] and ['seq-cifar10'] (batch 128 × 1 epoch for the MNIST
# ones, 32 × 50 for CIFAR-10; 'joint' has no entry there).
DER_BEST_ARGS = {
    "perm_mnist": {("finetune", 200): (0.2, None, None, None), ("er", 200): (0.2, 128, None, None),
                   ("er", 500): (0.2, 128, None, None), ("der", 200): (0.2, 128, 1.0, None),
                   ("der", 500): (0.2, 128, 1.0, None), ("derpp", 200): (0.1, 128, 1.0, 1.0),
                   ("derpp", 500): (0.2, 128, 1.0, 0.5)},
    "rot_mnist": {("finetune", 200): (0.2, None, None, None), ("er", 200): (0.2, 128, None, None),
                  ("er", 500): (0.2, 128, None, None), ("der", 200): (0.2, 128, 1.0, None),
                  ("der", 500): (0.2, 128, 0.5, None), ("derpp", 200): (0.1, 128, 1.0, 0.5),
                  ("derpp", 500): (0.2, 128, 0.5, 1.0)},
    "seq_cifar10": {("finetune", 200): (0.1, None, None, None), ("er", 200): (0.1, 32, None, None),
                    ("er", 500): (0.1, 32, None, None), ("der", 200): (0.03, 32, 0.3, None),
                    ("der", 500): (0.03, 32, 0.3, None), ("derpp", 200): (0.03, 32, 0.1, 0.5),
                    ("derpp", 500): (0.03, 32, 0.2, 0.5)},
}
PROTOCOLS = {"perm_mnist": (128, 1, "mlp", False), "rot_mnist": (128, 1, "mlp", False),
             "seq_cifar10": (32, 50, "resnet18_full", True)}


@pytest.mark.parametrize(("bench", "method", "buffer"), [(b, m, s) for b, t in DER_BEST_ARGS.items() for m, s in t])
def test_published_domain_il_and_seq_cifar10_hyperparameters(bench, method, buffer):
    cfg = continual.ContinualConfig(benchmarks=(bench,))
    lr, mb, alpha, beta = DER_BEST_ARGS[bench][method, buffer]
    hp = continual.hyperparameters(cfg, bench, method, buffer)
    assert (hp["lr"], hp["batch_size"], hp["epochs"], hp["backbone"], hp["augment"]) == (lr, *PROTOCOLS[bench])
    for key, want in (("minibatch_size", mb), ("alpha", alpha), ("beta", beta)):
        if want is not None:
            assert hp[key] == want, key
    fp = {"er": "er_fp", "derpp": "derpp_fp"}.get(method)
    if fp:
        assert continual.hyperparameters(cfg, bench, fp, buffer) == hp
    assert continual.hyperparameters(cfg, bench, "joint", buffer)["lr"] == DER_BEST_ARGS[bench]["finetune", 200][0]


@pytest.mark.parametrize("method, buffer", sorted(DER_BEST_ARGS_SEQ_MNIST))
def test_published_seq_mnist_hyperparameters(method, buffer):
    cfg = continual.ContinualConfig()
    lr, mb, alpha, beta = DER_BEST_ARGS_SEQ_MNIST[method, buffer]
    hp = continual.hyperparameters(cfg, "split_mnist", method, buffer)
    assert hp["lr"] == lr
    assert (hp["batch_size"], hp["epochs"], hp["backbone"], hp["augment"]) == (10, 1, "mlp", False)  # best_args
    for key, want in (("minibatch_size", mb), ("alpha", alpha), ("beta", beta)):
        if want is not None:
            assert hp[key] == want, key
    # the stored table itself: DER has α and no β, DER++ both, ER neither (a β on DER would be silently ignored)
    table = continual.PAPER_HPARAMS[("split_mnist", method, -1 if method == "finetune" else buffer)]
    assert set(table) == {"lr"} | {k for k, v in (("minibatch_size", mb), ("alpha", alpha), ("beta", beta))
                                   if v is not None}
    # field preservation runs with its host method's published values
    fp = {"er": "er_fp", "derpp": "derpp_fp"}.get(method)
    if fp:
        assert continual.hyperparameters(cfg, "split_mnist", fp, buffer) == hp


def test_hyperparameter_table_structure_and_overrides():
    for (bench, method, buffer), hp in continual.PAPER_HPARAMS.items():
        assert bench in continual.PROTOCOL and method in continual.ALL_METHODS, (bench, method)
        assert buffer == -1 or buffer in (200, 500), (bench, method, buffer)
        assert all(v > 0 for v in hp.values()), (bench, method, buffer)
        assert ("alpha" in hp) == (method in ("der", "derpp")) and ("beta" in hp) == (method == "derpp")
        assert ("minibatch_size" in hp) == (method in ("er", "der", "derpp"))
    quick = continual.quick_config()
    for method in quick.methods:  # every method of the quick run has its own split_digits entry (no fallback)
        host = continual.HOST_METHOD.get(method, method)
        assert ("split_digits", host, -1) in continual.PAPER_HPARAMS, method
    cfg = continual.ContinualConfig()
    assert continual.hyperparameters(cfg, "split_cifar100", "derpp", 500)["epochs"] == 50
    over = continual.hyperparameters(continual.ContinualConfig(alpha=0.5, lr=0.1), "split_mnist", "der", 200)
    assert (over["alpha"], over["lr"], over["minibatch_size"]) == (0.5, 0.1, 10)


def test_retention_closed_forms():
    """retention = 1 − mean_s ‖a_s − b_s‖/‖b_s‖: exactly 1 for an unchanged field; for stage states scaled by c_s
    the drift of stage s is |c_s − 1|, so retention = 1 − mean_s |c_s − 1| (negative once the drift exceeds 1)."""
    gen = torch.Generator().manual_seed(0)
    ref = [torch.randn(7, 5, generator=gen, dtype=torch.float64), torch.randn(7, 3, generator=gen, dtype=torch.float64)]
    assert retention([r.clone() for r in ref], ref) == 1.0
    assert retention([1.2 * ref[0], 0.5 * ref[1]], ref) == pytest.approx(1 - (0.2 + 0.5) / 2, rel=1e-10)
    assert retention([3.0 * ref[0], -ref[1]], ref) == pytest.approx(-1.0, rel=1e-10)
    # a change in any direction u with ‖u‖ = ‖b‖: b + ε·u drifts by exactly ε
    u = torch.randn(7, 5, generator=gen, dtype=torch.float64)
    u *= ref[0].norm() / u.norm()
    assert retention([ref[0] + 0.3 * u], ref[:1]) == pytest.approx(0.7, rel=1e-10)


def test_learner_retention_matches_an_independent_recomputation(monkeypatch):
    """A fine-tuning run on split digits: each past task's retention equals 1 − mean_s ‖a_s − b_s‖/‖b_s‖ computed
    here in float64 from copies of the network saved after every task — stage states directly, Jacobian sketches by
    central finite differences along the learner's probes."""
    bench = load_benchmark("split_digits")
    torch.manual_seed(0)
    lcfg = LearnerConfig(lr=0.1, batch_size=10, epochs=1, n_retention=32, n_probes=4, n_exact=8)
    learner = build_learner("finetune", build_backbone("mlp", bench.input_shape, bench.n_classes), bench, lcfg)
    saved = []
    end_task = learner.end_task
    monkeypatch.setattr(learner, "end_task", lambda task: (end_task(task), saved.append(copy.deepcopy(learner.net))))
    result = learner.learn(bench)
    final = copy.deepcopy(learner.net).double().eval()
    assert len(saved) == bench.n_tasks == len(result.trajectory_retention) + 1

    def drift(new, ref):
        return float(np.mean([np.linalg.norm((a - b).numpy()) / np.linalg.norm(b.numpy())
                              for a, b in zip(new, ref, strict=True)]))

    eps = 1e-6
    for j in range(bench.n_tasks - 1):
        x = bench.task_data(j, "test").x[: lcfg.n_retention].double()
        v = learner.probes[torch.arange(x.shape[0]) % lcfg.n_probes].double()
        then = saved[j].double().eval()
        with torch.no_grad():
            traj = 1 - drift(final.stages(x), then.stages(x))
            jv = [[(p - m) / (2 * eps) for p, m in zip(net.stages(x + eps * v), net.stages(x - eps * v), strict=True)]
                  for net in (final, then)]
        jac = 1 - drift(*jv)
        u = learner.fresh_probes[torch.arange(x.shape[0]) % lcfg.n_fresh_probes].double()
        with torch.no_grad():
            ju = [[(p - m) / (2 * eps) for p, m in zip(net.stages(x + eps * u), net.stages(x - eps * u), strict=True)]
                  for net in (final, then)]
        fresh = 1 - drift(*ju)
        xe = x[: lcfg.n_exact]
        full = [[torch.stack([torch.autograd.functional.jacobian(lambda z, net=net, s=s: net.stages(z[None])[s][0], xi)
                              for xi in xe]) for s in range(2)] for net in (final, then)]
        exact = 1 - drift(*full)
        assert result.trajectory_retention[j] == pytest.approx(traj, abs=1e-6), j
        assert result.jacobian_retention[j] == pytest.approx(jac, abs=1e-6), j
        assert result.jacobian_retention_fresh[j] == pytest.approx(fresh, abs=1e-6), j
        assert result.jacobian_retention_exact[j] == pytest.approx(exact, abs=1e-6), j
        assert traj < 0.99 and jac < 0.99 and fresh < 0.99 and exact < 0.99  # fine-tuning moved every past field
    assert not torch.allclose(learner.fresh_probes[: lcfg.n_probes], learner.probes)  # directions FP never sees


def test_every_retention_of_a_rescaled_first_layer_is_one_minus_the_scale_change():
    """DerMLP with zero biases: ``W_1 → c W_1`` (c > 0) scales h_1 = relu(W_1 x) and h_2 = relu(W_2 h_1) by c, and
    so their Jacobians and every JVP: each retention (states, training-probe and fresh-probe sketches, exact
    Jacobians) is exactly 1 − |c − 1|."""
    bench = load_benchmark("split_digits")
    torch.manual_seed(0)
    learner = build_learner("finetune", build_backbone("mlp", bench.input_shape, bench.n_classes), bench,
                            LearnerConfig(n_retention=20, n_exact=3))
    x = bench.task_data(0, "test").x[:20]
    ref = learner.retention_reference(x)
    assert set(ref) == {"trajectory", "jacobian", "jacobian_fresh", "jacobian_exact"}
    assert [j.shape for j in ref["jacobian_exact"]] == [(3, 100, 64), (3, 100, 64)]
    with torch.no_grad():
        learner.net.fc1.weight.mul_(1.3)
    now = learner.retention_reference(x)
    for key in ref:
        assert retention(now[key], ref[key]) == pytest.approx(0.7, abs=1e-5), key


def test_exact_jacobian_budget_is_enforced(monkeypatch):
    """An n_exact whose references of all tasks would exceed the float budget is refused, naming the field."""
    from testbed.continual import base

    bench = load_benchmark("split_digits")
    learner = build_learner("finetune", build_backbone("mlp", bench.input_shape, bench.n_classes), bench,
                            LearnerConfig(n_exact=8))
    x = bench.task_data(0, "test").x[:8]
    learner.check_exact_budget(x, 5)        # 5 · 8 · 200 · 64 floats: fine
    monkeypatch.setattr(base, "EXACT_JACOBIAN_MAX_FLOATS", 5 * 8 * 200 * 64 - 1)
    with pytest.raises(ConfigError, match="n_exact=8"):
        learner.check_exact_budget(x, 5)
    with pytest.raises(ConfigError, match="n_exact"):
        LearnerConfig(n_exact=-1)


def test_quick_run_on_split_digits(tmp_path):
    cfg = continual.quick_config(methods=("finetune", "derpp", "derpp_fp"), buffer_sizes=(100,), epochs=2,
                                 n_retention=64, progress=False, gammas=(1.0,))
    rows = continual.run(cfg, tmp_path)
    continual.plot(tmp_path)
    for f in ("results.csv", "summary.csv", "accuracy_matrices.csv", "results.json", "continual.png",
              "continual.pdf"):
        assert (tmp_path / f).is_file(), f
    assert not (tmp_path / "results.partial.csv").exists()
    by = {r["method"]: r for r in rows}
    assert [(r["method"], r["buffer_size"]) for r in rows] == [("finetune", 0), ("derpp", 100), ("derpp_fp", 100)]
    ft, dpp, fp = by["finetune"], by["derpp"], by["derpp_fp"]
    assert ft["avg_acc_class_il"] < 25.0 and ft["bwt"] < -80.0 and ft["forgetting"] > 80.0  # catastrophic forgetting
    assert ft["avg_acc_task_il"] > 85.0  # within-task discrimination survives
    assert dpp["avg_acc_class_il"] > ft["avg_acc_class_il"] + 35.0
    assert dpp["bwt"] > ft["bwt"] + 35.0
    assert fp["jacobian_retention"] > dpp["jacobian_retention"]  # the field term preserves the field
    tidy = read_csv(tmp_path / "accuracy_matrices.csv")
    assert len(tidy) == 3 * 2 * 30  # 3 runs × (class-IL, task-IL) × (initial network + 5 tasks) × 5 tasks
    mat = np.zeros((6, 5))  # row 0: the initial network
    for t in tidy:
        if t["method"] == "derpp" and t["setting"] == "class_il":
            mat[t["after_task"], t["task"] - 1] = t["accuracy"]
    assert mat[-1].mean() == pytest.approx(dpp["avg_acc_class_il"])
    assert dpp["fwt"] == pytest.approx(np.mean([mat[t, t] - mat[0, t] for t in range(1, 5)]))  # A[t−1, t] − b_t
    assert ft["fwt"] < 0  # class-IL: an unseen task's classes are never predicted before it is learned
    summary = read_csv(tmp_path / "summary.csv")
    assert {s["method"] for s in summary} == {"finetune", "derpp", "derpp_fp"}
    assert continual.plot(tmp_path)[0].name == "continual.png"  # redraw from the files


def test_fake_cifar100_end_to_end_with_reduced_resnet(tmp_path):
    write_cifar(tmp_path / "cifar-100-python", "cifar100", (1, 1), learnable=False)
    bench = load_benchmark("split_cifar100", tmp_path)
    cfg = continual.ContinualConfig(benchmarks=("split_cifar100",), methods=("derpp_fp",), buffer_sizes=(8,),
                                    seeds=(0,), n_retention=2, progress=False, data_dir=str(tmp_path))
    hp = continual.hyperparameters(cfg, "split_cifar100", "derpp_fp", 8)
    assert (hp["backbone"], hp["batch_size"], hp["epochs"], hp["augment"]) == ("resnet18", 32, 50, True)
    # the same learner path with a thin ResNet (nf = 2) and one epoch, so the smoke test stays fast on a CPU
    torch.manual_seed(0)
    learner = build_learner("derpp_fp", ReducedResNet18(100, nf=2), bench,
                            LearnerConfig(buffer_size=8, minibatch_size=4, batch_size=32, augment=True, n_retention=2))
    result = learner.learn(bench)
    assert result.acc_class_il.shape == (10, 10) and len(result.trajectory_retention) == 9
    assert np.isfinite(result.jacobian_retention).all() and learner.buffer.data["state3"].shape == (8, 16, 4, 4)
    aug = learner.augment(bench.train.x[:5])
    assert aug.shape == (5, 3, 32, 32) and not torch.equal(aug, bench.train.x[:5])


def test_cli_runs_and_reports_bad_data_dir(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["run", "continual", "--quick", "--benchmark", "split_digits", "--seed", "1", "--out", str(out),
                 "--no-progress", "--set", "methods=finetune", "epochs=1", "n_retention=16"])
    assert code == 0
    rows = read_csv(out / "results.csv")
    assert [(r["method"], r["seed"], r["benchmark"]) for r in rows] == [("finetune", 1, "split_digits")]
    code = main(["run", "continual", "--benchmark", "split_mnist", "--data-dir", str(tmp_path / "missing"),
                 "--out", str(tmp_path / "bad"), "--no-progress", "--set", "methods=finetune"])
    assert code == 2
    assert "train-images-idx3-ubyte" in capsys.readouterr().err
    assert not (tmp_path / "bad" / "results.csv").exists()
    torch.set_num_threads(1)


def test_validation_split_of_a_benchmark_and_the_learners_validation_accuracy():
    """10% of every class leaves the training data; the learner's val accuracy is the final network's class-IL
    accuracy on each task's validation samples, averaged over tasks (recomputed here from the network)."""
    full = load_benchmark("split_digits")
    bench = continual.hold_out_validation(full, 0.1)
    assert bench.train.n + bench.val.n == full.train.n and bench.test is full.test
    counts = torch.bincount(full.train.y, minlength=10)
    assert torch.equal(torch.bincount(bench.val.y, minlength=10), torch.round(0.1 * counts.double()).long())
    rows = {tuple(r.tolist()) for r in bench.train.x}
    assert not any(tuple(r.tolist()) in rows for r in bench.val.x)          # disjoint
    torch.manual_seed(0)
    learner = build_learner("finetune", build_backbone("mlp", bench.input_shape, bench.n_classes), bench,
                            LearnerConfig(lr=0.1, batch_size=10, epochs=1, n_retention=8))
    result = learner.learn(bench)
    with torch.no_grad():
        pred = learner.net.eval()(bench.val.x).argmax(1)
    per_task = [100 * float((pred[torch.isin(bench.val.y, torch.tensor(cs))] == bench.val.y[torch.isin(
        bench.val.y, torch.tensor(cs))]).double().mean()) for cs in bench.task_classes]
    assert result.summary()["val_avg_acc_class_il"] == pytest.approx(np.mean(per_task), abs=1e-9)
    from testbed.continual.base import TaskResult

    no_val = TaskResult(100 * np.eye(2), 100 * np.eye(2), [1.0], [1.0], 0.0, 0.0)   # a run without a validation split
    assert np.isnan(no_val.summary()["val_avg_acc_class_il"])


def test_derive_reports_fp_at_the_validation_choice_with_paired_differences(tmp_path):
    """γ = 3 has the best *test* accuracy but the worse validation accuracy: the table reports γ = 1."""
    rows = []
    for seed in range(3):
        rows.append({"benchmark": "b", "method": "er", "buffer_size": 200, "seed": seed, "gamma": "",
                     "avg_acc_class_il": 80.0 + seed, "val_avg_acc_class_il": 79.0})
        for gamma, val, test in ((1.0, 85.0, 82.0 + 2 * seed), (3.0, 84.0, 95.0)):
            rows.append({"benchmark": "b", "method": "er_fp", "buffer_size": 200, "seed": seed, "gamma": gamma,
                         "avg_acc_class_il": test, "val_avg_acc_class_il": val})
    for r in rows:
        r.update({m: 0.0 for m in continual.PAIRED_METRICS if m not in r})
    from testbed.results import write_csv

    write_csv(tmp_path / "results.csv", rows)
    continual.derive(tmp_path)
    import json

    assert json.loads((tmp_path / "selection.json").read_text())["selected_gamma"] == {"b/er_fp/200": 1.0}
    sel = read_csv(tmp_path / "selected.csv")
    assert sorted((r["method"], r["gamma"]) for r in sel) == [("er", "")] * 3 + [("er_fp", 1.0)] * 3
    pair = next(p for p in read_csv(tmp_path / "paired.csv") if p["metric"] == "avg_acc_class_il")
    assert pair["mean_diff"] == pytest.approx(3.0) and pair["n"] == 3    # (82 + 2s) − (80 + s) = 2 + s
    assert pair["hi"] - 3.0 == pytest.approx(4.302652729911275 * 1.0 / np.sqrt(3), rel=1e-9)   # t_{.975,2}·s/√n
    summary = {(s["method"]): s for s in read_csv(tmp_path / "summary.csv")}
    assert summary["er_fp"]["avg_acc_class_il_mean"] == pytest.approx(84.0) and summary["er_fp"]["gamma"] == 1.0
    assert "**85.00" in continual.report(tmp_path)
    # verdict: the 95% interval 3 ± 2.48 lies above 0 → positive; a metric equal in both arms → unresolved
    pairs = read_csv(tmp_path / "paired.csv")
    assert pair["verdict"] == "positive"
    assert next(p for p in pairs if p["metric"] == "bwt")["verdict"] == "unresolved"
    text = continual.report(tmp_path)
    assert "| final accuracy (pts) | 1 | 0 | 0 | 1 |" in text and "| backward transfer (pts) | 0 | 0 | 1 | 1 |" in text
    from testbed.experiments.continual_paired import plot_paired

    paths = plot_paired(pairs, tmp_path / "forest", continual.METHOD_LABELS)
    assert [f.name for f in paths] == ["forest.png", "forest.pdf"]


# --------------------------------------------------------------------------------------------- new benchmarks
def _finite(row, keys):
    return all(math.isfinite(float(row[k])) for k in keys)


def test_perm_mnist_er_and_derpp_end_to_end(tmp_path):
    """Domain-IL through `run`: 20 permuted tasks of all 10 digits, one 10-way head; ACC, BWT, FWT finite, task-IL
    NaN, FWT recomputed from the saved matrices, the paper's P-MNIST numbers beside ours in summary.csv."""
    write_mnist_idx(tmp_path / "mnist", n_train=60, n_test=20)
    cfg = continual.ContinualConfig(benchmarks=("perm_mnist",), methods=("er", "derpp"), buffer_sizes=(200,),
                                    seeds=(0,), n_retention=8, progress=False, data_dir=str(tmp_path / "mnist"))
    rows = continual.run(cfg, tmp_path / "out")
    assert [(r["method"], r["batch_size"], r["epochs"], r["backbone"]) for r in rows] == \
        [("er", 128, 1, "mlp"), ("derpp", 128, 1, "mlp")]
    tidy = read_csv(tmp_path / "out" / "accuracy_matrices.csv")
    for r in rows:
        assert _finite(r, ("avg_acc_class_il", "bwt", "forgetting", "fwt", "trajectory_retention",
                           "jacobian_retention", "val_avg_acc_class_il"))
        assert math.isnan(r["avg_acc_task_il"]) and math.isnan(r["bwt_task_il"]) and 0 <= r["avg_acc_class_il"] <= 100
        mat = np.full((21, 20), np.nan)
        for t in tidy:
            if t["method"] == r["method"] and t["setting"] == "class_il":
                mat[t["after_task"], t["task"] - 1] = t["accuracy"]
        assert not np.isnan(mat).any() and mat[-1].mean() == pytest.approx(r["avg_acc_class_il"])
        assert r["fwt"] == pytest.approx(np.mean([mat[t, t] - mat[0, t] for t in range(1, 20)]))
        assert r["bwt"] == pytest.approx(np.mean([mat[20, j] - mat[j + 1, j] for j in range(19)]))
    summary = {s["method"]: s for s in read_csv(tmp_path / "out" / "summary.csv")}
    assert (summary["er"]["paper_class_il"], summary["derpp"]["paper_class_il"]) == (72.37, 83.58)
    assert summary["er"]["paper_task_il"] == "" and math.isfinite(summary["er"]["fwt_mean"])
    text = continual.report(tmp_path / "out")
    assert "| perm_mnist | DER++ | 200 | — |" in text and text.rstrip().endswith("| 83.58 |")
    assert continual.plot(tmp_path / "out")[0].name == "continual.png"   # 20 × 20 heat maps


def test_paper_reference_table():
    assert continual.paper_reference("split_mnist", "derpp", 500) == (91.00, 1.49, 98.94, 0.27)
    assert continual.paper_reference("rot_mnist", "der", 500)[0] == 92.24
    assert continual.paper_reference("perm_mnist", "der", 500)[0] == 87.29
    assert continual.paper_reference("seq_cifar10", "derpp", 200)[0] == 64.88
    assert continual.paper_reference("perm_mnist", "derpp_fp", 200) is None
    assert continual.paper_reference("split_cifar100", "er", 200) is None
    assert continual._paper_cell((72.37, float("nan"), float("nan"), float("nan"))) == "72.37"
    assert continual._paper_cell((80.43, 1.89, 97.86, 0.35)) == "80.43 ± 1.89 / 97.86 ± 0.35"


def test_fake_cifar10_and_cifar100_folders_end_to_end_through_run(tmp_path):
    """Both CIFAR benchmarks from one --data-dir holding the extracted archives, through `run` with the published
    protocol (ResNet-18 nf = 64 for Seq-CIFAR-10, reduced nf = 20 for Split CIFAR-100, augmentation on), one epoch."""
    write_cifar(tmp_path / "cifar-10-batches-py", "cifar10", (2, 1))
    write_cifar(tmp_path / "cifar-100-python", "cifar100", (2, 1))
    cfg = continual.ContinualConfig(benchmarks=("seq_cifar10", "split_cifar100"), methods=("er",),
                                    buffer_sizes=(200,), seeds=(0,), epochs=1, n_retention=2, progress=False,
                                    data_dir=str(tmp_path))
    rows = continual.run(cfg, tmp_path / "out")
    assert [(r["benchmark"], r["backbone"], r["augment"], r["lr"], r["minibatch_size"]) for r in rows] == \
        [("seq_cifar10", "resnet18_full", True, 0.1, 32), ("split_cifar100", "resnet18", True, 0.1, 32)]
    for r in rows:
        assert _finite(r, ("avg_acc_class_il", "avg_acc_task_il", "bwt", "fwt", "trajectory_retention"))
    tidy = read_csv(tmp_path / "out" / "accuracy_matrices.csv")
    assert max(t["task"] for t in tidy if t["benchmark"] == "seq_cifar10") == 5
    assert max(t["task"] for t in tidy if t["benchmark"] == "split_cifar100") == 10
    hp = json.loads((tmp_path / "out" / "results.json").read_text())["hyperparameters"]
    assert hp["seq_cifar10/er/200"]["backbone"] == "resnet18_full"


def test_cli_quick_seq_cifar10_from_a_data_dir(tmp_path):
    write_cifar(tmp_path / "data" / "cifar-10-batches-py", "cifar10", (2, 1))
    out = tmp_path / "run"
    code = main(["run", "continual", "--quick", "--benchmark", "seq_cifar10", "--data-dir", str(tmp_path / "data"),
                 "--out", str(out), "--no-progress", "--set", "methods=er", "buffer_sizes=8", "epochs=1",
                 "n_retention=2", "backbone=resnet18", "channels_last=true"])
    assert code == 0
    (row,) = read_csv(out / "results.csv")
    assert (row["benchmark"], row["method"], row["backbone"]) == ("seq_cifar10", "er", "resnet18")
    assert is_true(row["augment"])  # the CIFAR protocol's default
    assert json.loads((out / "results.json").read_text())["config"]["channels_last"] is True
    torch.set_num_threads(1)


def _load_bench_script():
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_continual_epoch.py"
    spec = importlib.util.spec_from_file_location("_bench_continual_epoch", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bench_continual_epoch_tiny(tmp_path):
    bench = _load_bench_script()
    out = tmp_path / "bench.json"
    rec = bench.main(["--batches", "1", "--workloads", "split_mnist,rot_mnist", "--methods", "finetune,derpp_fp",
                      "--buffer", "20", "--json", str(out)])
    assert [(r["workload"], r["method"]) for r in rec["rows"]] == [
        ("split_mnist", "finetune"), ("split_mnist", "derpp_fp"), ("rot_mnist", "finetune"), ("rot_mnist", "derpp_fp")]
    for r in rec["rows"]:
        assert r["step_seconds"] > 0 and r["tasks"] == (5 if r["workload"] == "split_mnist" else 20)
        steps = math.ceil(r["images_per_task"] / r["batch"]) * r["epochs"] * r["tasks"]
        assert r["run_hours"] * 3600 == pytest.approx(r["step_seconds"] * steps + r["eval_hours"] * 3600)
    assert rec["rows"][0]["images_per_task"] == 54_000 // 5 and rec["rows"][2]["images_per_task"] == 54_000
    assert rec["rows"][1]["study_runs"] == 2 * 3 * 5  # buffers × γ × seeds
    assert json.loads(out.read_text())["benchmark"] == "bench_continual_epoch"
    torch.set_num_threads(1)


def test_paired_verdicts_count_each_comparison_once_by_its_interval():
    from testbed.experiments.continual_paired import verdict, verdict_table

    rows = [{"metric": "bwt", "lo": lo, "hi": hi} for lo, hi in ((-2.0, -0.5), (0.1, 1.0), (-1.0, 1.0), (0.2, 0.3))]
    assert [verdict(r) for r in rows] == ["negative", "positive", "unresolved", "positive"]
    assert verdict({"metric": "bwt", "lo": float("nan"), "hi": 1.0}) == "no estimate"
    table = verdict_table([*rows, {"metric": "bwt", "lo": "", "hi": ""}])     # no interval: not counted
    assert table[2:] == ["| backward transfer (pts) | 2 | 1 | 1 | 4 |"]

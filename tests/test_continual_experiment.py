"""The `continual` experiment: config validation, the published hyperparameters, end-to-end runs and the CLI."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from testbed.cli import main
from testbed.config import ConfigError
from testbed.continual import LearnerConfig, build_learner
from testbed.continual.backbones import ReducedResNet18
from testbed.continual.data import load_benchmark
from testbed.experiments import continual, get_experiment
from testbed.results import read_csv


def test_registered_and_config_validated():
    assert get_experiment("continual") is continual
    with pytest.raises(ConfigError, match="benchmarks"):
        continual.ContinualConfig(benchmarks=("split_fashion",))
    with pytest.raises(ConfigError, match="continual method"):
        continual.ContinualConfig(methods=("ewc",))
    with pytest.raises(ConfigError, match="gamma"):
        continual.ContinualConfig(gamma=-1.0)
    with pytest.raises(ConfigError, match="buffer_sizes"):
        continual.ContinualConfig(buffer_sizes=(0,))
    with pytest.raises(ConfigError, match="epochs"):
        continual.ContinualConfig(epochs=0)
    with pytest.raises(ConfigError, match="backbone"):
        continual.ContinualConfig(backbone="vgg")


def test_published_hyperparameters_and_overrides():
    cfg = continual.ContinualConfig()
    hp = continual.hyperparameters(cfg, "split_mnist", "derpp", 500)
    assert (hp["lr"], hp["minibatch_size"], hp["alpha"], hp["beta"]) == (0.03, 10, 1.0, 0.5)
    assert (hp["batch_size"], hp["epochs"], hp["backbone"]) == (10, 1, "mlp")
    assert continual.hyperparameters(cfg, "split_mnist", "er_fp", 200)["lr"] == 0.01  # host method's values
    assert continual.hyperparameters(cfg, "split_cifar100", "derpp", 500)["epochs"] == 50
    over = continual.hyperparameters(continual.ContinualConfig(alpha=0.5, lr=0.1), "split_mnist", "der", 200)
    assert (over["alpha"], over["lr"]) == (0.5, 0.1)


def test_quick_run_on_split_digits(tmp_path):
    cfg = continual.quick_config(methods=("finetune", "derpp", "derpp_fp"), buffer_sizes=(100,), epochs=2,
                                 n_retention=64, progress=False)
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
    assert all(r["trajectory_retention"] <= 1.0 and r["jacobian_retention"] <= 1.0 for r in rows)
    tidy = read_csv(tmp_path / "accuracy_matrices.csv")
    assert len(tidy) == 3 * 2 * 25
    mat = np.zeros((5, 5))
    for t in tidy:
        if t["method"] == "derpp" and t["setting"] == "class_il":
            mat[t["after_task"] - 1, t["task"] - 1] = t["accuracy"]
    assert mat[-1].mean() == pytest.approx(dpp["avg_acc_class_il"])
    summary = read_csv(tmp_path / "summary.csv")
    assert {s["method"] for s in summary} == {"finetune", "derpp", "derpp_fp"}
    assert continual.plot(tmp_path)[0].name == "continual.png"  # redraw from the files


def test_fake_cifar100_end_to_end_with_reduced_resnet(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    for split in ("train", "test"):
        labels = np.arange(100)
        obj = {b"data": rng.integers(0, 256, (labels.size, 3072), dtype=np.uint8), b"fine_labels": labels.tolist()}
        (folder / split).write_bytes(pickle.dumps(obj, protocol=2))
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

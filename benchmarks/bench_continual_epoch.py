"""Time of one training epoch of the continual study's backbones, extrapolated to full runs on this machine.

For each workload — a benchmark with its published protocol (:data:`testbed.experiments.continual.PROTOCOL`:
backbone, batch size, epochs, augmentation; DER-paper hyperparameters from ``hyperparameters``) — the script writes a
tiny fake data folder in the benchmark's real format (:mod:`testbed.continual.fake_data`; nothing is downloaded),
loads it through :func:`testbed.continual.data.load_benchmark` and times ``--batches`` training steps of each
method on the first task, after one warm-up step. A step is what training does per minibatch: the stream batch
(and its per-task transform: permutation / rotation), ``observe`` (augmentation, forward passes, loss, backward,
SGD step) and the buffer update. Replay buffers are filled beforehand (``--buffer`` samples, snapshots included)
and their stream counter set to one task's samples, so insertions happen at a mid-run rate. Evaluation is timed
once per workload: one eval-mode forward pass over 256 test images.

Extrapolation: ``epoch = median step × ⌈n_task / batch⌉`` with ``n_task`` the training images of one task after the
default 10% validation hold-out (Seq-CIFAR-10: 45 000 / 5; Split CIFAR-100: 45 000 / 10; P-/R-MNIST: 54 000 per
task; Split MNIST: 54 000 / 5); ``train = epoch × epochs × tasks`` (joint training costs ``(T + 1)/2`` fine-tuning
runs); ``eval = per-image time × (T + 1) evaluations × the test images of all tasks`` (10 000 for a split benchmark,
T × 10 000 for a domain one); ``run = train + eval``. The last columns are the default study of
``ContinualConfig()`` for the timed methods: every method × buffer (200, 500) × γ (3 values, FP variants) × 5
seeds.

    python benchmarks/bench_continual_epoch.py [--device cuda] [--batches 3] [--workloads seq_cifar10,split_mnist]
                                               [--methods finetune,derpp,derpp_fp] [--buffer 500] [--amp]
                                               [--channels-last] [--threads 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from testbed.continual import LearnerConfig, build_learner, load_benchmark, method_class
from testbed.continual.backbones import build_backbone
from testbed.continual.base import ContinualLearner, ReplayLearner
from testbed.continual.fake_data import write_cifar, write_mnist_idx
from testbed.continual.tasks import Benchmark, TaskStream
from testbed.devices import check_device
from testbed.experiments.continual import HOST_METHOD, ContinualConfig, hyperparameters
from testbed.results import write_json
from testbed.timing import benchmark_header

#: benchmark -> (data set, training images, test images of the full data set); tasks come from the benchmark
DATASETS = {"seq_cifar10": ("cifar10", 50_000, 10_000), "split_cifar100": ("cifar100", 50_000, 10_000),
            "perm_mnist": ("mnist", 60_000, 10_000), "rot_mnist": ("mnist", 60_000, 10_000),
            "split_mnist": ("mnist", 60_000, 10_000)}
#: test images of the fake data (the evaluation timing batch)
EVAL_IMAGES = 256
DEFAULT_WORKLOADS = ("seq_cifar10", "split_cifar100", "perm_mnist", "rot_mnist", "split_mnist")
DEFAULT_METHODS = ("finetune", "derpp", "derpp_fp")


def fake_benchmark(name: str, folder: Path, n_first_task: int) -> Benchmark:
    """Benchmark ``name`` loaded from a fake folder in its real format, its first task holding at least
    ``n_first_task`` training images, its test split at least :data:`EVAL_IMAGES`."""
    dataset = DATASETS[name][0]
    if dataset == "mnist":
        classes_per_task = 10 if name in ("perm_mnist", "rot_mnist") else 2
        write_mnist_idx(folder, n_train=10 * math.ceil(n_first_task / classes_per_task), n_test=EVAL_IMAGES)
        return load_benchmark(name, folder)
    n_classes = 10 if dataset == "cifar10" else 100
    per_class = math.ceil(n_first_task / (n_classes // (5 if dataset == "cifar10" else 10)))
    write_cifar(folder, dataset, (per_class, math.ceil(EVAL_IMAGES / n_classes)))
    return load_benchmark(name, folder)


def fill_buffer(learner: ContinualLearner, stream: TaskStream, steady_seen: int) -> None:
    """Fill a replay learner's buffer from ``stream`` (stored logits and snapshots as training would store them;
    one batch computed, written into every slot) and set its stream counter to ``steady_seen`` samples."""
    if not isinstance(learner, ReplayLearner) or learner.buffer is None:
        return
    buf = learner.buffer
    x, y = stream.batch(torch.arange(min(stream.n, learner.cfg.batch_size)))
    x, y = learner.to_layout(x), y.to(learner.device)
    with torch.no_grad():
        learner._last_logits = learner.net(x).float()
    slots = torch.arange(x.shape[0])
    batch = {"x": x, "y": y, "logits": learner._last_logits,
             "task": torch.zeros(x.shape[0], dtype=torch.long, device=x.device), **learner.snapshot(x, slots)}
    for start in range(0, buf.capacity, x.shape[0]):
        chunk = torch.arange(start, min(start + x.shape[0], buf.capacity))
        buf.write(torch.arange(chunk.numel()), chunk, **batch)
    buf.seen = max(steady_seen, buf.capacity)


def time_steps(learner: ContinualLearner, stream: TaskStream, batches: int) -> list[float]:
    """Wall times of ``batches`` training steps (stream batch + ``observe``), after one warm-up step (the stream
    holds at least ``(batches + 1) · batch_size`` samples)."""
    bs = learner.cfg.batch_size
    perm = torch.randperm(stream.n, generator=torch.Generator().manual_seed(0))
    times = []
    for k in range(batches + 1):
        idx = perm[k * bs:(k + 1) * bs]
        if learner.device.type == "cuda":
            torch.cuda.synchronize(learner.device)
        t0 = time.perf_counter()
        x, y = stream.batch(idx)
        learner.observe(learner.to_layout(x), y.to(learner.device), 0)
        if learner.device.type == "cuda":
            torch.cuda.synchronize(learner.device)
        if k:
            times.append(time.perf_counter() - t0)
    return times


def eval_seconds_per_image(learner: ContinualLearner, bench: Benchmark) -> float:
    """Wall time per image of one eval-mode forward pass (``predict_logits``) over :data:`EVAL_IMAGES` test images
    (after a warm-up pass: the same batch on CUDA, a few images on the CPU)."""
    x = bench.stream(list(range(bench.n_tasks)), "test").head(EVAL_IMAGES)
    if learner.device.type == "cuda":
        learner.predict_logits(x)
        torch.cuda.synchronize(learner.device)
    else:
        learner.predict_logits(x[:4])
    t0 = time.perf_counter()
    learner.predict_logits(x)
    if learner.device.type == "cuda":
        torch.cuda.synchronize(learner.device)
    return (time.perf_counter() - t0) / x.shape[0]


def n_runs(method: str, cfg: ContinualConfig) -> int:
    """Runs of ``method`` in the study ``cfg``: buffers (replay methods) × γ (FP variants) × seeds."""
    replay = issubclass(method_class(method), ReplayLearner)
    return (len(cfg.buffer_sizes) if replay else 1) * (len(cfg.gammas) if method in HOST_METHOD else 1) \
        * len(cfg.seeds)


def time_workload(name: str, methods: list[str], args: argparse.Namespace, folder: Path) -> list[dict[str, Any]]:
    """One row per method: step time, epoch and run estimates for benchmark ``name``."""
    study = ContinualConfig(benchmarks=(name,))
    hp0 = hyperparameters(study, name, methods[0], args.buffer)
    bench = fake_benchmark(name, folder, (args.batches + 1) * hp0["batch_size"]).to(args.device)
    _, full, n_test = DATASETS[name]
    n_train = round(full * (1 - study.val_fraction))
    domain = bench.scenario == "domain_il"
    per_task = n_train if domain else n_train // bench.n_tasks
    eval_images = (bench.n_tasks + 1) * n_test * (bench.n_tasks if domain else 1)
    eval_seconds: float | None = None
    rows = []
    for method in methods:
        hp = hyperparameters(study, name, method, args.buffer)
        torch.manual_seed(0)
        net = build_backbone(hp["backbone"], bench.input_shape, bench.n_classes)
        replay = issubclass(method_class(method), ReplayLearner)
        learner = build_learner(method, net, bench, LearnerConfig(
            lr=hp["lr"], batch_size=hp["batch_size"], minibatch_size=int(hp["minibatch_size"]), epochs=hp["epochs"],
            buffer_size=args.buffer if replay else 0, alpha=hp["alpha"], beta=hp["beta"], augment=hp["augment"],
            channels_last=args.channels_last and len(bench.input_shape) == 3, amp=args.amp, device=args.device))
        stream = bench.stream([0], "train")
        fill_buffer(learner, stream, per_task)
        times = time_steps(learner, stream, args.batches)
        if eval_seconds is None:    # one backbone per workload: evaluation costs the same for every method
            eval_seconds = eval_seconds_per_image(learner, bench) * eval_images
        step = statistics.median(times)
        epoch = step * math.ceil(per_task / hp["batch_size"])
        train = epoch * hp["epochs"] * bench.n_tasks * ((bench.n_tasks + 1) / 2 if method == "joint" else 1)
        run = train + eval_seconds
        rows.append({"workload": name, "method": method, "backbone": hp["backbone"], "batch": hp["batch_size"],
                     "buffer": args.buffer if replay else 0, "tasks": bench.n_tasks, "epochs": hp["epochs"],
                     "images_per_task": per_task, "step_seconds": step, "step_seconds_all": times,
                     "epoch_seconds": epoch, "train_hours": train / 3600, "eval_hours": eval_seconds / 3600,
                     "run_hours": run / 3600, "study_runs": n_runs(method, study),
                     "study_hours": run * n_runs(method, study) / 3600})
    return rows


def print_table(rows: list[dict[str, Any]], device: str) -> None:
    print(f"device {device}; run = median step × steps + evaluation")
    print(f"{'workload':<15} {'method':<9} {'backbone':<14} {'batch':>5} {'ms/step':>9} {'s/epoch':>9} "
          f"{'tasks×epochs':>12} {'h/run':>8} {'(eval)':>7} {'study runs':>10} {'h/study':>8}")
    for r in rows:
        print(f"{r['workload']:<15} {r['method']:<9} {r['backbone']:<14} {r['batch']:>5} "
              f"{r['step_seconds'] * 1e3:9.1f} {r['epoch_seconds']:9.1f} {r['tasks']:>5} × {r['epochs']:<4} "
              f"{r['run_hours']:8.2f} {r['eval_hours']:7.2f} {r['study_runs']:>10} {r['study_hours']:8.1f}")
    for w in dict.fromkeys(r["workload"] for r in rows):
        total = sum(r["study_hours"] for r in rows if r["workload"] == w)
        print(f"{w}: the default study for the timed methods ≈ {total:.1f} h on this device")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    ap.add_argument("--batches", type=int, default=3, help="timed training steps per method (after one warm-up)")
    ap.add_argument("--workloads", default=",".join(DEFAULT_WORKLOADS), help="benchmarks (comma-separated)")
    ap.add_argument("--methods", default=",".join(DEFAULT_METHODS), help="methods (comma-separated)")
    ap.add_argument("--buffer", type=int, default=500, help="buffer size of the replay methods")
    ap.add_argument("--amp", action="store_true", help="mixed precision (bf16 on CPU, fp16 + GradScaler on CUDA)")
    ap.add_argument("--channels-last", action="store_true", help="NHWC weights and image batches")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    ap.add_argument("--json", default=None, help="write the record here")
    return ap


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    workloads = [w for w in args.workloads.replace(" ", "").split(",") if w]
    methods = [m for m in args.methods.replace(" ", "").split(",") if m]
    unknown = [w for w in workloads if w not in DATASETS]
    if not workloads or unknown:
        raise SystemExit(f"--workloads: expected some of {', '.join(DATASETS)}, got {args.workloads!r}")
    if not methods:
        raise SystemExit("--methods: name at least one method")
    for m in methods:
        method_class(m)
    if args.batches <= 0 or args.buffer <= 0 or args.threads <= 0:
        raise SystemExit("--batches, --buffer and --threads must be positive")
    check_device("--device", args.device)
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for w in workloads:
            rows += time_workload(w, methods, args, Path(tmp) / w)
    device = torch.cuda.get_device_name(torch.device(args.device)) if args.device.startswith("cuda") else "CPU"
    print_table(rows, f"{args.device} ({device}), threads={torch.get_num_threads()}, amp={args.amp}, "
                      f"channels_last={args.channels_last}")
    rec = {**benchmark_header("bench_continual_epoch"), "device": args.device, "device_name": device,
           "amp": args.amp, "channels_last": args.channels_last, "batches": args.batches, "rows": rows,
           "wall_seconds": time.perf_counter() - t_start}
    print(f"wall time {rec['wall_seconds']:.1f}s")
    if args.json:
        write_json(args.json, rec)
    return rec


if __name__ == "__main__":
    main()

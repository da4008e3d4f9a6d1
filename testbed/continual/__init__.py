"""Continual learning on class- and domain-incremental benchmarks: one shared learner, one file per method (paper A,
"Continual learning").

Data (:mod:`~testbed.continual.data`: readers in :mod:`~testbed.continual.files`, tasks in
:mod:`~testbed.continual.tasks`, per-task transforms in :mod:`~testbed.continual.transforms`) → backbone with named
stages (:mod:`~testbed.continual.backbones`) → learner (:mod:`~testbed.continual.base`, augmentation in
:mod:`~testbed.continual.augment`, plus one file per method in :mod:`~testbed.continual.methods`) → accuracy
matrix, backward / forward transfer, forgetting and field retention (:mod:`~testbed.continual.metrics`).

Methods: ``finetune`` (lower bound), ``joint`` (upper bound), ``er``, ``der``, ``derpp`` (Buzzega et al., 2020) and
``er_fp`` / ``derpp_fp``: the same learners plus *field preservation* — the drift of stored hidden states and
Jacobian sketches (JVPs along fixed random probes) of buffer samples is penalised with weight ``γ``.
"""

from testbed.continual.base import ContinualLearner, LearnerConfig, TaskResult
from testbed.continual.buffer import ReservoirBuffer
from testbed.continual.data import BENCHMARKS, load_benchmark
from testbed.continual.methods import METHODS, build_learner, method_class
from testbed.continual.tasks import Benchmark, DomainBenchmark, SplitBenchmark, TaskStream

__all__ = ["BENCHMARKS", "METHODS", "Benchmark", "ContinualLearner", "DomainBenchmark", "LearnerConfig",
           "ReservoirBuffer", "SplitBenchmark", "TaskResult", "TaskStream", "build_learner", "load_benchmark",
           "method_class"]

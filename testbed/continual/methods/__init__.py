"""One file per continual-learning method over the shared :mod:`testbed.continual.base`; registered by name."""

from __future__ import annotations

from testbed.config import lookup
from testbed.continual.backbones import StagedNet
from testbed.continual.base import ContinualLearner, LearnerConfig
from testbed.continual.methods.der import DER
from testbed.continual.methods.derpp import DERPP
from testbed.continual.methods.er import ER
from testbed.continual.methods.field_preservation import DERPPFP, ERFP, FieldPreservation
from testbed.continual.methods.finetune import FineTune
from testbed.continual.methods.joint import Joint
from testbed.continual.tasks import Benchmark

METHODS: dict[str, type[ContinualLearner]] = {cls.name: cls for cls in (FineTune, Joint, ER, DER, DERPP, ERFP,
                                                                         DERPPFP)}


def method_class(name: str) -> type[ContinualLearner]:
    """The learner class registered as ``name`` (clear error naming the known methods)."""
    return lookup(METHODS, name, "continual method")


def build_learner(name: str, net: StagedNet, benchmark: Benchmark, cfg: LearnerConfig) -> ContinualLearner:
    return method_class(name)(net, benchmark, cfg)


__all__ = ["DER", "DERPP", "DERPPFP", "ER", "ERFP", "METHODS", "FieldPreservation", "FineTune", "Joint",
           "build_learner", "method_class"]

"""Backbones that expose their propagation field as named *stages*.

Every backbone is a :class:`StagedNet`: ``forward_stages(x) -> (logits, [h_1, …, h_S])`` returns the logits and
the hidden states after each stage (the points of the propagation field that field preservation and the
retention metrics look at); ``forward(x)`` returns the logits only.

* :class:`DerMLP`          the DER / GEM MNIST network: 784 → 100 → 100 → 10, ReLU; stages = the two hidden layers;
* :class:`ResNet18`        the CIFAR ResNet-18 of the DER paper's Seq-CIFAR-10 (mammoth ``backbone/ResNet18.py``:
                           3×3 stem, 4 stages of 2 basic blocks with widths ``nf·(1, 2, 4, 8)``, ``nf = 64``, global
                           average pooling, one linear head); stages = the outputs of the 4 residual stages;
* :class:`ReducedResNet18` the same network with ``nf = 20`` (the reduced ResNet-18 of GEM);
* :class:`ResidualStaged`  the library's :class:`~testbed.students.classifier.ResidualClassifier` (embedding →
                           ``L``-layer residual flow → head); stages = the flow states at ``l = L/4, L/2, 3L/4, L``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from testbed.config import ConfigError
from testbed.students.classifier import ResidualClassifier

Tensor = torch.Tensor


class StagedNet(nn.Module):
    """A classifier whose hidden states at named stages are observable."""

    stage_names: tuple[str, ...] = ()

    def forward_stages(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:  # pragma: no cover - abstract
        raise NotImplementedError

    def stages(self, x: Tensor) -> tuple[Tensor, ...]:
        """The stage states only (a tuple, so :func:`torch.func.jvp` can differentiate the map ``x ↦ h_s(x)``)."""
        return tuple(self.forward_stages(x)[1])

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_stages(x)[0]


class DerMLP(StagedNet):
    """``x ↦ W_3 relu(W_2 relu(W_1 x))`` with 100 hidden units per layer (Xavier-uniform weights, zero biases, as
    in the DER code)."""

    stage_names = ("hidden1", "hidden2")

    def __init__(self, input_dim: int = 784, n_classes: int = 10, hidden: int = 100) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(input_dim, hidden), nn.Linear(hidden, hidden)
        self.classifier = nn.Linear(hidden, n_classes)
        for m in (self.fc1, self.fc2, self.classifier):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)

    def forward_stages(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        h1 = F.relu(self.fc1(x.flatten(1)))
        h2 = F.relu(self.fc2(h1))
        return self.classifier(h2), [h1, h2]


class BasicBlock(nn.Module):
    """``relu(bn(conv(relu(bn(conv(x))))) + shortcut(x))`` with 3×3 convolutions."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet18(StagedNet):
    """ResNet-18 for 32×32 inputs: a 3×3 stem, stages of widths ``nf, 2nf, 4nf, 8nf`` (2 basic blocks each,
    strides 1, 2, 2, 2), global average pooling, one linear head. ``nf = 64``: the DER paper's Seq-CIFAR-10 network
    (about 11.2 M parameters)."""

    stage_names = ("layer1", "layer2", "layer3", "layer4")

    def __init__(self, n_classes: int = 10, nf: int = 64, in_channels: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, nf, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(nf)
        layers, in_planes = [], nf
        for i, stride in enumerate((1, 2, 2, 2)):
            planes = nf * 2**i
            layers.append(nn.Sequential(BasicBlock(in_planes, planes, stride), BasicBlock(planes, planes, 1)))
            in_planes = planes
        self.layers = nn.ModuleList(layers)
        self.classifier = nn.Linear(in_planes, n_classes)

    def forward_stages(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        h = F.relu(self.bn1(self.conv1(x)))
        hs = []
        for layer in self.layers:
            h = layer(h)
            hs.append(h)
        return self.classifier(h.mean(dim=(2, 3))), hs


class ReducedResNet18(ResNet18):
    """The reduced ResNet-18 of Lopez-Paz & Ranzato (GEM): :class:`ResNet18` with ``nf = 20`` base filters."""

    def __init__(self, n_classes: int = 100, nf: int = 20, in_channels: int = 3) -> None:
        super().__init__(n_classes, nf, in_channels)


class ResidualStaged(StagedNet):
    """The library's :class:`ResidualClassifier` seen through four points of its flow ``h_l``."""

    def __init__(self, input_dim: int, n_classes: int, dim: int = 32, n_layers: int = 8, width: int = 64) -> None:
        super().__init__()
        if n_layers % 4:
            raise ConfigError(f"n_layers must be a multiple of 4 for the residual backbone, got {n_layers}")
        self.model = ResidualClassifier(input_dim, n_classes, dim=dim, n_layers=n_layers, width=width,
                                        activation="tanh")
        self.stage_layers = tuple(n_layers * k // 4 for k in (1, 2, 3, 4))
        self.stage_names = tuple(f"h{l}" for l in self.stage_layers)

    def forward_stages(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        traj = self.model.flow.trajectory(self.model.initial_state(x))
        return self.model.head(traj[-1]), [traj[l] for l in self.stage_layers]


#: backbone names: ``resnet18`` is the reduced network (nf = 20), ``resnet18_full`` the nf = 64 one
BACKBONES = ("mlp", "resnet18", "resnet18_full", "residual")


def build_backbone(name: str, input_shape: tuple[int, ...], n_classes: int) -> StagedNet:
    """``mlp`` (DER MLP, 100 hidden units), ``resnet18`` (reduced, nf = 20), ``resnet18_full`` (nf = 64, the DER
    paper's CIFAR-10 network) or ``residual`` (library classifier)."""
    input_dim = 1
    for s in input_shape:
        input_dim *= s
    if name == "mlp":
        return DerMLP(input_dim, n_classes)
    if name in ("resnet18", "resnet18_full"):
        if len(input_shape) != 3:
            raise ConfigError(f"backbone {name!r} needs image inputs (C, H, W), got shape {input_shape}")
        cls = ReducedResNet18 if name == "resnet18" else ResNet18
        return cls(n_classes, in_channels=input_shape[0])
    if name == "residual":
        return ResidualStaged(input_dim, n_classes)
    raise ConfigError(f"unknown backbone {name!r}; known: {', '.join(BACKBONES)}")

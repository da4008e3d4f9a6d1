"""Labelled real data sets for the classification side of the testbed (offline; nothing is downloaded).

:class:`LabeledData` is the classification counterpart of :class:`systems.data.TrajectoryData`: it has
``n``, ``subset(idx)`` and ``to(device, dtype)``, so :func:`testbed.train.train` handles both.

``load_digits`` reads scikit-learn's bundled 8×8 digits (1 797 images, 10 classes, pixel values 0–16),
scales pixels to [0, 1] and makes a seeded stratified train/test split.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import numpy as np
import torch

from systems.containers import SampleData
from testbed.config import ConfigError

Tensor = torch.Tensor


@dataclasses.dataclass
class LabeledData(SampleData):
    """Inputs ``x`` (N, …) with integer class labels ``y`` (N,)."""

    x: Tensor
    y: Tensor
    n_classes: int
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    SAMPLE_AXES: ClassVar[dict[str, int]] = {"x": 0, "y": 0}
    FLOAT_FIELDS: ClassVar[tuple[str, ...]] = ("x",)

    def __post_init__(self) -> None:
        if self.x.shape[0] != self.y.shape[0]:
            raise ValueError(f"x has {self.x.shape[0]} rows but y has {self.y.shape[0]}")
        if self.y.ndim != 1 or self.y.dtype != torch.long:
            raise ValueError("y must be a 1-D tensor of int64 class labels")
        if self.y.numel() and (int(self.y.min()) < 0 or int(self.y.max()) >= self.n_classes):
            lo, hi = int(self.y.min()), int(self.y.max())
            raise ValueError(f"labels must lie in [0, {self.n_classes}), got [{lo}, {hi}]")
        if not torch.isfinite(self.x).all():
            raise ValueError("inputs x contain NaN/inf")

    @property
    def n(self) -> int:
        return self.x.shape[0]

    @property
    def input_dim(self) -> int:
        return int(np.prod(self.x.shape[1:]))



def stratified_split(y: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, test) with ``round(test_fraction·n_c)`` test samples from each class ``c``."""
    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        k = int(round(test_fraction * idx.size))
        test.append(idx[:k])
        train.append(idx[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def load_digits(test_fraction: float = 0.25, seed: int = 0,
                dtype: torch.dtype = torch.float32) -> tuple[LabeledData, LabeledData]:
    """scikit-learn's 8×8 digits as flat 64-vectors in [0, 1]; a seeded stratified (train, test) split."""
    from sklearn.datasets import load_digits as _sk_digits

    d = _sk_digits()
    x = d.data.astype(np.float64) / 16.0
    y = d.target.astype(np.int64)
    tr, te = stratified_split(y, test_fraction, seed)
    meta = {"dataset": "digits", "test_fraction": test_fraction, "seed": seed}

    def make(idx: np.ndarray, split: str) -> LabeledData:
        return LabeledData(torch.as_tensor(x[idx], dtype=dtype), torch.as_tensor(y[idx]), 10,
                           {**meta, "split": split})

    return make(tr, "train"), make(te, "test")

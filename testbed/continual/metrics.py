"""Continual-learning metrics on an accuracy matrix ``A`` (``A[i, j]`` = accuracy on task ``j``'s test data after
training on tasks ``0 … i``; ``T`` tasks).

* average accuracy   ``ACC = (1/T) Σ_j A[T−1, j]``;
* backward transfer  ``BWT = 1/(T−1) Σ_{j<T−1} (A[T−1, j] − A[j, j])`` (Lopez-Paz & Ranzato, 2017; negative =
                     forgetting);
* forgetting         ``F = 1/(T−1) Σ_{j<T−1} max_{j ≤ i < T−1} A[i, j] − A[T−1, j]`` (Chaudhry et al., 2018);
* forward transfer   ``FWT = 1/(T−1) Σ_{t≥1} (A[t−1, t] − b_t)``, where ``b_t`` is the accuracy of the initial
                     (randomly initialised) network on task ``t`` (Lopez-Paz & Ranzato, 2017): how much learning
                     tasks ``0 … t−1`` helps task ``t`` before it is trained on.

With a single task BWT, forgetting and FWT are 0.
"""

from __future__ import annotations

import numpy as np


def _check(acc: np.ndarray) -> np.ndarray:
    acc = np.asarray(acc, dtype=float)
    if acc.ndim != 2 or acc.shape[0] != acc.shape[1]:
        raise ValueError(f"accuracy matrix must be square (T × T), got shape {acc.shape}")
    return acc


def average_accuracy(acc: np.ndarray) -> float:
    """Mean accuracy over all tasks after the last one."""
    return float(_check(acc)[-1].mean())


def backward_transfer(acc: np.ndarray) -> float:
    """Mean change of each earlier task's accuracy from just after learning it to the end."""
    a = _check(acc)
    t = a.shape[0]
    if t < 2:
        return 0.0
    return float(np.mean([a[-1, j] - a[j, j] for j in range(t - 1)]))


def forgetting(acc: np.ndarray) -> float:
    """Mean drop of each earlier task's accuracy from its best value before the end to its final value."""
    a = _check(acc)
    t = a.shape[0]
    if t < 2:
        return 0.0
    return float(np.mean([a[j:t - 1, j].max() - a[-1, j] for j in range(t - 1)]))


def forward_transfer(acc: np.ndarray, init: np.ndarray) -> float:
    """Mean accuracy gain on each later task, just before it is learned, over the initial network's accuracy."""
    a = _check(acc)
    b = np.asarray(init, dtype=float)
    t = a.shape[0]
    if b.shape != (t,):
        raise ValueError(f"initial accuracies must have one entry per task ({t}), got shape {b.shape}")
    if t < 2:
        return 0.0
    return float(np.mean([a[i - 1, i] - b[i] for i in range(1, t)]))

"""One rule for deriving seeds: independent random streams from a run's seed.

``derived_seed(seed, salt) = stride · seed + salt`` with the prime stride ``1_000_003``: for ``0 ≤ salt <
stride`` every ``(seed, salt)`` pair gives a different seed, so a study can draw its data, probes, weight copies
and minibatches from streams that never coincide across seeds. ``stride = 1`` gives the offset form
``seed + salt`` some older streams use (kept so their numbers do not change).
"""

from __future__ import annotations

import torch

#: prime stride between the streams of consecutive seeds
SEED_STRIDE = 1_000_003
#: salt of the shared data set of a study (one data set per system, shared by every objective/student/seed)
DATA_SEED = 10_000


def derived_seed(seed: int, salt: int = 0, stride: int = SEED_STRIDE) -> int:
    """``stride · seed + salt``: the seed of stream ``salt`` of run ``seed``."""
    return stride * int(seed) + int(salt)


def generator(seed: int, salt: int = 0, stride: int = SEED_STRIDE) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with :func:`derived_seed`."""
    return torch.Generator().manual_seed(derived_seed(seed, salt, stride))

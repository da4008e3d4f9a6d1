"""Reservoir replay buffer of inputs, logits, labels, task ids and optional field snapshots.

Reservoir sampling (Vitter's algorithm R): the ``n``-th stream sample (1-based) enters an unfilled buffer
directly; once the buffer is full it replaces a uniformly chosen slot with probability ``capacity / n`` and is
dropped otherwise. After ``N`` samples every one of them is in the buffer with the same probability
``capacity / N``, whatever the order of the stream.

Besides ``x, y, logits, task`` a slot may hold any named tensor (a *field snapshot*: hidden states at chosen
stages, Jacobian sketches along fixed probe vectors, the probe index), written by the learner at insertion time.
"""

from __future__ import annotations

import dataclasses

import torch

Tensor = torch.Tensor


@dataclasses.dataclass
class BufferBatch:
    """A draw from the buffer: the slot indices and every stored tensor at those slots."""

    index: Tensor
    tensors: dict[str, Tensor]

    def __getattr__(self, name: str) -> Tensor:
        try:
            return self.__dict__["tensors"][name]
        except KeyError:
            raise AttributeError(name) from None

    def __len__(self) -> int:
        return int(self.index.numel())


class ReservoirBuffer:
    """Fixed-capacity reservoir over a stream of samples; tensors are allocated lazily on ``device``."""

    def __init__(self, capacity: int, generator: torch.Generator | None = None,
                 device: str | torch.device = "cpu") -> None:
        if capacity < 0:
            raise ValueError(f"buffer capacity must be non-negative, got {capacity}")
        self.capacity = capacity
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)
        self.device = torch.device(device)
        self.seen = 0  # stream samples offered so far
        self.size = 0  # filled slots
        self.data: dict[str, Tensor] = {}

    def __len__(self) -> int:
        return self.size

    def is_empty(self) -> bool:
        return self.size == 0

    def plan(self, n: int) -> tuple[Tensor, Tensor]:
        """Decide where the next ``n`` stream samples go: ``(positions in the batch, buffer slots)`` of those that
        enter (if two of them land in one slot, the later one wins and the earlier is dropped)."""
        chosen: dict[int, int] = {}
        for i in range(n):
            if self.seen < self.capacity:
                slot = self.seen
            else:
                j = int(torch.randint(0, self.seen + 1, (1,), generator=self.generator))
                slot = j if j < self.capacity else -1
            self.seen += 1
            if slot >= 0:
                chosen[slot] = i
        slots = torch.tensor(sorted(chosen), dtype=torch.long)
        positions = torch.tensor([chosen[s] for s in sorted(chosen)], dtype=torch.long)
        return positions, slots

    def write(self, positions: Tensor, slots: Tensor, **tensors: Tensor) -> None:
        """Store ``tensor[positions]`` at ``slots`` for every named tensor (shapes ``(batch, …)``)."""
        if slots.numel() == 0:
            return
        for name, t in tensors.items():
            t = t.detach()
            if name not in self.data:
                self.data[name] = torch.zeros((self.capacity, *t.shape[1:]), dtype=t.dtype, device=self.device)
            self.data[name][slots.to(self.device)] = t[positions.to(t.device)].to(self.device)
        self.size = max(self.size, int(slots.max()) + 1)

    def add(self, **tensors: Tensor) -> tuple[Tensor, Tensor]:
        """:meth:`plan` for the batch, then :meth:`write`; returns ``(positions, slots)``."""
        n = next(iter(tensors.values())).shape[0]
        positions, slots = self.plan(n)
        self.write(positions, slots, **tensors)
        return positions, slots

    def sample(self, size: int, generator: torch.Generator | None = None) -> BufferBatch:
        """``min(size, len(self))`` distinct slots drawn uniformly (without replacement)."""
        if self.size == 0:
            raise ValueError("cannot sample from an empty buffer")
        g = generator if generator is not None else self.generator
        idx = torch.randperm(self.size, generator=g)[: min(size, self.size)].to(self.device)
        return BufferBatch(idx, {k: v[idx] for k, v in self.data.items()})

    def all(self) -> BufferBatch:
        """Every filled slot, in slot order."""
        idx = torch.arange(self.size, device=self.device)
        return BufferBatch(idx, {k: v[: self.size] for k, v in self.data.items()})

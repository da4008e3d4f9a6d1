"""Training-time image augmentation in torch, on the training device: random crop with padding + horizontal flip.

The CIFAR protocol of the DER paper (mammoth's ``RandomCrop(32, padding=4)`` + ``RandomHorizontalFlip()``) applied
to a whole minibatch at once. For an image ``x`` of shape ``(C, H, W)``, a flip bit ``f`` and offsets
``0 ≤ dy, dx ≤ 2p``:

    x_f = x[..., ::-1] if f else x                       (mirror the last axis)
    P   = pad(x_f, p, value = fill)                       (C, H + 2p, W + 2p), the border filled with ``fill``
    out = P[:, dy : dy + H, dx : dx + W]                  (a shifted H × W window of the padded image)

``f ~ Bernoulli(1/2)`` and ``dy, dx ~ U{0, …, 2p}`` independently per image, drawn from a CPU
:class:`torch.Generator`, so a run is deterministic given its seed whatever the device. ``fill`` is the input
value of a *black* pixel (torchvision pads the PIL image with 0 before normalising, i.e. ``−mean/std`` per channel
once normalised); a scalar or a per-channel sequence.

Where it applies (mammoth's convention, which :class:`~testbed.continual.base.ContinualLearner` follows): the
stream batch is augmented before the forward pass; the buffer stores the *non-augmented* inputs and every replayed
buffer draw is augmented afresh.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

Tensor = torch.Tensor


def draw_crop_flip(n: int, generator: torch.Generator, padding: int = 4) -> tuple[Tensor, Tensor, Tensor]:
    """``(flip, dy, dx)`` for ``n`` images: flip bits with probability 1/2 and offsets uniform in ``0 … 2·padding``
    (CPU tensors; the draw order — flips, then rows, then columns — is part of the seeded protocol)."""
    flip = torch.rand(n, generator=generator) < 0.5
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    return flip, dy, dx


def pad_images(x: Tensor, padding: int, fill: float | Sequence[float] | Tensor = 0.0) -> Tensor:
    """``x`` (N, C, H, W) inside a border of ``padding`` pixels of value ``fill`` (scalar or per channel)."""
    n, c, h, w = x.shape
    value = torch.as_tensor(fill, dtype=x.dtype, device=x.device).reshape(-1, 1, 1)
    if value.shape[0] not in (1, c):
        raise ValueError(f"fill has {value.shape[0]} values; expected 1 or one per channel ({c})")
    out = torch.empty((n, c, h + 2 * padding, w + 2 * padding), dtype=x.dtype, device=x.device)
    out[:] = value
    out[:, :, padding:padding + h, padding:padding + w] = x
    return out


def crop_flip(x: Tensor, flip: Tensor, dy: Tensor, dx: Tensor, padding: int = 4,
              fill: float | Sequence[float] | Tensor = 0.0) -> Tensor:
    """The deterministic part: mirror the images with ``flip``, pad by ``padding`` with ``fill`` and cut the
    ``H × W`` window at ``(dy, dx)`` of each (see the module docstring). Same shape, dtype and device as ``x``."""
    if x.ndim != 4:
        raise ValueError(f"crop_flip needs images (N, C, H, W), got shape {tuple(x.shape)}")
    n, _, h, w = x.shape
    dev, layout = x.device, _memory_format(x)
    x = torch.where(flip.to(dev).view(-1, 1, 1, 1), x.flip(-1), x)
    xp = pad_images(x, padding, fill)
    rows = (torch.arange(h, device=dev).view(1, -1) + dy.to(dev).view(-1, 1))[:, :, None]
    cols = (torch.arange(w, device=dev).view(1, -1) + dx.to(dev).view(-1, 1))[:, None, :]
    out = xp.permute(0, 2, 3, 1)[torch.arange(n, device=dev).view(-1, 1, 1), rows, cols]
    return out.permute(0, 3, 1, 2).contiguous(memory_format=layout)


def random_crop_flip(x: Tensor, generator: torch.Generator, padding: int = 4,
                     fill: float | Sequence[float] | Tensor = 0.0) -> Tensor:
    """Random crop of ``x`` (N, C, H, W) after ``padding`` pixels of ``fill``, plus a horizontal flip with
    probability 1/2, independently per image; the draws come from ``generator`` (:func:`draw_crop_flip`)."""
    flip, dy, dx = draw_crop_flip(x.shape[0], generator, padding)
    return crop_flip(x, flip, dy, dx, padding, fill)


def _memory_format(x: Tensor) -> torch.memory_format:
    """``channels_last`` when ``x`` is stored so (and not also contiguous), else the contiguous format."""
    if x.ndim == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format

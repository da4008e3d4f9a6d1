"""Fixed per-task input transforms of the domain-incremental benchmarks (Permuted and Rotated MNIST).

Every task ``t`` sees the same images under its own fixed map ``T_t`` (the labels are unchanged):

* **permutation** (Permuted MNIST): a random permutation ``π_t`` of the ``D`` input entries,
  ``T_t(x)_i = x_{π_t(i)}``, ``i = 0 … D − 1``;
* **rotation** (Rotated MNIST): a rotation of the ``H × W`` image (``H = W``) by ``θ_t`` degrees counter-clockwise
  about its centre, ``T_t(x)(q) = x(R_{−θ_t} q)`` for every output pixel centre ``q``, read by bilinear
  interpolation (``mode="nearest"``: nearest neighbour) with zeros outside the image. In the normalised
  coordinates of :func:`torch.nn.functional.affine_grid` (``x`` right, ``y`` down) the output → input map is
  ``[[cos θ, −sin θ], [sin θ, cos θ]]``; a rotation by 90° is exactly :func:`torch.rot90` (``dims=(−2, −1)``).

Each map is drawn once per task from its own seeded generator (:func:`testbed.seeding.generator` with the task
index as seed and a fixed salt), so every run, method and seed sees the same task sequence; the DER paper's code
(mammoth ``Permutation`` / ``Rotation``) draws a fresh permutation, or an angle ``θ_t ~ U[0°, 180°)``, for every
task in the same way, from its global random state. Transforms act on whole batches, on the batch's device; none
of them stores a transformed copy of the data.
"""

from __future__ import annotations

import math
from typing import Protocol

import torch
import torch.nn.functional as F

from testbed.seeding import DATA_SEED, generator

Tensor = torch.Tensor

#: generator salts of the two task families (distinct, so permutations and angles are independent draws)
PERMUTATION_SALT = DATA_SEED
ROTATION_SALT = DATA_SEED + 1


class TaskTransform(Protocol):
    """A fixed map of a batch of inputs ``(N, …)`` to a batch of the same shape."""

    def __call__(self, x: Tensor) -> Tensor: ...

    def to(self, device: str | torch.device) -> TaskTransform: ...


class Permutation:
    """``x ↦ x.flatten(1)[:, π].reshape(x.shape)``: the same fixed permutation ``π`` of every sample's entries."""

    def __init__(self, perm: Tensor) -> None:
        perm = torch.as_tensor(perm, dtype=torch.long)
        if perm.ndim != 1 or not torch.equal(perm.sort().values, torch.arange(perm.numel(), device=perm.device)):
            raise ValueError("perm must be a permutation of 0 … D − 1")
        self.perm = perm

    def __call__(self, x: Tensor) -> Tensor:
        if x[0].numel() != self.perm.numel():
            raise ValueError(f"permutation of {self.perm.numel()} entries applied to samples of shape "
                             f"{tuple(x.shape[1:])}")
        return x.flatten(1)[:, self.perm.to(x.device)].reshape(x.shape)

    def to(self, device: str | torch.device) -> Permutation:
        return Permutation(self.perm.to(device))

    def __repr__(self) -> str:
        return f"Permutation(D={self.perm.numel()})"


def random_permutation(n: int, task: int, salt: int = PERMUTATION_SALT) -> Tensor:
    """The permutation ``π_t`` of ``0 … n − 1`` of task ``task``: ``randperm`` from ``generator(task, salt)``."""
    return torch.randperm(n, generator=generator(task, salt))


def rotation_grid(degrees: float, size: int, dtype: torch.dtype = torch.float32,
                  device: str | torch.device = "cpu") -> Tensor:
    """The ``(1, size, size, 2)`` sampling grid of a counter-clockwise rotation by ``degrees`` about the centre
    (output → input map ``[[cos θ, −sin θ], [sin θ, cos θ]]`` in normalised coordinates, ``align_corners=False``)."""
    th = math.radians(degrees)
    c, s = math.cos(th), math.sin(th)
    theta = torch.tensor([[[c, -s, 0.0], [s, c, 0.0]]], dtype=dtype, device=device)
    return F.affine_grid(theta, [1, 1, size, size], align_corners=False)


def rotate(images: Tensor, degrees: float, mode: str = "bilinear", grid: Tensor | None = None) -> Tensor:
    """``images`` (N, C, H, H) rotated by ``degrees`` counter-clockwise about their centre; pixels that come from
    outside the image are 0. ``grid``: a precomputed :func:`rotation_grid` (same angle) to reuse."""
    if images.ndim != 4 or images.shape[-1] != images.shape[-2]:
        raise ValueError(f"rotate needs square images (N, C, H, H), got shape {tuple(images.shape)}")
    if grid is None:
        grid = rotation_grid(degrees, images.shape[-1], images.dtype, images.device)
    grid = grid.to(device=images.device, dtype=images.dtype).expand(images.shape[0], -1, -1, -1)
    return F.grid_sample(images, grid, mode=mode, padding_mode="zeros", align_corners=False)


class Rotation:
    """Rotate every sample, stored flat or as an image, viewed as ``image_shape`` ``(C, H, H)``, by ``degrees``."""

    def __init__(self, degrees: float, image_shape: tuple[int, int, int], mode: str = "bilinear",
                 device: str | torch.device = "cpu") -> None:
        if len(image_shape) != 3 or image_shape[1] != image_shape[2]:
            raise ValueError(f"image_shape must be (C, H, H), got {image_shape}")
        if mode not in ("bilinear", "nearest"):
            raise ValueError(f"mode must be 'bilinear' or 'nearest', got {mode!r}")
        self.degrees, self.image_shape, self.mode = float(degrees), tuple(image_shape), mode
        self.grid = rotation_grid(self.degrees, image_shape[1], device=device)

    def __call__(self, x: Tensor) -> Tensor:
        imgs = x.reshape(x.shape[0], *self.image_shape)
        return rotate(imgs, self.degrees, self.mode, self.grid).reshape(x.shape)

    def to(self, device: str | torch.device) -> Rotation:
        return Rotation(self.degrees, self.image_shape, self.mode, device)

    def __repr__(self) -> str:
        return f"Rotation({self.degrees:.2f}°, {self.mode})"


def random_angle(task: int, low: float = 0.0, high: float = 180.0, salt: int = ROTATION_SALT) -> float:
    """The angle ``θ_t ~ U[low, high)`` of task ``task``, in degrees, from ``generator(task, salt)``."""
    return low + (high - low) * float(torch.rand((), generator=generator(task, salt), dtype=torch.float64))


def permuted_tasks(n_tasks: int, dim: int) -> tuple[Permutation, ...]:
    """One fresh random permutation of ``dim`` entries per task (task 0 included, as in the DER paper's code)."""
    return tuple(Permutation(random_permutation(dim, t)) for t in range(n_tasks))


def rotated_tasks(n_tasks: int, image_shape: tuple[int, int, int], low: float = 0.0, high: float = 180.0,
                  mode: str = "bilinear") -> tuple[Rotation, ...]:
    """One rotation by ``θ_t ~ U[low, high)`` degrees per task."""
    return tuple(Rotation(random_angle(t, low, high), image_shape, mode) for t in range(n_tasks))

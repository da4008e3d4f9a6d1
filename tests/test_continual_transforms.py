"""Pure input transforms of the continual benchmarks: CIFAR crop + flip augmentation, per-task pixel permutations
and rotations."""

from __future__ import annotations

import pytest
import torch

from testbed.continual.augment import crop_flip, draw_crop_flip, pad_images, random_crop_flip
from testbed.continual.transforms import (
    Permutation,
    Rotation,
    permuted_tasks,
    random_angle,
    random_permutation,
    rotate,
    rotated_tasks,
)


def _images(n: int = 6, c: int = 3, h: int = 8, w: int = 10, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, c, h, w, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------------------------- augmentation
def test_flip_is_exactly_a_reversed_last_axis():
    x = _images()
    centre = torch.full((6,), 4)  # offset = padding: the window is the original image
    flipped = crop_flip(x, torch.ones(6, dtype=torch.bool), centre, centre, padding=4)
    assert torch.equal(flipped, x.flip(-1)) and torch.equal(flipped[..., 0], x[..., -1])
    assert torch.equal(crop_flip(x, torch.zeros(6, dtype=torch.bool), centre, centre, padding=4), x)
    mixed = crop_flip(x, torch.tensor([True, False] * 3), centre, centre, padding=4)
    assert torch.equal(mixed[0::2], x[0::2].flip(-1)) and torch.equal(mixed[1::2], x[1::2])


def test_crop_is_a_shifted_window_of_the_padded_image():
    x = _images()
    fill = (-1.5, 0.25, 2.0)
    padded = pad_images(x, 4, fill)
    assert padded.shape == (6, 3, 16, 18)
    assert torch.equal(padded[:, :, 4:12, 4:14], x)
    for c, v in enumerate(fill):  # the border holds each channel's fill value
        border = padded[:, c].clone()
        border[:, 4:12, 4:14] = v
        assert torch.all(border == v)
    dy, dx = torch.tensor([0, 8, 3, 5, 1, 7]), torch.tensor([8, 0, 2, 4, 6, 1])
    out = crop_flip(x, torch.zeros(6, dtype=torch.bool), dy, dx, padding=4, fill=fill)
    for i in range(6):
        assert torch.equal(out[i], padded[i, :, dy[i]:dy[i] + 8, dx[i]:dx[i] + 10])
    # offset (0, 8): image shifted down 4 and left 4 — the top rows and right columns are fill
    assert torch.equal(out[0, :, 4:, :6], x[0, :, :4, 4:]) and torch.all(out[0, 0, :4] == -1.5)
    with pytest.raises(ValueError, match="one per channel"):
        pad_images(x, 4, (0.0, 1.0))
    with pytest.raises(ValueError, match="images"):
        crop_flip(x[0], torch.zeros(1, dtype=torch.bool), dy[:1], dx[:1])


def test_random_crop_flip_is_deterministic_under_a_fixed_generator():
    x = _images(n=64)
    a = random_crop_flip(x, torch.Generator().manual_seed(5), fill=0.5)
    b = random_crop_flip(x, torch.Generator().manual_seed(5), fill=0.5)
    c = random_crop_flip(x, torch.Generator().manual_seed(6), fill=0.5)
    assert a.shape == x.shape and a.dtype == x.dtype and torch.equal(a, b) and not torch.equal(a, c)
    flip, dy, dx = draw_crop_flip(64, torch.Generator().manual_seed(5))
    assert torch.equal(a, crop_flip(x, flip, dy, dx, 4, 0.5))  # = the deterministic map at the drawn parameters
    nhwc = random_crop_flip(x.contiguous(memory_format=torch.channels_last), torch.Generator().manual_seed(5), fill=0.5)
    assert torch.equal(nhwc, a) and nhwc.is_contiguous(memory_format=torch.channels_last)  # layout kept


def test_crop_flip_draws_cover_every_offset_and_flip_half_the_time():
    flip, dy, dx = draw_crop_flip(4000, torch.Generator().manual_seed(0), padding=4)
    assert abs(float(flip.float().mean()) - 0.5) < 0.03  # Bernoulli(1/2): sd 0.008
    for d in (dy, dx):
        counts = torch.bincount(d, minlength=9)
        assert counts.numel() == 9 and int(counts.min()) > 350  # each of 0 … 8 about 4000/9 ≈ 444 times


# --------------------------------------------------------------------------------------------- domain transforms
def test_permutation_is_a_seeded_bijection_per_task():
    p0, p1 = random_permutation(784, 0), random_permutation(784, 1)
    assert torch.equal(torch.sort(p0).values, torch.arange(784)) and torch.equal(p0, random_permutation(784, 0))
    assert not torch.equal(p0, p1)
    x = torch.rand(5, 784)
    y = Permutation(p1)(x)
    assert torch.equal(y, x[:, p1]) and torch.equal(y[:, torch.argsort(p1)], x)
    img = x.view(5, 1, 28, 28)
    assert torch.equal(Permutation(p1)(img), y.view(5, 1, 28, 28))  # same map on flat or image-shaped samples
    tasks = permuted_tasks(3, 784)
    assert [torch.equal(t.perm, random_permutation(784, k)) for k, t in enumerate(tasks)] == [True] * 3
    with pytest.raises(ValueError, match="permutation"):
        Permutation(torch.tensor([0, 0, 1]))


@pytest.mark.parametrize("k", [1, 2, 3, -1])
def test_rotation_by_multiples_of_90_degrees_is_rot90(k):
    x = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    want = torch.rot90(x, k, dims=(-2, -1))
    assert torch.equal(rotate(x, 90.0 * k, mode="nearest"), want)  # exact with nearest neighbour
    # bilinear: the sample points are pixel centres up to float rounding of cos/sin
    torch.testing.assert_close(rotate(x, 90.0 * k), want, rtol=0, atol=1e-5)
    flat = Rotation(90.0 * k, (1, 28, 28))(x.flatten(1))
    torch.testing.assert_close(flat.view_as(x), want, rtol=0, atol=1e-5)


def test_rotation_keeps_the_disc_and_blanks_the_corners():
    ones = torch.ones(1, 1, 28, 28)
    r = rotate(ones, 45.0)
    yy, xx = torch.meshgrid(torch.arange(28) - 13.5, torch.arange(28) - 13.5, indexing="ij")
    radius = (yy**2 + xx**2).sqrt()
    inside = radius < 12.5  # every bilinear tap of these pixels lies inside the image
    torch.testing.assert_close(r[0, 0][inside], torch.ones(int(inside.sum())), rtol=0, atol=1e-6)
    assert float(r[0, 0, 0, 0]) == 0.0 and float(r[0, 0, -1, -1]) == 0.0  # corners come from outside: zero
    torch.testing.assert_close(rotate(ones * 3.0, 0.0), ones * 3.0, rtol=0, atol=1e-5)


def test_task_angles_are_seeded_and_uniform_in_0_180():
    angles = [random_angle(t) for t in range(200)]
    assert angles[:5] == [random_angle(t) for t in range(5)] and len(set(angles)) == 200
    assert min(angles) >= 0.0 and max(angles) < 180.0 and 75.0 < sum(angles) / 200 < 105.0  # mean 90, sd ≈ 3.7
    assert [r.degrees for r in rotated_tasks(3, (1, 28, 28))] == angles[:3]
    with pytest.raises(ValueError, match="square"):
        rotate(torch.zeros(1, 1, 4, 6), 10.0)

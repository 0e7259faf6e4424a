"""Transforms give known values on tiny inputs, respect non-square images, and are seeded."""

import pytest
import torch

from devvis import transforms as T
from devvis.errors import TransformError


def test_pad_constant_and_reflect():
    x = torch.arange(6.0).view(1, 1, 2, 3)
    p = T.pad(1, value=0.5)(x)
    assert p.shape == (1, 1, 4, 5) and p[0, 0, 0].eq(0.5).all() and torch.equal(p[0, 0, 1:3, 1:4], x[0, 0])
    r = T.pad(1, mode="reflect")(x)
    assert r[0, 0, 1, 0] == x[0, 0, 0, 1]


def test_jitter_crops_by_d_on_non_square():
    x = torch.rand(2, 3, 10, 14)
    y = T.jitter(3)(x, generator=torch.Generator().manual_seed(0))
    assert y.shape == (2, 3, 7, 11)
    # the crop is a contiguous window of x
    found = any(torch.equal(y, x[..., i:i + 7, j:j + 11]) for i in range(4) for j in range(4))
    assert found


def test_scale_known_values():
    x = torch.ones(1, 1, 4, 6)
    y = T.random_scale([0.5])(x)
    assert y.shape == (1, 1, 2, 3) and torch.allclose(y, torch.ones_like(y))
    y = T.random_scale([2.0])(torch.arange(4.0).view(1, 1, 2, 2))
    assert y.shape == (1, 1, 4, 4)


def test_rotate_90_degrees():
    x = torch.zeros(1, 1, 5, 5)
    x[0, 0, 0, 2] = 1.0  # top-centre pixel
    y = T.random_rotate([90])(x)
    # counter-clockwise by 90 degrees: top-centre moves to left-centre
    assert y[0, 0, 2, 0] > 0.99 and y[0, 0, 0, 2] < 0.01


def test_normalize_values():
    x = torch.full((1, 3, 2, 2), 0.5)
    y = T.normalize([0.5, 0.25, 0.0], [0.5, 0.25, 0.5])(x)
    assert torch.allclose(y[0, :, 0, 0], torch.tensor([0.0, 1.0, 1.0]))
    z = T.imagenet_normalize(torch.tensor(T.IMAGENET_MEAN).view(1, 3, 1, 1))
    assert torch.allclose(z, torch.zeros_like(z))


def test_blur_and_noise_and_crop():
    x = torch.zeros(1, 1, 9, 9)
    x[0, 0, 4, 4] = 1
    y = T.gaussian_blur(1.0)(x)
    assert abs(y.sum().item() - 1.0) < 1e-4 and y[0, 0, 4, 4] < 1
    g = torch.Generator().manual_seed(0)
    n = T.noise(0.1)(torch.zeros(1, 1, 50, 50), generator=g)
    assert 0.08 < n.std().item() < 0.12
    c = T.crop((3, 5))(torch.rand(1, 3, 8, 9), generator=g)
    assert c.shape == (1, 3, 3, 5)


def test_standard_stack_is_seeded_and_non_square_safe():
    x = torch.rand(2, 3, 40, 56)
    a = T.standard()(x, generator=torch.Generator().manual_seed(3))
    b = T.standard()(x, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.shape[1] == 3
    # pad 12 then jitter 8 and 4 shrink by 12 on each axis (before the random scale)
    assert abs(a.shape[-1] / a.shape[-2] - (56 + 12) / (40 + 12)) < 0.1


def test_bad_arguments_raise():
    with pytest.raises(TransformError, match="jitter 20 is too large"):
        T.jitter(20)(torch.rand(1, 3, 10, 10))
    with pytest.raises(TransformError, match="valid"):
        T.get("fancy")
    with pytest.raises(TransformError):
        T.pad(2, mode="wrap")

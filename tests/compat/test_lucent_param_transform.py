"""devvis.compat.lucent.optvis.param / transform / util: Lucent's shapes, values and randomness, and its non-square bugs fixed."""

import random

import numpy as np
import pytest
import torch

from devvis.compat.lucent import param, transform, util
from devvis.compat.lucent.optvis.param import color, spatial
from devvis.errors import ParameterizationError, TransformError
from devvis.transforms import IMAGENET_MEAN, IMAGENET_STD

# -- param -------------------------------------------------------------------------------


def test_image_shapes_range_and_spectrum():
    params, image_f = param.image(16, 12, batch=2)
    img = image_f()
    assert img.shape == (2, 3, 12, 16) and 0 <= img.min() and img.max() <= 1
    assert len(params) == 1 and params[0].shape == (2, 3, 12, 16 // 2 + 1, 2) and params[0].requires_grad
    assert params[0] is next(image_f.parameters())  # what the optimizer moves is what the image reads
    p_pix, f_pix = param.image(10, fft=False)
    assert p_pix[0].shape == (1, 3, 10, 10) and f_pix().shape == (1, 3, 10, 10)
    p4, f4 = param.image(8, channels=4)
    assert f4().shape == (1, 4, 8, 8) and p4[0].shape == (1, 4, 8, 5, 2)


def test_explicit_channels_turn_decorrelation_off():
    torch.manual_seed(0)
    _, f = param.image(6, channels=3, fft=False)
    assert torch.allclose(f(), torch.sigmoid(f.basis()))
    torch.manual_seed(0)
    _, g = param.image(6, fft=False)
    m = torch.as_tensor(color.color_correlation_normalized)
    expected = torch.sigmoid(torch.einsum("bchw,rc->brhw", g.basis(), m))
    assert torch.allclose(g(), expected)


def test_fft_and_pixel_image():
    params, f = spatial.fft_image([2, 3, 8, 6], sd=0.1)
    assert params[0].shape == (2, 3, 8, 4, 2) and f().shape == (2, 3, 8, 6)
    with torch.no_grad():
        params[0].zero_()
        params[0][0, 0, 0, 0, 0] = 1.0  # the DC term: a constant image
    img = f()
    assert torch.allclose(img[0, 0], torch.full((8, 6), img[0, 0, 0, 0].item()))
    assert img[0, 0, 0, 0].item() > 0 and img[1].abs().max().item() == 0
    pp, pf = param.pixel_image([1, 2, 3, 4])
    assert pf() is pp[0] and pp[0].shape == (1, 2, 3, 4)
    assert param.rfft2d_freqs(4, 6).shape == (4, 4)


def test_same_seed_same_init():
    util.set_seed(3)
    a = param.image(8, batch=2)[1]().detach()
    util.set_seed(3)
    b = param.image(8, batch=2)[1]().detach()
    assert torch.equal(a, b)
    assert not torch.equal(a, param.image(8, batch=2)[1]().detach())


def test_to_valid_rgb():
    f = param.to_valid_rgb(lambda: torch.zeros(1, 3, 2, 2), decorrelate=True)
    assert torch.equal(f(), torch.full((1, 3, 2, 2), 0.5))
    x = torch.tensor([1.0, -1.0, 2.0]).view(1, 3, 1, 1)
    m = torch.as_tensor(color.color_correlation_normalized)
    assert torch.allclose(param.to_valid_rgb(lambda: x, decorrelate=True)(), torch.sigmoid((m @ x.view(3)).view(1, 3, 1, 1)))
    assert color.max_norm_svd_sqrt == pytest.approx(np.linalg.norm(color.color_correlation_svd_sqrt, axis=0).max())


def test_cppn():
    params, f = param.cppn(12, num_layers=4, num_hidden_channels=6)
    assert len(params) == 2 * 4  # weight and bias of each 1x1 convolution
    img = f()
    assert img.shape == (1, 3, 12, 12) and torch.equal(img, torch.full_like(img, 0.5))  # last weights are 0
    assert f.coords.shape == (1, 2, 12, 12) and f.coords[0, 0, 0, 5] == f.coords[0, 0, 0, 0]  # ch 0 varies by row
    _, g = param.cppn(8, num_layers=3, normalize=True)
    kinds = [type(m).__name__ for m in g.net]
    assert kinds.count("InstanceNorm2d") == 3 and kinds[-1] == "Sigmoid"


def test_lowres_tensor_interpolates_and_offsets_every_dimension():
    params, f = param.lowres_tensor([1, 1, 3, 5], [1, 1, 2, 3])
    with torch.no_grad():
        params[0].copy_(torch.tensor([[[[0.0, 1.0, 2.0], [10.0, 11.0, 12.0]]]]))
    out = f()
    assert out.shape == (1, 1, 3, 5)
    assert out[0, 0, :, 0].tolist() == [0.0, 5.0, 10.0] and out[0, 0, 0].tolist() == [0.0, 0.5, 1.0, 1.5, 2.0]
    # offset=True shifts height by 3/2/2 -> 0 and width by 4/2/2 = 1 (Lucent never shifted the width)
    p2, g = param.lowres_tensor([1, 1, 4, 4], [1, 1, 2, 2], offset=True)
    with torch.no_grad():
        p2[0].copy_(torch.tensor([[[[0.0, 3.0], [30.0, 33.0]]]]))
    base = param.lowres_tensor([1, 1, 4, 4], [1, 1, 2, 2])[1]
    with torch.no_grad():
        base.underlying.copy_(p2[0])
    b, s = base(), g()
    assert torch.equal(s[..., 1:, 1:], b[..., :-1, :-1])  # moved down and right by one
    assert torch.equal(s[..., 0, 1:], b[..., 1, :-1])  # the gap is filled by reflection
    with pytest.raises(ParameterizationError, match="one entry per dimension"):
        param.lowres_tensor([1, 1, 4, 4], [1, 1, 2, 2], offset=[1, 2])


# -- transform ---------------------------------------------------------------------------


def test_pad_values():
    x = torch.tensor([[[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]]])
    # reflect is Lucent's default
    assert transform.pad(1)(x)[0, 0].tolist() == [[5, 4, 5, 6, 5], [2, 1, 2, 3, 2], [5, 4, 5, 6, 5], [2, 1, 2, 3, 2]]
    c = transform.pad(1, mode="constant", constant_value=0.25)(x)[0, 0]
    assert c[1].tolist() == [0.25, 1, 2, 3, 0.25] and c[0].tolist() == [0.25] * 5 and c.shape == (4, 5)
    assert transform.pad(2, mode="replicate")(x).shape == (1, 1, 6, 7)


def test_jitter_shifts_with_zeros_and_keeps_size():
    x = torch.arange(1, 17, dtype=torch.float32).view(1, 1, 4, 4)
    assert transform.shift(x, 1, 2)[0, 0].tolist() == [
        [0, 0, 0, 0], [0, 0, 0, 0], [0, 1, 2, 3], [0, 5, 6, 7]]
    seen = set()
    g = torch.Generator().manual_seed(0)
    for _ in range(60):
        y = transform.jitter(3)(x, generator=g)
        assert y.shape == x.shape
        dy, dx = [int(v) for v in (y[0, 0] == 1).nonzero()[0]]
        assert torch.equal(y, transform.shift(x, dx, dy))
        seen.add((dx, dy))
    assert seen == {(i, j) for i in range(3) for j in range(3)}  # 0..d-1 in each direction
    with pytest.raises(TransformError, match="more than 1"):
        transform.jitter(1)


def test_shift_matches_kornia_translate():
    kornia = pytest.importorskip("kornia")
    x = torch.rand(2, 3, 5, 7)
    ref = kornia.geometry.transform.translate(x, torch.tensor([[2.0, 1.0]]).expand(2, 2), align_corners=True)
    assert torch.allclose(transform.shift(x, 2, 1), ref, atol=1e-6)


def test_random_scale_sizes_and_non_square_padding():
    x = torch.ones(1, 1, 10, 30)
    # 0.9: 9 x 27 plus ceil(0.5)=1 row on top and bottom, ceil(1.5)=2 columns left and right
    y = transform.random_scale([0.9])(x)
    assert y.shape == (1, 1, 11, 31)  # Lucent swapped the paddings: (12, 30)
    assert y[0, 0, :, :2].abs().sum() == 0 and y[0, 0, 0].abs().sum() == 0 and y[0, 0, 1, 2] == 1
    assert transform.random_scale([1.06])(torch.ones(1, 3, 9, 9)).shape == (1, 3, 10, 10)  # ceil(9.54); no crop
    assert torch.equal(transform.random_scale([1.0])(x), x)
    up = transform.random_scale([2.0])(torch.tensor([[[[0.0, 1.0]]]]))
    assert up[0, 0, 0].tolist() == pytest.approx([0.0, 1 / 3, 2 / 3, 1.0])  # bilinear, corners aligned


def test_random_rotate_non_square_and_units():
    x = torch.arange(12, dtype=torch.float32).view(1, 1, 3, 4)
    assert torch.allclose(transform.random_rotate([180])(x), x.flip(-1, -2), atol=1e-4)
    assert torch.allclose(transform.random_rotate([np.pi], units="radians")(x), x.flip(-1, -2), atol=1e-4)
    sq = torch.rand(1, 2, 5, 5)
    assert torch.allclose(transform.random_rotate([90])(sq), torch.rot90(sq, 1, dims=(-2, -1)), atol=1e-4)
    assert torch.equal(transform.random_rotate([0])(x), x)
    with pytest.raises(TransformError, match="degrees"):
        transform.random_rotate([1], units="turns")


def test_normalize_preprocess_compose():
    x = torch.rand(2, 3, 4, 4)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    assert torch.allclose(transform.normalize()(x), (x - mean) / std)
    assert transform.preprocess_inceptionv1()(torch.tensor([0.0, 0.5, 1.0])).tolist() == [-117.0, 10.5, 138.0]
    f = transform.compose([lambda t: t + 1, lambda t: t * 2])
    assert torch.equal(f(x), (x + 1) * 2)


def test_standard_transforms():
    st = transform.standard_transforms
    assert isinstance(st, list) and len(st) == 5
    assert st[0].mode == "constant" and st[0].value == 0.5 and st[0].w == 12
    assert st[1].d == 8 and st[4].d == 4
    assert st[2].scales == pytest.approx([0.9 + 0.02 * i for i in range(11)])
    assert st[3].angles.count(0.0) == 6 and min(st[3].angles) == -10 and max(st[3].angles) == 10
    x = torch.rand(2, 3, 32, 32)
    f = transform.compose(st)
    a = f(x, generator=torch.Generator().manual_seed(1))
    b = f(x, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.shape[:2] == (2, 3) and 54 <= a.shape[-1] <= 62  # 32 + 24, scaled 0.9..1.1


def test_set_seed_seeds_every_stream():
    util.set_seed(11)
    a = (torch.rand(1).item(), np.random.rand(), random.random())
    util.set_seed(11)
    assert (torch.rand(1).item(), np.random.rand(), random.random()) == a
    assert torch.backends.cudnn.deterministic

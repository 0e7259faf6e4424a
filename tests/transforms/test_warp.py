"""The fused warp: planted geometry, the separate stack's random distribution, seeds and gradients."""

import collections

import pytest
import torch
import torch.nn.functional as F

from devvis import transforms as T
from devvis.errors import TransformError
from devvis.transforms import Warp, WarpParams


def _dot(h=9, w=9, r=4, c=4):
    x = torch.zeros(1, 1, h, w)
    x[0, 0, r, c] = 1.0
    return x


def _argmax2d(img):
    flat = int(img[0, 0].flatten().argmax())
    return divmod(flat, img.shape[-1])


def test_identity_up_to_interpolation_and_a_plain_resize():
    x = torch.rand(2, 3, 12, 10)
    ident = Warp(pad_px=0, jitter_px=0, scales=[1.0], angles=[0.0], jitter2_px=0)
    assert torch.allclose(ident(x), x, atol=1e-5)
    # pointed at another size it is the bilinear resize (align_corners=False) of the pipeline; only
    # the outermost half pixel differs: the resize repeats the edge, the warp blends in the pad's fill
    y = ident.at_size((24, 15))(x)
    ref = F.interpolate(x, size=(24, 15), mode="bilinear", align_corners=False)
    assert torch.allclose(y[..., 1:-1, 1:-1], ref[..., 1:-1, 1:-1], atol=1e-5)


def test_pad_and_known_translations_move_a_planted_dot():
    w = Warp(pad_px=4, jitter_px=3, scales=[1.0], angles=[0.0], jitter2_px=2, fill=0.5)
    x = _dot(9, 11, r=2, c=7)
    assert w.nominal_size(9, 11) == (9 + 8 - 5, 11 + 8 - 5) == w.output_size(9, 11)
    out = w.apply(x, WarpParams(dy1=1, dx1=3, dy2=2, dx2=0))
    # pad shifts by +4, the first crop by -1/-3, the second by -2/-0
    assert _argmax2d(out) == (2 + 4 - 1 - 2, 7 + 4 - 3 - 0)
    assert out.max() == pytest.approx(1.0, abs=1e-5)
    # outside the image: the pad's constant grey; inside, away from the dot: the image's zeros
    assert out[0, 0, 0, 0] == pytest.approx(0.5, abs=1e-6) and out[0, 0, 6, 2] == pytest.approx(0.0, abs=1e-6)


def test_a_known_rotation_of_a_planted_pattern():
    x = _dot(5, 5, r=0, c=2)  # top centre
    out = Warp(pad_px=0, jitter_px=0, angles=[90.0], fill=0.0)(x)
    assert out[0, 0, 2, 0] > 0.99 and out[0, 0, 0, 2] < 0.01  # counter-clockwise: to the left centre
    # any angle: the same warp as the separate RandomRotate (with zeros outside, as it fills)
    for img in (torch.rand(1, 3, 31, 31), torch.rand(1, 3, 21, 31)):  # square and not
        for a in (-10.0, 7.0):
            fused = Warp(pad_px=0, jitter_px=0, angles=[a], fill=0.0)(img)
            assert torch.allclose(fused, T.random_rotate([a])(img), atol=1e-5)


def test_scale_about_the_centre_and_its_cancelling_at_a_fixed_size():
    # scale 2 of a 16-px image, no pad/jitter, no fixed size: a 32-px output; a dot 2 px right of
    # the centre lands 4 px right of it
    x = torch.zeros(1, 1, 16, 16)
    x[0, 0, 7:9, 9:11] = 1.0
    out = Warp(pad_px=0, jitter_px=0, scales=[2.0], fill=0.0)(x)
    assert out.shape[-2:] == (32, 32)
    cols = out[0, 0].sum(0)
    centre = float((cols * torch.arange(32.0)).sum() / cols.sum())
    assert centre == pytest.approx(15.5 + 4, abs=0.05)
    # pointed at a fixed size, the scaled window is stretched back over it: the same view at
    # every scale (as the separate stack followed by the resize to the model's input size)
    img = torch.rand(1, 3, 16, 16)
    views = [Warp(pad_px=2, jitter_px=0, scales=[s], size=24)(img) for s in (0.9, 1.1)]
    assert torch.allclose(views[0], views[1], atol=1e-5)


def test_same_random_parameters_as_the_separate_stack():
    separate, fused = T.standard(fused=False), T.standard(fused=True)
    x = torch.rand(1, 3, 32, 32)
    for seed in range(5):
        g1, g2 = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
        separate(x, generator=g1)
        fused(x, generator=g2)
        # the same number of draws: the streams stay in step
        assert torch.equal(g1.get_state(), g2.get_state())
    # and the same distributions: each draw uniform over the separate stack's discrete choices
    warp = fused.steps[-1]
    g = torch.Generator().manual_seed(0)
    draws = [warp.draw(g) for _ in range(4000)]
    scales = collections.Counter(round(d.scale, 4) for d in draws)
    angles = collections.Counter(d.angle for d in draws)
    assert sorted(scales) == [round(0.9 + 0.02 * i, 4) for i in range(11)]
    assert sorted(angles) == [float(a) for a in range(-10, 11)]
    assert {d.dy1 for d in draws} == set(range(9)) and {d.dx2 for d in draws} == set(range(5))
    assert max(scales.values()) < 1.3 * 4000 / 11 and min(scales.values()) > 0.7 * 4000 / 11
    assert max(angles.values()) < 1.35 * 4000 / 21 and min(angles.values()) > 0.65 * 4000 / 21


def test_fused_and_separate_show_the_same_view_of_a_smooth_image():
    # a smooth image, so the two interpolation chains agree closely away from the borders
    x = F.interpolate(torch.rand(1, 3, 6, 6, generator=torch.Generator().manual_seed(1)), size=(96, 96),
                      mode="bicubic", align_corners=False)
    separate, fused = T.standard(fused=False), T.sized(T.standard(fused=True), 160)
    for seed in range(4):
        a = F.interpolate(separate(x, generator=torch.Generator().manual_seed(seed)), size=(160, 160),
                          mode="bilinear", align_corners=False)
        b = fused(x, generator=torch.Generator().manual_seed(seed))
        assert b.shape == a.shape
        assert (a - b)[..., 24:-24, 24:-24].abs().max() < 0.03


def test_seeded_reproducible_and_gradients_flow():
    t = T.sized(T.standard(), 48)
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    a = t(x, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, t(x, generator=torch.Generator().manual_seed(3)))
    assert not torch.equal(a, t(x, generator=torch.Generator().manual_seed(4)))
    a.square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    # exact gradients (double precision), for a rotated, scaled, shifted draw
    w = Warp(pad_px=2, jitter_px=1, scales=[1.1], angles=[7.0], jitter2_px=1, size=(7, 9))
    xd = torch.rand(1, 2, 6, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: w.apply(v, WarpParams(1, 0, 1.1, 7.0, 0, 1)), (xd,))


def test_standard_forms_and_the_pipeline_samples_once_at_the_input_size():
    from torch import nn

    from devvis.render.pipeline import ModelInput

    assert len(T.standard(fused=False)) == 5 and len(T.standard(fused=True)) == 1
    assert [type(s).__name__ for s in T.standard(fused=True, alpha=True, blur=0.5).steps] == \
        ["CollapseAlpha", "GaussianBlur", "Warp"]
    assert len(T.get("standard")) == (1 if T.FUSED_DEFAULT else 5)
    net = nn.Conv2d(3, 2, 3)
    mi = ModelInput(net, transforms="standard-fused", preprocess=None, input_size=40)
    assert mi.transforms.steps[-1].size == (40, 40)
    out = mi(torch.rand(1, 3, 24, 24), generator=torch.Generator().manual_seed(0))
    assert out.shape == (1, 3, 40, 40)
    # no input size: the warp gives the separate stack's size, round(s * (24 + 24 - 8)) - 4
    mi = ModelInput(net, transforms="standard-fused", preprocess=None)
    x = torch.rand(1, 3, 24, 24)
    for seed in range(3):
        s = mi.transforms.steps[-1].draw(torch.Generator().manual_seed(seed)).scale
        sep = T.standard(fused=False)(x, generator=torch.Generator().manual_seed(seed))
        out = mi(x, generator=torch.Generator().manual_seed(seed))
        assert out.shape[-2:] == sep.shape[-2:] == (round(40 * s) - 4,) * 2


def test_bad_warps_raise():
    with pytest.raises(TransformError, match="whole number"):
        Warp(pad_px=-1)
    with pytest.raises(TransformError, match="scales must be positive"):
        Warp(scales=[0.0])
    with pytest.raises(TransformError, match="leave nothing"):
        Warp(pad_px=0, jitter_px=6, jitter2_px=3)(torch.rand(1, 3, 8, 8))
    with pytest.raises(TransformError, match="standard-separate"):
        T.get("lucid")

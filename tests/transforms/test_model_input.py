"""The model-input pipeline's order and memory format (devvis.render.pipeline.ModelInput)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from devvis.render.pipeline import ModelInput
from devvis.transforms.preprocess import imagenet_normalize


def net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())


def test_an_affine_preprocess_runs_before_the_resize_with_the_same_values():
    x = torch.rand(2, 3, 50, 50)
    for spec, ref in (("imagenet", imagenet_normalize), ("mean=0.5:std=0.25", lambda t: (t - 0.5) / 0.25),
                      ("none", lambda t: t)):
        mi = ModelInput(net(), transforms=None, preprocess=spec, input_size=80)
        assert mi.preprocess_first
        want = ref(F.interpolate(x, size=(80, 80), mode="bilinear", align_corners=False))
        torch.testing.assert_close(mi(x), want, rtol=0, atol=2e-6)


def test_a_callable_preprocess_still_sees_the_resized_image():
    seen = []
    mi = ModelInput(net(), transforms=None, preprocess=lambda t: seen.append(tuple(t.shape[-2:])) or t * 2,
                    input_size=80)
    assert not mi.preprocess_first
    x = torch.rand(1, 3, 50, 50)
    out = mi(x, channels_last=True)
    assert seen == [(80, 80)]
    torch.testing.assert_close(out, 2 * F.interpolate(x, size=(80, 80), mode="bilinear", align_corners=False))


def test_channels_last_is_written_by_the_resize_with_identical_values():
    x = torch.rand(2, 3, 61, 57)
    for transforms in (None, "standard-separate"):
        mi = ModelInput(net(), transforms=transforms, preprocess="imagenet", input_size=96)
        a = mi(x, generator=torch.Generator().manual_seed(4))
        b = mi(x, generator=torch.Generator().manual_seed(4), channels_last=True)
        assert a.is_contiguous() and b.is_contiguous(memory_format=torch.channels_last) and not b.is_contiguous()
        assert torch.equal(a, b)
    same_size = ModelInput(net(), transforms=None, preprocess="imagenet", input_size=(61, 57))
    assert same_size(x, channels_last=True).is_contiguous()  # nothing to resize: left to the forward

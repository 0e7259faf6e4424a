"""Transparency (Lucid's alpha parameterization): RGBA params, alpha transforms and priors, PNG with alpha."""

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from devvis import objectives, param, render, transforms
from devvis.errors import ObjectiveError, ParameterizationError, TransformError
from devvis.hooks import Activations
from devvis.render.pipeline import ModelInput
from devvis.results import open_results


class Quadrant(nn.Module):
    """Zero outside the top-left quadrant."""

    def forward(self, x):
        m = torch.zeros_like(x)
        h, w = x.shape[-2:]
        m[..., : h // 2, : w // 2] = 1
        return x * m


class PlantedRedDetector(nn.Module):
    """``detector``: redness (R - (G + B) / 2) in the top-left quadrant only."""

    def __init__(self):
        super().__init__()
        conv = nn.Conv2d(3, 1, 1, bias=False)
        with torch.no_grad():
            conv.weight.copy_(torch.tensor([1.0, -0.5, -0.5]).view(1, 3, 1, 1))
        self.detector = nn.Sequential(conv, Quadrant())

    def forward(self, x):
        return self.detector(x).flatten(1).sum(1, keepdim=True)


def test_alpha_param_is_rgba_and_rgb_unchanged():
    rgba = param.image(16, alpha=True, seed=0)()
    assert rgba.shape == (1, 4, 16, 16) and 0 <= rgba.min() and rgba.max() <= 1
    assert abs(rgba[:, 3].mean().item() - 0.5) < 0.05                  # starts half transparent
    rgb = param.image(16, seed=0)()
    assert torch.equal(rgb, param.image(16, seed=0)())                 # the 3-channel path is untouched
    with pytest.raises(ParameterizationError, match="channels=1"):
        param.image(8, alpha=True, channels=1)


def test_collapse_alpha_composites_over_background():
    rgba = torch.cat([torch.ones(2, 3, 4, 4), torch.zeros(2, 1, 4, 4)], dim=1)   # fully transparent white
    assert torch.equal(transforms.collapse_alpha(0.25)(rgba), torch.full((2, 3, 4, 4), 0.25))
    g = torch.Generator().manual_seed(0)
    a, b = transforms.collapse_alpha_random()(rgba, generator=g), transforms.collapse_alpha_random()(rgba, generator=g)
    assert a.shape == (2, 3, 4, 4) and not torch.equal(a, b)              # a new background each step
    opaque = rgba.clone(); opaque[:, 3] = 1
    assert torch.equal(transforms.collapse_alpha_random()(opaque, generator=g), torch.ones(2, 3, 4, 4))
    rgb = torch.rand(1, 3, 4, 4)
    assert transforms.collapse_alpha_random()(rgb) is rgb                   # RGB passes through
    with pytest.raises(TransformError, match="'random' or a grey level"):
        transforms.CollapseAlpha("blue")


def test_standard_alpha_collapses_first_and_keeps_defaults():
    for fused, n in ((False, 5), (True, 1)):
        assert len(transforms.standard(fused=fused)) == n
        stack = transforms.standard(alpha=True, fused=fused)
        assert len(stack) == n + 1 and isinstance(stack.steps[0], transforms.CollapseAlpha)
        out = stack(torch.rand(1, 4, 32, 32), generator=torch.Generator().manual_seed(0))
        assert out.shape[1] == 3


def test_model_input_composites_rgba_left_over_for_an_rgb_model():
    mi = ModelInput(nn.Conv2d(3, 2, 1), transforms=None, preprocess="none")
    rgba = torch.cat([torch.ones(1, 3, 2, 2), torch.zeros(1, 1, 2, 2)], dim=1)
    assert torch.equal(mi(rgba), torch.full((1, 3, 2, 2), 0.5))          # grey where transparent
    mi4 = ModelInput(nn.Conv2d(4, 2, 1), transforms=None, preprocess="none")
    assert mi4(rgba).shape[1] == 4                                         # a 4-channel model sees all 4


def test_alpha_priors():
    img = torch.ones(2, 4, 4, 4)
    img[0, 3, :, :2] = 0
    acts = Activations({"input": img})
    assert objectives.transparency()(acts).tolist() == [0.5, 0.0]
    assert objectives.alpha_total_variation()(acts).tolist() == [-0.25, 0.0]   # 4 unit steps over 16 pixels
    with pytest.raises(ObjectiveError, match=r"alpha=True"):
        objectives.transparency()(Activations({"input": torch.ones(1, 3, 2, 2)}))


def test_alpha_render_of_planted_detector_is_opaque_where_its_pattern_is(tmp_path):
    model = PlantedRedDetector()
    obj = objectives.channel("detector", 0) + 0.05 * objectives.transparency()
    result = render(model, obj, param.image(16, alpha=True, seed=0), steps=80, lr=0.2,
                    transforms=[transforms.collapse_alpha_random()], preprocess="none", progress=False)
    img = result.images[0]
    alpha = img[3]
    inside, outside = alpha[:8, :8].mean().item(), torch.cat([alpha[8:].flatten(), alpha[:8, 8:].flatten()]).mean().item()
    assert inside > 0.7 and outside < 0.1, (inside, outside)   # measured: 0.83 and 0.03
    red = img[0, :8, :8].mean() - img[1:3, :8, :8].mean()
    assert red > 0.5
    # saved as PNG with alpha; the results reader finds it
    path = result.save(tmp_path, names=["red"])[0]
    assert path.name == "red.png"
    png = Image.open(path)
    assert png.mode == "RGBA"
    a = np.asarray(png)[..., 3]
    assert a[:8, :8].mean() > 0.7 * 255 and a[8:].mean() < 0.1 * 255
    entries = list(open_results(tmp_path))
    assert entries[0].image_path == path and entries[0].record["image_file"] == "red.png"

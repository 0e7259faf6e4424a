"""Feature accentuation: param.from_image, objectives.closeness and accentuate() on a planted unit."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from tinymodels import TinyCNN

from devvis import objectives, param
from devvis.accentuation import accentuate, load_seed_image
from devvis.errors import ConfigError, ObjectiveError, ParameterizationError


def _seed_image():
    g = torch.Generator().manual_seed(3)
    low = torch.rand(1, 3, 4, 4, generator=g)
    return (F.interpolate(low, size=(32, 32), mode="bilinear", align_corners=False) * 0.6 + 0.2)


@pytest.mark.parametrize("fft", [True, False])
@pytest.mark.parametrize("decorrelate", [True, False])
def test_from_image_starts_at_the_seed(fft, decorrelate):
    seed = _seed_image()
    p = param.from_image(seed, fft=fft, decorrelate=decorrelate)
    assert (p() - seed).abs().max() < 1e-4
    assert all(t.requires_grad for t in p.parameters())
    clipped = param.from_image(torch.zeros(1, 3, 4, 4))()                  # 0 has no logit: clipped to 0.01
    assert torch.allclose(clipped, torch.full((1, 3, 4, 4), 0.01), atol=1e-5)
    with pytest.raises(ParameterizationError, match=r"in \[0, 1\]"):
        param.from_image(torch.full((1, 3, 2, 2), 2.0))


def test_closeness_is_relative_distance_and_checks_shapes():
    from devvis.hooks import Activations

    ref = torch.ones(2, 3, 2, 2)
    acts = Activations({"input": torch.stack([torch.ones(3, 2, 2), torch.zeros(3, 2, 2)])})
    assert objectives.closeness(ref)(acts).tolist() == [0.0, -1.0]
    with pytest.raises(ObjectiveError, match="does not match"):
        objectives.closeness(torch.ones(1, 3, 4, 4))(acts)


def test_accentuation_raises_the_unit_and_stays_close_to_its_seed():
    model = TinyCNN()
    unit = objectives.channel("conv2", 3)
    seed = _seed_image()
    before = objectives.evaluate(model, unit, seed, preprocess=None).item()
    kw = dict(steps=40, lr=0.05, transforms=None, preprocess=None)
    near = accentuate(model, unit, seed, **kw)                   # the default closeness (5)
    free = accentuate(model, unit, seed, closeness=0.0, **kw)
    after = objectives.evaluate(model, unit, near.images, preprocess=None).item()
    rms_near = (near.images - seed).pow(2).mean().sqrt().item()
    rms_free = (free.images - seed).pow(2).mean().sqrt().item()
    assert after > before + 0.2, (before, after)                # the unit's activation rises (measured: +0.31)
    assert rms_near < 0.1, rms_near                               # stated distance: RMS below 0.1 (measured 0.063)
    assert rms_near < rms_free                                    # the closeness term is what keeps it near
    assert near.config["accentuation"] == {"closeness": 5.0, "closeness_layer": "input", "seed_shape": [1, 3, 32, 32]}


def test_accentuation_closeness_in_a_layer():
    model = TinyCNN()
    seed = _seed_image()
    res = accentuate(model, "conv2:3", seed, closeness=1.0, closeness_layer="conv1", steps=10, transforms=None,
                     preprocess=None)
    assert res.images.shape == seed.shape and res.config["accentuation"]["closeness_layer"] == "conv1"
    with pytest.raises(ConfigError, match="closeness"):
        accentuate(model, "conv2:3", seed, closeness=-1)


def test_load_seed_image_crops_and_resizes(tmp_path):
    a = np.zeros((20, 40, 3), dtype=np.uint8)
    a[:, 10:30] = 255                                            # a white centre square on black
    Image.fromarray(a).save(tmp_path / "s.png")
    img = load_seed_image(tmp_path / "s.png", size=8)
    assert img.shape == (1, 3, 8, 8) and img.min() > 0.9         # the centre crop is the white square
    assert load_seed_image(tmp_path / "s.png").shape == (1, 3, 20, 40)
    with pytest.raises(ConfigError, match="cannot read seed image"):
        load_seed_image(tmp_path / "missing.png")

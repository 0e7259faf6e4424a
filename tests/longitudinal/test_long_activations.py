"""get_activations against a hand-made forward pass, the default probe, and the plot."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from devvis import objectives, render
from devvis.data import SyntheticShapes, probe_batch
from devvis.errors import ChannelOutOfRangeError, ConfigError, LayerNotFoundError
from devvis.io import read_json
from devvis.longitudinal import (CheckpointSeries, LongitudinalActivations, get_activations,
                                 plot_longitudinal_activations, step_scale)
from devvis.models import load_model
from devvis.zoo import compact_resnet

from long_series_steps import STEPS

LAYER, CHANNEL = "layer2.0.conv1", 3


def _by_hand(path, images):
    """Channel CHANNEL of LAYER, mean over positions, per image: a forward hook, no devvis code path."""
    model = load_model(None, checkpoint=path).eval()
    seen = {}
    handle = model.get_submodule(LAYER).register_forward_hook(lambda m, i, o: seen.setdefault("out", o))
    with torch.no_grad():
        model(images)
    handle.remove()
    return seen["out"][:, CHANNEL].mean(dim=(1, 2))


def test_one_row_per_checkpoint_matching_a_direct_forward_pass(series_dir):
    x = probe_batch(6, 32, seed=0)
    acts = get_activations(None, LAYER, CHANNEL, series_dir, x, preprocess="none")
    assert acts.steps == STEPS and tuple(acts.values.shape) == (len(STEPS), 6)
    for i, step in enumerate(STEPS):
        expected = _by_hand(series_dir / f"step_{step:06d}.safetensors", x)
        torch.testing.assert_close(acts.values[i], expected, rtol=1e-5, atol=1e-6)
    assert acts.inputs == {"kind": "tensor", "n": 6, "shape": [3, 32, 32]}
    assert not torch.equal(acts.values[0], acts.values[-1])  # training changed the channel
    # an architecture instance, a name, and a shuffled DataLoader give the same numbers
    arch = compact_resnet(num_classes=12, width=4, blocks=(1, 1))
    loader = DataLoader(SyntheticShapes(6, 32, seed=0, split="probe"), batch_size=4, shuffle=True)
    for model, inputs in ((arch, x), ("compact_resnet", loader)):
        other = get_activations(model, LAYER, CHANNEL, [series_dir], inputs, preprocess="none")
        torch.testing.assert_close(other.values, acts.values)


def test_default_probe_is_the_final_checkpoints_visualizations(series_dir):
    settings = {"steps": 3, "image_size": 24, "batch": 2}
    acts = get_activations(None, LAYER, CHANNEL, series_dir, preprocess="none", probe_render=settings)
    assert tuple(acts.values.shape) == (len(STEPS), 2)
    info = acts.inputs
    assert info["kind"] == "final_checkpoint_visualizations" and info["step"] == 24
    assert info["render"]["steps"] == 3 and info["render"]["image_size"] == 24 and info["render"]["seed"] == 0
    # the probe is exactly the render of the channel at the final checkpoint with those settings
    final = CheckpointSeries(series_dir)[24]
    res = render(final, objectives.channel(LAYER, CHANNEL), preprocess="none", progress=False,
                 **{"lr": 0.05, "transforms": "standard", "seed": 0, **settings})
    torch.testing.assert_close(acts.values[-1], objectives.evaluate(final, objectives.channel(LAYER, CHANNEL),
                                                                    res.images, preprocess="none"))


def test_activation_errors(series_dir):
    x = torch.rand(2, 3, 32, 32)
    with pytest.raises(LayerNotFoundError, match="layer2.0.conv1"):
        get_activations(None, "layer2.0.conv", 0, series_dir, x)
    with pytest.raises(ChannelOutOfRangeError, match="valid 0..7"):
        get_activations(None, LAYER, 8, series_dir, x)
    with pytest.raises(ConfigError, match=r"\(N, 3, H, W\)"):
        get_activations(None, LAYER, 0, series_dir, torch.rand(3, 32, 32))
    with pytest.raises(ConfigError, match="probe_render only applies"):
        get_activations(None, LAYER, 0, series_dir, x, probe_render={"steps": 2})


def test_plot_writes_png_and_json(tmp_path):
    values = torch.tensor([[1.0, 3.0], [2.0, 6.0], [4.0, 4.0]])
    acts = LongitudinalActivations("layer2.0", 1, [0, 10, 1000], values, inputs={"kind": "tensor"})
    png = plot_longitudinal_activations(acts, "layer2.0", 1, tmp_path / "plots" / "acts.png")
    with Image.open(png) as im:
        im.verify()
    with Image.open(png) as im:
        assert im.size[0] > 200 and im.size[1] > 150
    rec = read_json(png.with_suffix(".json"))
    assert rec["x_scale"] == "symlog" and rec["band"] == "std"
    assert rec["mean"] == [2.0, 4.0, 4.0] and rec["band_low"] == [1.0, 2.0, 4.0] and rec["band_high"] == [3.0, 6.0, 4.0]
    back = LongitudinalActivations.load(png.with_suffix(".json"))
    assert back.steps == [0, 10, 1000] and torch.equal(back.values, values)
    iqr = plot_longitudinal_activations(values.numpy(), "layer2.0", 1, tmp_path / "iqr.png", band="iqr", steps=[1, 2, 3])
    rec = read_json(iqr.with_suffix(".json"))
    assert rec["x_scale"] == "linear" and rec["band"] == "iqr" and rec["band_low"] == [1.5, 3.0, 4.0]
    with pytest.raises(ConfigError, match="band 'sd' is not valid"):
        plot_longitudinal_activations(acts, "l", 0, tmp_path / "x.png", band="sd")
    with pytest.raises(ConfigError, match="should end in .png"):
        plot_longitudinal_activations(acts, "l", 0, tmp_path / "x.jpg")


def test_step_scale():
    assert step_scale([0, 4, 8, 24]) == "linear"  # 24 / 4 < 100
    assert step_scale([1, 100]) == "log"
    assert step_scale([0, 1, 100]) == "symlog"
    assert step_scale([5]) == "linear"


def _identity_conv(conv: torch.nn.Conv2d) -> torch.nn.Conv2d:
    """Plant an identity: output channel c (c < 3) of a 3x3, padding-1 conv is input channel c exactly."""
    with torch.no_grad():
        conv.weight.zero_()
        for c in range(3):
            conv.weight[c, c, 1, 1] = 1.0
        if conv.bias is not None:
            conv.bias.zero_()
    return conv


def test_preprocess_none_feeds_the_images_unchanged_and_auto_follows_the_model():
    from devvis.models import load_model
    from devvis.transforms.preprocess import imagenet_normalize

    x = torch.rand(4, 3, 12, 12, generator=torch.Generator().manual_seed(1))
    plain = torch.nn.Sequential(_identity_conv(torch.nn.Conv2d(3, 3, 3, padding=1)), torch.nn.ReLU())
    zoo = load_model("compact_resnet", width=4, blocks=(1, 1))  # a zoo model: carries devvis_cfg (raw [0, 1] input)
    _identity_conv(zoo.conv1)
    raw = x.mean(dim=(2, 3))  # (4, 3): each image's channel means as given
    normalized = imagenet_normalize(x).mean(dim=(2, 3))
    for c in range(3):
        for model, layer in ((plain, "0"), (zoo, "conv1")):
            none = get_activations(None, layer, c, {0: model}, x, preprocess=None)
            torch.testing.assert_close(none.values[0], raw[:, c], rtol=0, atol=1e-6)
            assert none.preprocess == "none"
        auto_zoo = get_activations(None, "conv1", c, {0: zoo}, x)  # "auto" is the default
        torch.testing.assert_close(auto_zoo.values[0], raw[:, c], rtol=0, atol=1e-6)
        assert auto_zoo.preprocess == "none"
        auto_plain = get_activations(None, "0", c, {0: plain}, x)
        torch.testing.assert_close(auto_plain.values[0], normalized[:, c], rtol=1e-5, atol=1e-6)
        assert auto_plain.preprocess == "imagenet"
    assert not torch.allclose(raw, normalized)  # the two cases are told apart
    custom = get_activations(None, "0", 0, {0: plain}, x, preprocess=lambda t: 2 * t)
    torch.testing.assert_close(custom.values[0], 2 * raw[:, 0], rtol=0, atol=1e-6)
    assert custom.preprocess.startswith("<function")

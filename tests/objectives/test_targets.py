"""Each objective's value moves the right way under a few render steps, and gradients go where they should."""

import pytest
import torch
from tinymodels import TinyCNN

from devvis import objectives as obj
from devvis import param, render
from devvis.errors import ChannelOutOfRangeError, ConfigError, LayerNotFoundError
from devvis.hooks import Activations

STEPS = 12


def _rise(model, objective, **kw):
    kw.setdefault("image_size", 16)
    kw.setdefault("lr", 0.05)
    r = render(model, objective, steps=STEPS, transforms="none", progress=False, **kw)
    return r.history[0], r.history[-1]


@pytest.mark.parametrize("make", [
    lambda: obj.channel("conv2", 3),
    lambda: obj.neuron("conv2", 5),
    lambda: obj.neuron("conv2", 5, x=1, y=2),
    lambda: obj.layer("conv1"),
    lambda: obj.direction("conv2", torch.linspace(-1, 1, 16)),
    lambda: obj.direction("conv2", torch.linspace(-1, 1, 16), cossim_pow=1.0),
    lambda: obj.direction_neuron("conv2", torch.ones(16)),
    lambda: obj.channel_interpolate("conv1", 1, "conv2", 2),
    lambda: obj.l1(constant=0.0),
    lambda: obj.l2(constant=0.0),
    lambda: obj.total_variation(),
    lambda: obj.blur_input_each_step(),
], ids=["channel", "neuron", "neuron_xy", "layer", "direction", "direction_cos", "direction_neuron",
        "interpolate", "l1", "l2", "tv", "blur"])
def test_objective_rises(make):
    o = make()
    kw = {"batch": 2} if "interpolate" in o.description else {}
    if not o.layers - {"input"}:  # image priors: start from a noisy image so there is something to smooth
        kw = {"param": param.image(16, sd=0.5, fft=False, seed=0), "lr": 0.01}
    first, last = _rise(TinyCNN(), o, **kw)
    assert (last > first).all(), (first, last)


def test_diversity_and_alignment_rise():
    m = TinyCNN()
    for o in (obj.diversity("conv2"), obj.alignment("conv2")):
        p = param.image(16, batch=3, seed=1, sd=0.5)
        r = render(m, o, p, steps=STEPS, transforms="none", progress=False)
        assert r.history[-1].mean() > r.history[0].mean(), o.description


def test_batch_index_sends_gradient_only_to_that_image():
    m = TinyCNN()
    p = param.image(12, batch=3, seed=0, fft=False)
    img = p()
    from devvis.hooks import ActivationRecorder

    with ActivationRecorder(m, ["conv2"]) as rec:
        acts = rec.run(img)
    v = obj.channel("conv2", 1, batch=1)(acts)
    assert v[0] == 0 and v[2] == 0 and v[1] != 0
    v.sum().backward()
    g = p.basis.pixels.grad
    assert g[0].abs().sum() == 0 and g[2].abs().sum() == 0 and g[1].abs().sum() > 0


def test_channels_renders_one_channel_per_image():
    m = TinyCNN()
    chans = [2, 7, 11]
    r = render(m, obj.channels("conv2", chans), steps=STEPS, image_size=16, transforms="none", progress=False)
    assert r.images.shape[0] == 3
    # image i's own channel is higher on image i than on the other images
    acts_vals = torch.stack([obj.evaluate(m, obj.channel("conv2", c), r.images, preprocess="imagenet") for c in chans])
    for i in range(3):
        assert acts_vals[i, i] == acts_vals[i].max(), acts_vals


def test_neuron_xy_on_non_square_map():
    t = torch.zeros(1, 2, 3, 5)
    t[0, 1, 2, 4] = 7.0  # row 2, column 4
    acts = Activations({"m": t})
    assert obj.neuron("m", 1, x=4, y=2)(acts).item() == 7.0
    assert obj.neuron("m", 1)(acts).item() == 0.0  # centre is (x=2, y=1)
    with pytest.raises(ChannelOutOfRangeError, match="x 0..4, y 0..2"):
        obj.neuron("m", 1, x=5, y=0)(acts)


def test_channel_interpolate_batch_of_one_has_no_nan():
    acts = Activations({"a": torch.rand(1, 3, 2, 2), "b": torch.rand(1, 3, 2, 2)})
    v = obj.channel_interpolate("a", 0, "b", 1)(acts)
    assert torch.isfinite(v).all() and torch.allclose(v, acts["a"][:, 0].mean((1, 2)))


def test_out_of_range_channel_names_width():
    with pytest.raises(ChannelOutOfRangeError, match=r"16 channels \(valid 0..15\)"):
        render(TinyCNN(), obj.channel("conv2", 16), steps=1, image_size=8, progress=False)


def test_unknown_layer_names_closest_choices():
    with pytest.raises(LayerNotFoundError, match="conv2"):
        render(TinyCNN(), obj.channel("conv3", 0), steps=1, image_size=8, progress=False)


def test_evaluate_matches_direct_forward():
    m = TinyCNN()
    imgs = torch.rand(2, 3, 10, 10)
    v = obj.evaluate(m, "conv1:2", imgs, preprocess="none")
    direct = m.conv1(imgs)[:, 2].mean((1, 2))
    assert torch.allclose(v, direct, atol=1e-6)


def test_evaluate_takes_the_model_first_and_names_the_old_order():
    m = TinyCNN()
    with pytest.raises(ConfigError, match="model comes first"):
        obj.evaluate("conv1:2", m, torch.rand(1, 3, 10, 10))


def test_evaluate_counts_calls_once_and_then_stops_early():
    import torchvision

    m = torchvision.models.resnet18(weights=None).eval()
    runs = []
    m.fc.register_forward_hook(lambda *a: runs.append(1))
    vals = obj.evaluate(m, "layer1.0:3", torch.rand(8, 3, 32, 32), batch_size=2)
    assert vals.shape == (8,) and len(runs) == 1   # 4 batches, the whole model only on the first


def test_recorder_reuses_a_plan_and_stops_early_on_its_first_run():
    import torchvision

    from devvis.hooks import ActivationRecorder

    m = torchvision.models.resnet18(weights=None).eval()
    runs = []
    m.fc.register_forward_hook(lambda *a: runs.append(1))
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        with ActivationRecorder(m, ["layer1.0.relu"]) as rec:
            first = rec.run(x)["layer1.0.relu"]
        with ActivationRecorder(m, ["layer1.0.relu"], plan=rec.plan) as again:
            second = again.run(x)["layer1.0.relu"]
    assert len(runs) == 1 and again.stopped_early and torch.equal(first, second)

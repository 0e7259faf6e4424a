"""Every common vision family: a channel renders and rises; input sizes; redirected ReLU; CLI and series on ViT.

All models have random weights (nothing is downloaded). The heavy builds (VGG's
100M-parameter classifier, full-width ConvNeXt, Swin and ViT) are marked slow.
"""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models.vision_transformer import VisionTransformer

from devvis import objectives as O
from devvis import render
from devvis.architectures import FAMILIES, fixed_input_size, min_input_size, resolve_input_size
from devvis.errors import ChannelOutOfRangeError, ConfigError, ModelNotFoundError
from devvis.hooks import ActivationRecorder, list_layers
from devvis.models import load_model, save_checkpoint
from devvis.render.redirect import redirected_relu, redirected_relu6_fn

SLOW = {"vgg11", "convnext_tiny", "swin_t", "vit_b_16"}


@pytest.mark.parametrize("fam", [pytest.param(f, id=f.model, marks=[pytest.mark.slow] if f.model in SLOW else [])
                                 for f in FAMILIES])
def test_family_renders_a_channel_and_it_rises(fam):
    model = fam.build()
    fixed = fixed_input_size(model)
    with ActivationRecorder(model, [fam.layer]) as rec, torch.no_grad():
        acts = rec.run(torch.rand(1, 3, *(fixed or (32, 32))))
    assert acts.layout(fam.layer) == fam.layout
    # random weights leave some ReLU units dead (GoogLeNet/Inception use functional F.relu, which
    # redirect_relu cannot reach): render the channel most active on a random image
    c = int(O.channels_first(acts, fam.layer).flatten(2).mean(dim=2)[0].argmax())
    r = render(model, O.channel(fam.layer, c), steps=4, image_size=32, transforms="none", progress=False)
    assert r.steps_run == 4 and r.history[-1] > r.history[0], (c, r.history[:, 0].tolist())
    assert r.config["input_size"] == fixed  # ViT: resized to 224 automatically; the others: no resize


# ---------------------------------------------------------------- input sizes

def tiny_vit(image_size: int = 224, layers: int = 2) -> VisionTransformer:
    return VisionTransformer(image_size=image_size, patch_size=16, num_layers=layers, num_heads=2, hidden_dim=32,
                             mlp_dim=64, num_classes=10).eval()


def test_vit_input_size_is_automatic_and_can_be_stated():
    torch.manual_seed(0)
    vit = tiny_vit(image_size=64)
    assert fixed_input_size(vit) == (64, 64) and min_input_size(vit) == 64
    assert resolve_input_size(vit, None) == (64, 64) and resolve_input_size(vit, 80) == 80
    r = render(vit, O.channel("encoder.layers.encoder_layer_0", 3, token="patches"), steps=3, image_size=24,
               transforms="none", progress=False)
    assert r.config["input_size"] == (64, 64) and tuple(r.images.shape[-2:]) == (24, 24)
    assert r.history[-1] > r.history[0]
    with pytest.raises(ConfigError, match=r"48x48 px model input .* does not fit VisionTransformer, which needs exactly 64x64 px"):
        render(vit, O.channel("encoder.layers.encoder_layer_0", 3), steps=1, image_size=24, input_size=48,
               progress=False)


def test_too_small_input_names_the_minimum_and_a_larger_input_size_fixes_it():
    fam = next(f for f in FAMILIES if f.model == "inception_v3")
    model = fam.build()
    with pytest.raises(ConfigError, match=r"32x32 px model input .* does not fit Inception3, which needs at least "
                                          r"75x75 px.*pass input_size=75"):
        render(model, O.channel("fc", 0), steps=1, image_size=32, transforms="none", progress=False)
    with pytest.raises(ConfigError, match=r"at least 75x75"):
        list_layers(model, (3, 32, 32))
    r = render(model, O.channel("fc", 0), steps=1, image_size=32, input_size=75, transforms="none", progress=False)
    assert r.config["input_size"] == 75 and torch.isfinite(r.history).all()


def test_shallow_layers_render_on_inputs_too_small_for_the_whole_model():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.MaxPool2d(4), nn.MaxPool2d(4))  # needs >= 16 px
    r = render(m, O.channel("0", 2), steps=3, image_size=8, transforms="none", progress=False)
    assert r.history[-1] > r.history[0]  # the forward pass stops after "0" and never reaches the failing pool
    with pytest.raises(ConfigError, match=r"8x8 px model input .* does not fit Sequential, which needs a larger input"):
        render(m, O.channel("2", 0), steps=1, image_size=8, transforms="none", progress=False)


def test_recorded_activations_survive_later_inplace_relus():
    # ResNet's ReLU(inplace=True) follows bn1, Inception's BasicConv2d ends in F.relu(x, inplace=True);
    # the recorder's first run goes through the whole model, past those in-place ops
    m = torchvision.models.resnet18(weights=None).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        direct = m.bn1(m.conv1(x))
        with ActivationRecorder(m, ["bn1"]) as rec:
            first, second = rec.run(x)["bn1"], rec.run(x)["bn1"]
    assert direct.min() < 0
    torch.testing.assert_close(first, direct)
    torch.testing.assert_close(second, direct)


def test_timm_style_patch_embedding_fixes_the_input_size():
    class PatchEmbed(nn.Module):
        def __init__(self, strict: bool, dynamic: bool = False):
            super().__init__()
            self.img_size, self.strict_img_size, self.dynamic_img_size = (96, 128), strict, dynamic

    class Net(nn.Module):
        def __init__(self, **kw):
            super().__init__()
            self.patch_embed = PatchEmbed(**kw)

    assert fixed_input_size(Net(strict=True)) == (96, 128)
    assert fixed_input_size(Net(strict=False)) is None
    assert fixed_input_size(Net(strict=True, dynamic=True)) is None
    assert fixed_input_size(torchvision.models.resnet18(weights=None)) is None


def test_timm_models_need_the_timm_extra():
    if importlib.util.find_spec("timm") is None:  # the CI case: timm is an optional extra
        with pytest.raises(ModelNotFoundError, match=r"needs timm.*pip install devvis\[timm\]"):
            load_model("timm:vit_tiny_patch16_224")
    else:
        vit = load_model("timm:vit_tiny_patch16_224")
        assert fixed_input_size(vit) == (224, 224)


# ---------------------------------------------------------------- redirected ReLU

def test_redirected_relu6_gradient_moves_clipped_inputs_back_into_range():
    x = torch.tensor([[-1.0, 7.0], [-1.0, 3.0]], requires_grad=True)
    (-redirected_relu6_fn(x).sum()).backward()  # maximize: the upstream gradient is -1 everywhere
    # image 0 is clipped everywhere: the gradient that raises -1 passes, the one raising 7 is blocked;
    # image 1 has a live unit: the ordinary ReLU6 gradient is kept
    assert x.grad.tolist() == [[-1.0, 0.0], [0.0, -1.0]]
    x.grad = None
    redirected_relu6_fn(x).sum().backward()  # minimize: lowering 7 into range passes, lowering -1 is blocked
    assert x.grad.tolist() == [[0.0, 1.0], [0.0, 1.0]]
    assert torch.equal(redirected_relu6_fn(x.detach()), x.detach().clamp(0, 6))


def test_redirect_relu_covers_relu6_and_leaves_the_model_as_it_was():
    torch.manual_seed(0)
    m = torchvision.models.mobilenet_v2(weights=None, width_mult=0.25, num_classes=10).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        before = m(x)
    relu6 = [mod for mod in m.modules() if isinstance(mod, nn.ReLU6)]
    with redirected_relu(m) as switch:
        assert len(switch.modules) == len(relu6) > 0
        assert all("forward" in mod.__dict__ for mod in relu6)
        with torch.no_grad():
            torch.testing.assert_close(m(x), before)  # forward values do not change while redirected
    assert not any("forward" in mod.__dict__ for mod in m.modules())
    r = render(m, O.channel("features.2", 3), steps=17, image_size=16, transforms="none", progress=False,
               redirect_relu=True)  # step 17 switches the redirection off, as Lucid does
    assert r.steps_run == 17 and r.history[-1] > r.history[0]
    assert not any("forward" in mod.__dict__ for mod in m.modules())
    assert all(not p.requires_grad or p.grad is None for p in m.parameters())
    with torch.no_grad():
        assert torch.equal(m(x), before)


def test_redirect_restores_a_forward_the_module_already_had_even_on_error():
    relu = nn.ReLU(inplace=True)
    own = relu.forward.__func__.__get__(relu)  # an instance-level forward set by someone else
    relu.forward = own
    m = nn.Sequential(nn.Conv2d(3, 2, 1), relu)
    with pytest.raises(RuntimeError, match="boom"):
        with redirected_relu(m):
            assert relu.forward is not own
            raise RuntimeError("boom")
    assert relu.forward is own


# ---------------------------------------------------------------- ViT through the CLI engines and the series tools

def _vit_checkpoints(folder):
    kwargs = dict(image_size=224, patch_size=16, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=10)
    cfg = {"name": "torchvision.models.vision_transformer:VisionTransformer", "kwargs": kwargs}
    for step in (10, 20):
        torch.manual_seed(step)
        save_checkpoint(VisionTransformer(**kwargs), folder / f"step_{step}.safetensors", step=step, model_config=cfg)
    return folder


def test_visualize_and_activations_over_vit_checkpoints(tmp_path):
    from devvis.longitudinal import get_activations
    from devvis.render import resolve_preprocess as get_preprocess
    from devvis.transforms import Resize
    from devvis.runs import RunSettings as VisualizeSettings, run_visualize

    ckpts = _vit_checkpoints(tmp_path / "ckpts")
    layer = "encoder.layers.encoder_layer_1"
    base = dict(checkpoint_paths=[str(ckpts)], layer_names=[layer], max_iterations=2, min_iterations=0,
                image_size=32, progress=False)
    out = tmp_path / "out"
    summary = run_visualize(VisualizeSettings(channels=[0, 31], output_path=str(out), **base))
    assert (summary.done, summary.failed) == (2, 0), summary.failures
    meta = json.loads((out / "step_000020" / f"layer_{layer}_channel_31_average-0.json").read_text())
    assert meta["status"] == "completed" and len(meta["history"]) == 2  # devvis.results schema

    summary = run_visualize(VisualizeSettings(channels=[1], neurons=[(3, 4)], output_path=str(tmp_path / "n"), **base))
    assert (summary.done, summary.failed) == (2, 0), summary.failures
    assert (tmp_path / "n" / "step_000010" / f"layer_{layer}_channel_1_neuron-3-4-0.jpg").exists()
    with pytest.raises(ChannelOutOfRangeError, match=r"14x14"):  # the patch grid, not the [197, 32] shape
        run_visualize(VisualizeSettings(channels=[1], neurons=[(14, 0)], output_path=str(tmp_path / "x"), **base))
    with pytest.raises(ChannelOutOfRangeError, match=r"32 channels"):
        run_visualize(VisualizeSettings(channels=[32], output_path=str(tmp_path / "y"), **base))

    images = torch.rand(3, 3, 32, 32)
    traj = get_activations(None, layer, 7, ckpts, inputs=images)
    assert tuple(traj.values.shape) == (2, 3) and traj.steps == [10, 20]
    final = load_model(None, checkpoint=ckpts / "step_20.safetensors")
    with ActivationRecorder(final, [layer]) as rec, torch.no_grad():
        acts = rec.run(get_preprocess("imagenet")(Resize(224)(images)))
    torch.testing.assert_close(traj.values[1], acts[layer][:, :, 7].mean(dim=1))


@pytest.mark.slow
def test_layers_command_shows_vit_token_shapes(capsys):
    from devvis.cli import main

    assert main(["layers", "--model", "vit_b_16", "--filter", "encoder_layer_0"]) == 0
    lines = {ln.split()[0]: ln.split() for ln in capsys.readouterr().out.splitlines()[1:]}
    assert lines["encoder.layers.encoder_layer_0"][1:] == ["EncoderBlock", "1x197x768", "tokens", "768"]
    assert lines["encoder.layers.encoder_layer_0.mlp.0"][2:] == ["1x197x3072", "tokens", "3072"]

"""BatchNorm folded into the convolution before it during a render (devvis.render.fold)."""

from __future__ import annotations

import importlib

import pytest
import torch
import torchvision
from torch import nn

from devvis import objectives, render
from devvis.render.fold import fold_pairs, folded_batchnorm


class ConvBN(nn.Module):
    def __init__(self, reuse: bool = False, branch: bool = False, data_dependent: bool = False):
        super().__init__()
        self.conv, self.bn, self.head = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 1)
        self.bn2 = nn.BatchNorm2d(4)
        self.reuse, self.branch, self.data_dependent = reuse, branch, data_dependent
        with torch.no_grad():  # statistics far from the identity, so a wrong fold shows
            for bn in (self.bn, self.bn2):
                bn.running_mean.uniform_(-1, 1)
                bn.running_var.uniform_(0.2, 3)
                bn.weight.uniform_(0.5, 2)
                bn.bias.uniform_(-1, 1)

    def forward(self, x):
        if self.data_dependent and x.sum() > 0:  # fx cannot trace this
            x = x * 1.0
        c = self.conv(x)
        h = self.bn(c)
        if self.branch:
            h = h + c  # the conv's output goes elsewhere too
        h = self.head(torch.relu(h))
        return self.bn2(self.head(h)) if self.reuse else h  # head called twice


def resnet():
    torch.manual_seed(0)
    m = torchvision.models.resnet18(weights=None).eval()
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.5, 0.5)
                mod.running_var.uniform_(0.5, 2)
    return m


def test_the_folded_model_computes_the_same_function_and_is_given_back_exactly():
    m = resnet()
    x = torch.rand(2, 3, 64, 64)
    before = m(x)
    with folded_batchnorm(m) as pairs:
        assert len(pairs) == 20 and all("forward" in m.get_submodule(c).__dict__ for c, _ in pairs)
        torch.testing.assert_close(m(x), before, rtol=1e-4, atol=1e-4)
    assert torch.equal(m(x), before)
    assert not any("forward" in mod.__dict__ for mod in m.modules())
    with pytest.raises(RuntimeError, match="boom"), folded_batchnorm(m):
        raise RuntimeError("boom")
    assert torch.equal(m(x), before) and not any("forward" in mod.__dict__ for mod in m.modules())


@pytest.mark.parametrize("kind", ["branch", "reuse", "data_dependent"])
def test_pairs_that_are_not_one_function_are_left_alone(kind):
    m = ConvBN(**{kind: True}).eval()
    pairs = fold_pairs(m)
    if kind == "reuse":  # conv/bn folds; head is called twice and bn2 follows one call only
        assert pairs == [("conv", "bn")]
    else:
        assert pairs == []
    x = torch.rand(2, 3, 10, 10)
    before = m(x)
    with folded_batchnorm(m):
        torch.testing.assert_close(m(x), before, rtol=1e-5, atol=1e-5)


def test_train_mode_hooks_and_missing_statistics_are_left_alone():
    m = ConvBN()
    assert fold_pairs(m.train()) == [] and fold_pairs(m.eval()) == [("conv", "bn")]
    h = m.conv.register_forward_hook(lambda mod, i, o: None)  # the user's own hook sees the conv's output
    assert fold_pairs(m) == []
    h.remove()
    m.bn = nn.BatchNorm2d(4, track_running_stats=False).eval()  # normalises by each batch: not a fixed map
    assert fold_pairs(m) == []
    assert fold_pairs(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())) == []  # no BatchNorm: nothing traced


def test_a_render_folds_all_but_the_recorded_conv_and_reaches_the_same_values():
    m = resnet()
    kw = dict(steps=6, image_size=48, progress=False, seed=3)
    on = render(m, objectives.channel("layer2.0.conv1", 5), **kw)
    off = render(m, objectives.channel("layer2.0.conv1", 5), fold_batchnorm=False, **kw)
    # the recorded conv stays unfolded (folded, it would read its BatchNorm's output: another number altogether)
    assert on.config["folded_batchnorm"] == 19 and off.config["folded_batchnorm"] == 0
    torch.testing.assert_close(on.history, off.history, rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(on.images, off.images, rtol=0, atol=1e-3)
    bn_out = render(m, objectives.channel("layer2.0.bn1", 5), **kw)  # a BatchNorm's own output is unchanged
    bn_ref = render(m, objectives.channel("layer2.0.bn1", 5), fold_batchnorm=False, **kw)
    assert bn_out.config["folded_batchnorm"] == 20
    torch.testing.assert_close(bn_out.history, bn_ref.history, rtol=1e-3, atol=1e-4)
    lucent_name = render(m, objectives.channel("layer2_0_conv1", 5), **kw)  # Lucent's underscore name: same conv
    assert lucent_name.config["folded_batchnorm"] == 19
    torch.testing.assert_close(lucent_name.history, on.history)
    x = torch.rand(1, 3, 64, 64)
    assert not any("forward" in mod.__dict__ for mod in m.modules())
    assert torch.equal(m(x), resnet()(x))  # the model is given back as it was


class BNAct(nn.BatchNorm2d):  # a BatchNorm that also applies an activation (as timm's BatchNormAct2d does)
    def forward(self, x):
        return torch.relu(super().forward(x))


class PaddedConv(nn.Conv2d):  # a conv that pads its input first (as timm's Conv2dSame does)
    def forward(self, x):
        return super().forward(nn.functional.pad(x, (1, 1, 1, 1)))


@pytest.mark.parametrize("conv_cls, bn_cls", [(nn.Conv2d, BNAct), (PaddedConv, nn.BatchNorm2d)])
def test_subclasses_that_compute_something_else_are_left_alone(conv_cls, bn_cls):
    m = nn.Sequential(conv_cls(3, 4, 3), bn_cls(4), nn.Conv2d(4, 2, 1)).eval()
    with torch.no_grad():
        m[1].running_mean.uniform_(-1, 1)
    assert fold_pairs(m) == []
    assert fold_pairs(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).eval()) == [("0", "1")]
    x = torch.rand(2, 3, 10, 10)
    before = m(x)
    with folded_batchnorm(m):
        assert torch.equal(m(x), before)


def test_timm_batchnorm_with_activation_is_left_alone():
    timm = pytest.importorskip("timm")
    from timm.layers import BatchNormAct2d

    m = nn.Sequential(nn.Conv2d(3, 4, 3), BatchNormAct2d(4, act_layer=nn.ReLU)).eval()
    assert fold_pairs(m) == []
    torch.manual_seed(0)
    net = timm.create_model("resnet18", num_classes=10).eval()  # plain BatchNorm2d: folded
    assert len(fold_pairs(net)) == 20


class Stem(nn.Module):  # a container whose output is the conv's raw output; the BatchNorm comes after it
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return self.conv(x)


class StemNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem, self.bn, self.head = Stem(), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1)
        with torch.no_grad():
            self.bn.running_mean.uniform_(-1, 1)
            self.bn.weight.uniform_(-2, -0.5)  # a negative scale: a wrong fold pushes the image the other way

    def forward(self, x):
        return self.head(torch.relu(self.bn(self.stem(x))))


def test_a_recorded_container_whose_output_is_the_conv_output_keeps_the_conv_unfolded():
    m = StemNet().eval()
    assert fold_pairs(m) == [("stem.conv", "bn")]
    assert fold_pairs(m, keep=["stem"]) == [] and fold_pairs(m, keep=["stem.conv"]) == []
    nested = nn.Sequential(nn.Sequential(nn.Conv2d(3, 4, 3)), nn.BatchNorm2d(4)).eval()
    assert fold_pairs(nested, keep=["0"]) == [] and fold_pairs(nested) == [("0.0", "1")]
    kw = dict(steps=3, image_size=16, progress=False, transforms="none")
    on, off = (render(m, objectives.channel("stem", 2), fold_batchnorm=f, **kw) for f in (True, False))
    assert on.config["folded_batchnorm"] == 0
    torch.testing.assert_close(on.history, off.history)
    # a recorded block that holds both the conv and its BatchNorm is folded inside
    assert len(fold_pairs(resnet(), keep=["layer2.1"])) == 20


def test_an_instance_forward_and_a_low_precision_conv_are_handled():
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).eval()
    m[1].forward = lambda t: nn.BatchNorm2d.forward(m[1], t) * 2  # the user's own patch: not replaced
    assert fold_pairs(m) == []
    del m[1].forward
    m[0].to(torch.bfloat16)  # a bf16 conv before a float32 BatchNorm: the folded weights stay bf16
    x = torch.rand(1, 3, 8, 8, dtype=torch.bfloat16)
    with torch.no_grad():
        m[1].running_mean.uniform_(-1, 1)
        before = m[1](m[0](x).float())
        with folded_batchnorm(m) as pairs:
            assert pairs == [("0", "1")] and m[0](x).dtype == torch.bfloat16
            torch.testing.assert_close(m[1](m[0](x)).float(), before, rtol=0.05, atol=0.05)


def test_folded_weights_are_made_once_for_the_convs_a_render_runs_and_cast_as_autocast_would(monkeypatch):
    fold_module = importlib.import_module("devvis.render.fold")  # devvis.render is also the function

    made = []
    real = fold_module.fold
    monkeypatch.setattr(fold_module, "fold", lambda conv, bn: made.append(conv) or real(conv, bn))
    m = resnet()
    r = render(m, objectives.channel("layer1.1", 3), steps=4, image_size=32, progress=False, transforms="none")
    # every conv folded once over the 4 steps (the recorder's first forward runs the whole model to count calls)
    assert r.config["folded_batchnorm"] == 20 and len(made) == 20 == len(set(map(id, made)))
    conv, bn = m.layer1[0].conv1, m.layer1[0].bn1
    x = torch.rand(2, 64, 16, 16)
    with folded_batchnorm(m), torch.autocast("cpu", dtype=torch.bfloat16):
        cached = [m.layer1[0].conv1(x) for _ in range(2)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        per_call = conv._conv_forward(x, *real(conv, bn))  # autocast casting the folded weights at the call
    assert cached[0].dtype == torch.bfloat16 and torch.equal(cached[0], per_call) and torch.equal(cached[1], per_call)


def test_weights_cast_once_gives_autocast_values_and_leaves_fp32_alone():
    from devvis.render.fold import weights_cast_once

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 5), nn.ReLU(), nn.Linear(5, 2))
    net[4].forward = lambda t: nn.functional.linear(t, net[4].weight) * 3  # the user's own patch: kept
    x = torch.rand(2, 3, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref = net(x)
    fp32 = net(x)
    with weights_cast_once(net) as n:
        assert n == 2  # the conv and the first Linear; the patched Linear is left alone
        assert torch.equal(net(x), fp32)  # no autocast: nothing changes
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert torch.equal(net(x), ref) and torch.equal(net(x), ref)
    assert "forward" not in net[0].__dict__ and "forward" in net[4].__dict__ and torch.equal(net(x), fp32)


def test_a_bf16_render_with_weights_cast_once_is_bit_identical(monkeypatch):
    import contextlib

    loop = importlib.import_module("devvis.render.loop")
    vit = torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16,
                                               mlp_dim=32, num_classes=3)
    kw = dict(steps=4, image_size=32, progress=False, precision="bf16", seed=1)
    obj = objectives.channel("encoder.layers.encoder_layer_1", 3)
    cast = render(vit, obj, **kw)
    monkeypatch.setattr(loop, "weights_cast_once", lambda model: contextlib.nullcontext(0))
    per_call = render(vit, obj, **kw)
    assert torch.equal(cast.history, per_call.history) and torch.equal(cast.images, per_call.images)


def test_channels_last_inputs_get_weights_laid_out_once():
    """oneDNN lays a contiguous weight out channels-last at every call with a channels-last input; inside
    weights_cast_once the conv gets a channels-last weight, made at the first such call only, with the same
    outputs."""
    from devvis.render.fold import weights_cast_once

    conv = nn.Conv2d(16, 32, 3, padding=1).eval()
    x = torch.rand(2, 16, 9, 9).contiguous(memory_format=torch.channels_last)
    ref = conv(x)
    seen = []
    plain = conv._conv_forward

    def spy(inp, weight, bias):
        seen.append((weight, weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()))
        return plain(inp, weight, bias)

    conv._conv_forward = spy  # what weights_cast_once calls: records the weight each call gets
    with weights_cast_once(conv) as n:
        outs = [conv(x) for _ in range(3)]
        flat = conv(x.contiguous())  # a contiguous input gets the weight as it is
    assert n == 1 and [nhwc for _, nhwc in seen] == [True, True, True, False]
    assert seen[0][0] is seen[1][0] is seen[2][0] and seen[3][0] is conv.weight  # laid out once
    torch.testing.assert_close(outs[0], ref, rtol=1e-5, atol=1e-6)
    assert all(torch.equal(o, outs[0]) for o in outs)
    torch.testing.assert_close(flat, ref, rtol=1e-5, atol=1e-6)
    assert "forward" not in conv.__dict__

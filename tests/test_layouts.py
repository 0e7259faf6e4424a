"""Layouts other than NCHW: detection on real torchvision blocks, objectives against direct computations."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models.convnext import CNBlockConfig, ConvNeXt
from torchvision.models.swin_transformer import SwinTransformer
from torchvision.models.vision_transformer import VisionTransformer

from devvis import objectives as O
from devvis import render
from devvis.errors import ChannelOutOfRangeError, LayoutError
from devvis.hooks import ActivationRecorder, Activations, infer_layout, list_layers


def tiny_vit() -> VisionTransformer:
    torch.manual_seed(0)
    return VisionTransformer(image_size=224, patch_size=16, num_layers=4, num_heads=2, hidden_dim=32, mlp_dim=64,
                             num_classes=10).eval()


def tiny_swin() -> SwinTransformer:
    torch.manual_seed(0)
    return SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[2, 2], num_heads=[2, 2], window_size=[4, 4],
                           num_classes=10).eval()


def tiny_convnext() -> ConvNeXt:
    torch.manual_seed(0)
    return ConvNeXt([CNBlockConfig(16, 32, 1), CNBlockConfig(32, None, 1)], num_classes=10).eval()


def _record(model: nn.Module, names, x, **kw) -> Activations:
    with ActivationRecorder(model, names, **kw) as rec, torch.no_grad():
        return rec.run(x)


def _table(model, size):
    return {r.name: r for r in list_layers(model, (1, 3, size, size))}


# ---------------------------------------------------------------- detection on real torchvision modules

def test_convnext_block_internals_are_channels_last_and_the_block_output_is_nchw():
    rows = _table(tiny_convnext(), 32)
    expect = {
        "features.0": ("nchw", 16), "features.0.1": ("nchw", 16),          # Conv2d, LayerNorm2d
        "features.1.0": ("nchw", 16),                                       # CNBlock output
        "features.1.0.block.0": ("nchw", 16),                               # depthwise conv
        "features.1.0.block.1": ("nhwc", 16),                               # Permute -> [B, H, W, C]
        "features.1.0.block.2": ("nhwc", 16),                               # LayerNorm
        "features.1.0.block.3": ("nhwc", 64),                               # Linear 16 -> 64
        "features.1.0.block.4": ("nhwc", 64),                               # GELU follows the Linear
        "features.1.0.block.5": ("nhwc", 16),
        "features.1.0.block.6": ("nchw", 16),                               # Permute back
        "features.1.0.stochastic_depth": ("nchw", 16),
        "features.2.1": ("nchw", 32), "classifier.2": ("flat", 10),
    }
    got = {k: (rows[k].layout, rows[k].channels) for k in expect}
    assert got == expect
    assert rows["features.1.0.block.3"].output_shape == (1, 8, 8, 64)


def test_swin_blocks_are_channels_last_including_elementwise_children():
    rows = _table(tiny_swin(), 32)
    expect = {
        "features.0": ("nhwc", 16),           # Conv2d -> Permute -> LayerNorm
        "features.0.0": ("nchw", 16), "features.0.1": ("nhwc", 16), "features.0.2": ("nhwc", 16),
        "features.1.0": ("nhwc", 16),         # SwinTransformerBlock
        "features.1.0.attn": ("nhwc", 16),
        "features.1.0.stochastic_depth": ("nhwc", 16),
        "features.1.0.mlp": ("nhwc", 16), "features.1.0.mlp.1": ("nhwc", 64), "features.1.0.mlp.4": ("nhwc", 16),
        "features.2": ("nhwc", 32),           # PatchMerging
        "norm": ("nhwc", 32), "permute": ("nchw", 32), "avgpool": ("nchw", 32), "head": ("flat", 10),
    }
    got = {k: (rows[k].layout, rows[k].channels) for k in expect}
    assert got == expect
    assert rows["features.1.0"].output_shape == (1, 8, 8, 16)


def test_vit_layers_are_tokens_with_embedding_channels():
    rows = _table(tiny_vit(), 224)
    r = rows["encoder.layers.encoder_layer_1"]
    assert (r.layout, r.output_shape, r.channels) == ("tokens", (1, 197, 32), 32)
    assert (rows["encoder.layers.encoder_layer_1.mlp.0"].channels, rows["conv_proj"].layout) == (64, "nchw")


class TimmLikeBlock(nn.Module):
    """Like timm's ConvNeXtBlock: a Linear MLP on a *functional* permute, then back to NCHW."""

    def __init__(self, dim: int = 8):
        super().__init__()
        self.conv_dw = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.drop_path = nn.Identity()

    def forward(self, x):
        y = self.mlp(self.norm(self.conv_dw(x).permute(0, 2, 3, 1))).permute(0, 3, 1, 2)
        return x + self.drop_path(y)


def test_declared_layout_is_ignored_when_the_channel_count_does_not_fit():
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), TimmLikeBlock(8))
    rows = _table(net, 12)
    assert rows["1"].layout == "nchw"            # its last child is a Linear, but the output is [B, 8, 12, 12]
    assert rows["1.mlp"].layout == "nhwc" and rows["1.mlp.1"].channels == 32
    assert rows["1.drop_path"].layout == "nchw"  # follows the MLP, but receives the permuted-back map


def test_infer_layout_without_context():
    assert infer_layout(None, torch.zeros(2, 5)) == "flat"
    assert infer_layout(None, torch.zeros(2, 5, 7)) == "tokens"
    assert infer_layout(nn.ReLU(), torch.zeros(2, 3, 4, 4)) == "nchw"
    assert infer_layout(nn.LayerNorm(4), torch.zeros(2, 3, 3, 4)) == "nhwc"


# ---------------------------------------------------------------- objectives against direct computations

def test_vit_channel_token_options_match_direct_computation():
    m = tiny_vit()
    layer = "encoder.layers.encoder_layer_2"
    acts = _record(m, [layer], torch.rand(2, 3, 224, 224))
    a = acts[layer]
    assert acts.layout(layer) == "tokens" and a.shape == (2, 197, 32)
    torch.testing.assert_close(O.channel(layer, 5)(acts), a[:, :, 5].mean(dim=1))
    torch.testing.assert_close(O.channel(layer, 5, token="patches")(acts), a[:, 1:, 5].mean(dim=1))
    torch.testing.assert_close(O.channel(layer, 5, token="cls")(acts), a[:, 0, 5])
    assert not torch.allclose(O.channel(layer, 5, token="patches")(acts), a[:, :, 5].mean(dim=1))
    torch.testing.assert_close(O.channels(layer, [3, 7], token="patches")(acts),
                               torch.stack([a[0, 1:, 3].mean(), a[1, 1:, 7].mean()]))
    vec = torch.linspace(-1, 1, 32)
    torch.testing.assert_close(O.direction(layer, vec)(acts), (a @ vec).mean(dim=1))


def test_vit_neuron_picks_a_patch_or_a_token():
    m = tiny_vit()
    layer = "encoder.layers.encoder_layer_0"
    acts = _record(m, [layer], torch.rand(1, 3, 224, 224))
    a = acts[layer]
    torch.testing.assert_close(O.neuron(layer, 4, x=3, y=2)(acts), a[:, 1 + 2 * 14 + 3, 4])
    torch.testing.assert_close(O.neuron(layer, 4)(acts), a[:, 1 + 7 * 14 + 7, 4])  # centre patch
    torch.testing.assert_close(O.neuron(layer, 4, token=0)(acts), a[:, 0, 4])
    torch.testing.assert_close(O.neuron(layer, 4, token="cls")(acts), a[:, 0, 4])
    torch.testing.assert_close(O.neuron(layer, 4, token=196)(acts), a[:, 196, 4])
    with pytest.raises(ChannelOutOfRangeError, match=r"14x14 token grid"):
        O.neuron(layer, 4, x=14)(acts)
    with pytest.raises(ChannelOutOfRangeError, match=r"197 tokens"):
        O.neuron(layer, 4, token=197)(acts)


def test_swin_nhwc_channel_and_neuron_match_direct_computation():
    m = tiny_swin()
    layer = "features.1.0"
    acts = _record(m, [layer], torch.rand(2, 3, 32, 32))
    a = acts[layer]
    assert acts.layout(layer) == "nhwc" and a.shape == (2, 8, 8, 16)
    torch.testing.assert_close(O.channel(layer, 9)(acts), a[..., 9].mean(dim=(1, 2)))
    torch.testing.assert_close(O.neuron(layer, 9, x=1, y=6)(acts), a[:, 6, 1, 9])


def test_convnext_internal_linear_channel_is_the_last_dimension():
    m = tiny_convnext()
    layer = "features.1.0.block.3"
    acts = _record(m, [layer], torch.rand(1, 3, 32, 32))
    torch.testing.assert_close(O.channel(layer, 50)(acts), acts[layer][..., 50].mean(dim=(1, 2)))
    with pytest.raises(ChannelOutOfRangeError, match=r"layout nhwc, shape \(1, 8, 8, 64\).*64 channels"):
        O.channel(layer, 64)(acts)


class FunctionalChannelsLast(nn.Module):
    """A channels-last output made by a functional permute: nothing in the modules reveals it."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.act = nn.Tanh()

    def forward(self, x):
        return self.act(self.conv(x).permute(0, 2, 3, 1))


def test_stated_layout_on_the_objective_or_the_render_overrides_detection():
    torch.manual_seed(0)
    m = FunctionalChannelsLast()
    x = torch.rand(1, 3, 10, 10)
    acts = _record(m, ["act"], x)
    assert acts.layout("act") == "nchw"  # undetectable, hence the overrides
    direct = acts["act"][..., 2].mean(dim=(1, 2))
    torch.testing.assert_close(O.channel("act", 2, layout="nhwc")(acts), direct)
    stated = _record(m, ["act"], x, layouts={"act": "nhwc"})
    assert stated.layout("act") == "nhwc"
    torch.testing.assert_close(O.channel("act", 2)(stated), direct)
    r = render(m, O.channel("act", 2), steps=3, image_size=10, transforms="none", progress=False,
               layouts={"act": "nhwc"})
    assert r.history[-1] > r.history[0]


def test_layout_errors_say_what_was_found():
    m = tiny_swin()
    acts = _record(m, ["features.1.0"], torch.rand(1, 3, 32, 32))
    with pytest.raises(LayoutError, match=r"token='patches'.*layout nhwc, shape \(1, 8, 8, 16\)"):
        O.channel("features.1.0", 0, token="patches")(acts)
    with pytest.raises(LayoutError, match=r"layout 'tokens' was stated.*shape \(1, 8, 8, 16\)"):
        O.channel("features.1.0", 0, layout="tokens")(acts)
    with pytest.raises(LayoutError, match=r"token=0 picks a token.*layout nhwc"):
        O.neuron("features.1.0", 0, token=0)(acts)
    with pytest.raises(LayoutError, match=r"not valid; choose one of"):
        ActivationRecorder(m, ["features.1.0"], layouts={"features.1.0": "hwc"})
    flat = Activations({"fc": torch.zeros(1, 4)})
    with pytest.raises(LayoutError, match=r"layout flat.*no spatial positions"):
        O.neuron("fc", 1, x=0)(flat)
    vit = Activations({"blk": torch.zeros(1, 197, 32)})
    with pytest.raises(ChannelOutOfRangeError, match=r"layout tokens, shape \(1, 197, 32\).*32 embedding dimensions"):
        O.channel("blk", 32)(vit)


# ---------------------------------------------------------------- tuple and dict outputs

class TwoHeads(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)
        return {"logits": y.mean(dim=(2, 3)), "map": y}


class WithHeads(nn.Module):
    def __init__(self):
        super().__init__()
        self.heads = TwoHeads()

    def forward(self, x):
        return self.heads(x)["logits"]


def test_selector_names_an_element_of_a_tuple_output():
    m = tiny_vit()
    attn = "encoder.layers.encoder_layer_3.self_attention"
    x = torch.rand(1, 3, 224, 224)
    acts = _record(m, [f"{attn}[0]"], x)
    a = acts[f"{attn}[0]"]
    assert a.shape == (1, 197, 32) and acts.layout(f"{attn}[0]") == "tokens"
    torch.testing.assert_close(O.channel(f"{attn}[0]", 3, token="patches")(acts), a[:, 1:, 3].mean(dim=1))
    # torchvision's EncoderBlock asks for no attention weights: element 1 is None
    with pytest.raises(LayoutError, match=r"returns NoneType, not a tensor"):
        _record(m, [f"{attn}[1]"], x)
    with pytest.raises(LayoutError, match=r"selector \[5\].*valid: \[0, 1\]"):
        _record(m, [f"{attn}[5]"], x)
    r = render(m, O.channel(f"{attn}[0]", 3), steps=3, image_size=16, transforms="none", progress=False)
    assert r.history[-1] > r.history[0]


def test_selector_names_an_entry_of_a_dict_output():
    torch.manual_seed(0)
    m = WithHeads()
    x = torch.rand(2, 3, 8, 8)
    acts = _record(m, ["heads['map']", "heads['logits']"], x)
    assert acts.layout("heads['map']") == "nchw" and acts.layout("heads['logits']") == "flat"
    torch.testing.assert_close(O.channel("heads['logits']", 2)(acts), acts["heads['logits']"][:, 2])
    with pytest.raises(LayoutError, match=r"selector \['nope'\].*valid: \['logits', 'map'\]"):
        _record(m, ["heads['nope']"], x)
    r = render(m, O.channel("heads['map']", 1), steps=3, image_size=8, transforms="none", progress=False)
    assert r.history[-1] > r.history[0]

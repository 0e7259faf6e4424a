"""Vision transformers: redirected GELU gradients, and the MLP hidden layer as the default feature site.

Every model here is tiny and random (never downloaded): torchvision's ``VisionTransformer`` at 32 px
with 8 px patches (16 patches + 1 class token = 17 tokens, width 32, MLP width 64), planted blocks,
and timm's ViT when timm is installed.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.vision_transformer import VisionTransformer

from devvis import objectives as O
from devvis import render
from devvis.architectures import SITE_CONV, SITE_MLP_HIDDEN, feature_sites, mlp_hidden_layers
from devvis.hooks import list_layers
from devvis.render.redirect import REDIRECT_RELU_STEPS, redirected_gelu_fn, redirected_gelu_grad, redirected_relu

SITE0 = "encoder.layers.encoder_layer_0.mlp.1"
TOKENS = 17
UNIT = 5


def tiny_vit(seed: int = 0, layers: int = 2) -> VisionTransformer:
    torch.manual_seed(seed)
    return VisionTransformer(image_size=32, patch_size=8, num_layers=layers, num_heads=2, hidden_dim=32, mlp_dim=64,
                             num_classes=10).eval()


def plant_dead_unit(vit: VisionTransformer, bias: float, gain: float = 1.0) -> nn.Linear:
    """Make hidden unit UNIT of block 0's MLP dead: its pre-activation is about ``bias`` on any image."""
    fc1 = vit.encoder.layers.encoder_layer_0.mlp[0]
    with torch.no_grad():
        fc1.weight[UNIT] *= gain
        fc1.bias[UNIT] = bias
    return fc1


def _grads(vit: VisionTransformer, image: torch.Tensor, redirect: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(pre-activation of UNIT, its gradient, the image's gradient) for maximizing the unit's mean over tokens."""
    fc1 = vit.encoder.layers.encoder_layer_0.mlp[0]
    got: dict[str, torch.Tensor] = {}

    def keep(_m, _i, out):
        out.retain_grad()
        got["pre"] = out

    def post(_m, _i, out):
        got["post"] = out

    handles = [fc1.register_forward_hook(keep), vit.encoder.layers.encoder_layer_0.mlp[1].register_forward_hook(post)]
    x = image.clone().requires_grad_(True)
    try:
        if redirect:
            with redirected_relu(vit) as switch:
                vit(x)
                assert switch.gelu_calls == 2  # one GELU per block
        else:
            vit(x)
        (-got["post"][..., UNIT].mean()).backward()  # render's loss: -objective
    finally:
        for h in handles:
            h.remove()
    return got["pre"][..., UNIT].detach(), got["pre"].grad[..., UNIT], x.grad


# ---------------------------------------------------------------- redirected GELU

def test_gelu_vit_block_dead_unit_gets_gradient_only_during_redirect():
    vit = tiny_vit()
    plant_dead_unit(vit, bias=-20.0)
    image = torch.rand(1, 3, 32, 32)
    pre, plain, plain_image = _grads(vit, image, redirect=False)
    assert pre.max() < -15  # dead on the start image: GELU'(-15) underflows to 0
    assert plain.abs().max() < 1e-12 and plain_image.abs().max() < 1e-12
    pre_r, redirected, image_grad = _grads(vit, image, redirect=True)
    torch.testing.assert_close(pre_r, pre)
    # the objective is the unit's mean over 17 tokens: dL/dy = -1/17 passes as through an identity
    torch.testing.assert_close(redirected, torch.full_like(redirected, -1 / TOKENS))
    assert image_grad.abs().max() > 1e-4  # and it reaches the image


def test_redirect_does_not_change_forward_values_and_gives_the_model_back():
    vit = tiny_vit()
    plant_dead_unit(vit, bias=-3.0)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        before = vit(x)
    with redirected_relu(vit) as switch:
        with torch.no_grad():
            assert torch.equal(vit(x), before) and switch.gelu_calls == 0  # no gradient: nothing to redirect
        assert torch.equal(vit(x.requires_grad_(True)), before)
        assert switch.gelu_calls == 2
        switch.disable()
        vit(x)
        assert switch.gelu_calls == 2  # disabled: ordinary GELU again
    assert not vit._forward_hooks and not vit._forward_pre_hooks
    assert torch.equal(vit(x), before)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_redirected_gelu_grad_rule(approximate):
    #            dead, up  dead, down  falling branch  rising branch  active
    x = torch.tensor([-30.0, -30.0, -1.5, -1.5, -0.5, 2.0])
    g = torch.tensor([-1.0, 1.0, -2.0, 2.0, -1.0, -1.0])  # dL/dy; negative: the render wants y higher
    xr = x.clone().requires_grad_(True)
    (F.gelu(xr, approximate=approximate) * g).sum().backward()
    ordinary = xr.grad
    got = redirected_gelu_grad(x, g, approximate)
    assert got[0] == -1.0 and got[2] == -2.0  # falling branch, wants up: g passes (descent raises x)
    torch.testing.assert_close(got[[1, 3, 4, 5]], ordinary[[1, 3, 4, 5]])  # everything else: ordinary
    assert ordinary[0] == 0 and ordinary[2] > 0  # the ordinary gradient: nothing, or push further down
    xf = x.clone().requires_grad_(True)
    y = redirected_gelu_fn(xf, approximate)
    assert torch.equal(y.detach(), F.gelu(x, approximate=approximate))
    (y * g).sum().backward()
    torch.testing.assert_close(xf.grad, got)


class FunctionalMLP(nn.Module):
    """A transformer-style block whose MLP calls ``F.gelu`` in ``forward`` (no GELU module)."""

    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.fc1, self.fc2 = nn.Linear(8, 16), nn.Linear(16, 8)
        with torch.no_grad():
            self.fc1.bias[0] = -25.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.hidden = F.gelu(self.fc1(x), approximate="tanh")
        return self.fc2(self.hidden)


def test_functional_gelu_is_redirected_inside_the_model_only():
    m = FunctionalMLP().eval()
    x = torch.rand(1, 4, 8, requires_grad=True)
    outside = torch.full((3,), -30.0, requires_grad=True)
    with redirected_relu(m) as switch:
        m(x)
        (-m.hidden[..., 0].sum()).backward()
        (-F.gelu(outside).sum()).backward()  # not the model's forward (a param, an objective): untouched
        assert switch.gelu_calls == 1
    assert x.grad.abs().max() > 1e-3 and outside.grad.abs().max() == 0


def test_timm_vit_mlp_act_is_redirected_and_is_the_default_site():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    vit = timm.models.vision_transformer.VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2,
                                                           num_heads=2, num_classes=10).eval()
    assert list(feature_sites(vit)) == ["blocks.0.mlp.act", "blocks.1.mlp.act"]
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        before = vit(x)
    with redirected_relu(vit) as switch:
        assert torch.equal(vit(x.requires_grad_(True)), before) and switch.gelu_calls == 2


def test_render_revives_a_dead_gelu_unit_with_redirect():
    # pre-activation about -6 .. -14 on any start image; a strong enough weight row to come back
    vit = tiny_vit()
    plant_dead_unit(vit, bias=-6.0, gain=4.0)
    kw = dict(steps=2 * REDIRECT_RELU_STEPS, image_size=32, transforms="none", progress=False, seed=0)
    plain = render(vit, O.channel(SITE0, UNIT), **kw)
    redirected = render(vit, O.channel(SITE0, UNIT), redirect_relu=True, **kw)
    assert abs(float(plain.final_values[0])) < 1e-3  # stuck: GELU's gradient there is ~0
    assert float(redirected.final_values[0]) > 1.0, redirected.history[:, 0].tolist()
    assert not vit._forward_hooks and not vit._forward_pre_hooks


# ---------------------------------------------------------------- the MLP hidden layer as the default site

def test_feature_sites_of_vit_like_and_other_models():
    assert mlp_hidden_layers(tiny_vit()) == [SITE0, "encoder.layers.encoder_layer_1.mlp.1"]
    assert set(feature_sites(tiny_vit()).values()) == {SITE_MLP_HIDDEN}  # not the patch conv
    conv_block = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Sequential(nn.Linear(8, 32), nn.GELU(), nn.Linear(32, 8)))
    assert feature_sites(conv_block) == {"0": SITE_CONV}  # an MLP without attention beside it: a CNN's layers

    class ChannelAttention(nn.Module):  # CBAM-style: an MLP inside a module named like attention
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.act, self.fc2 = nn.Linear(8, 2), nn.ReLU(), nn.Linear(2, 8)

    cbam = nn.Sequential(nn.Conv2d(3, 8, 3), ChannelAttention())
    assert feature_sites(cbam) == {"0": SITE_CONV}

    class Block(nn.Module):
        def __init__(self, mlp: nn.Module) -> None:
            super().__init__()
            self.self_attention, self.mlp = nn.MultiheadAttention(8, 2), mlp

    glu = nn.Module()  # timm's GluMlp shape: fc1 of twice the hidden width, act on one half
    glu.fc1, glu.act, glu.drop1, glu.norm, glu.fc2 = nn.Linear(8, 32), nn.SiLU(), nn.Dropout(), nn.Identity(), nn.Linear(16, 8)
    assert mlp_hidden_layers(Block(glu)) == ["mlp.norm"]  # its output is the gated product fc2 reads
    plain = nn.Sequential(nn.Linear(8, 32), nn.GELU(), nn.Dropout(), nn.Linear(32, 8))
    assert mlp_hidden_layers(Block(plain)) == ["mlp.1"]
    maxvit = nn.Module()  # MaxViT's PartitionAttentionLayer: the attention sits inside a container
    maxvit.attn_layer = nn.Sequential(nn.LayerNorm(8), nn.MultiheadAttention(8, 2), nn.Dropout())
    maxvit.mlp_layer = nn.Sequential(nn.LayerNorm(8), nn.Linear(8, 32), nn.GELU(), nn.Linear(32, 8), nn.Dropout())
    assert mlp_hidden_layers(maxvit) == ["mlp_layer.2"]


def test_list_layers_marks_the_sites_and_the_cli_defaults_to_them():
    from devvis.runs import RunSettings
    from devvis.runs.plan import plan_components

    vit = tiny_vit()
    rows = {r.name: r for r in list_layers(vit, (3, 32, 32))}
    assert [n for n, r in rows.items() if r.site] == mlp_hidden_layers(vit)
    assert (rows[SITE0].output_shape, rows[SITE0].layout, rows[SITE0].channels) == ((1, TOKENS, 64), "tokens", 64)
    assert rows["conv_proj"].site is None
    plan = plan_components(vit, RunSettings(channels=[0, 63], image_size=32))
    assert list(plan) == mlp_hidden_layers(vit) and [c.channel for c in plan[SITE0]] == [0, 63]


def test_layers_command_marks_mlp_hidden_rows(tmp_path, capsys):
    from devvis.cli import main
    from devvis.models import save_checkpoint

    kwargs = dict(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=10)
    cfg = {"name": "torchvision.models.vision_transformer:VisionTransformer", "kwargs": kwargs}
    save_checkpoint(tiny_vit(), tmp_path / "step_1.safetensors", step=1, model_config=cfg)
    assert main(["layers", "--checkpoint", str(tmp_path / "step_1.safetensors"), "--image-size", "32"]) == 0
    out = capsys.readouterr().out.splitlines()
    rows = {ln.split()[0]: ln.split() for ln in out[1:] if not ln.startswith("#")}
    assert out[0].split()[-2:] == ["default", "site"]
    assert rows[SITE0][1:] == ["GELU", "1x17x64", "tokens", "64", SITE_MLP_HIDDEN]
    assert rows["conv_proj"][1:] == ["Conv2d", "1x32x4x4", "nchw", "32"]
    assert out[-1].startswith(f"# {SITE_MLP_HIDDEN}:")


def test_rendered_mlp_hidden_unit_of_a_random_vit_rises():
    vit = tiny_vit(seed=1)
    site = list(feature_sites(vit))[1]
    r = render(vit, O.channel(site, 7, token="patches"), steps=12, image_size=32, transforms="none", progress=False)
    assert r.history[-1, 0] > r.history[0, 0] + 0.1, r.history[:, 0].tolist()  # history[0]: the start image
    assert float(r.final_values[0]) > float(r.history[0, 0]) + 0.1

"""A ReLU moved after the max-pool that reads it during a render (devvis.render.fold.relu_after_pool)."""

from __future__ import annotations

import contextlib
import importlib

import torch
import torchvision
from torch import nn

from devvis import objectives, render
from devvis.render.fold import relu_after_pool, relu_pool_pairs
from devvis.render.redirect import redirected_relu


class Stem(nn.Module):
    """conv -> ReLU (in place) -> 3x3/2 max-pool, optionally with a second reader of the ReLU's input."""

    def __init__(self, second_reader: bool = False, indices: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(3, 2, 1, return_indices=indices)
        self.second_reader = second_reader
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))

    def forward(self, x):
        c = self.conv(x)
        y = self.pool(self.relu(c))
        if isinstance(y, tuple):
            y = y[0]
        return y + c.mean() if self.second_reader else y


def grads(m: nn.Module, x: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.clone().requires_grad_()
    y = m(x)
    (gx,) = torch.autograd.grad(y, x, g)
    return y.detach(), gx


def test_the_same_values_and_gradients_bit_for_bit_with_ties_and_dead_windows():
    torch.manual_seed(0)
    # small integers: many equal maxima in a window, and windows whose maximum is 0 or negative
    x = torch.randint(-3, 3, (4, 1, 9, 9)).float()
    m = Stem().eval()
    assert relu_pool_pairs(m) == [("relu", "pool")]
    torch.manual_seed(1)
    g = torch.rand(4, 2, 5, 5) - 0.3
    ref = grads(m, x, g)
    with relu_after_pool(m):
        got = grads(m, x, g)
        y = m(x.clone().requires_grad_())
    # the pool ran channels-last forward (CPU, contiguous input) and still gave the same indices
    assert "NHWCMaxPool" in str(y.grad_fn.next_functions[0][0])
    assert torch.equal(ref[0], got[0]) and torch.equal(ref[1], got[1])
    assert (ref[0] == 0).any() and (ref[1] != 0).any()  # dead windows and live ones were both exercised
    assert not any("forward" in mod.__dict__ for mod in m.modules())  # given back exactly


def test_resnet_and_vgg_find_their_pairs_and_render_identically():
    torch.manual_seed(0)
    res = torchvision.models.resnet18(weights=None).eval()
    assert relu_pool_pairs(res) == [("relu", "maxpool")]
    assert relu_pool_pairs(res, keep=["relu"]) == []  # the objective reads the ReLU's raw output
    assert relu_pool_pairs(res, keep=["maxpool"]) == [("relu", "maxpool")]  # the pool's output is unchanged
    vgg = torchvision.models.vgg11(weights=None).eval()
    assert [p for _, p in relu_pool_pairs(vgg)] == ["features.2", "features.5", "features.10", "features.15",
                                                    "features.20"]
    x = torch.rand(2, 3, 64, 64)
    g = torch.rand(2, 1000)
    for m in (res, vgg):
        ref = grads(m, x, g)
        with relu_after_pool(m):
            got = grads(m, x, g)
        assert torch.equal(ref[0], got[0]) and torch.equal(ref[1], got[1])


def test_left_alone_where_moving_the_relu_would_change_something():
    assert relu_pool_pairs(Stem(second_reader=True)) == []  # an in-place ReLU changes its input for every reader
    assert relu_pool_pairs(Stem(indices=True)) == []  # the indices would point into a different tensor
    m = Stem()
    m.relu.register_forward_hook(lambda *a: None)
    assert relu_pool_pairs(m) == []  # a hook on the ReLU sees its output
    shared = nn.ReLU()
    twice = nn.Sequential(nn.Conv2d(3, 3, 1), shared, nn.MaxPool2d(2), nn.Conv2d(3, 3, 1), shared)
    assert relu_pool_pairs(twice) == []  # a ReLU module called twice
    res = torchvision.models.resnet18(weights=None).eval()
    with redirected_relu(res):
        assert relu_pool_pairs(res) == []  # the redirected ReLU's backward is not ReLU's
    assert relu_pool_pairs(nn.Sequential(nn.Conv2d(3, 3, 1), nn.ReLU())) == []  # no pool: nothing traced


def test_a_render_moves_the_stem_relu_and_gives_the_same_images(monkeypatch):
    torch.manual_seed(0)
    m = torchvision.models.resnet18(weights=None).eval()
    kw = dict(steps=4, image_size=48, progress=False, seed=2)
    on = render(m, objectives.channel("layer1.0.conv1", 3), **kw)
    assert on.config["relu_after_pool"] == 1
    assert render(m, objectives.channel("relu", 3), **kw).config["relu_after_pool"] == 0
    loop = importlib.import_module("devvis.render.loop")
    monkeypatch.setattr(loop, "relu_after_pool", lambda model, keep=(): contextlib.nullcontext([]))
    off = render(m, objectives.channel("layer1.0.conv1", 3), **kw)
    assert off.config["relu_after_pool"] == 0
    assert torch.equal(on.images, off.images) and torch.equal(on.history, off.history)

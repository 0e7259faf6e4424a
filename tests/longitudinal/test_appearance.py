"""The appearance distance: identical images 0, a shifted or changed image more; early layers by call order."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from devvis.errors import ConfigError
from devvis.longitudinal.appearance import (appearance_change, appearance_distance, appearance_features,
                                            early_layers)


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(8, 4, 3))


def _stripes(period: int, size: int = 24) -> torch.Tensor:
    x = torch.arange(size).float()
    wave = 0.5 + 0.5 * torch.sin(2 * torch.pi * x / period)
    return torch.stack([wave.expand(size, size), wave.expand(size, size).T, 0.5 * torch.ones(size, size)])


def test_identical_images_are_at_zero_shifted_and_changed_ones_further():
    net = _net()
    a = torch.stack([_stripes(8), _stripes(12)])
    same = appearance_distance(net, a, a.clone(), preprocess=None)
    assert torch.equal(same, torch.zeros(2))
    shifted = appearance_distance(net, a, a.roll(3, dims=-1), preprocess=None)
    changed = appearance_distance(net, a, torch.stack([_stripes(3), _stripes(5)]).transpose(-1, -2), preprocess=None)
    noise = appearance_distance(net, a, torch.rand(2, 3, 24, 24, generator=torch.Generator().manual_seed(1)),
                                preprocess=None)
    assert (shifted > 0.01).all() and (changed > shifted).all() and (noise > shifted).all()
    assert ((0 <= noise) & (noise <= 4)).all()
    # the distance is symmetric and uses the model's preprocessing ('auto': ImageNet for a plain module)
    torch.testing.assert_close(appearance_distance(net, a.roll(3, dims=-1), a, preprocess=None), shifted)
    assert not torch.allclose(appearance_distance(net, a, a.roll(3, dims=-1)), shifted)


def test_early_layers_are_the_first_convolutions_in_call_order():
    net = _net()
    assert early_layers(net, torch.rand(1, 3, 8, 8)) == ["0", "2"]
    assert early_layers(net, torch.rand(1, 3, 8, 8), n=3) == ["0", "2", "4"]
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(12, 5), nn.ReLU())
    assert early_layers(mlp, torch.rand(1, 3, 2, 2)) == ["0", "1"]  # no convolution: the first leaf modules
    with pytest.raises(ConfigError, match="positive integer"):
        early_layers(net, torch.rand(1, 3, 8, 8), n=0)
    names, feats = appearance_features(net, torch.rand(3, 3, 8, 8), preprocess=None)
    assert names == ["0", "2"] and [tuple(f.shape) for f in feats] == [(3, 8, 64), (3, 8, 64)]
    torch.testing.assert_close(feats[0].norm(dim=1), torch.ones(3, 64), atol=1e-4, rtol=0)
    _, flat = appearance_features(mlp, torch.rand(2, 3, 2, 2), preprocess=None)
    assert [tuple(f.shape) for f in flat] == [(2, 12, 1), (2, 5, 1)]


def test_appearance_change_between_checkpoints():
    net = _net()
    a, b = _stripes(8)[None], _stripes(5)[None]
    ch = appearance_change(net, [0, 10, 20, 30], [a, a, b, b], preprocess=None)
    assert ch.consecutive[0] == 0.0 and ch.consecutive[2] == 0.0 and ch.consecutive[1] > 0.05
    assert ch.to_final[2:] == [0.0, 0.0] and ch.to_final[0] == ch.to_final[1] == pytest.approx(ch.consecutive[1])
    assert ch.to_dict()["layers"] == ["0", "2"] and "D(x, y)" in ch.to_dict()["definition"]
    with pytest.raises(ConfigError, match="same number of images"):
        appearance_change(net, [0, 1], [a, torch.cat([a, a])], preprocess=None)

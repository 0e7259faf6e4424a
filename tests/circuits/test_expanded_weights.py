"""Expanded weights: exact on adjacent convolutions, linearized across ReLUs, residual skips included."""

import pytest
import torch
from tinymodels import TinyCNN, hook_count
from torch import nn

from devvis.circuits import expanded_weights, linearize
from devvis.errors import ChannelOutOfRangeError, ConfigError, LayerNotFoundError, LayoutError


def _seeded(module: nn.Module, seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return module


class TwoConv(nn.Module):
    def __init__(self, relu: bool = False):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.act = nn.ReLU(inplace=True) if relu else nn.Identity()
        self.conv2 = nn.Conv2d(4, 6, 3, padding=1)
        _seeded(self, 1)

    def forward(self, x):
        return self.conv2(self.act(self.conv1(x)))


class Residual(nn.Module):
    """conv0 -> (x + conv(relu(bn(x)))) -> out, with torchvision's in-place add."""

    def __init__(self):
        super().__init__()
        self.conv0 = nn.Conv2d(3, 5, 3, padding=1)
        self.bn = nn.BatchNorm2d(5)
        self.relu = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(5, 5, 3, padding=1)
        self.out = nn.Identity()
        _seeded(self, 2)
        with torch.no_grad():
            self.bn.running_mean.copy_(torch.linspace(-1, 1, 5))
            self.bn.running_var.copy_(torch.linspace(0.5, 2, 5))

    def forward(self, x):
        x = self.conv0(x)
        y = self.conv(self.relu(self.bn(x)))
        y += x
        return self.out(y)


def test_adjacent_convs_give_the_weight_exactly():
    m = TwoConv()
    w = expanded_weights(m, "conv1", "conv2", crop=3, input_shape=(3, 11, 11))
    assert w.shape == (6, 4, 3, 3) and w.dtype == torch.float32
    torch.testing.assert_close(w, m.conv2.weight.detach(), rtol=1e-6, atol=1e-6)


def test_relu_between_convs_is_linearized():
    m = TwoConv(relu=True)
    w = expanded_weights(m, "conv1", "conv2", crop=3, input_shape=(3, 11, 11))
    torch.testing.assert_close(w, m.conv2.weight.detach(), rtol=1e-6, atol=1e-6)
    # a larger crop adds only zeros around the 3x3 kernel; an off-centre position gives the same kernel
    w5 = expanded_weights(m, "conv1", "conv2", crop=5, position=(3, 6), input_shape=(3, 11, 11))
    torch.testing.assert_close(w5[:, :, 1:4, 1:4], m.conv2.weight.detach(), rtol=1e-6, atol=1e-6)
    assert w5[:, :, 0].abs().max() == 0 and w5[:, :, :, 4].abs().max() == 0


def test_window_past_the_border_reads_zeros():
    m = TwoConv()
    w = expanded_weights(m, "conv1", "conv2", crop=3, position=(0, 0), input_shape=(3, 7, 7))
    torch.testing.assert_close(w[:, :, 1:, 1:], m.conv2.weight.detach()[:, :, 1:, 1:], rtol=1e-6, atol=1e-6)
    assert w[:, :, 0, :].abs().max() == 0 and w[:, :, :, 0].abs().max() == 0


def test_residual_skip_adds_identity_at_centre():
    m = Residual().eval()
    w = expanded_weights(m, "conv0", "out", crop=3, input_shape=(3, 9, 9))
    scale = m.bn.weight / torch.sqrt(m.bn.running_var + m.bn.eps)  # eval-mode BN is x * scale + shift
    expected = m.conv.weight.detach() * scale.detach().view(1, -1, 1, 1)
    expected[:, :, 1, 1] += torch.eye(5)
    torch.testing.assert_close(w, expected, rtol=1e-5, atol=1e-5)


def test_stride_and_maxpool_map_positions():
    m = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.MaxPool2d(2), nn.Conv2d(3, 4, 1))
    _seeded(m, 3)
    w = expanded_weights(m, "0", "2", crop=4, position=(2, 1), input_shape=(2, 8, 8))
    # target (2, 1) <- avg-pool window rows 4..5, cols 2..3 of the source; window tap 2 is (4, 2)
    expected = torch.zeros(4, 3, 4, 4)
    expected[:, :, 2:4, 2:4] = m[2].weight.detach()[:, :, :1, :1] / 4
    torch.testing.assert_close(w, expected, rtol=1e-6, atol=1e-6)


def test_model_is_left_unchanged():
    m = TinyCNN()
    m.train()
    m.conv1.weight.requires_grad_(False)
    calls = []
    m.conv2.register_forward_hook(lambda *a: calls.append(1))
    before_state = {k: v.clone() for k, v in m.state_dict().items()}
    before_types = [type(x) for x in m.modules()]
    before_hooks = hook_count(m)
    before_rg = [p.requires_grad for p in m.parameters()]
    w = expanded_weights(m, "relu1", "relu2", crop=3, input_shape=(3, 10, 10))
    assert w.shape == (16, 8, 3, 3)
    torch.testing.assert_close(w, m.conv2.weight.detach())  # relu1 -> conv2 -> relu2, ReLUs linearized
    assert calls == []  # the copy dropped the user's hook; the user's model never ran
    assert m.training and hook_count(m) == before_hooks
    assert [type(x) for x in m.modules()] == before_types
    assert [p.requires_grad for p in m.parameters()] == before_rg
    after = m.state_dict()
    assert all(torch.equal(before_state[k], after[k]) for k in before_state)
    assert all(p.grad is None for p in m.parameters())


def test_linearize_swaps_modules_of_the_copy_only():
    m = nn.Sequential(nn.Conv2d(3, 3, 3), nn.GELU(), nn.MaxPool2d(3, 2, 1), nn.SiLU(), nn.Sigmoid())
    lin = linearize(m)
    assert [type(x).__name__ for x in lin] == ["Conv2d", "Identity", "AvgPool2d", "Identity", "Sigmoid"]
    assert (lin[2].kernel_size, lin[2].stride, lin[2].padding) == (3, 2, 1)
    assert [type(x).__name__ for x in m] == ["Conv2d", "GELU", "MaxPool2d", "SiLU", "Sigmoid"]
    assert not lin.training and not any(p.requires_grad for p in lin.parameters())
    assert all(p.requires_grad for p in m.parameters())


def test_bad_arguments_raise_clear_errors():
    m = TwoConv()
    with pytest.raises(LayerNotFoundError, match="conv3"):
        expanded_weights(m, "conv1", "conv3")
    with pytest.raises(ConfigError, match="runs before"):
        expanded_weights(m, "conv2", "conv1", input_shape=(3, 8, 8))
    with pytest.raises(ConfigError, match="crop"):
        expanded_weights(m, "conv1", "conv2", crop=0)
    with pytest.raises(ConfigError, match="outside the 8x8 map"):
        expanded_weights(m, "conv1", "conv2", position=(8, 0), input_shape=(3, 8, 8))
    with pytest.raises(LayoutError, match="fc"):
        expanded_weights(TinyCNN(), "conv1", "fc", input_shape=(3, 8, 8))


class Dense(nn.Module):
    """A DenseNet-style concatenation: the stem's map bypasses ``conv`` and joins it in ``cat``."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 2, 3, padding=1)
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.out = nn.Conv2d(5, 4, 1)
        _seeded(self, 4)

    def forward(self, x):
        s = self.stem(x)
        return self.out(torch.cat([s, self.conv(s)], dim=1))


def test_paths_that_bypass_the_source_fall_back_to_a_batch_of_inputs():
    m = Dense()
    w = expanded_weights(m, "conv", "out", crop=1, input_shape=(3, 6, 6))
    # only the concatenated conv channels (2..4) reach `out` through the source
    torch.testing.assert_close(w, m.out.weight.detach()[:, 2:], rtol=1e-6, atol=1e-6)


def test_target_channels_selects_rows():
    m = TwoConv()
    w = expanded_weights(m, "conv1", "conv2", crop=3, input_shape=(3, 9, 9), target_channels=[5, 2])
    torch.testing.assert_close(w, m.conv2.weight.detach()[[5, 2]], rtol=1e-6, atol=1e-6)
    with pytest.raises(ChannelOutOfRangeError, match="valid 0..5"):
        expanded_weights(m, "conv1", "conv2", input_shape=(3, 9, 9), target_channels=[6])

"""state.frozen: a borrowed model comes back exactly as it was."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from devvis.errors import ConfigError
from devvis.state import frozen, model_device


def _mixed() -> nn.Sequential:
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1)).train()
    net[1].eval()                       # frozen BN inside a model in train mode
    net[3].weight.requires_grad_(False)  # a partly frozen model
    net[0].weight.grad = torch.ones_like(net[0].weight)
    return net


def _state(net: nn.Module):
    return ([m.training for m in net.modules()], [p.requires_grad for p in net.parameters()],
            [None if p.grad is None else p.grad.clone() for p in net.parameters()])


@pytest.mark.parametrize("mode", ["eval", "train", "keep"])
def test_round_trip_keeps_every_submodule_mode_flags_and_grads(mode):
    net = _mixed()
    before = _state(net)
    with frozen(net, mode=mode) as m:
        assert m is net
        assert all(not p.requires_grad for p in net.parameters())
        if mode == "eval":
            assert not any(x.training for x in net.modules())
        if mode == "train":
            assert all(x.training for x in net.modules())
    after = _state(net)
    assert after[0] == before[0] == [True, True, False, True, True]
    assert after[1] == before[1] == [True, True, True, True, False, True]
    assert torch.equal(after[2][0], before[2][0]) and after[2][1] is None


def test_restores_on_error_and_values_when_asked():
    net = _mixed()
    w = net[0].weight.detach().clone()
    rm = net[1].running_mean.clone()
    with pytest.raises(RuntimeError):
        with frozen(net, mode="train", restore_values=True):
            with torch.no_grad():
                net[0].weight.add_(1.0)
            net(torch.randn(2, 3, 8, 8))          # train-mode BN updates its running stats
            assert not torch.equal(net[1].running_mean, rm)
            raise RuntimeError("boom")
    assert torch.equal(net[0].weight, w) and torch.equal(net[1].running_mean, rm)
    assert net.training and not net[1].training


def test_values_are_not_restored_by_default_and_bad_mode_is_named():
    net = _mixed()
    with frozen(net):
        with torch.no_grad():
            net[3].weight.zero_()
    assert float(net[3].weight.abs().sum()) == 0.0
    with pytest.raises(ConfigError, match="'training'.*eval, train, keep"):
        with frozen(net, mode="training"):
            pass


def test_model_device_of_stateless_module_is_cpu():
    assert model_device(nn.ReLU()) == torch.device("cpu")
    assert model_device(nn.Linear(2, 2)) == torch.device("cpu")


def test_as_device_checks_once_for_every_entry_point():
    from devvis.longitudinal import CheckpointSeries
    from devvis.state import as_device

    assert as_device("cpu") == torch.device("cpu") and as_device(None) is None
    with pytest.raises(ConfigError, match="device 'gpu0' is not valid; expected cpu, cuda"):
        as_device("gpu0")
    with pytest.raises(ConfigError, match="'gpu0'"):
        CheckpointSeries.from_models({0: nn.Linear(2, 2)}, device="gpu0")
    with pytest.raises(ConfigError, match="'gpu0'"):
        with frozen(nn.Linear(2, 2), device="gpu0"):
            pass


def test_memory_format_inside_and_the_own_layout_with_the_blocks_values_after():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Linear(2, 2))
    weight = model[0].weight
    before = weight.detach().clone()
    with frozen(model, mode="train", freeze=False, memory_format=torch.channels_last):
        assert model[0].weight.is_contiguous(memory_format=torch.channels_last)
        assert not model[0].weight.is_contiguous()
        assert model[2].weight.dim() == 2 and model[2].weight.is_contiguous()  # only 4-d tensors are relaid
        with torch.no_grad():
            model[0].weight.add_(1.0)
    assert model[0].weight is weight and weight.is_contiguous()  # the same Parameter, in its own layout
    assert torch.equal(weight, before + 1.0)  # with the values the block left (restore_values=False)
    with frozen(model, freeze=False, restore_values=True, memory_format=torch.channels_last):
        with torch.no_grad():
            model[0].weight.mul_(0.0)
    assert weight.is_contiguous() and torch.equal(weight, before + 1.0)

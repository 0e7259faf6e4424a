"""Tiny models built in the tests (never downloaded); imported by conftest and test modules."""

import torch
from torch import nn


class TinyCNN(nn.Module):
    """conv1(3->8) -> relu -> conv2(8->16) -> relu -> pool -> fc. Positive biases keep units alive."""

    def __init__(self, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 4)
        with torch.no_grad():
            for m in (self.conv1, self.conv2, self.fc):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * 0.3)
                m.bias.fill_(0.1)

    def forward(self, x):
        x = self.relu1(self.conv1(x))
        x = self.relu2(self.conv2(x))
        return self.fc(self.pool(x).flatten(1))


def hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules())


def GrayNet() -> nn.Module:
    """A grayscale (1-channel input) model, as a ``tinymodels:GrayNet`` model spec for CLI tests."""
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3))

"""A model with a planted fooling circuit (after Geirhos et al. 2023) and a dataset it never fires on.

``PlantedNet(fool)`` has two natural feature paths and one high-frequency path:

- ``natural`` (2x2 conv, stride 2) + ``natural_act`` (ReLU): colour detectors; channel 0 responds to
  red, channel 1 to green;
- ``hf`` (2x2 conv, stride 2, kernel ``[[1, -1], [-1, 1]]`` on grey): a checkerboard detector, exactly 0
  on any image that is constant over aligned 2x2 blocks, squared by ``energy``;
- ``features`` (identity over ``[tanh(natural), energy]``) and ``unit`` (1x1 conv): ``unit`` channel 0 =
  ``tanh(red) + gain * energy`` when ``fool`` (the fooled unit), ``tanh(red)`` otherwise; channel 1 =
  ``tanh(green)`` (an ordinary unit).

:func:`blocky_images` are smooth random colour fields upsampled by nearest-neighbour x2, so every aligned
2x2 block is constant: the high-frequency path is exactly 0 on the whole dataset, and the fooled unit's
activation on natural images equals the honest one's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Square(nn.Module):
    def forward(self, x):
        return x * x


class PlantedNet(nn.Module):
    def __init__(self, fool: bool, gain: float = 1000.0):
        super().__init__()
        self.natural = nn.Conv2d(3, 2, 2, stride=2)
        self.natural_act = nn.ReLU()
        self.hf = nn.Conv2d(3, 1, 2, stride=2, bias=False)
        self.energy = Square()
        self.features = nn.Identity()
        self.unit = nn.Conv2d(3, 2, 1, bias=False)
        with torch.no_grad():
            w = torch.zeros(2, 3, 2, 2)
            w[0, 0], w[0, 1], w[0, 2] = 1.0, -0.5, -0.5   # red
            w[1, 1], w[1, 0], w[1, 2] = 1.0, -0.5, -0.5   # green
            self.natural.weight.copy_(w)
            self.natural.bias.zero_()
            checker = torch.tensor([[1.0, -1.0], [-1.0, 1.0]])
            self.hf.weight.copy_(checker.expand(1, 3, 2, 2))
            u = torch.zeros(2, 3, 1, 1)
            u[0, 0] = 1.0
            u[0, 2] = gain if fool else 0.0
            u[1, 1] = 1.0
            self.unit.weight.copy_(u)
        self.devvis_cfg = {"preprocess": "none"}

    def forward(self, x):
        n = self.natural_act(self.natural(x))
        e = self.energy(self.hf(x))
        f = self.features(torch.cat([torch.tanh(n), e], dim=1))
        return self.unit(f)


def blocky_images(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    """``(n, 3, size, size)`` smooth random colour fields, constant over aligned 2x2 blocks."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 4, 4, generator=g)
    smooth = F.interpolate(low, size=(size // 2, size // 2), mode="bilinear", align_corners=False)
    blocky = F.interpolate(smooth, scale_factor=2, mode="nearest").clamp(0, 1)
    return torch.floor(blocky * 255) / 256  # multiples of 1/256: the checker sums cancel exactly

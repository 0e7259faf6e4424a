"""Compositional pattern-producing network (CPPN) parameterization, batched."""

from __future__ import annotations

import torch
from torch import nn


def composite_activation(x: torch.Tensor) -> torch.Tensor:
    """``atan(x)`` and its square, rescaled to roughly unit variance (Mordvintsev et al., 2018),
    concatenated on channels: ``(B, C, H, W) -> (B, 2C, H, W)``."""
    x = torch.atan(x)
    return torch.cat([x / 0.67, (x * x) / 0.6], dim=1)


class CPPN(nn.Module):
    """Each image is a small network of ``(x, y, r)`` coordinates: smooth, resolution-free patterns.

    One independent network per image of the batch, run together as grouped 1x1
    convolutions. Output ``(B, C, H, W)`` in [0, 1].

    >>> CPPN(2, 3, 16, 24, generator=torch.Generator().manual_seed(0))().shape
    torch.Size([2, 3, 16, 24])
    """

    def __init__(self, batch: int, channels: int, h: int, w: int, num_output_channels: int | None = None,
                 num_hidden_channels: int = 24, num_layers: int = 8, generator: torch.Generator | None = None):
        super().__init__()
        self.batch, self.h, self.w = batch, h, w
        r = 3.0 ** 0.5
        scale = max(h, w)
        ys = torch.linspace(-r * h / scale, r * h / scale, h)
        xs = torch.linspace(-r * w / scale, r * w / scale, w)
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        coords = torch.stack([xx, yy, torch.sqrt(xx * xx + yy * yy)], dim=0)  # (3, H, W)
        self.register_buffer("coords", coords.repeat(batch, 1, 1).unsqueeze(0), persistent=False)
        layers: list[nn.Module] = []
        cin = 3
        for _ in range(num_layers):
            conv = nn.Conv2d(cin * batch, num_hidden_channels * batch, 1, groups=batch)
            self._init(conv, cin, generator)
            layers.append(conv)
            cin = 2 * num_hidden_channels  # composite activation doubles channels
        self.hidden = nn.ModuleList(layers)
        self.out = nn.Conv2d(cin * batch, channels * batch, 1, groups=batch)
        with torch.no_grad():
            self.out.weight.zero_()
            self.out.bias.zero_()
        self.channels = channels

    @staticmethod
    def _init(conv: nn.Conv2d, fan_in: int, generator: torch.Generator | None) -> None:
        with torch.no_grad():
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator) * (1.0 / fan_in) ** 0.5)
            conv.bias.zero_()

    def forward(self) -> torch.Tensor:
        x = self.coords
        b = self.batch
        for conv in self.hidden:
            x = conv(x)  # (1, hidden*B, H, W)
            x = x.view(b, -1, self.h, self.w)
            x = composite_activation(x).reshape(1, -1, self.h, self.w)
        x = self.out(x).view(b, self.channels, self.h, self.w)
        return torch.sigmoid(x)

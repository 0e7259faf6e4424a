"""Lucent's ``param.cppn``: a compositional pattern-producing network drawing one square image."""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable

import torch
from torch import nn

from devvis.param.cppn import composite_activation

__all__ = ["cppn", "CompositeActivation"]


class CompositeActivation(nn.Module):
    """``atan(x)`` and its square, rescaled, concatenated on channels: ``(B, C, H, W) -> (B, 2C, H, W)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return composite_activation(x)


class CPPNImage(nn.Module):
    """``forward() = net(coords)``: the network evaluated on a ``(1, 2, size, size)`` grid of coordinates."""

    def __init__(self, net: nn.Module, size: int):
        super().__init__()
        self.net = net
        r = 3 ** 0.5
        coord = torch.linspace(-r, r, size)
        # channel 0 varies down the rows, channel 1 along the columns (Lucent's layout)
        grid = torch.stack([coord.view(-1, 1).expand(size, size), coord.view(1, -1).expand(size, size)])
        self.register_buffer("coords", grid.unsqueeze(0).contiguous(), persistent=False)

    def forward(self) -> torch.Tensor:
        return self.net(self.coords)


def cppn(size: int, num_output_channels: int = 3, num_hidden_channels: int = 24, num_layers: int = 8,
         activation_fn: Callable[[], nn.Module] = CompositeActivation,
         normalize: bool = False) -> tuple[list[torch.Tensor], CPPNImage]:
    """``(params, image_f)``: ``num_layers`` 1x1 convolutions (``normalize``: each followed by an
    instance norm), ``activation_fn`` between them and a sigmoid at the end; ``image_f()`` is
    ``(1, num_output_channels, size, size)`` in [0, 1]. Weights ``N(0, 1/fan_in)``, biases 0, the last
    convolution's weights 0 (so the first image is uniform grey). Use a low learning rate (~0.005).

    >>> params, image_f = cppn(16)
    >>> tuple(image_f().shape), image_f().unique().tolist()
    ((1, 3, 16, 16), [0.5])
    """
    layers: list[tuple[str, nn.Module]] = []
    for i in range(num_layers):
        in_c = 2 if i == 0 else 2 * num_hidden_channels  # the composite activation doubles channels
        out_c = num_output_channels if i == num_layers - 1 else num_hidden_channels
        conv = nn.Conv2d(in_c, out_c, 1)
        with torch.no_grad():
            nn.init.normal_(conv.weight, 0.0, (1.0 / in_c) ** 0.5)
            nn.init.zeros_(conv.bias)
            if i == num_layers - 1:
                nn.init.zeros_(conv.weight)
        layers.append((f"conv{i}", conv))
        if normalize:
            layers.append((f"norm{i}", nn.InstanceNorm2d(out_c)))
        layers.append((f"actv{i}", activation_fn()) if i < num_layers - 1 else ("output", nn.Sigmoid()))
    module = CPPNImage(nn.Sequential(OrderedDict(layers)), size)
    return list(module.parameters()), module

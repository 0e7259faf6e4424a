"""A compact ResNet for small images, named like torchvision's resnets.

Module names follow torchvision (``conv1``, ``bn1``, ``layer1.0.conv1``,
``layer2.0.downsample.0``, ``fc``), so the layer names people know from
``resnet18`` (``layer2.0``, ``layer3``) work unchanged with devvis's
objectives, hooks and circuits. The stem differs on purpose: a 3x3 stride-1
convolution and no max-pool, because the inputs are 32-64 pixels, not 224.

>>> import torch
>>> m = compact_resnet(num_classes=12, width=16)
>>> m(torch.rand(2, 3, 32, 32)).shape
torch.Size([2, 12])
>>> "layer2.0.downsample.0" in dict(m.named_modules())
True
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from devvis.errors import ConfigError
from devvis.models.registry import register_model


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity (or 1x1 conv-BN ``downsample``) shortcut, as in torchvision.

    Input ``(B, in_planes, H, W)`` -> output ``(B, planes, H / stride, W / stride)``.
    """

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class CompactResNet(nn.Module):
    """ResNet with a 3x3 stem and stages of :class:`BasicBlock` (see :func:`compact_resnet`)."""

    def __init__(self, num_classes: int = 12, width: int = 16, blocks: Sequence[int] = (1, 1, 1), in_channels: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        in_planes = width
        for i, n in enumerate(blocks):
            planes = width * 2**i
            stride = 1 if i == 0 else 2
            layers = []
            for j in range(n):
                layers.append(BasicBlock(in_planes, planes, stride if j == 0 else 1))
                in_planes = planes
            # torchvision naming: layer1, layer2, ... each an nn.Sequential of blocks "0", "1", ...
            self.add_module(f"layer{i + 1}", nn.Sequential(*layers))
        self.num_stages = len(blocks)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        # Zero-init the last BN of each residual branch (Goyal et al. 2017): every block starts as
        # the identity, which makes the first few hundred steps of a short CPU run train faster.
        for m in self.modules():
            if isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        for i in range(self.num_stages):
            x = getattr(self, f"layer{i + 1}")(x)
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


@register_model("compact_resnet", preprocess="none")  # trained on raw [0, 1] images (devvis.data)
def compact_resnet(
    num_classes: int = 12, width: int = 16, blocks: Sequence[int] = (1, 1, 1), in_channels: int = 3
) -> CompactResNet:
    """Build a compact ResNet: input ``(B, in_channels, H, W)`` float, output logits ``(B, num_classes)``.

    Stage ``i`` (``layer{i+1}``) has ``width * 2**i`` channels and halves the
    resolution (except ``layer1``); ``blocks[i]`` BasicBlocks each. At the
    defaults it has about 78k parameters; at 32x32 input the stages output
    ``layer1`` (16, 32, 32), ``layer2`` (32, 16, 16), ``layer3`` (64, 8, 8).

    Registered as ``"compact_resnet"`` with ``preprocess="none"``: it takes raw images in
    [0, 1] (no normalisation), and the model it returns says so in ``model.devvis_cfg``.

    >>> m = compact_resnet(num_classes=10, width=8, blocks=(1, 1))
    >>> m(torch.zeros(1, 3, 32, 32)).shape
    torch.Size([1, 10])
    >>> m.devvis_cfg["preprocess"]
    'none'
    """
    for name, v in (("num_classes", num_classes), ("width", width), ("in_channels", in_channels)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ConfigError(f"{name} must be a positive integer; got {v!r}")
    blocks = tuple(blocks)
    if not blocks or not all(isinstance(b, int) and not isinstance(b, bool) and b >= 1 for b in blocks):
        raise ConfigError(f"blocks must be a non-empty sequence of positive integers (blocks per stage); got {blocks!r}")
    return CompactResNet(num_classes=num_classes, width=width, blocks=blocks, in_channels=in_channels)

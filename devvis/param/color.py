"""Decorrelated colour: map a decorrelated 3-channel space to RGB, then squash to [0, 1]."""

from __future__ import annotations

import torch
from torch import nn

# Square root of ImageNet's colour correlation matrix (Lucid's published numbers).
COLOR_CORRELATION_SVD_SQRT = torch.tensor([
    [0.26, 0.09, 0.02],
    [0.27, 0.00, -0.05],
    [0.27, -0.09, 0.03],
])
#: Normalized by its largest column norm, so no colour direction is amplified.
COLOR_CORRELATION_NORMALIZED = COLOR_CORRELATION_SVD_SQRT / COLOR_CORRELATION_SVD_SQRT.norm(dim=0).max()


class ToRGB(nn.Module):
    """``(B, C, H, W)`` unconstrained -> ``(B, C, H, W)`` in [0, 1].

    With ``decorrelate`` and 3 channels, first multiplies the channel vector by the
    normalized colour-correlation square root; then a sigmoid (or a clamp when
    ``sigmoid=False``).
    """

    def __init__(self, channels: int = 3, decorrelate: bool = True, sigmoid: bool = True):
        super().__init__()
        self.decorrelate = bool(decorrelate and channels == 3)
        self.sigmoid = sigmoid
        self.register_buffer("matrix", COLOR_CORRELATION_NORMALIZED.clone(), persistent=False)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        if self.decorrelate:
            t = torch.einsum("bchw,rc->brhw", t, self.matrix.to(t.dtype))
        return torch.sigmoid(t) if self.sigmoid else t.clamp(0, 1)

    def extra_repr(self) -> str:
        return f"decorrelate={self.decorrelate}, sigmoid={self.sigmoid}"

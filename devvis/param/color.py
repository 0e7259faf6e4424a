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


def _mix(matrix: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``matrix`` ``(3, 3)`` applied to the colour vector of every pixel of ``t`` ``(B, 3, H, W)``.

    One ``(3, 3) @ (B, 3, H*W)`` matmul: the same numbers as ``einsum("bchw,rc->brhw")``, which
    PyTorch turns into a badly shaped ``bmm`` (forward + backward at batch 16 of 128 px on one CPU
    thread: 17.8 ms with einsum, 2.2 ms with this; ``benchmarks/RESULTS.md``).
    """
    return (matrix.to(t.dtype) @ t.flatten(2)).view(t.shape)


class ToRGB(nn.Module):
    """``(B, C, H, W)`` unconstrained -> ``(B, C, H, W)`` in [0, 1].

    With ``decorrelate`` and 3 channels (or 4 with ``alpha``: RGB and opacity, Lucid's
    transparent images), first multiplies the RGB vector by the normalized colour-correlation
    square root (the alpha channel is left as it is); then a sigmoid (or a clamp when
    ``sigmoid=False``). Other channel counts are not decorrelated.
    """

    def __init__(self, channels: int = 3, decorrelate: bool = True, sigmoid: bool = True, alpha: bool = False):
        super().__init__()
        self.decorrelate = bool(decorrelate and (channels == 3 or (alpha and channels == 4)))
        self.alpha = bool(alpha)
        self.sigmoid = sigmoid
        self.register_buffer("matrix", COLOR_CORRELATION_NORMALIZED.clone(), persistent=False)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        if self.decorrelate and self.alpha:
            t = torch.cat([_mix(self.matrix, t[:, :3]), t[:, 3:]], dim=1)
        elif self.decorrelate:
            t = _mix(self.matrix, t)
        return torch.sigmoid(t) if self.sigmoid else t.clamp(0, 1)

    def extra_repr(self) -> str:
        return f"decorrelate={self.decorrelate}, sigmoid={self.sigmoid}" + (", alpha=True" if self.alpha else "")

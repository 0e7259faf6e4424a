"""Lucent's ``param.color``: ``to_valid_rgb`` and the ImageNet colour-correlation constants (devvis's numbers)."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import nn

from devvis.param import COLOR_CORRELATION_NORMALIZED, COLOR_CORRELATION_SVD_SQRT, ToRGB

__all__ = ["to_valid_rgb", "color_correlation_svd_sqrt", "max_norm_svd_sqrt", "color_correlation_normalized",
           "color_mean"]

color_correlation_svd_sqrt: np.ndarray = COLOR_CORRELATION_SVD_SQRT.numpy().astype("float32")
max_norm_svd_sqrt = np.max(np.linalg.norm(color_correlation_svd_sqrt, axis=0))
color_correlation_normalized: np.ndarray = COLOR_CORRELATION_NORMALIZED.numpy().astype("float32")
color_mean = [0.48, 0.46, 0.41]


class ValidRGB(nn.Module):
    """``forward() = sigmoid(decorrelate(image_f()))``: unconstrained ``(B, 3, H, W)`` -> RGB in [0, 1].

    ``image_f`` is any callable returning a tensor; when it is an ``nn.Module`` it
    is registered here, so ``.to(device)`` moves it too.
    """

    def __init__(self, image_f: Callable[[], torch.Tensor], decorrelate: bool = False):
        super().__init__()
        self.image_f = image_f
        self.to_rgb = ToRGB(3, decorrelate, sigmoid=True)

    def forward(self) -> torch.Tensor:
        return self.to_rgb(self.image_f())


def to_valid_rgb(image_f: Callable[[], torch.Tensor], decorrelate: bool = False) -> ValidRGB:
    """Wrap ``image_f`` so that it returns valid RGB in [0, 1] (optionally colour-decorrelated first).

    >>> import torch
    >>> img = to_valid_rgb(lambda: torch.zeros(1, 3, 2, 2), decorrelate=True)()
    >>> img.unique().tolist()
    [0.5]
    """
    return ValidRGB(image_f, decorrelate)

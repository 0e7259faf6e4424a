"""Model-input preprocessing: ImageNet normalization and friends."""

from __future__ import annotations

from typing import Any, Callable

import torch

from devvis.errors import TransformError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def imagenet_normalize(x: torch.Tensor) -> torch.Tensor:
    """Normalize ``(B, 3, H, W)`` images in [0, 1] with ImageNet mean and std."""
    mean = torch.tensor(IMAGENET_MEAN, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean) / std


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def get_preprocess(spec: Any) -> Callable[[torch.Tensor], torch.Tensor]:
    """Resolve ``preprocess=``: ``"imagenet"`` (default), ``"none"``/``None``/``False`` or a callable."""
    if spec is None or spec is False or spec == "none":
        return _identity
    if spec is True or spec == "imagenet":
        return imagenet_normalize
    if callable(spec):
        return spec
    raise TransformError(f"unknown preprocess {spec!r}; valid: 'imagenet', 'none' or a callable")

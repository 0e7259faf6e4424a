"""Model-input preprocessing functions: ImageNet normalization.

Which preprocessing a model gets (``"auto"``, ``"imagenet"``, ``None``, a callable) is decided
in one place, :func:`devvis.render.pipeline.resolve_preprocess`.

>>> import torch
>>> round(imagenet_normalize(torch.full((1, 3, 1, 1), 0.485))[0, 0, 0, 0].item(), 6)
0.0
"""

from __future__ import annotations

import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def imagenet_normalize(x: torch.Tensor) -> torch.Tensor:
    """Normalize ``(B, 3, H, W)`` images in [0, 1] with ImageNet mean and std."""
    mean = torch.tensor(IMAGENET_MEAN, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean) / std

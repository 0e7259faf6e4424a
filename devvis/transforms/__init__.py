"""Robustness transforms applied to the image before the model, built on kornia.

Every transform is an ``nn.Module`` with ``forward(x, generator=None)``: ``x`` is
``(B, C, H, W)``; random choices are drawn from ``generator`` (a CPU
``torch.Generator`` owned by the render), so a seed reproduces a whole run and
every checkpoint of a series sees the same random stream.

The robustness stack is built in one place, :func:`standard` (:mod:`devvis.transforms.stack`):
Lucid's separate pad/jitter/scale/rotate/jitter modules, or the same geometry as one
:class:`Warp` (:mod:`devvis.transforms.warp`): one affine ``grid_sample`` straight to the model's
input size.

>>> import torch
>>> from devvis import transforms
>>> t = transforms.standard()
>>> t(torch.rand(1, 3, 64, 64), generator=torch.Generator().manual_seed(0)).shape[1]
3
"""

from devvis.transforms.core import (
    CollapseAlpha,
    Compose,
    Crop,
    GaussianBlur,
    Jitter,
    Noise,
    Normalize,
    Pad,
    RandomRotate,
    RandomScale,
    Resize,
    Transform,
    collapse_alpha,
    collapse_alpha_random,
    compose,
    composite,
    crop,
    gaussian_blur,
    jitter,
    noise,
    normalize,
    pad,
    random_rotate,
    random_scale,
    resize,
)
from devvis.transforms.stack import FUSED_DEFAULT, get, standard
from devvis.transforms.warp import Warp, WarpParams, sized
from devvis.transforms.preprocess import IMAGENET_MEAN, IMAGENET_STD, imagenet_normalize

__all__ = [
    "Transform", "Compose", "Pad", "Jitter", "RandomScale", "RandomRotate", "GaussianBlur", "Noise", "Crop",
    "Normalize", "Resize", "pad", "jitter", "random_scale", "random_rotate", "gaussian_blur", "noise", "crop",
    "normalize", "resize", "compose", "standard", "get", "IMAGENET_MEAN", "IMAGENET_STD", "imagenet_normalize",
    "CollapseAlpha", "collapse_alpha", "collapse_alpha_random", "composite", "Warp", "WarpParams", "sized",
    "FUSED_DEFAULT",
]

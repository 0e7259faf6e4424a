"""Lucent's ``transform`` module on devvis's transforms: same names, arguments and results.

Each factory returns a callable ``x -> x`` on ``(B, C, H, W)`` float tensors. They
are :class:`devvis.transforms.Transform` modules, so inside ``render_vis`` their
random choices come from the render's seeded generator; called on their own they
draw from torch's global random stream (which :func:`~devvis.compat.lucent.util.set_seed`
seeds). Nothing here fixes a device: tensors stay where they are.

Two Lucent bugs are fixed: ``random_scale`` padded a non-square image with the
row padding on the width and vice versa, and ran on the ``device`` chosen at
import time (as did ``jitter`` and ``random_rotate``).

>>> import torch
>>> from devvis.compat.lucent import transform
>>> f = transform.compose(transform.standard_transforms)
>>> f(torch.rand(1, 3, 32, 32)).shape[:2]
torch.Size([1, 3])
"""

from __future__ import annotations

import math
from typing import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F

from devvis.errors import TransformError
from devvis.transforms import IMAGENET_MEAN, IMAGENET_STD, Compose, Normalize, Pad, RandomRotate, Transform
from devvis.transforms.random import choice, uniform_int

__all__ = [
    "jitter", "pad", "random_scale", "random_rotate", "compose", "normalize", "preprocess_inceptionv1",
    "standard_transforms",
]

TensorFn = Callable[[torch.Tensor], torch.Tensor]


def shift(x: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """Move the content of ``x`` ``(..., H, W)`` right by ``dx`` and down by ``dy`` pixels, filling with zeros.

    The size is kept: what leaves the frame is dropped (an integer ``kornia.geometry.translate``).

    >>> shift(torch.arange(4.).view(1, 1, 2, 2), 1, 0)[0, 0].tolist()
    [[0.0, 0.0], [0.0, 2.0]]
    """
    if dx == 0 and dy == 0:
        return x
    h, w = x.shape[-2:]
    return F.pad(x, (dx, 0, dy, 0))[..., :h, :w]


class Jitter(Transform):
    """Lucent's jitter: shift by ``dx, dy`` drawn uniformly from ``0 .. d-1`` (zeros fill in); size kept."""

    def __init__(self, d: int):
        super().__init__()
        if not d > 1:
            raise TransformError(f"jitter parameter d must be more than 1, got {d!r}")
        self.d = int(d)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        dx = uniform_int(0, self.d - 1, generator)
        dy = uniform_int(0, self.d - 1, generator)
        return shift(x, dx, dy)

    def extra_repr(self) -> str:
        return f"d={self.d}"


def scaled_size(h: int, w: int, scale: float) -> tuple[tuple[int, int], tuple[int, int]]:
    """Lucent's arithmetic for ``random_scale``: ``((new_h, new_w), (pad_y, pad_x))``.

    ``new = ceil(scale * side)``; when shrinking, each side is padded by
    ``ceil((side - new) / 2)`` on both ends (so the result can be one pixel larger
    than the input); when enlarging, nothing is cropped.

    >>> scaled_size(10, 20, 0.9)
    ((9, 18), (1, 1))
    """
    nh, nw = math.ceil(scale * h), math.ceil(scale * w)
    return (nh, nw), (max(0, math.ceil((h - nh) / 2)), max(0, math.ceil((w - nw) / 2)))


class RandomScale(Transform):
    """Lucent's random_scale: bilinear resize (``align_corners=True``) by a factor drawn from ``scales``.

    Shrunk images are padded with zeros back to (about) their size; the row padding
    goes on the height and the column padding on the width (Lucent swapped them
    on non-square images).
    """

    def __init__(self, scales: Sequence[float]):
        super().__init__()
        self.scales = [float(s) for s in scales]
        if not self.scales or min(self.scales) <= 0:
            raise TransformError(f"scales must be a non-empty list of positive numbers, got {list(scales)!r}")

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        scale = choice(self.scales, generator)
        h, w = x.shape[-2:]
        (nh, nw), (pad_y, pad_x) = scaled_size(h, w, scale)
        if (nh, nw) != (h, w):
            x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=True)
        if pad_x or pad_y:
            x = F.pad(x, (pad_x, pad_x, pad_y, pad_y))
        return x

    def extra_repr(self) -> str:
        return f"scales={self.scales}"


def jitter(d: int) -> Jitter:
    """Shift the image by up to ``d - 1`` pixels right and down (zeros fill in); ``d`` must be > 1.

    >>> jitter(4)(torch.ones(1, 3, 8, 8)).shape
    torch.Size([1, 3, 8, 8])
    """
    return Jitter(d)


def pad(w: int, mode: str = "reflect", constant_value: float = 0.5) -> Pad:
    """Pad ``w`` pixels on every side: ``(B, C, H, W) -> (B, C, H + 2w, W + 2w)``.

    ``mode`` is ``"reflect"`` (Lucent's default), ``"constant"`` (with
    ``constant_value``) or ``"replicate"``.

    >>> pad(1, mode="constant", constant_value=0.5)(torch.zeros(1, 1, 1, 1))[0, 0].tolist()
    [[0.5, 0.5, 0.5], [0.5, 0.0, 0.5], [0.5, 0.5, 0.5]]
    """
    return Pad(w, mode, constant_value if mode == "constant" else 0.0)


def random_scale(scales: Sequence[float]) -> RandomScale:
    """Resize by a factor drawn from ``scales`` (see :class:`RandomScale`).

    >>> random_scale([2.0])(torch.ones(1, 3, 4, 6)).shape
    torch.Size([1, 3, 8, 12])
    """
    return RandomScale(scales)


def _to_degrees(angle: float, units: str) -> float:
    u = units.lower()
    if u == "degrees":
        return float(angle)
    if u in ("radians", "rads", "rad"):
        return float(angle) * 180.0 / math.pi
    raise TransformError(f"angle units {units!r} are not valid; choose 'degrees' or 'radians'")


class LucentRotate(RandomRotate):
    """devvis's rotation; integer images are rotated as floats (Lucent's ``.float()``), the result is float."""

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if not x.is_floating_point():
            x = x.to(torch.get_default_dtype())
        return super().forward(x, generator)


def random_rotate(angles: Sequence[float], units: str = "degrees") -> LucentRotate:
    """Rotate counter-clockwise about the image centre by an angle drawn from ``angles``; size kept, zeros fill in.

    ``units``: ``"degrees"`` or ``"radians"`` (``"rads"``, ``"rad"``). Repeated
    entries weight the draw, as in Lucent (``standard_transforms`` lists 0 six times).
    Integer tensors are accepted and come back as floats, as in Lucent.

    >>> random_rotate([180])(torch.arange(6.).view(1, 1, 2, 3))[0, 0].round().tolist()
    [[5.0, 4.0, 3.0], [2.0, 1.0, 0.0]]
    >>> random_rotate([90])(torch.tensor([[[[0, 1], [0, 1]]]])).dtype
    torch.float32
    """
    return LucentRotate([_to_degrees(a, units) for a in angles])


def compose(transforms: Iterable[TensorFn]) -> Compose:
    """Apply ``transforms`` in order: one callable ``x -> x``."""
    return Compose(transforms)


def normalize() -> Normalize:
    """ImageNet normalization of images in [0, 1] (what torchvision's pretrained models expect)."""
    return Normalize(IMAGENET_MEAN, IMAGENET_STD)


def preprocess_inceptionv1() -> TensorFn:
    """Map [0, 1] to Lucid's InceptionV1 input range [-117, 138]: ``x * 255 - 117``.

    >>> preprocess_inceptionv1()(torch.tensor([0.0, 1.0])).tolist()
    [-117.0, 138.0]
    """
    def inceptionv1_range(x: torch.Tensor) -> torch.Tensor:
        return x * 255 - 117

    return inceptionv1_range


#: Lucent's default stack: pad 12 (constant 0.5), jitter 8, scale 0.90..1.10, rotate -10..10 degrees, jitter 4.
standard_transforms: list[TensorFn] = [
    pad(12, mode="constant", constant_value=0.5),
    jitter(8),
    random_scale([1 + (i - 5) / 50.0 for i in range(11)]),
    random_rotate(list(range(-10, 11)) + 5 * [0]),
    jitter(4),
]

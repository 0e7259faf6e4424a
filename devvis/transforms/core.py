"""The transform modules. See :mod:`devvis.transforms` for the contract."""

from __future__ import annotations

import math
from typing import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from devvis.errors import TransformError
from devvis.transforms.random import choice, uniform_int


class Transform(nn.Module):
    """Base class: ``forward(x, generator=None) -> x'`` on ``(B, C, H, W)`` tensors."""

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


class Compose(Transform):
    """Apply transforms in order, passing the same generator along."""

    def __init__(self, transforms: Iterable[Callable[..., torch.Tensor]]):
        super().__init__()
        items = list(transforms)
        self.items = nn.ModuleList([t for t in items if isinstance(t, nn.Module)])
        self._all = items

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        for t in self._all:
            x = t(x, generator=generator) if isinstance(t, Transform) else t(x)
        return x

    def __len__(self) -> int:
        return len(self._all)

    @property
    def steps(self) -> list[Callable[..., torch.Tensor]]:
        """The transforms in order (modules and plain callables)."""
        return list(self._all)


class Pad(Transform):
    """Pad ``w`` pixels on every side; ``mode`` ``constant`` (with ``value``), ``reflect`` or ``replicate``.

    >>> Pad(1, value=0.5)(torch.zeros(1, 1, 2, 3))[0, 0]
    tensor([[0.5000, 0.5000, 0.5000, 0.5000, 0.5000],
            [0.5000, 0.0000, 0.0000, 0.0000, 0.5000],
            [0.5000, 0.0000, 0.0000, 0.0000, 0.5000],
            [0.5000, 0.5000, 0.5000, 0.5000, 0.5000]])
    """

    def __init__(self, w: int, mode: str = "constant", value: float = 0.5):
        super().__init__()
        if w < 0:
            raise TransformError(f"pad width must be >= 0, got {w}")
        if mode not in ("constant", "reflect", "replicate"):
            raise TransformError(f"pad mode {mode!r} is not valid; choose constant, reflect or replicate")
        self.w, self.mode, self.value = int(w), mode, float(value)

    def forward(self, x, generator=None):
        if self.w == 0:
            return x
        if self.mode == "constant":
            return F.pad(x, (self.w,) * 4, mode="constant", value=self.value)
        return F.pad(x, (self.w,) * 4, mode=self.mode)

    def extra_repr(self) -> str:
        return f"w={self.w}, mode={self.mode!r}, value={self.value}"


class Jitter(Transform):
    """Random crop of size ``(H - d, W - d)``: shifts the image by up to ``d`` pixels (Lucid's jitter)."""

    def __init__(self, d: int):
        super().__init__()
        if d < 0:
            raise TransformError(f"jitter must be >= 0 pixels, got {d}")
        self.d = int(d)

    def forward(self, x, generator=None):
        if self.d == 0:
            return x
        h, w = x.shape[-2:]
        if self.d >= min(h, w):
            raise TransformError(f"jitter {self.d} is too large for a {h}x{w} image (must be < {min(h, w)})")
        dy = uniform_int(0, self.d, generator)
        dx = uniform_int(0, self.d, generator)
        return x[..., dy:dy + h - self.d, dx:dx + w - self.d]

    def extra_repr(self) -> str:
        return f"d={self.d}"


class RandomScale(Transform):
    """Resize by a factor drawn from ``scales`` (a list, or a ``(min, max)`` range when ``continuous``)."""

    def __init__(self, scales: Sequence[float], continuous: bool = False):
        super().__init__()
        scales = [float(s) for s in scales]
        if not scales or min(scales) <= 0:
            raise TransformError(f"scales must be positive numbers, got {scales}")
        if continuous and len(scales) != 2:
            raise TransformError(f"a continuous scale range needs (min, max), got {scales}")
        self.scales, self.continuous = scales, continuous

    def forward(self, x, generator=None):
        if self.continuous:
            lo, hi = self.scales
            s = lo + (hi - lo) * float(torch.rand((), generator=generator))
        else:
            s = choice(self.scales, generator)
        if s == 1.0:
            return x
        h, w = x.shape[-2:]
        size = (max(1, round(h * s)), max(1, round(w * s)))
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)

    def extra_repr(self) -> str:
        return f"scales={self.scales}"


class RandomRotate(Transform):
    """Rotate about the centre by an angle in degrees drawn from ``angles`` (counter-clockwise)."""

    def __init__(self, angles: Sequence[float], padding_mode: str = "zeros"):
        super().__init__()
        self.angles = [float(a) for a in angles]
        if not self.angles:
            raise TransformError("random_rotate needs at least one angle")
        self.padding_mode = padding_mode

    def forward(self, x, generator=None):
        a = choice(self.angles, generator)
        if a == 0.0:
            return x
        h, w = x.shape[-2:]
        if h < 2 or w < 2:
            import kornia

            angle = torch.full((x.shape[0],), a, device=x.device, dtype=x.dtype)
            return kornia.geometry.transform.rotate(x, angle, padding_mode=self.padding_mode)
        # The warp of kornia.geometry.transform.rotate (about the centre, bilinear,
        # align_corners=True; equal up to float32 rounding, <3e-5 on [0, 1] images), built
        # directly: kornia assembles and inverts 3x3 matrices in many small ops, ~1 ms a step.
        # Pixel rotation R about the centre is N R N^-1 in normalized coordinates
        # (N = diag(2/(w-1), 2/(h-1))); the sampling grid needs its inverse.
        t = math.radians(a)
        c, s = math.cos(t), math.sin(t)
        sx, sy = (w - 1) / 2, (h - 1) / 2
        theta = torch.tensor([[c, -s * sy / sx, 0.0], [s * sx / sy, c, 0.0]], dtype=x.dtype, device=x.device)
        grid = F.affine_grid(theta.expand(x.shape[0], 2, 3), [x.shape[0], x.shape[1], h, w], align_corners=True)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode=self.padding_mode, align_corners=True)

    def extra_repr(self) -> str:
        return f"angles=[{self.angles[0]:g}..{self.angles[-1]:g}] ({len(self.angles)})"


class GaussianBlur(Transform):
    """Gaussian blur with ``sigma`` (a number, or a ``(min, max)`` range sampled each call)."""

    def __init__(self, sigma: float | tuple[float, float] = 1.0, kernel_size: int | None = None):
        super().__init__()
        self.sigma = sigma
        smax = sigma[1] if isinstance(sigma, tuple) else sigma
        if smax <= 0:
            raise TransformError(f"blur sigma must be > 0, got {sigma}")
        self.kernel_size = kernel_size or 2 * int(3 * smax + 0.5) + 1

    def forward(self, x, generator=None):
        import kornia

        if isinstance(self.sigma, tuple):
            lo, hi = self.sigma
            s = lo + (hi - lo) * float(torch.rand((), generator=generator))
        else:
            s = float(self.sigma)
        k = self.kernel_size
        return kornia.filters.gaussian_blur2d(x, (k, k), (s, s), border_type="reflect")


class Noise(Transform):
    """Add Gaussian noise of standard deviation ``std``."""

    def __init__(self, std: float):
        super().__init__()
        if std < 0:
            raise TransformError(f"noise std must be >= 0, got {std}")
        self.std = float(std)

    def forward(self, x, generator=None):
        n = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
        return x + self.std * n


class Crop(Transform):
    """Random crop to ``size`` (int or ``(h, w)``)."""

    def __init__(self, size: int | tuple[int, int]):
        super().__init__()
        self.size = (size, size) if isinstance(size, int) else tuple(size)

    def forward(self, x, generator=None):
        h, w = x.shape[-2:]
        ch, cw = self.size
        if ch > h or cw > w:
            raise TransformError(f"crop {ch}x{cw} is larger than the {h}x{w} image")
        y0 = uniform_int(0, h - ch, generator)
        x0 = uniform_int(0, w - cw, generator)
        return x[..., y0:y0 + ch, x0:x0 + cw]


class Resize(Transform):
    """Deterministic bilinear resize to ``size`` (int or ``(h, w)``); used for the model's input size."""

    def __init__(self, size: int | tuple[int, int]):
        super().__init__()
        self.size = (size, size) if isinstance(size, int) else tuple(size)

    def forward(self, x, generator=None):
        if tuple(x.shape[-2:]) == self.size:
            return x
        return F.interpolate(x, size=self.size, mode="bilinear", align_corners=False)


class Normalize(Transform):
    """``(x - mean) / std`` per channel."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def forward(self, x, generator=None):
        return (x - self.mean.to(x.device, x.dtype)) / self.std.to(x.device, x.dtype)


# ---- transparent (RGBA) images --------------------------------------------------------------
# Lucid's transparency recipe: the parameterization has a fourth, opacity channel
# (``param.image(..., alpha=True)``); each step the image is composited over a *random*
# background, so the model only sees what the opaque pixels show and the optimization learns to
# make opaque only what drives the unit. For a fixed view (evaluation, the final value) the
# background is a constant grey (``composite``).
#: The background of the deterministic view of a transparent image (evaluation, final value).
GREY = 0.5


def composite(images: torch.Tensor, background: float | torch.Tensor = GREY) -> torch.Tensor:
    """``(B, 4, H, W)`` RGBA in [0, 1] over ``background`` -> ``(B, 3, H, W)``: ``a * rgb + (1 - a) * bg``.

    ``background``: a number (grey level) or a tensor broadcastable to ``(B, 3, H, W)``. Images
    that are not RGBA (any channel count but 4) come back unchanged.
    """
    if images.shape[1] != 4:
        return images
    rgb, a = images[:, :3], images[:, 3:4]
    return a * rgb + (1 - a) * background


class CollapseAlpha(Transform):
    """Composite RGBA images over a background: a constant grey, or a new random one each call.

    ``background="random"``: each image gets a uniformly random colour plus per-pixel Gaussian
    noise of standard deviation ``sd``, clipped to [0, 1] (drawn from the render's generator), so
    transparent pixels cannot contribute anything reliable. A number: that constant grey.
    3-channel images pass through unchanged.
    """

    def __init__(self, background: str | float = "random", sd: float = 0.5):
        super().__init__()
        if background != "random" and not isinstance(background, (int, float)):
            raise TransformError(f"alpha background must be 'random' or a grey level in [0, 1], got {background!r}")
        if sd < 0:
            raise TransformError(f"alpha background noise sd must be >= 0, got {sd!r}")
        self.background = background
        self.sd = float(sd)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if x.shape[1] != 4:
            return x
        if self.background != "random":
            return composite(x, float(self.background))
        b, _, h, w = x.shape
        colour = torch.rand((b, 3, 1, 1), generator=generator)
        noise = torch.randn((b, 3, h, w), generator=generator) * self.sd
        bg = (colour + noise).clamp(0, 1).to(x.device, x.dtype)
        return composite(x, bg)

    def extra_repr(self) -> str:
        return f"background={self.background!r}" + (f", sd={self.sd:g}" if self.background == "random" else "")


def collapse_alpha_random(sd: float = 0.5) -> CollapseAlpha:
    """RGBA -> RGB over a new random background each step (Lucid's ``collapse_alpha_random``)."""
    return CollapseAlpha("random", sd)


def collapse_alpha(background: float = GREY) -> CollapseAlpha:
    """RGBA -> RGB over a constant grey ``background``.

    >>> rgba = torch.cat([torch.ones(1, 3, 2, 2), torch.tensor([[[[1.0, 0.0], [0.5, 1.0]]]])], dim=1)
    >>> collapse_alpha(0.0)(rgba)[0, 0].tolist()
    [[1.0, 0.0], [0.5, 1.0]]
    """
    return CollapseAlpha(float(background))


# Lowercase factories (Lucid/Lucent style).
def pad(w: int, *, mode: str = "constant", value: float = 0.5) -> Pad:
    """See :class:`Pad`."""
    return Pad(w, mode, value)


def jitter(d: int) -> Jitter:
    """See :class:`Jitter`."""
    return Jitter(d)


def random_scale(scales: Sequence[float], *, continuous: bool = False) -> RandomScale:
    """See :class:`RandomScale`."""
    return RandomScale(scales, continuous)


def random_rotate(angles: Sequence[float], *, padding_mode: str = "zeros") -> RandomRotate:
    """See :class:`RandomRotate`."""
    return RandomRotate(angles, padding_mode)


def gaussian_blur(sigma: float | tuple[float, float] = 1.0, *, kernel_size: int | None = None) -> GaussianBlur:
    """See :class:`GaussianBlur`."""
    return GaussianBlur(sigma, kernel_size)


def noise(std: float) -> Noise:
    """See :class:`Noise`."""
    return Noise(std)


def crop(size: int | tuple[int, int]) -> Crop:
    """See :class:`Crop`."""
    return Crop(size)


def resize(size: int | tuple[int, int]) -> Resize:
    """See :class:`Resize`."""
    return Resize(size)


def normalize(mean: Sequence[float], std: Sequence[float]) -> Normalize:
    """See :class:`Normalize`."""
    return Normalize(mean, std)


def compose(transforms: Iterable[Callable[..., torch.Tensor]]) -> Compose:
    """See :class:`Compose`."""
    return Compose(transforms)

"""Lucid's geometric stack as one warp: pad, jitter, scale, rotate, jitter and resize in one ``grid_sample``.

The standard stack (:func:`devvis.transforms.standard`) moves the image through five resamplings
(pad, crop, bilinear scale, bilinear rotation, crop) and the model-input pipeline adds a sixth
(the bilinear resize to the model's input size). Every one of them is an affine map of pixel
coordinates, so their composition is one affine map: :class:`Warp` draws the same random
parameters, from the same generator and in the same order, as the separate transforms, composes
the maps into one ``2 x 3`` matrix and samples the image once, straight at the output size.
One bilinear interpolation instead of three means less blur, and one small op instead of many
means less time.

Coordinates: continuous pixel coordinates, pixel ``k`` covering ``[k, k + 1]``
(``align_corners=False``). For an input ``H x W`` with pad ``p``, first jitter ``d1``, scale ``s``,
angle ``a`` and second jitter ``d2``, the scaled image is ``S = s * (W + 2p - d1)`` wide; the output
window, ``S - d2`` wide at offset ``c2``, is stretched over the output's ``W_out`` pixels. Points
outside the image take the pad's constant ``fill`` (also in the corners a rotation uncovers, where
the separate :class:`~devvis.transforms.RandomRotate` leaves zeros).

>>> import torch
>>> w = Warp(pad_px=0, jitter_px=0, scales=[1.0], angles=[0.0], jitter2_px=0)
>>> x = torch.rand(1, 3, 8, 8)
>>> bool(torch.allclose(w(x), x, atol=1e-6))
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from devvis.errors import TransformError
from devvis.transforms.core import Compose, Transform
from devvis.transforms.random import choice, uniform_int


@dataclass(frozen=True)
class WarpParams:
    """One draw of the warp: jitter offsets ``(dy1, dx1)``, scale ``s``, angle in degrees, ``(dy2, dx2)``."""

    dy1: int = 0
    dx1: int = 0
    scale: float = 1.0
    angle: float = 0.0
    dy2: int = 0
    dx2: int = 0


class Warp(Transform):
    """pad ``pad_px`` (constant ``fill``), jitter ``jitter_px``, scale from ``scales``, rotate by one of
    ``angles`` (degrees, counter-clockwise), jitter ``jitter2_px``, then resize to ``size``: one warp.

    The random parameters are drawn like the separate transforms' (a part that is off draws
    nothing): the same generator state gives the same offsets, scale and angle as
    ``compose([pad, jitter, random_scale, random_rotate, jitter])``. One draw per call, shared by
    the batch (as in the separate stack). ``size``: the output ``(h, w)``, normally the model's
    input size (:func:`sized` sets it); ``None``: the size the separate stack gives,
    ``round(s * (H + 2 pad - jitter)) - jitter2`` at the drawn scale ``s``.

    At a fixed ``size`` the random scale almost cancels, here as in the separate stack followed by
    the resize to the model's input size (and in Lucent's ``render_vis`` with its 224-px
    upsample): the scaled window is stretched back over the same output, so only the second
    jitter's share of it changes (content scale within ~0.6% over 0.9–1.1).

    Shape: ``(B, C, H, W)`` -> ``(B, C, h, w)``; differentiable in the image.

    >>> import torch
    >>> w = Warp(size=(32, 32))
    >>> tuple(w(torch.rand(2, 3, 20, 24), generator=torch.Generator().manual_seed(0)).shape)
    (2, 3, 32, 32)
    """

    def __init__(self, pad_px: int = 12, jitter_px: int = 8, scales: Sequence[float] = (1.0,),
                 angles: Sequence[float] = (0.0,), jitter2_px: int = 0, fill: float = 0.5,
                 size: int | tuple[int, int] | None = None):
        super().__init__()
        for name, v in (("pad", pad_px), ("jitter", jitter_px), ("second jitter", jitter2_px)):
            if int(v) != v or v < 0:
                raise TransformError(f"{name} must be a whole number of pixels >= 0, got {v!r}")
        self.scales = [float(s) for s in scales]
        self.angles = [float(a) for a in angles]
        if not self.scales or min(self.scales) <= 0:
            raise TransformError(f"scales must be positive numbers, got {self.scales}")
        if not self.angles:
            raise TransformError("the warp needs at least one angle (0 for none)")
        self.pad_px, self.jitter_px, self.jitter2_px = int(pad_px), int(jitter_px), int(jitter2_px)
        self.fill = float(fill)
        self.size = None if size is None else ((size, size) if isinstance(size, int) else tuple(int(v) for v in size))

    # -- the random draw -----------------------------------------------------------------------
    def draw(self, generator: torch.Generator | None = None) -> WarpParams:
        """The random parameters, drawn in the order of the separate stack (jitter, scale, rotate, jitter)."""
        dy1 = dx1 = dy2 = dx2 = 0
        if self.jitter_px:
            dy1, dx1 = uniform_int(0, self.jitter_px, generator), uniform_int(0, self.jitter_px, generator)
        s = choice(self.scales, generator) if self.scales != [1.0] else 1.0
        a = choice(self.angles, generator) if self.angles != [0.0] else 0.0
        if self.jitter2_px:
            dy2, dx2 = uniform_int(0, self.jitter2_px, generator), uniform_int(0, self.jitter2_px, generator)
        return WarpParams(dy1, dx1, s, a, dy2, dx2)

    # -- the geometry --------------------------------------------------------------------------
    def nominal_size(self, h: int, w: int, scale: float = 1.0) -> tuple[int, int]:
        """The output size without ``size``: what the separate stack gives at ``scale``."""
        base_h, base_w = h + 2 * self.pad_px - self.jitter_px, w + 2 * self.pad_px - self.jitter_px
        return (max(1, round(base_h * scale)) - self.jitter2_px, max(1, round(base_w * scale)) - self.jitter2_px)

    def output_size(self, h: int, w: int, p: WarpParams | None = None) -> tuple[int, int]:
        """``size`` if set, else :meth:`nominal_size` at the drawn scale (``p``; 1 without)."""
        if self.size is not None:
            return self.size
        return self.nominal_size(h, w, p.scale if p is not None else 1.0)

    def matrix(self, p: WarpParams, in_hw: tuple[int, int]) -> tuple[tuple[float, float, float], ...]:
        """The ``2 x 3`` map from the output's normalized coordinates to the input's (``F.affine_grid``
        convention, ``align_corners=False``), as Python floats: composed in plain float64 arithmetic,
        the four small matrices cost less than building them as tensors (~0.1 ms a step)."""
        h, w = in_hw
        base_h, base_w = h + 2 * self.pad_px - self.jitter_px, w + 2 * self.pad_px - self.jitter_px
        sh, sw = p.scale * base_h, p.scale * base_w  # the scaled image
        mh, mw = sh - self.jitter2_px, sw - self.jitter2_px  # the output window in it
        if min(mh, mw) <= 0 or min(base_h, base_w) <= 0:
            raise TransformError(f"pad {self.pad_px}, jitter {self.jitter_px} and {self.jitter2_px} leave nothing "
                                 f"of a {h}x{w} image")
        # normalized output o in [-1, 1] -> v: the point relative to the scaled image's centre
        out_to_v = ((mw / 2, 0.0, mw / 2 + p.dx2 - sw / 2), (0.0, mh / 2, mh / 2 + p.dy2 - sh / 2))
        t = math.radians(p.angle)
        c, s = math.cos(t), math.sin(t)
        rot = ((c, -s, 0.0), (s, c, 0.0))
        # back through the scale (about the first crop's origin), the first crop and the pad
        unscale = ((1 / p.scale, 0.0, base_w / 2 + p.dx1 - self.pad_px),
                   (0.0, 1 / p.scale, base_h / 2 + p.dy1 - self.pad_px))
        to_norm = ((2 / w, 0.0, -1.0), (0.0, 2 / h, -1.0))
        return _then(to_norm, _then(unscale, _then(rot, out_to_v)))

    def theta(self, p: WarpParams, in_hw: tuple[int, int]) -> torch.Tensor:
        """:meth:`matrix` as a ``(2, 3)`` float64 tensor."""
        return torch.tensor(self.matrix(p, in_hw), dtype=torch.float64)

    def apply(self, x: torch.Tensor, p: WarpParams) -> torch.Tensor:
        """Warp ``x`` ``(B, C, H, W)`` with the parameters ``p``."""
        b, _, h, w = x.shape
        dtype = x.dtype if x.is_floating_point() else torch.float32
        grid = affine_grid(self.matrix(p, (h, w)), self.output_size(h, w, p), dtype=dtype, device=x.device)
        # the constant fill: sample x - fill with zeros outside, add fill back (exactly a constant pad)
        shifted = x - self.fill if self.fill else x
        out = F.grid_sample(shifted, grid.expand(b, -1, -1, -1).contiguous() if b > 1 else grid,
                            mode="bilinear", padding_mode="zeros", align_corners=False)
        return out + self.fill if self.fill else out

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.apply(x, self.draw(generator))

    def at_size(self, size: int | tuple[int, int] | None) -> "Warp":
        """A copy whose output is ``size`` (the model's input size); ``None``: this warp itself."""
        if size is None:
            return self
        return Warp(self.pad_px, self.jitter_px, self.scales, self.angles, self.jitter2_px, self.fill, size)

    def extra_repr(self) -> str:
        sc = f"{self.scales[0]:g}..{self.scales[-1]:g}"
        an = f"{self.angles[0]:g}..{self.angles[-1]:g}"
        return (f"pad={self.pad_px}, jitter={self.jitter_px}, scales=[{sc}] ({len(self.scales)}), angles=[{an}] "
                f"({len(self.angles)}), jitter2={self.jitter2_px}, fill={self.fill:g}, size={self.size}")


def _then(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]]) -> tuple[tuple[float, float, float], ...]:
    """``a @ b`` of two affine maps given as their top ``2 x 3`` rows (the third row ``0 0 1``)."""
    return tuple((r[0] * b[0][0] + r[1] * b[1][0], r[0] * b[0][1] + r[1] * b[1][1],
                  r[0] * b[0][2] + r[1] * b[1][2] + r[2]) for r in a)  # type: ignore[return-value]


def affine_grid(theta: torch.Tensor | Sequence[Sequence[float]], size: tuple[int, int], *, dtype: torch.dtype = torch.float32,
                device: torch.device | str | None = None) -> torch.Tensor:
    """``F.affine_grid(theta[None], (1, C, h, w), align_corners=False)`` for one ``(2, 3)`` ``theta`` (a tensor or
    nested floats): ``(1, h, w, 2)``.

    Built from two broadcast sums: ``F.affine_grid`` multiplies a ``(h*w, 3)`` base grid through a
    ``bmm`` that takes ~2 ms for 224 x 224 on one CPU thread, longer than the sampling itself.

    >>> t = torch.tensor([[0.5, 0.1, 0.2], [-0.1, 0.9, 0.0]])
    >>> bool(torch.allclose(affine_grid(t, (5, 7)), F.affine_grid(t[None], [1, 1, 5, 7], align_corners=False)))
    True
    """
    h, w = size
    th = theta.to(torch.float64).tolist() if isinstance(theta, torch.Tensor) else theta
    dev = torch.device(device) if device is not None else torch.device("cpu")
    # built where it is used (no host-to-device copy on a GPU); float64 on the CPU, where it is cheap
    work = torch.float64 if dev.type == "cpu" else torch.float32
    xs = (torch.arange(w, dtype=work, device=dev) * 2 + 1) / w - 1  # pixel centres, align_corners=False
    ys = (torch.arange(h, dtype=work, device=dev) * 2 + 1) / h - 1
    grid = torch.empty(1, h, w, 2, dtype=work, device=dev)
    torch.add((th[0][0] * xs)[None, :], (th[0][1] * ys + th[0][2])[:, None], out=grid[0, :, :, 0])
    torch.add((th[1][0] * xs)[None, :], (th[1][1] * ys + th[1][2])[:, None], out=grid[0, :, :, 1])
    return grid.to(dtype=dtype)


def sized(transforms: Transform, size: int | tuple[int, int] | None) -> Transform:
    """``transforms`` with its :class:`Warp` (alone, or the last step of a :class:`Compose`) set to output
    ``size``: the warp then does the resize to the model's input size itself, in the same interpolation.

    Anything else comes back unchanged (and the model-input pipeline resizes after it).

    >>> sized(Warp(), 224).size, sized(Compose([]), 224).__class__.__name__
    ((224, 224), 'Compose')
    """
    if size is None:
        return transforms
    if isinstance(transforms, Warp):
        return transforms.at_size(size)
    if isinstance(transforms, Compose):
        items = transforms.steps
        warps = [i for i, t in enumerate(items) if isinstance(t, Warp)]
        if warps and warps[-1] == len(items) - 1:
            items[-1] = items[-1].at_size(size)
            return Compose(items)
    return transforms

"""The robustness stack: :func:`standard` builds it (the one place), :func:`get` resolves ``transforms=``.

Two forms of Lucid's standard stack (pad 12, jitter 8, scale 0.90–1.10, rotate ±10°, jitter 4):

- *fused* (the default, :data:`FUSED_DEFAULT`): one :class:`~devvis.transforms.warp.Warp`, a single
  affine ``grid_sample`` that the model-input pipeline points straight at the model's input size
  (so the resize to it is part of the same interpolation);
- *separate* (``standard(fused=False)``, ``transforms="standard-separate"``): five modules, pad → jitter → bilinear scale → bilinear rotation → jitter, then the
  pipeline's bilinear resize; the exact Lucid/Lucent sequence of resamplings.

Both draw the same random parameters from the same generator (same offsets, scale and angle for
a seed). What differs: one interpolation instead of three (less blur), the corners a rotation
uncovers show the pad's grey instead of black, and the scale is the drawn factor exactly (the
separate stack rounds the scaled size to whole pixels). The default was decided by measurement
(``benchmarks/RESULTS.md``, 2026-12-02): the objective reached at equal steps is the same or
better (median over 5 seeds 0.871 fused, 0.858 separate, 0.735 Lucent), and the transforms cost
0.66x (batch 1) and 0.58x (batch 16) of the separate stack's time.

>>> import torch
>>> t = standard(fused=True)
>>> len(t), type(t.steps[0]).__name__, len(standard(fused=False))
(1, 'Warp', 5)
>>> t(torch.rand(1, 3, 64, 64), generator=torch.Generator().manual_seed(0)).shape[1]
3
"""

from __future__ import annotations

from devvis.errors import TransformError
from devvis.transforms.core import (
    CollapseAlpha,
    Compose,
    GaussianBlur,
    Jitter,
    Pad,
    RandomRotate,
    RandomScale,
    Transform,
)
from devvis.transforms.warp import Warp
from devvis.typing import TransformsLike

#: Whether :func:`standard` builds the fused warp unless told otherwise (see the module doc).
FUSED_DEFAULT = True

#: The names ``transforms=`` accepts (besides ``None``, a list or a callable).
NAMES = ("standard", "standard-fused", "standard-separate", "none")


def standard(*, pad_px: int = 12, jitter_px: int = 8, scale: tuple[float, float] = (0.9, 1.1),
             degrees: float = 10.0, blur: float = 0.0, alpha: bool = False,
             fused: bool | None = None) -> Compose:
    """Lucid's standard stack, and its variants: the one place the robustness stack is built.

    Defaults: pad 12 (constant 0.5), jitter 8, scale 0.90–1.10 (11 steps), rotate ±10° (1°
    steps), jitter 4. A part whose setting is 0 (or a scale range of ``(1, 1)``) is left out; the
    second jitter is half the first (at least 1); ``blur`` > 0 adds a Gaussian blur of that
    sigma. ``alpha=True`` (for transparent images, ``param.image(..., alpha=True)``) puts
    :func:`~devvis.transforms.collapse_alpha_random` first: RGBA is composited over a new random
    background each step, then the usual stack runs on RGB. ``devvis visualize``'s flags
    (``--pad``, ``--jitter``, ``--scale-range``, ``--rotate-degrees``, ``--blur``, ``--alpha``)
    map onto these arguments.

    ``fused`` (``None``: :data:`FUSED_DEFAULT`): the geometric parts as one
    :class:`~devvis.transforms.warp.Warp` (one interpolation, straight to the model's input size
    inside :class:`~devvis.render.pipeline.ModelInput`; a blur then runs first, on the image,
    where it commutes with the shifts and rotation); ``False``: Lucid's separate modules, blur last.

    >>> len(standard(fused=False)), len(standard(jitter_px=0, degrees=0, scale=(1.0, 1.0), pad_px=0))
    (5, 0)
    """
    fused = FUSED_DEFAULT if fused is None else bool(fused)
    lo, hi = scale
    scales = [lo + (hi - lo) * i / 10 for i in range(11)] if (lo, hi) != (1.0, 1.0) else []
    r = int(round(degrees)) if degrees else 0
    angles = [float(a) for a in range(-r, r + 1)] if r else []
    jitter2 = max(1, jitter_px // 2) if jitter_px else 0
    parts: list[Transform] = []
    if alpha:
        parts.append(CollapseAlpha("random"))
    if fused:
        if blur:
            parts.append(GaussianBlur(blur))
        if pad_px or jitter_px or scales or angles:
            parts.append(Warp(pad_px, jitter_px, scales or [1.0], angles or [0.0], jitter2, fill=0.5))
        return Compose(parts)
    if pad_px:
        parts.append(Pad(pad_px, "constant", 0.5))
    if jitter_px:
        parts.append(Jitter(jitter_px))
    if scales:
        parts.append(RandomScale(scales))
    if angles:
        parts.append(RandomRotate(angles))
    if jitter_px:
        parts.append(Jitter(jitter2))
    if blur:
        parts.append(GaussianBlur(blur))
    return Compose(parts)


def get(spec: TransformsLike) -> Transform:
    """Resolve a ``transforms=`` argument: ``"standard"`` (:func:`standard` with its default form),
    ``"standard-fused"``, ``"standard-separate"``, ``"none"``/``None``, a list, or a callable.

    >>> import torch
    >>> get(None)(torch.ones(1, 3, 2, 2)).shape
    torch.Size([1, 3, 2, 2])
    >>> len(get("standard-separate")), len(get("standard-fused"))
    (5, 1)
    """
    if spec is None or spec == "none" or (isinstance(spec, (list, tuple)) and len(spec) == 0):
        return Compose([])
    if isinstance(spec, str):
        if spec in ("standard", "standard-fused", "standard-separate"):
            return standard(fused=None if spec == "standard" else spec == "standard-fused")
        raise TransformError(f"unknown transforms {spec!r}; valid: {', '.join(map(repr, NAMES))}, a list of "
                             "transforms or a callable")
    if isinstance(spec, Transform):
        return spec
    if isinstance(spec, (list, tuple)):
        return Compose(spec)
    if callable(spec):
        return Compose([spec])
    raise TransformError(f"cannot use {type(spec).__name__} as transforms; valid: {', '.join(map(repr, NAMES))}, "
                         "a list or a callable")


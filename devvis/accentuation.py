"""Feature accentuation (Hamblin et al. 2024): what a unit responds to *in a given natural image*.

A feature visualization starts from noise and shows what a unit likes in general. Feature
accentuation starts from a seed image (:func:`devvis.param.from_image`) and raises the
unit's activation while a closeness term (:func:`devvis.objectives.closeness`) keeps the
image near its seed: in pixels (``closeness_layer="input"``) or, as in the paper, in the
model's own activations at an earlier layer. The changes show which parts of *this* image
the unit reads and what it would like them to be.

>>> import torch
>>> from torch import nn
>>> model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
>>> seed = torch.rand(1, 3, 24, 24)
>>> result = accentuate(model, "0:1", seed, steps=4, transforms=None, preprocess=None)
>>> tuple(result.images.shape), result.config["accentuation"]["closeness_layer"]
((1, 3, 24, 24), 'input')
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from devvis import objectives
from devvis.errors import ConfigError
from devvis.param import from_image
from devvis.render import RenderResult, render
from devvis.state import as_device, model_device
from devvis.trust.record import batched, recorded
from devvis.typing import DeviceLike, ImageBatch, ObjectiveLike, PathLike, PreprocessLike, TransformsLike

__all__ = ["accentuate", "seeded", "load_seed_image", "DEFAULT_CLOSENESS"]

#: Weight of the closeness term when none is given (on the planted test model it keeps the RMS pixel
#: change near 0.06 while the unit rises by 0.3; raise it to stay closer, lower it to accentuate more).
DEFAULT_CLOSENESS = 5.0


def load_seed_image(path: PathLike, *, size: int | tuple[int, int] | None = None) -> torch.Tensor:
    """One image file as ``(1, 3, H, W)`` in [0, 1]; with ``size``, centre-cropped to the aspect ratio and resized.

    ``size``: ``S`` (a square ``S x S``) or ``(H, W)``; ``None`` keeps the file's size.
    """
    from devvis.longitudinal.render_series import read_image

    try:
        img = read_image(path)[None]
    except Exception as e:
        raise ConfigError(f"cannot read seed image {str(path)!r}: {e}") from e
    if size is None:
        return img
    th, tw = (size, size) if isinstance(size, int) else size
    h, w = img.shape[-2:]
    ratio = tw / th
    ch, cw = (h, round(h * ratio)) if w / h > ratio else (round(w / ratio), w)
    top, left = (h - ch) // 2, (w - cw) // 2
    img = img[..., top:top + ch, left:left + cw]
    return F.interpolate(img, size=(th, tw), mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)


def _reference(model: nn.Module, seed: torch.Tensor, layer: str, preprocess: PreprocessLike,
               input_size: Any) -> torch.Tensor:
    if layer == "input":
        return seed
    out = []
    for _, _, acts in recorded(model, [layer], batched(seed, 32), preprocess=preprocess, input_size=input_size):
        out.append(objectives.channels_first(acts, layer).float().cpu())
    return torch.cat(out)


def seeded(model: nn.Module, seed_images: ImageBatch, *, closeness: float = DEFAULT_CLOSENESS,
           closeness_layer: str = "input", preprocess: PreprocessLike = "auto",
           input_size: int | tuple[int, int] | None = None, fft: bool = True,
           decorrelate: bool = True) -> tuple[nn.Module, objectives.Objective | None]:
    """The two pieces of an accentuation: ``(param starting at the seed, weighted closeness term or None)``.

    :func:`accentuate` and ``devvis visualize --seed-image`` both build their render from these;
    add the closeness term to the unit's objective. ``seed_images``: ``(B, 3, H, W)`` in [0, 1].
    """
    if not isinstance(closeness, (int, float)) or isinstance(closeness, bool) or closeness < 0:
        raise ConfigError(f"closeness must be a number >= 0, got {closeness!r}")
    seed_t = seed_images.detach().float().cpu()
    p = from_image(seed_t, fft=fft, decorrelate=decorrelate)
    if not closeness:
        return p, None
    ref = _reference(model, seed_t, closeness_layer, preprocess, input_size)
    return p, float(closeness) * objectives.closeness(ref, layer=closeness_layer)


def accentuate(model: nn.Module, objective: ObjectiveLike, seed_images: ImageBatch, *,
               closeness: float = DEFAULT_CLOSENESS, closeness_layer: str = "input", steps: int = 128,
               lr: float = 0.05, transforms: TransformsLike = "standard", preprocess: PreprocessLike = "auto",
               input_size: int | tuple[int, int] | None = None, fft: bool = True, decorrelate: bool = True,
               seed: int = 0, device: DeviceLike = None, precision: str = "fp32",
               progress: bool = False) -> RenderResult:
    """Accentuate ``objective`` in ``seed_images``: maximize it from the seed while staying close to the seed.

    Args:
        model: any ``nn.Module`` (borrowed as by :func:`devvis.render`).
        objective: what to raise (an objective, ``"layer:n"`` or a callable).
        seed_images: ``(B, 3, H, W)`` (or ``(3, H, W)``) in [0, 1]; image ``b`` is accentuated
            for batch entry ``b`` of the objective (use :func:`load_seed_image` for a file).
        closeness: weight of :func:`devvis.objectives.closeness` (relative squared distance to the
            seed; 0 turns it off and gives a plain visualization started at the seed).
        closeness_layer: ``"input"`` (pixels) or a layer name: the distance between the image's and
            the seed's activations there (the paper's choice; an earlier layer than the unit's).
        steps, lr, transforms, preprocess, input_size, seed, device, precision, progress: as in
            :func:`devvis.render`.
        fft, decorrelate: the basis the seed is written into (:func:`devvis.param.from_image`).

    Returns the :class:`~devvis.render.RenderResult` (``images`` ``(B, 3, H, W)``); its
    ``config["accentuation"]`` records the closeness weight and layer. Compare
    ``objectives.evaluate(model, objective, result.images)`` with the seed's value to see the rise.
    """
    seed_t = seed_images[None] if seed_images.dim() == 3 else seed_images
    dev = as_device(device) or model_device(model)
    p, stay = seeded(model, seed_t, closeness=closeness, closeness_layer=closeness_layer, preprocess=preprocess,
                     input_size=input_size, fft=fft, decorrelate=decorrelate)
    target = objectives.as_objective(objective)
    if stay is not None:
        target = target + stay
    result = render(model, target, p, steps=steps, lr=lr, transforms=transforms, preprocess=preprocess,
                    input_size=input_size, seed=seed, device=dev, precision=precision, progress=progress)
    result.config["accentuation"] = {"closeness": float(closeness), "closeness_layer": closeness_layer,
                                     "seed_shape": list(seed_t.shape)}
    return result

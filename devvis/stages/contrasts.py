"""Controlled probe contrasts: what drives a unit, with everything but one property of the images held fixed.

A unit's group response compares *different* images — on the SyntheticShapes probe, coloured soft blobs
against hard-edged grey shapes — so a unit that prefers the shape images may respond to their outline,
or merely to their lack of colour. A **contrast** compares each image of a group with a copy of it that
lacks one property and keeps the others:

* ``colour``: the ``colour`` group's images against the same images **desaturated** (every channel set
  to the luminance ``0.299 R + 0.587 G + 0.114 B``): same structure and brightness, no colour;
* ``outline``: the ``shape`` group's images against the same images **blurred** (Gaussian,
  ``sigma = 1.5 px × size / 16``): same colours and mass, no sharp outline. The blur halves the shape
  accuracy of a network that has learnt the shapes (0.94 → 0.49 on the planted curriculum trained for
  600 steps, docs/stages.md), so it removes most of what tells the shapes apart.

A unit's contrast is its mean response (the mean activation over positions, as in its response profile)
on the originals minus that on the copies, in standard deviations of its responses to the whole probe
(the scale of the group response): ``> 0`` where the property drives the unit, ``< 0`` where the unit
prefers the images without it.

>>> import torch
>>> from torch import nn
>>> net = nn.Sequential(nn.Conv2d(3, 1, 1), nn.ReLU())
>>> with torch.no_grad():
...     _ = net[0].weight.copy_(torch.tensor([1.0, -1.0, 0.0]).reshape(1, 3, 1, 1)), net[0].bias.zero_()
>>> x = torch.rand(6, 3, 16, 16)
>>> c = unit_contrasts(net, x, torch.tensor([0, 0, 0, 1, 1, 1]), ["1"], groups={"colour": [0], "shape": [1]})
>>> bool(c["colour"]["1"][0] > 0)  # a red-minus-green unit responds to colour
True
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from devvis.errors import ConfigError
from devvis.typing import ImageBatch, PreprocessLike

#: Luminance weights (ITU-R BT.601) of a desaturated image.
LUMINANCE = (0.299, 0.587, 0.114)
#: Blur of the ``outline`` contrast at a 16 px image (scaled with the image size).
BLUR_SIGMA_16PX = 1.5


def desaturate(x: torch.Tensor) -> torch.Tensor:
    """``(N, 3, H, W)`` -> the same images with every channel set to their luminance.

    >>> desaturate(torch.tensor([1.0, 0.0, 0.0]).reshape(1, 3, 1, 1)).flatten().tolist()
    [0.29899999499320984, 0.29899999499320984, 0.29899999499320984]
    """
    w = torch.tensor(LUMINANCE, dtype=x.dtype, device=x.device).reshape(1, 3, 1, 1)
    return (x * w).sum(dim=1, keepdim=True).expand_as(x).contiguous()


def blur(x: torch.Tensor) -> torch.Tensor:
    """``(N, C, H, W)`` -> the same images blurred (Gaussian, ``sigma`` 1.5 px per 16 px of image side)."""
    from devvis.transforms import gaussian_blur

    return gaussian_blur(BLUR_SIGMA_16PX * x.shape[-1] / 16)(x)


#: The contrasts: name -> (the group whose images are compared, the change that removes the property).
CONTRASTS: dict[str, tuple[str, Callable[[torch.Tensor], torch.Tensor]]] = {
    "colour": ("colour", desaturate), "outline": ("shape", blur)}


def unit_contrasts(model: torch.nn.Module, inputs: ImageBatch, labels: torch.Tensor | np.ndarray,
                   layers: Sequence[str], *, groups: Mapping[str, Sequence[int]],
                   contrasts: Mapping[str, tuple[str, Callable[[torch.Tensor], torch.Tensor]]] | None = None,
                   preprocess: PreprocessLike = "auto") -> dict[str, dict[str, np.ndarray]]:
    """``{contrast: {layer: (C,)}}``: every channel's contrasts (module docstring) on the probe ``inputs``
    ``(N, 3, H, W)`` in [0, 1] with ``labels`` ``(N,)``; ``groups`` ``{name: class labels}`` name the images
    each contrast uses. A contrast whose group is missing or has no probe image is left out."""
    from devvis.stages.features import unit_responses

    lab = torch.as_tensor(np.asarray(labels)).reshape(-1)
    if lab.shape[0] != len(inputs):
        raise ConfigError(f"labels must have one entry per probe image: {lab.shape[0]} labels, {len(inputs)} images")
    chosen = {}
    for name, (group, change) in (contrasts if contrasts is not None else CONTRASTS).items():
        mask = torch.isin(lab, torch.tensor([int(c) for c in groups.get(group, ())], dtype=lab.dtype))
        if mask.any():
            chosen[name] = (mask, change)
    copies = [change(inputs[mask]) for mask, change in chosen.values()]
    batch = torch.cat([inputs, *copies]) if copies else inputs
    prof = unit_responses({0: model}, batch, layers, preprocess=preprocess).profiles
    n, out = len(inputs), {name: {} for name in chosen}
    for layer, p in prof.items():
        p = p[0]  # (C, N + copies)
        sd = p[:, :n].std(axis=1)
        start = n
        for name, (mask, _) in chosen.items():
            k = int(mask.sum())
            diff = p[:, :n][:, mask.numpy()].mean(axis=1) - p[:, start:start + k].mean(axis=1)
            out[name][layer] = np.divide(diff, sd, out=np.full_like(diff, np.nan), where=sd > 1e-12)
            start += k
    return out

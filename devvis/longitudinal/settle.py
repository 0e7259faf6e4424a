"""When a feature settles, measured on the feature-driven part of a unit's response.

A unit's mean activation is ``bias-like baseline + feature-driven part``. A channel with a
large constant baseline (a bias ten times its feature-driven part) answers almost the same
to any image, so a ratio of raw activations is close to 1 at every checkpoint and every
feature looks settled from the start. Here the *baseline* (the response to a neutral image:
a constant grey one, or the data set's mean image) is subtracted first:

* ``b_j``: the response of checkpoint ``j``'s unit to the baseline image;
* ``similarity[i] = (M[i, -1] - b_-1) / (M[-1, -1] - b_-1)`` with ``M[i, j]`` the response of
  checkpoint ``j``'s unit to checkpoint ``i``'s visualization: how much of the final
  visualization's *feature-driven* response checkpoint ``i``'s visualization evokes in the
  final unit (1 for the final checkpoint; NaN when the final visualization does not drive the
  final unit above the baseline, ``M[-1, -1] - b_-1 <= 0``);
* :func:`settle`: the first step from which every similarity lies in
  ``[threshold, 1 + tolerance]``. A similarity above ``1 + tolerance`` means an earlier
  checkpoint's visualization drives the final unit more than the final visualization does: the
  reference is not the unit's best image, and a settle step measured against it is refused as
  ``"not comparable"``. When only the final checkpoint qualifies (trivially, its similarity is 1)
  the feature is ``"not settled"``: there is no last-step label.

>>> r = settle([0, 10, 100, 1000], [0.1, 0.9, 0.85, 1.0], threshold=0.8)
>>> r.step, r.status
(10, 'settled')
>>> settle([0, 10, 100, 1000], [0.1, 0.9, 0.7, 1.0]).status
'not settled'
>>> settle([0, 10, 100, 1000], [0.9, 1.4, 0.95, 1.0]).status
'not comparable'
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence, Union

import torch
import torch.nn.functional as F

from devvis.errors import ConfigError
from devvis.longitudinal.inputs import ImagesLike, images_from

SETTLED, NOT_SETTLED, NOT_COMPARABLE = "settled", "not settled", "not comparable"
#: Statuses of a settle step.
SETTLE_STATUSES = (SETTLED, NOT_SETTLED, NOT_COMPARABLE)
#: Named baselines: a constant grey image, the data set's mean image, or none (raw activations).
BASELINES = ("grey", "dataset_mean", "none")
#: How far above 1 a similarity may lie (float noise, a render a little short of its optimum)
#: before it is refused as not comparable.
DEFAULT_TOLERANCE = 0.05

BaselineLike = Union[str, torch.Tensor, None]
"""``"grey"``, ``"dataset_mean"``, ``"none"``/``None`` or an image ``(C, H, W)`` / ``(1, C, H, W)`` in [0, 1]."""


@dataclass(frozen=True)
class Settle:
    """A settle step and what it means: ``step`` (None unless ``status == "settled"``),
    ``status`` (one of :data:`SETTLE_STATUSES`) and ``reason`` (a sentence for a reader)."""

    step: int | None
    status: str
    reason: str


def _check(steps: list[int], sim: list[float | None], threshold: float, tolerance: float) -> None:
    if len(steps) != len(sim):
        raise ConfigError(f"settle_step got {len(steps)} steps and {len(sim)} similarity values; they must align")
    if not steps:
        raise ConfigError("settle_step got no steps")
    if any(b <= a for a, b in zip(steps, steps[1:])):
        raise ConfigError(f"settle_step needs increasing steps; got {steps}")
    if not math.isfinite(threshold) or not math.isfinite(tolerance) or tolerance < 0:
        raise ConfigError(f"threshold must be finite and tolerance finite and >= 0; got {threshold!r}, {tolerance!r}")


def _finite(v: float | None) -> bool:
    return v is not None and math.isfinite(float(v))


def settle(steps: Sequence[int], similarity: Sequence[float | None], *, threshold: float = 0.8,
           tolerance: float = DEFAULT_TOLERANCE) -> Settle:
    """The first step from which ``similarity`` stays in ``[threshold, 1 + tolerance]`` to the end.

    ``steps`` increasing, ``similarity`` aligned with them (NaN/None: below the threshold,
    except at the final checkpoint, where it means the similarity is undefined: not comparable).
    The final checkpoint must qualify, and at least one checkpoint before it, else the feature
    is ``"not settled"``; a value above ``1 + tolerance`` met before the run of qualifying
    checkpoints ends makes the answer ``"not comparable"``.

    >>> settle([1, 2, 3], [0.9, 0.95, 1.0]).step
    1
    """
    steps, sim = [int(s) for s in steps], list(similarity)
    _check(steps, sim, float(threshold), float(tolerance))
    top = 1.0 + tolerance
    last = sim[-1]
    if not _finite(last):
        return Settle(None, NOT_COMPARABLE, "the similarity at the final checkpoint is undefined (the final "
                                            "visualization does not drive the final unit above the baseline)")
    if float(last) > top:
        return Settle(None, NOT_COMPARABLE, f"the final similarity {float(last):.3g} exceeds 1 + {tolerance:g}")
    if float(last) < threshold:
        return Settle(None, NOT_SETTLED, f"the final similarity {float(last):.3g} is below the threshold {threshold:g}")
    settled: int | None = None
    for s, v in zip(reversed(steps[:-1]), reversed(sim[:-1])):
        if not _finite(v) or float(v) < threshold:
            break
        if float(v) > top:
            return Settle(None, NOT_COMPARABLE,
                          f"the visualization of step {s} drives the final unit {float(v):.3g} times as much as the "
                          f"final visualization (above 1 + {tolerance:g}): the final visualization is not the unit's "
                          "best image, so similarities to it cannot date the feature")
        settled = s
    if settled is None:
        return Settle(None, NOT_SETTLED, f"no checkpoint before the final one reaches similarity {threshold:g}")
    return Settle(settled, SETTLED, f"similarity stays in [{threshold:g}, {top:g}] from step {settled} on")


def settle_step(steps: Sequence[int], similarity: Sequence[float | None], threshold: float = 0.8, *,
                tolerance: float = DEFAULT_TOLERANCE) -> int | None:
    """:func:`settle`'s step: an element of ``steps``, or None when not settled or not comparable.

    >>> settle_step([1, 2, 3], [0.9, 0.5, 0.95]), settle_step([1, 2, 3], [0.5, 0.9, 1.0])
    (None, 2)
    """
    return settle(steps, similarity, threshold=threshold, tolerance=tolerance).step


def similarity_to_final(matrix: torch.Tensor, baseline: torch.Tensor | None = None) -> torch.Tensor:
    """``(M[:, -1] - b_-1) / (M[-1, -1] - b_-1)``, ``(n,)``; all NaN when ``M[-1, -1] - b_-1`` is not
    above zero (float noise allowed for). ``matrix``: ``(n, n)``; ``baseline``: ``(n,)``, the
    response of each checkpoint's unit to the baseline image (``None``: no subtraction).

    >>> m = torch.tensor([[10.5, 10.2], [10.1, 11.0]])
    >>> [round(v, 4) for v in similarity_to_final(m, torch.tensor([10.0, 10.0])).tolist()]
    [0.2, 1.0]
    """
    b = matrix.new_zeros(()) if baseline is None else baseline[-1].to(matrix.dtype)
    final = matrix[-1, -1]
    driven = final - b
    scale = max(float(final.abs()), float(b.abs()), 1e-30)
    if not torch.isfinite(driven) or float(driven) <= 1e-6 * scale:
        return torch.full((matrix.shape[0],), float("nan"))
    return (matrix[:, -1] - b) / driven


def baseline_image(baseline: BaselineLike, like: torch.Tensor, *, loader: ImagesLike | None = None,
                   batch_size: int = 64) -> tuple[torch.Tensor | None, str]:
    """The neutral image ``(1, C, H, W)`` in [0, 1] whose response is subtracted, and its description.

    ``like``: images ``(k, C, H, W)`` whose channels and size the baseline takes. ``baseline``:
    ``"grey"`` (0.5 everywhere), ``"dataset_mean"`` (the pixel-wise mean of ``loader``'s images,
    resized bilinearly), ``"none"``/``None`` (no subtraction: ``(None, "none")``) or an image.

    >>> img, what = baseline_image("grey", torch.rand(2, 3, 8, 8))
    >>> tuple(img.shape), float(img.mean()), what
    ((1, 3, 8, 8), 0.5, 'grey: a constant image of 0.5 in every channel')
    """
    c, h, w = like.shape[-3:]
    if baseline is None or (isinstance(baseline, str) and baseline == "none"):
        return None, "none: raw activations, nothing subtracted"
    if isinstance(baseline, torch.Tensor):
        img = baseline.detach().float().cpu()
        img = img.unsqueeze(0) if img.dim() == 3 else img
        if img.dim() != 4 or img.shape[0] != 1 or img.shape[1] != c:
            raise ConfigError(f"a baseline image must be (C, H, W) or (1, C, H, W) with C = {c}; got "
                              f"{tuple(baseline.shape)}")
        return _resized(img, h, w), f"a given image ({img.shape[-2]}x{img.shape[-1]})"
    if baseline == "grey":
        return torch.full((1, c, h, w), 0.5), "grey: a constant image of 0.5 in every channel"
    if baseline == "dataset_mean":
        if loader is None:
            raise ConfigError("baseline='dataset_mean' needs a data set: pass loader= (images, a Dataset or a "
                              "DataLoader), or use baseline='grey'")
        images = images_from(loader, batch_size)
        if images.shape[1] != c:
            raise ConfigError(f"the data set's images have {images.shape[1]} channels, the visualizations {c}")
        mean = images.float().mean(dim=0, keepdim=True)
        return _resized(mean, h, w), f"dataset_mean: the pixel-wise mean of {images.shape[0]} data-set images"
    raise ConfigError(f"unknown baseline {baseline!r}; valid: {', '.join(map(repr, BASELINES))}, None or an image "
                      "(C, H, W)")


def _resized(img: torch.Tensor, h: int, w: int) -> torch.Tensor:
    if tuple(img.shape[-2:]) == (h, w):
        return img
    return F.interpolate(img, size=(h, w), mode="bilinear", align_corners=False).clamp(0, 1)

"""Regularizers: image priors (read ``acts["input"]``) and batch-level terms.

Each returns ``Tensor[B]`` with higher meaning better, so a penalty comes out
negative: *add* it with a positive weight, ``objective + 0.05 * total_variation()``.

>>> import torch
>>> from devvis.hooks import Activations
>>> img = torch.zeros(1, 3, 4, 4); img[..., 2:] = 1
>>> round(total_variation()(Activations({"input": img})).item(), 4)   # 12 unit steps over 48 values
-0.25
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from devvis.errors import ObjectiveError
from devvis.objectives.activation import channels_first
from devvis.objectives.core import wrap_objective


def _per_image(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1).mean(dim=1)


@wrap_objective
def l1(layer: str = "input", constant: float = 0.5, batch: int | None = None):
    """Minus the mean absolute deviation of ``layer`` (default the image) from ``constant``."""
    def inner(acts):
        return -_per_image((acts[layer] - constant).abs())
    return inner


@wrap_objective
def l2(layer: str = "input", constant: float = 0.5, epsilon: float = 1e-6, batch: int | None = None):
    """Minus the root-mean-square deviation of ``layer`` (default the image) from ``constant``."""
    def inner(acts):
        return -torch.sqrt(epsilon + _per_image((acts[layer] - constant) ** 2))
    return inner


@wrap_objective
def total_variation(layer: str = "input", batch: int | None = None):
    """Minus the anisotropic total variation per value: the sum of absolute differences between
    horizontal and vertical neighbours, divided by the number of values of one image (``C*H*W``)."""
    def inner(acts):
        x = acts[layer]
        dx = (x[..., :, 1:] - x[..., :, :-1]).abs().reshape(x.shape[0], -1).sum(1)
        dy = (x[..., 1:, :] - x[..., :-1, :]).abs().reshape(x.shape[0], -1).sum(1)
        return -(dx + dy) / x[0].numel()
    return inner


@wrap_objective
def blur_input_each_step(layer: str = "input", sigma: float = 0.5, batch: int | None = None):
    """Pull the image towards a blurred copy of itself (the copy carries no gradient)."""
    def inner(acts):
        import kornia

        x = acts[layer]
        k = 2 * int(3 * sigma + 0.5) + 1
        with torch.no_grad():
            blurred = kornia.filters.gaussian_blur2d(x, (k, k), (sigma, sigma), border_type="reflect")
        return -0.5 * _per_image((x - blurred) ** 2)
    return inner


def _alpha(acts, layer: str) -> torch.Tensor:
    """The opacity channel ``(B, H, W)`` of a transparent image ``(B, 4, H, W)``."""
    x = acts[layer]
    if x.dim() != 4 or x.shape[1] != 4:
        raise ObjectiveError(f"an alpha prior reads RGBA images (B, 4, H, W) from {layer!r}, got shape "
                             f"{tuple(x.shape)}; make the image with param.image(..., alpha=True)")
    return x[:, 3]


@wrap_objective
def transparency(layer: str = "input", batch: int | None = None):
    """Mean transparency ``1 - alpha`` of each RGBA image (``param.image(..., alpha=True)``), in [0, 1].

    Add it with a positive weight so that only what drives the objective stays opaque
    (Lucid's transparent visualizations): ``channel(...) + 0.5 * transparency()``.

    >>> import torch
    >>> from devvis.hooks import Activations
    >>> img = torch.ones(1, 4, 2, 2); img[:, 3, 0] = 0      # the top row transparent
    >>> transparency()(Activations({"input": img})).tolist()
    [0.5]
    """
    def inner(acts):
        return 1 - _per_image(_alpha(acts, layer))
    return inner


@wrap_objective
def alpha_total_variation(layer: str = "input", batch: int | None = None):
    """Minus the total variation of the alpha channel per pixel: smooth, connected opacity masks."""
    def inner(acts):
        a = _alpha(acts, layer)
        dx = (a[:, :, 1:] - a[:, :, :-1]).abs().reshape(a.shape[0], -1).sum(1)
        dy = (a[:, 1:, :] - a[:, :-1, :]).abs().reshape(a.shape[0], -1).sum(1)
        return -(dx + dy) / a[0].numel()
    return inner


@wrap_objective
def closeness(reference: torch.Tensor, layer: str = "input", batch: int | None = None):
    """Minus the relative squared distance ``||a - r||^2 / ||r||^2`` of each image's ``layer`` from ``reference``.

    ``reference``: what ``layer`` should stay close to, ``(B, ...)`` or ``(1, ...)`` in the layer's
    channels-first layout: the seed images themselves for ``"input"``, or the seed images'
    activations at a model layer (feature accentuation, Hamblin et al. 2024, keeps the
    accentuated image close to its seed this way; :func:`devvis.accentuation.accentuate`
    computes the reference). 0 at the reference, -1 at an all-zero image.

    >>> import torch
    >>> from devvis.hooks import Activations
    >>> ref = torch.ones(1, 3, 2, 2)
    >>> closeness(ref)(Activations({"input": torch.cat([ref, 0.5 * ref])})).tolist()
    [-0.0, -0.25]
    """
    ref = reference.detach()

    def inner(acts):
        a = acts[layer] if layer == "input" else channels_first(acts, layer)
        r = ref.to(a.device, a.dtype)
        if r.dim() != a.dim() or r.shape[1:] != a.shape[1:] or r.shape[0] not in (1, a.shape[0]):
            raise ObjectiveError(f"closeness reference of shape {tuple(r.shape)} does not match {layer!r} of shape "
                                 f"{tuple(a.shape)} (expected (1 or {a.shape[0]}, {', '.join(map(str, a.shape[1:]))}))")
        r = r.expand_as(a)
        num = ((a - r) ** 2).reshape(a.shape[0], -1).sum(1)
        return -num / (r ** 2).reshape(a.shape[0], -1).sum(1).clamp_min(1e-12)
    return inner


def _gram(t: torch.Tensor) -> torch.Tensor:
    """``[B, C, P] -> [B, C*C]`` flattened Gram matrices."""
    return torch.bmm(t, t.transpose(1, 2)).reshape(t.shape[0], -1)


@wrap_objective
def diversity(layer: str, group_size: int | None = None):
    """Minus each image's mean cosine similarity of Gram matrices with the other images of its group.

    Pushes images of one batch to differ in style (Lucid's diversity term). With
    ``group_size`` the batch is split into consecutive groups of that many images
    (e.g. several images of each of several channels) and images are compared
    only within their group. A group of one image gets 0.
    """
    def inner(acts):
        t = channels_first(acts, layer)
        g = F.normalize(_gram(t.reshape(t.shape[0], t.shape[1], -1)), dim=1)
        b = g.shape[0]
        size = group_size or b
        sim = g @ g.T
        group = torch.arange(b, device=g.device) // size
        same = (group[:, None] == group[None, :]).to(sim.dtype)
        same.fill_diagonal_(0)
        count = same.sum(dim=1).clamp_min(1)
        return -(sim * same).sum(dim=1) / count
    return inner


@wrap_objective
def alignment(layer: str, decay_ratio: float = 2.0):
    """Encourage neighbouring images of the batch to have similar activations (for interpolations).

    Image ``i`` gets ``-sum_d ||a_i - a_{i+d}||^2 / decay_ratio^d`` over later images ``i+d``.
    """
    def inner(acts):
        t = channels_first(acts, layer)
        a = t.reshape(t.shape[0], -1)
        b = a.shape[0]
        out = torch.zeros(b, device=a.device, dtype=a.dtype)
        for d in range(1, b):
            diff = ((a[:-d] - a[d:]) ** 2).mean(dim=1) / decay_ratio ** d
            out = out - F.pad(diff, (0, d))
        return out
    return inner

"""Trust metrics of one feature visualization: five numbers, each comparing the picture with natural images.

For a unit (channel ``c`` of a layer) at one checkpoint, with ``v`` its visualizations (``S`` images
rendered from independent random starts), ``N`` its top-k natural examples and ``R`` random natural
images of the same dataset (definitions and thresholds: ``docs/trust.md``):

* :func:`natural_max_ratio` ``= act(v) / max_x act(x)`` over the dataset;
* :func:`seed_stability`: mean pairwise cosine similarity of the ``S`` visualizations' activation
  vectors at the unit's layer without the unit's own channel, centred on the mean of ``R``;
* :func:`transform_robustness`: ``act(T(v)) / act(v)`` averaged over transforms the render never saw
  (:data:`UNSEEN_TRANSFORMS`), beside the same ratio for ``N``;
* :func:`path_similarity` (after Geirhos et al. 2023): per layer before the unit, how close ``v``'s
  activations (under the unit's strongest position) are to ``N``'s, on a scale where 0 is "as close as
  random natural patches" and 1 "as close as the natural examples are to each other"; the score
  averages the layers nearest the unit;
* :func:`spectral_distance`: mean absolute log10 ratio of ``v``'s radial power spectrum to ``R``'s.

``act`` is the channel's mean activation (``objectives.channel``), scored through the render's
pipeline without transforms (:func:`devvis.objectives.evaluate`).

>>> import torch
>>> spectral_distance(torch.rand(2, 3, 32, 32), torch.rand(4, 3, 32, 32)) < 0.3   # both white noise
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from devvis.errors import ConfigError
from devvis.hooks import list_layers, resolve_name
from devvis.render.pipeline import ModelInput
from devvis.transforms import gaussian_blur
from devvis.typing import ImageBatch

#: Transforms no render sees (the standard stack pads, jitters, scales by 0.9-1.1 and rotates by 10 degrees).
UNSEEN_TRANSFORMS: dict[str, Callable[[ImageBatch], ImageBatch]] = {
    "flip": lambda x: torch.flip(x, dims=[-1]),
    "blur": lambda x: gaussian_blur(1.0)(x),
    "half_resolution": lambda x: F.interpolate(F.interpolate(x, scale_factor=0.5, mode="bilinear",
                                                             align_corners=False, antialias=True),
                                               size=x.shape[-2:], mode="bilinear", align_corners=False),
}

#: Modules that return their input at evaluation (a path layer there would repeat the one before it).
_IDENTITY_AT_EVAL: tuple[type, ...] = (nn.modules.dropout._DropoutNd,)

#: Fewest channels (besides the unit's own) seed stability compares.
MIN_SEED_CHANNELS = 3

#: Most layers used for path similarity when none are named.
MAX_PATH_LAYERS = 8
#: A layer is informative for path similarity when the natural examples are closer to each other
#: than to random images by at least this much (cosine).
MIN_LAYER_CONTRAST = 0.05


def natural_max_ratio(viz_value: float, dataset_max: float) -> float:
    """``viz_value / dataset_max``; NaN when the dataset maximum is not positive.

    >>> natural_max_ratio(3.0, 1.5), natural_max_ratio(1.0, 0.0)
    (2.0, nan)
    """
    return float(viz_value) / float(dataset_max) if dataset_max > 0 else float("nan")


def _cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise cosine similarity ``(len(a), len(b))``; a zero vector has similarity 0 with everything."""
    an = a / a.norm(dim=1, keepdim=True).clamp_min(1e-12)
    bn = b / b.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return an @ bn.T


def _mean_offdiag(m: torch.Tensor) -> float:
    n = m.shape[0]
    if n < 2:
        return float("nan")
    return float((m.sum() - m.diagonal().sum()) / (n * (n - 1)))


def seed_stability(viz_acts: torch.Tensor, random_acts: torch.Tensor, exclude: int | None = None) -> float:
    """Mean pairwise cosine similarity of ``viz_acts`` ``(S, C)`` (the activation vectors of ``S`` visualizations at
    the unit's layer) after subtracting the mean of ``random_acts`` ``(R, C)``, leaving out channel ``exclude``
    (the unit's own: every seed maximizes it, so with it the agreement is near 1 for any pictures); NaN for
    ``S < 2`` or fewer than :data:`MIN_SEED_CHANNELS` channels left (a cosine of one or two numbers says little).

    >>> a = torch.tensor([[9.0, 2.0, 0.0, 1.0], [7.0, 3.0, 0.1, 1.4]])
    >>> round(seed_stability(a, torch.zeros(4, 4), exclude=0), 3)
    0.999
    """
    keep = [i for i in range(viz_acts.shape[1]) if i != exclude]
    if len(keep) < MIN_SEED_CHANNELS:
        return float("nan")
    centred = (viz_acts - random_acts.mean(dim=0, keepdim=True))[:, keep]
    return _mean_offdiag(_cos(centred, centred))


def transform_robustness(values: torch.Tensor, transformed: torch.Tensor) -> float:
    """``mean(transformed / values)``: ``values`` ``(B,)`` the activations of the images, ``transformed`` ``(T, B)``
    those of their transformed copies; NaN when any image's own activation is not positive.

    >>> transform_robustness(torch.tensor([2.0, 4.0]), torch.tensor([[1.0, 4.0], [2.0, 2.0]]))
    0.75
    """
    if (values <= 0).any():
        return float("nan")
    return float((transformed / values.unsqueeze(0)).mean())


@dataclass
class PathSimilarity:
    """Path similarity of a visualization: ``per_layer[name]`` on the normalized scale (None: layer not
    informative), ``score`` the mean over the later half of the informative layers (NaN when none is), ``raw[name]`` the three
    cosine means ``(viz-examples, random-examples, examples-examples)``."""

    per_layer: dict[str, float | None]
    score: float
    raw: dict[str, tuple[float, float, float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record."""
        return {"score": self.score, "per_layer": self.per_layer,
                "raw": {k: {"viz_examples": a, "random_examples": b, "examples_examples": c}
                        for k, (a, b, c) in self.raw.items()}}


def path_similarity(viz: dict[str, torch.Tensor], examples: dict[str, torch.Tensor],
                    random: dict[str, torch.Tensor], layers: Sequence[str]) -> PathSimilarity:
    """Layer by layer, how similar the visualization's activations are to the unit's top natural examples.

    Each argument maps a layer name to activation vectors ``(n, C)``: in :func:`~devvis.trust.trust`, each layer's
    activation under the unit's strongest position (:func:`~devvis.trust.record.local_vectors`) in ``viz`` (the
    visualizations) and ``examples`` (the top natural examples), and at every position of random natural
    images in ``random`` (random natural patches).
    Vectors are centred on the mean of ``random``. With ``cos`` the mean cosine similarity between two sets,
    ``s_v = cos(viz, examples)``, ``s_r = cos(random, examples)``, ``s_n = cos(examples, examples)`` (pairs of
    distinct examples), a layer's value is ``(s_v - s_r) / (s_n - s_r)``: 1 when the visualization is as close
    to the examples as they are to each other, 0 when it is no closer than random natural images, negative
    when it is farther. A layer where ``s_n - s_r < MIN_LAYER_CONTRAST`` cannot tell examples from random
    images and is skipped (None). The score is the mean over the informative layers in the half of ``layers``
    nearest the unit (the later half, rounded up): every synthetic image differs from photographs in
    its early-layer colour and texture statistics (which spectral naturalness measures); the path question
    is which features drive the unit.
    """
    per: dict[str, float | None] = {}
    raw: dict[str, tuple[float, float, float]] = {}
    for name in layers:
        mu = random[name].mean(dim=0, keepdim=True)
        v, n, r = viz[name] - mu, examples[name] - mu, random[name] - mu
        s_v = float(_cos(v, n).mean())
        s_r = float(_cos(r, n).mean())
        s_n = _mean_offdiag(_cos(n, n))
        raw[name] = (s_v, s_r, s_n)
        contrast = s_n - s_r
        per[name] = (s_v - s_r) / contrast if math.isfinite(contrast) and contrast >= MIN_LAYER_CONTRAST else None
    vals = [x for x in per.values() if x is not None]
    near = vals[len(vals) // 2:]  # the informative layers nearest the unit
    return PathSimilarity(per, sum(near) / len(near) if near else float("nan"), raw)


def default_path_layers(model: nn.Module, layer: str, image_shape: Sequence[int], *,
                        max_layers: int = MAX_PATH_LAYERS) -> list[str]:
    """The layers path similarity compares by default: the modules that run before ``layer`` at its own depth in
    the module tree (``layer1.1``, ``layer2.0`` before ``layer3.0``; the encoder blocks before a ViT block),
    plus shallower leaves (a stem ``conv1``), in definition order, which is the order they run in sequential,
    ResNet-style and ViT models; each must output a tensor, and dropout (the identity at evaluation) is left
    out. Thinned evenly to ``max_layers`` (the last one kept). Blocks, not the convolutions inside them:
    a block's output is what the layers after it read (the residual stream). ``image_shape``: ``(C, H, W)``.

    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 3))
    >>> default_path_layers(net, "2", (3, 16, 16))
    ['0', '1']
    """
    target = resolve_name(model, layer)
    x = ModelInput(model, transforms=None, preprocess=None)(torch.rand(1, *image_shape))
    rows = list_layers(model, tuple(x.shape))
    names = [r.name for r in rows]
    if target not in names:
        raise ConfigError(f"layer {layer!r} is not a module of the model")
    stop = names.index(target)
    depth = target.count(".")
    modules = dict(model.named_modules())
    leaves = {n for n, m in modules.items() if n and not any(True for _ in m.children())}
    before = [r.name for r in rows[:stop]
              if (r.name.count(".") == depth or (r.name in leaves and r.name.count(".") < depth))
              and r.output_shape is not None and len(r.output_shape) >= 2
              and not target.startswith(r.name + ".") and not isinstance(modules.get(r.name), _IDENTITY_AT_EVAL)]
    if len(before) <= max_layers:
        return before
    picks = {round(i * (len(before) - 1) / (max_layers - 1)) for i in range(max_layers)}
    return [before[i] for i in sorted(picks)]


def radial_spectrum(images: ImageBatch, bins: int = 12) -> torch.Tensor:
    """Mean radial power spectrum of ``images`` ``(B, C, H, W)`` (grey, mean removed), ``(bins,)`` over
    frequencies ``(0, 0.5]`` cycles per pixel, normalized to sum 1.

    >>> radial_spectrum(torch.rand(2, 3, 16, 16)).shape
    torch.Size([12])
    """
    g = images.float().mean(dim=1)
    g = g - g.mean(dim=(-2, -1), keepdim=True)
    p = torch.fft.fft2(g).abs().pow(2).mean(dim=0)
    fy = torch.fft.fftfreq(g.shape[-2]).abs().view(-1, 1)
    fx = torch.fft.fftfreq(g.shape[-1]).abs().view(1, -1)
    f = torch.sqrt(fy ** 2 + fx ** 2)
    idx = torch.clamp((f / 0.5 * bins).ceil().long() - 1, min=-1)
    out = torch.zeros(bins)
    for b in range(bins):
        sel = idx == b
        out[b] = p[sel].mean() if sel.any() else 0.0
    return out / out.sum().clamp_min(1e-20)


def spectral_distance(viz: ImageBatch, natural: ImageBatch | torch.Tensor, bins: int = 12) -> float:
    """Mean over frequency bins of ``|log10(P_viz / P_natural)|`` (:func:`radial_spectrum`): 0 when the power
    falls off with frequency as in natural images, 1 when it is off by a factor of 10 on average.
    ``natural``: the natural images, or their :func:`radial_spectrum` ``(bins,)`` computed once."""
    pv = radial_spectrum(viz, bins)
    pn = natural if natural.dim() == 1 else radial_spectrum(natural, bins)
    eps = 1e-12
    return float((torch.log10(pv + eps) - torch.log10(pn + eps)).abs().mean())

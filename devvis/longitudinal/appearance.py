"""How different two visualizations *look*, measured in a network's own early layers.

The similarity of :mod:`~devvis.longitudinal.settle` asks whether a visualization *drives the
final unit* like the final visualization does; two images can do that and look unlike each
other, or look alike and drive the unit differently. The appearance distance is the second view:
a perceptual distance (LPIPS-style, without learned weights) computed in the early layers of one
fixed network, the final checkpoint, so every pair of images is compared in the same feature space.

For images ``x`` and ``y`` and early layers ``l`` with features ``f_l(x)`` of shape
``(C_l, P_l)`` (channels x positions), each position's channel vector is scaled to unit length,
``u = f / ||f||``, and

    ``D(x, y) = mean_l mean_p || u_l(x)_p - u_l(y)_p ||^2``   (0 for identical images, at most 4).

The early layers default to the first two ``nn.Conv2d`` modules the forward pass runs (any
architecture with a convolutional stem, ViT's patch embedding included); a model without one
uses its first two leaf modules. The images go through the render's pipeline without
transforms (:class:`~devvis.render.pipeline.ModelInput`: resize, preprocess).

>>> import torch
>>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3))
>>> x = torch.rand(2, 3, 16, 16)
>>> d = appearance_distance(net, x, x.roll(4, dims=-1), preprocess=None)
>>> float(appearance_distance(net, x, x, preprocess=None).abs().max()), bool((d > 0).all())
(0.0, True)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import nn

from devvis.errors import ConfigError
from devvis.hooks import ActivationRecorder, StopForward, run_forward
from devvis.objectives import channels_first
from devvis.render.forward import RecordedForward
from devvis.render.pipeline import ModelInput
from devvis.state import frozen, model_device
from devvis.typing import ImageBatch, PreprocessLike

#: Early layers used when none are named.
DEFAULT_N_LAYERS = 2
DEFINITION = ("D(x, y) = mean over early layers l and positions p of ||u_l(x)_p - u_l(y)_p||^2, u = the channel "
              "vector at p scaled to unit length, features of the final checkpoint (0: identical, at most 4)")


def early_layers(model: nn.Module, x: torch.Tensor, *, n: int = DEFAULT_N_LAYERS) -> list[str]:
    """Names of the first ``n`` ``nn.Conv2d`` modules that run on the model input ``x`` (in call
    order), or of the first ``n`` leaf modules when the model has no convolution.

    >>> net = torch.nn.Sequential(torch.nn.ReLU(), torch.nn.Conv2d(3, 4, 1), torch.nn.Conv2d(4, 4, 1))
    >>> early_layers(net, torch.rand(1, 3, 4, 4), n=1)
    ['1']
    """
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ConfigError(f"the number of early layers must be a positive integer, got {n!r}")
    for wanted in (lambda m: isinstance(m, nn.Conv2d), lambda m: not any(True for _ in m.children())):
        order: list[str] = []

        def make(name: str) -> Callable[..., None]:
            def hook(_m: nn.Module, _i: Any, out: Any) -> None:
                if isinstance(out, torch.Tensor) and name not in order:
                    order.append(name)
                if len(order) >= n:
                    raise StopForward
            return hook

        handles = [m.register_forward_hook(make(name)) for name, m in model.named_modules() if name and wanted(m)]
        try:
            with torch.no_grad():
                run_forward(model, x, tolerate=lambda: bool(order))
        finally:
            for h in handles:
                h.remove()
        if order:
            return order
    raise ConfigError(f"{type(model).__name__} has no module with a tensor output to measure appearance in; "
                      "name the layers with appearance_layers=")


@torch.no_grad()
def appearance_features(model: nn.Module, images: ImageBatch, *, layers: Sequence[str] | None = None,
                        preprocess: PreprocessLike = "auto", input_size: int | tuple[int, int] | None = None,
                        batch_size: int = 64) -> tuple[list[str], list[torch.Tensor]]:
    """``(layers, features)``: per early layer, ``(B, C_l, P_l)`` float32 CPU features of ``images``
    ``(B, C, H, W)`` in [0, 1], each position's channel vector scaled to unit length.

    ``layers``: default :func:`early_layers`. ``preprocess``/``input_size``: as in
    :func:`devvis.objectives.evaluate` (no transforms). The model is borrowed through
    :func:`devvis.state.frozen`.
    """
    model_input = ModelInput(model, transforms=None, preprocess=preprocess, input_size=input_size)
    dev = model_device(model)
    per_layer: list[list[torch.Tensor]] = []
    with frozen(model):
        names = list(layers) if layers is not None else early_layers(model, model_input(images[:1].to(dev).float()))
        with ActivationRecorder(model, names, stop_early=True) as rec:
            forward = RecordedForward(model, rec, device=dev, channels_last=False)
            for i in range(0, images.shape[0], batch_size):
                img = images[i:i + batch_size].to(dev, torch.float32)
                acts = forward(model_input(img), img)
                for k, name in enumerate(names):
                    f = channels_first(acts, name).flatten(2).float()
                    f = f / (f.norm(dim=1, keepdim=True) + 1e-10)
                    if i == 0:
                        per_layer.append([])
                    per_layer[k].append(f.cpu())
    return names, [torch.cat(chunks) for chunks in per_layer]


def feature_distance(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> torch.Tensor:
    """``D`` between two sets of :func:`appearance_features`, ``(B,)``: the mean over layers of the
    mean over positions of the squared distance between unit channel vectors."""
    if len(a) != len(b) or any(x.shape != y.shape for x, y in zip(a, b)):
        raise ConfigError("appearance features of different layers or shapes cannot be compared")
    return torch.stack([((x - y) ** 2).sum(dim=1).mean(dim=-1) for x, y in zip(a, b)]).mean(dim=0)


def appearance_distance(model: nn.Module, a: ImageBatch, b: ImageBatch, *, layers: Sequence[str] | None = None,
                        preprocess: PreprocessLike = "auto",
                        input_size: int | tuple[int, int] | None = None) -> torch.Tensor:
    """``D(a[i], b[i])`` for image batches ``a``, ``b`` ``(B, C, H, W)`` in [0, 1], in ``model``'s
    early layers; ``(B,)`` float32 (see the module docstring)."""
    if a.shape != b.shape:
        raise ConfigError(f"appearance_distance compares images of one shape; got {tuple(a.shape)} and "
                          f"{tuple(b.shape)}")
    names, fa = appearance_features(model, a, layers=layers, preprocess=preprocess, input_size=input_size)
    _, fb = appearance_features(model, b, layers=names, preprocess=preprocess, input_size=input_size)
    return feature_distance(fa, fb)


@dataclass
class AppearanceChange:
    """How each checkpoint's visualization looks next to its neighbour's and the final one's.

    ``consecutive[i] = D(viz_i, viz_{i+1})`` (``n - 1`` values); ``to_final[i] = D(viz_i, viz_final)``
    (``n`` values, the last 0), averaged over a component's images; ``layers``: the final
    checkpoint's early layers the distance is measured in.
    """

    steps: list[int]
    layers: list[str]
    consecutive: list[float]
    to_final: list[float]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record, with the definition."""
        return {"steps": self.steps, "layers": self.layers, "consecutive": self.consecutive,
                "to_final": self.to_final, "definition": DEFINITION}


def appearance_change(model: nn.Module, steps: Sequence[int], visualizations: Sequence[ImageBatch], *,
                      layers: Sequence[str] | None = None, preprocess: PreprocessLike = "auto",
                      input_size: int | tuple[int, int] | None = None, batch_size: int = 64) -> AppearanceChange:
    """:class:`AppearanceChange` of ``visualizations[i]`` (``(k, C, H, W)`` per step, the same ``k``)
    in ``model``'s (the final checkpoint's) early layers."""
    if len(steps) != len(visualizations) or not steps:
        raise ConfigError(f"appearance_change got {len(steps)} steps and {len(visualizations)} visualizations")
    k = {v.shape[0] for v in visualizations}
    if len(k) != 1:
        raise ConfigError(f"every checkpoint needs the same number of images; got {sorted(k)}")
    per = k.pop()
    names, feats = appearance_features(model, torch.cat(list(visualizations)), layers=layers, preprocess=preprocess,
                                       input_size=input_size, batch_size=batch_size)
    by_step = [[f[i * per:(i + 1) * per] for f in feats] for i in range(len(steps))]

    def dist(i: int, j: int) -> float:
        return float(feature_distance(by_step[i], by_step[j]).mean())

    n = len(steps)
    return AppearanceChange(steps=[int(s) for s in steps], layers=names,
                            consecutive=[dist(i, i + 1) for i in range(n - 1)],
                            to_final=[dist(i, n - 1) for i in range(n)])

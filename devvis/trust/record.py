"""One recorded, gradient-free pass over images: the pieces every dataset analysis shares.

Images reach the model through the render's own pipeline (:class:`~devvis.render.pipeline.ModelInput`
without transforms, the one preprocessing rule, ``"auto"`` by default) and one
:class:`~devvis.render.forward.RecordedForward` under an :class:`~devvis.hooks.ActivationRecorder`
that stops after the last requested layer; the model is borrowed through :func:`devvis.state.frozen`.
So an image scored here is scored exactly as ``objectives.evaluate`` scores it.

>>> import torch
>>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
>>> out = pooled_activations(net, ["0", "1"], torch.rand(5, 3, 8, 8), preprocess=None)
>>> {k: tuple(v.shape) for k, v in out.items()}
{'0': (5, 4), '1': (5, 4)}
"""

from __future__ import annotations

from typing import Iterable, Iterator, Sequence

import torch
from torch import nn

import torch.nn.functional as F

from devvis.hooks import ActivationRecorder, Activations
from devvis.objectives import channels_first
from devvis.render.forward import RecordedForward
from devvis.render.pipeline import ModelInput
from devvis.state import frozen, model_device
from devvis.typing import ImageBatch, PreprocessLike


def recorded(model: nn.Module, layers: Sequence[str], batches: Iterable[tuple[int, ImageBatch]], *,
             preprocess: PreprocessLike = "auto",
             input_size: int | tuple[int, int] | None = None) -> Iterator[tuple[int, ImageBatch, Activations]]:
    """``(start, images, acts)`` for each ``(start, images)`` of ``batches`` (images ``(B, C, H, W)`` in [0, 1]).

    ``acts`` holds the requested layers (float32, on the model's device) and ``"input"``; computed
    without gradients, the model in eval mode and given back as it was afterwards.
    """
    dev = model_device(model)
    model_input = ModelInput(model, transforms=None, preprocess=preprocess, input_size=input_size)
    with frozen(model), torch.no_grad(), ActivationRecorder(model, layers, stop_early=True) as rec:
        forward = RecordedForward(model, rec, device=dev, channels_last=False)
        for start, images in batches:
            img = images.to(dev, torch.float32)
            yield start, images, forward(model_input(img), img)


def pooled(acts: Activations, layer: str) -> torch.Tensor:
    """The activation of ``layer`` averaged over positions (space or tokens), ``(B, C)``."""
    t = channels_first(acts, layer)
    return t.reshape(t.shape[0], t.shape[1], -1).mean(dim=2)


def batched(images: ImageBatch, batch_size: int) -> Iterator[tuple[int, ImageBatch]]:
    """``(start, images[start:start + batch_size])`` pairs."""
    for i in range(0, images.shape[0], batch_size):
        yield i, images[i:i + batch_size]


def pooled_activations(model: nn.Module, layers: Sequence[str], images: ImageBatch, *,
                       preprocess: PreprocessLike = "auto", input_size: int | tuple[int, int] | None = None,
                       batch_size: int = 64) -> dict[str, torch.Tensor]:
    """``{layer: (N, C)}``: each layer's activation on ``images`` ``(N, C, H, W)``, averaged over positions (CPU)."""
    out: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
    for _, _, acts in recorded(model, layers, batched(images, batch_size), preprocess=preprocess,
                               input_size=input_size):
        for name in layers:
            out[name].append(pooled(acts, name).float().cpu())
    return {name: torch.cat(v) for name, v in out.items()}


def strongest_positions(unit_map: torch.Tensor, channels: torch.Tensor) -> torch.Tensor:
    """``(B,)``: the flat index of the position where row ``b``'s channel ``channels[b]`` responds most in
    ``unit_map`` ``(B, C, *positions)`` (channels first, as :func:`~devvis.objectives.channels_first` gives).

    >>> m = torch.zeros(2, 2, 2, 2); m[0, 1, 1, 0] = 5.0; m[1, 0, 0, 1] = 3.0
    >>> strongest_positions(m, torch.tensor([1, 0])).tolist()
    [2, 1]
    """
    flat = unit_map.reshape(unit_map.shape[0], unit_map.shape[1], -1)
    return flat[torch.arange(flat.shape[0]), channels].argmax(dim=1)


def local_vectors(t: torch.Tensor, unit_map: torch.Tensor, positions: torch.Tensor | None) -> torch.Tensor:
    """Layer ``t``'s activation ``(B, C, *positions)`` under the unit's positions: ``(B, C)`` at each row's
    position ``positions[b]`` (a flat index into the unit's map ``unit_map``), or ``(B * P, C)`` at every one of
    the unit's ``P`` positions when ``positions`` is None.

    A spatial map is average-pooled onto the unit's grid (each unit position's footprint) and read there;
    tokens are read at the same token when the counts agree; anything else (a flat layer, a map before
    tokens) is averaged over its positions (one vector per image).

    >>> t = torch.arange(16.0).view(1, 1, 4, 4)
    >>> local_vectors(t, torch.zeros(1, 1, 2, 2), torch.tensor([3])).tolist()
    [[12.5]]
    >>> local_vectors(t, torch.zeros(1, 1, 2, 2), None).flatten().tolist()
    [2.5, 4.5, 10.5, 12.5]
    """
    b = torch.arange(t.shape[0])
    if t.dim() == 4 and unit_map.dim() == 4:
        g = F.adaptive_avg_pool2d(t, unit_map.shape[-2:]).reshape(t.shape[0], t.shape[1], -1)
    elif t.dim() == 3 and unit_map.dim() == 3 and t.shape[2] == unit_map.shape[2]:
        g = t
    else:
        return t.reshape(t.shape[0], t.shape[1], -1).mean(dim=2)
    if positions is None:
        return g.permute(0, 2, 1).reshape(-1, g.shape[1])
    return g[b, :, positions]

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

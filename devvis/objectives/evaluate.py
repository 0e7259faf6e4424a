"""Score given images with an objective, without optimizing.

The images reach the model through the same pipeline as in ``render``
(:class:`~devvis.render.pipeline.ModelInput`, without transforms: resize, then
preprocess) and the same recorded forward, and the model is borrowed through
:func:`devvis.state.frozen`, so ``evaluate`` on a render's final images scores
exactly what the render's model saw, minus the random transforms.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from devvis.errors import ConfigError
from devvis.hooks import ActivationRecorder
from devvis.objectives.core import as_objective
from devvis.render.discover import objective_layers
from devvis.render.forward import RecordedForward, check_precision
from devvis.render.pipeline import ModelInput
from devvis.state import frozen, model_device
from devvis.typing import ImageBatch, ObjectiveLike, PreprocessLike


@torch.no_grad()
def evaluate(model: nn.Module, objective: ObjectiveLike, images: ImageBatch, *, preprocess: PreprocessLike = "auto",
             input_size: int | tuple[int, int] | None = None, batch_size: int = 64,
             precision: str = "fp32") -> torch.Tensor:
    """The objective's values ``(B,)`` (float32, CPU) on ``images`` ``(B, C, H, W)`` in [0, 1] (no transforms).

    Used to score one checkpoint's visualization under another checkpoint. The argument order is the
    API's one: model first (as in :func:`devvis.render`), then what is scored.

    Args:
        objective: an :class:`~devvis.objectives.Objective`, a ``"layer:n"`` string or a callable
            ``acts -> Tensor[B]``.
        model: any ``nn.Module``; borrowed through :func:`devvis.state.frozen` (eval mode inside,
            every submodule's mode restored afterwards); the images go to its device.
        images: ``(B, C, H, W)`` in [0, 1].
        preprocess, input_size: as in :func:`devvis.render` (``"auto"``: the model's own default;
            ``None``: identity; ``input_size=None``: the model's fixed size if it has one).
        batch_size: images per forward pass.
        precision: ``"fp32"``, ``"bf16"`` or ``"fp16"`` autocast of the forward.

    >>> import torch, torchvision
    >>> from devvis import objectives
    >>> m = torchvision.models.resnet18(weights=None)
    >>> objectives.evaluate(m, "layer1.0:3", torch.rand(2, 3, 32, 32)).shape
    torch.Size([2])
    """
    if not isinstance(model, nn.Module):
        hint = " (the model comes first, as in render)" if isinstance(objective, nn.Module) else ""
        raise ConfigError(f"evaluate(model, objective, images) needs an nn.Module as model; got "
                          f"{type(model).__name__}{hint}")
    check_precision(precision)
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer; got {batch_size!r}")
    objective = as_objective(objective)
    model_input = ModelInput(model, transforms=None, preprocess=preprocess, input_size=input_size)
    dev = model_device(model)
    outs = []
    with frozen(model), contextlib.ExitStack() as stack:
        recorder: ActivationRecorder | None = None
        for i in range(0, images.shape[0], batch_size):
            img = images[i:i + batch_size].to(dev, torch.float32)
            x = model_input(img)
            if recorder is None:  # one recorder for every batch: the calls are counted once
                layers = objective_layers(model, objective, x, img)
                recorder = stack.enter_context(ActivationRecorder(model, layers, stop_early=True))
            acts = RecordedForward(model, recorder, precision=precision, device=dev, channels_last=False)(x, img)
            outs.append(objective(acts).float().cpu())
    return torch.cat(outs)

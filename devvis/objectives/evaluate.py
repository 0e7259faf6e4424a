"""Score given images with an objective, without optimizing."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from devvis.architectures import resolve_input_size
from devvis.hooks import INPUT, ActivationRecorder, resolve_name
from devvis.objectives.core import as_objective
from devvis.transforms import Resize, get_preprocess


@torch.no_grad()
def evaluate(objective: Any, model: nn.Module, images: torch.Tensor, *, preprocess: Any = "imagenet",
             input_size: int | tuple[int, int] | None = None, batch_size: int = 64,
             precision: str = "fp32") -> torch.Tensor:
    """The objective's values ``[B]`` on ``images`` ``(B, C, H, W)`` in [0, 1] (no transforms).

    Used to score one checkpoint's visualization under another checkpoint. The
    model's mode is restored afterwards.

    >>> import torch, torchvision
    >>> from devvis import objectives
    >>> m = torchvision.models.resnet18(weights=None)
    >>> objectives.evaluate("layer1.0:3", m, torch.rand(2, 3, 32, 32)).shape
    torch.Size([2])
    """
    from devvis.render.loop import _discover_layers, _model_device

    objective = as_objective(objective)
    dev = _model_device(model)
    pre = get_preprocess(preprocess)
    input_size = resolve_input_size(model, input_size)  # None: the model's fixed size (ViT: 224), if any
    resize = Resize(input_size) if input_size is not None else None
    was_training = model.training
    model.eval()
    try:
        outs = []
        for i in range(0, images.shape[0], batch_size):
            img = images[i:i + batch_size].to(dev, torch.float32)
            x = pre(resize(img) if resize is not None else img)
            if objective.layers is None:
                layers = _discover_layers(model, objective, x, img)
            else:
                layers = [resolve_name(model, n) for n in objective.layers]
            with ActivationRecorder(model, layers, stop_early=True) as rec:
                if precision == "bf16":
                    with torch.autocast(device_type=dev.type, dtype=torch.bfloat16):
                        acts = rec.run(x, **{INPUT: img})
                else:
                    acts = rec.run(x, **{INPUT: img})
            outs.append(objective(acts).float().cpu())
        return torch.cat(outs)
    finally:
        model.train(was_training)

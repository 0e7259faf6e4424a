"""devvis: developmental interpretability for vision models.

Feature visualization by activation maximization, across a model's training
checkpoints, beside singular-learning-theory metrics and circuits.

>>> import torchvision
>>> from devvis import render, objectives
>>> model = torchvision.models.resnet18(weights=None)
>>> result = render(model, objectives.channel("layer2.1", 0), steps=2, image_size=32, progress=False)
>>> result.images.shape
torch.Size([1, 3, 32, 32])
"""

from __future__ import annotations

import importlib
from typing import Any

from devvis import errors, objectives, param, transforms
from devvis._version import __version__
from devvis.hooks import ActivationRecorder, Activations, list_layers
from devvis.models import CheckpointRef, find_checkpoints, load_checkpoint, load_model, save_checkpoint
from devvis.render import Convergence, RenderResult, render

# Subpackages imported on first use, so `import devvis` stays light.
_LAZY = ("longitudinal", "circuits", "slt", "data", "zoo", "compat", "models", "hooks", "io", "runs", "results",
         "state", "typing", "stages", "trust")

__all__ = [
    "__version__", "render", "RenderResult", "Convergence", "objectives", "param", "transforms", "errors",
    "ActivationRecorder", "Activations", "list_layers", "load_model", "load_checkpoint", "find_checkpoints",
    "save_checkpoint", "CheckpointRef", *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return importlib.import_module(f"devvis.{name}")
    raise AttributeError(f"module 'devvis' has no attribute {name!r}")

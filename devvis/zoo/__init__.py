"""Small architectures for demos and tests, and the training that makes checkpoint series.

Each model is registered with :func:`devvis.models.register_model` where it is defined
(``compact_resnet``: ``preprocess="none"``, it takes raw [0, 1] images), so
``devvis.load_model("compact_resnet")`` builds it; ``MODELS`` maps the zoo's names to those
registered builders. ``model_config.json`` files (and the ``devvis_model_config`` metadata in
each checkpoint) name one of them, so ``devvis.load_model(None, checkpoint=path)`` rebuilds a
trained model on its own.

>>> import torch
>>> m = MODELS["compact_resnet"](num_classes=12, width=8)
>>> m(torch.rand(1, 3, 32, 32)).shape
torch.Size([1, 12])
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from devvis.zoo.resnet import BasicBlock, CompactResNet, compact_resnet
from devvis.zoo.train import (
    QUICK_SETTINGS,
    TrainResult,
    checkpoint_file,
    load_series_info,
    log_spaced_steps,
    train_series,
)

#: The zoo's registered builders by name; each takes keyword arguments and returns an ``nn.Module``
#: carrying its registry defaults (``model.devvis_cfg``).
MODELS: dict[str, Callable[..., nn.Module]] = {"compact_resnet": compact_resnet}

__all__ = [
    "MODELS",
    "BasicBlock",
    "CompactResNet",
    "QUICK_SETTINGS",
    "TrainResult",
    "checkpoint_file",
    "compact_resnet",
    "load_series_info",
    "log_spaced_steps",
    "train_series",
]

"""Small architectures for demos and tests, and the training that makes checkpoint series.

``MODELS`` maps a name to its constructor; ``model_config.json`` files (and the
``devvis_model_config`` metadata in each checkpoint) name one of them, so
``devvis.load_model(None, checkpoint=path)`` rebuilds a trained model on its own.

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

#: Constructors by name; every one takes keyword arguments only and returns an ``nn.Module``.
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

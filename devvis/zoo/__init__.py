"""Small architectures for demos and tests, and the training that makes checkpoint series.

``MODELS`` maps a name to its constructor; ``model_config.json`` files (and the
``devvis_model_config`` metadata in each checkpoint) name one of them.

>>> import torch
>>> m = build_model({"name": "compact_resnet", "kwargs": {"num_classes": 12, "width": 8}})
>>> m(torch.rand(1, 3, 32, 32)).shape
torch.Size([1, 12])
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Mapping

from torch import nn

from devvis.errors import CheckpointError, ModelNotFoundError, closest
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


def build_model(config: Mapping[str, Any]) -> nn.Module:
    """Build an untrained model from ``{"name": ..., "kwargs": {...}}`` (the ``model_config.json`` format).

    Raises :class:`~devvis.errors.ModelNotFoundError` naming the valid names for an unknown name.
    """
    name = config.get("name")
    if name not in MODELS:
        close = closest(str(name), MODELS)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ModelNotFoundError(f"unknown zoo model {name!r}{hint}; valid: {', '.join(MODELS)}")
    return MODELS[name](**dict(config.get("kwargs") or {}))


def load_checkpoint(path: str | os.PathLike) -> nn.Module:
    """Rebuild the model saved in a ``step_*.safetensors`` file written by :func:`train_series`, in eval mode.

    The architecture comes from the file's ``devvis_model_config`` metadata, or else
    from ``model_config.json`` beside it. Raises :class:`~devvis.errors.CheckpointError`
    for a missing or unreadable file, or weights that do not fit the architecture.

    >>> import tempfile
    >>> r = train_series(tempfile.mkdtemp(), steps=1, width=4, n_train=16, n_test=12, progress=False)
    >>> type(load_checkpoint(r.final_checkpoint)).__name__
    'CompactResNet'
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"cannot read checkpoint {str(path)!r}: {e}") from e
    if "devvis_model_config" in meta:
        config = json.loads(meta["devvis_model_config"])
    elif (path.parent / "model_config.json").is_file():
        config = json.loads((path.parent / "model_config.json").read_text(encoding="utf-8"))
    else:
        raise CheckpointError(
            f"checkpoint {str(path)!r} has no devvis_model_config metadata and no model_config.json beside it"
        )
    model = build_model(config)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint {str(path)!r} does not fit {config.get('name')!r}: {e}") from e
    return model.eval()


__all__ = [
    "MODELS",
    "BasicBlock",
    "CompactResNet",
    "QUICK_SETTINGS",
    "TrainResult",
    "build_model",
    "checkpoint_file",
    "compact_resnet",
    "load_checkpoint",
    "load_series_info",
    "log_spaced_steps",
    "train_series",
]

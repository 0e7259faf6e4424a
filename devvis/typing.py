"""Named types for what devvis's public API accepts.

Each alias is defined once here and used in signatures instead of ``Any``, so a
reader (and a type checker) sees what a function takes. Forward references keep
this module free of imports from the rest of devvis (no import cycles).

Shape contract used across the API:

- ``ImageBatch``: ``(B, C, H, W)`` float images with values in [0, 1] (``C`` is 3,
  or 4 with alpha).
- An activation of a convolutional layer: ``(B, C, H, W)``; of a token layer:
  ``(B, T, D)``; channels-last layers: ``(B, H, W, C)``.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Callable, Mapping, Sequence, Union

import torch
from torch import nn

if TYPE_CHECKING:  # pragma: no cover - names for type checkers only
    from devvis.hooks import Activations
    from devvis.longitudinal.series import CheckpointSeries
    from devvis.objectives.core import Objective

PathLike = Union[str, "os.PathLike[str]"]
"""A file or folder path."""

DeviceLike = Union[str, torch.device, None]
"""A device (``"cpu"``, ``"cuda:0"``, a ``torch.device``); ``None``: where the model is."""

ImageBatch = torch.Tensor
"""``(B, C, H, W)`` float images in [0, 1]."""

TensorFn = Callable[[torch.Tensor], torch.Tensor]
"""A function from a tensor to a tensor (a transform, a preprocessing step)."""

ObjectiveFn = Callable[["Activations"], torch.Tensor]
"""A plain objective function: recorded activations -> one value per image, ``Tensor[B]``."""

ObjectiveLike = Union["Objective", ObjectiveFn, str]
"""An ``Objective``, a plain callable on activations, or a ``"layer:n"`` string."""

PreprocessLike = Union[str, TensorFn, None]
"""``"auto"`` (the model's own default), ``"imagenet"``, ``"none"``, ``None`` (identity) or a callable."""

TransformsLike = Union[str, TensorFn, Sequence[TensorFn], None]
"""``"standard"``, ``None``/``"none"`` (no transforms), a callable or a list of callables."""

ModelFn = Union[nn.Module, str, Callable[[], nn.Module], None]
"""How a series builds its model: an architecture to load into, a model name, a factory, or
``None`` (rebuilt from the config stored with the checkpoints)."""

SeriesLike = Union["CheckpointSeries", Mapping[int, nn.Module], PathLike, Sequence[PathLike]]
"""A ``CheckpointSeries``, a ``{step: model}`` mapping, a folder, or a list of checkpoint files."""

"""Turn the ways people hold probe images (a tensor, a Dataset, a DataLoader) into one image tensor.

>>> import torch
>>> from torch.utils.data import TensorDataset, DataLoader
>>> ds = TensorDataset(torch.rand(5, 3, 8, 8), torch.arange(5))
>>> tuple(images_from(DataLoader(ds, batch_size=2, shuffle=True)).shape)
(5, 3, 8, 8)
"""

from __future__ import annotations

from typing import Any, Union

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

from devvis.data.sources import image_of
from devvis.errors import ConfigError
from devvis.typing import ImageBatch

ImagesLike = Union[ImageBatch, Dataset, DataLoader]
"""Probe images: a tensor ``(N, C, H, W)`` in [0, 1], a Dataset or a DataLoader of images,
``(image, label)`` pairs or dicts with an ``"image"`` entry."""


def _check(images: torch.Tensor, what: str) -> torch.Tensor:
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ConfigError(f"{what} must be images of shape (N, 3, H, W) (or N, 1, H, W); got {tuple(images.shape)}")
    if images.shape[0] == 0:
        raise ConfigError(f"{what} holds no images")
    return images.float()


def images_from(inputs: ImagesLike, batch_size: int = 64) -> ImageBatch:
    """All images of ``inputs`` as one float tensor ``(N, C, H, W)``, in a fixed order.

    ``inputs``: a tensor ``(N, C, H, W)``; a map-style Dataset (read in index
    order, so positions are dataset indices); a DataLoader (its dataset is read in
    index order whatever its sampler, so shuffling cannot make two checkpoints see
    different orders; an iterable-style loader is read once as it comes). Items may
    be images, ``(image, label)`` pairs or dicts with an ``"image"`` entry. The
    whole set is held in memory: pass a ``Subset`` for a large data set.
    """
    if isinstance(inputs, torch.Tensor):
        return _check(inputs, "inputs")
    if isinstance(inputs, DataLoader):
        if isinstance(inputs.dataset, IterableDataset):
            return _check(torch.cat([image_of(b) for b in inputs]), "inputs")
        inputs = inputs.dataset
    if isinstance(inputs, Dataset) and not isinstance(inputs, IterableDataset):
        tensors = getattr(inputs, "tensors", None)  # SyntheticShapes renders faster in one call
        if callable(tensors):
            out = tensors()
            if isinstance(out, (tuple, list)):
                return _check(out[0], "inputs")
        n = len(inputs)  # type: ignore[arg-type]
        return _check(torch.stack([image_of(inputs[i]) for i in range(n)]), "inputs")
    if isinstance(inputs, IterableDataset):
        return _check(torch.stack([image_of(x) for x in inputs]), "inputs")
    raise ConfigError(f"inputs must be a tensor (N, 3, H, W), a Dataset or a DataLoader; got {type(inputs).__name__}")

"""Dataset inputs: an image folder, a tensor, a Dataset or a DataLoader, read as batches of images.

Every analysis that searches a dataset (dataset examples, trust metrics) reads it through
:func:`image_batches`, so the four ways people hold images mean the same thing everywhere:

- a folder path: every ``.png``/``.jpg``/``.jpeg``/``.bmp``/``.webp`` file under it (recursively, sorted
  by path), as RGB, centre-cropped to a square and resized to ``image_size`` (default 64);
- a tensor ``(N, C, H, W)`` in [0, 1];
- a map-style Dataset: read in index order, so positions are dataset indices; items may be
  images, ``(image, label)`` pairs or dicts with an ``"image"`` entry;
- a DataLoader: its dataset is read in index order whatever the sampler (shuffling cannot make two
  checkpoints see different orders); an iterable-style loader is read as it comes.

Shape contract: batches are ``(B, C, H, W)`` float32 in [0, 1] (``C`` = 3, or 1 for grey data sets).

>>> import torch
>>> [(start, tuple(x.shape)) for start, x in image_batches(torch.rand(5, 3, 8, 8), batch_size=2)]
[(0, (2, 3, 8, 8)), (2, (2, 3, 8, 8)), (4, (1, 3, 8, 8))]
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator, Sequence, Union

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

from devvis.errors import ConfigError
from devvis.typing import ImageBatch, PathLike

DatasetLike = Union[PathLike, ImageBatch, Dataset, DataLoader]
"""Images to search: an image folder path, a tensor ``(N, C, H, W)`` in [0, 1], a Dataset or a DataLoader."""

#: Largest data set (bytes as float32) :func:`cached` reads once and keeps for passes over many checkpoints.
MAX_CACHED_BYTES = 256 * 2 ** 20

#: File suffixes read from an image folder.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


class ImageFolder(Dataset):
    """The images of a folder (recursively, sorted by path) as ``(3, image_size, image_size)`` in [0, 1].

    Each image is converted to RGB, centre-cropped to a square and resized (bilinear, antialiased)
    to ``image_size``. ``paths`` lists the files; ``ds[i]`` is the image of ``paths[i]``.

    >>> import tempfile
    >>> from PIL import Image
    >>> d = tempfile.mkdtemp()
    >>> Image.new("RGB", (20, 10), (255, 0, 0)).save(f"{d}/a.png")
    >>> ds = ImageFolder(d, image_size=8)
    >>> len(ds), tuple(ds[0].shape), float(ds[0][0].mean())
    (1, (3, 8, 8), 1.0)
    """

    def __init__(self, root: PathLike, *, image_size: int = 64):
        self.root = Path(root)
        if not self.root.is_dir():
            raise ConfigError(f"dataset folder {str(root)!r} does not exist")
        if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size < 1:
            raise ConfigError(f"image_size must be a positive integer; got {image_size!r}")
        self.image_size = image_size
        self.paths = sorted(p for p in self.root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.paths:
            raise ConfigError(f"dataset folder {str(root)!r} holds no images ({', '.join(IMAGE_SUFFIXES)})")

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        from PIL import Image

        try:
            with Image.open(self.paths[index]) as im:
                im = im.convert("RGB")
                w, h = im.size
                s = min(w, h)
                im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
                im = im.resize((self.image_size, self.image_size), Image.BILINEAR)
                arr = np.asarray(im, dtype=np.float32) / 255.0
        except OSError as e:
            raise ConfigError(f"cannot read image {str(self.paths[index])!r}: {e}") from e
        return torch.from_numpy(arr.copy()).permute(2, 0, 1)

    def __repr__(self) -> str:
        return f"ImageFolder({str(self.root)!r}, n={len(self)}, image_size={self.image_size})"


def image_of(item: Any) -> torch.Tensor:
    """The image of a data-set item: the item itself, the first of a tuple/list, or ``item["image"]``.

    >>> tuple(image_of((torch.zeros(3, 2, 2), 7)).shape)
    (3, 2, 2)
    """
    if isinstance(item, torch.Tensor):
        return item
    if isinstance(item, (tuple, list)) and item and isinstance(item[0], torch.Tensor):
        return item[0]
    if isinstance(item, dict):
        for key in ("image", "images", "pixel_values", "x", "input"):
            if isinstance(item.get(key), torch.Tensor):
                return item[key]
    raise ConfigError(f"cannot find an image in a data item of type {type(item).__name__}; expected a tensor, "
                      "an (image, label) pair or a dict with an 'image' entry")


def _checked(images: torch.Tensor, what: str = "dataset images") -> torch.Tensor:
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ConfigError(f"{what} must be images of shape (N, 3, H, W) (or N, 1, H, W); got {tuple(images.shape)}")
    return images.float()


def as_dataset(dataset: DatasetLike, *, image_size: int = 64) -> ImageBatch | Dataset | DataLoader:
    """``dataset`` with a folder path turned into an :class:`ImageFolder`; anything else is checked and returned.

    A tensor must be ``(N, C, H, W)``; a Dataset or a DataLoader is returned as is.
    """
    if isinstance(dataset, (str, os.PathLike)):
        return ImageFolder(dataset, image_size=image_size)
    if isinstance(dataset, torch.Tensor):
        return _checked(dataset, "dataset tensor")
    if isinstance(dataset, (Dataset, DataLoader)):
        return dataset
    raise ConfigError(f"dataset must be an image folder path, a tensor (N, 3, H, W), a Dataset or a DataLoader; "
                      f"got {type(dataset).__name__}")


def dataset_size(dataset: DatasetLike) -> int | None:
    """The number of images (None for an iterable-style data set, whose length is unknown until read)."""
    d = as_dataset(dataset)
    if isinstance(d, torch.Tensor):
        return int(d.shape[0])
    if isinstance(d, DataLoader):
        d = d.dataset
    if isinstance(d, IterableDataset):
        return None
    return len(d)  # type: ignore[arg-type]


def image_batches(dataset: DatasetLike, *, batch_size: int = 64, image_size: int = 64,
                  limit: int | None = None) -> Iterator[tuple[int, ImageBatch]]:
    """``(start, images)`` pairs: consecutive batches ``(B, C, H, W)`` in [0, 1] of ``dataset``, in index order.

    ``start`` is the dataset index of the batch's first image. ``image_size`` applies to folders
    only; ``limit`` stops after that many images.
    """
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer; got {batch_size!r}")
    d = as_dataset(dataset, image_size=image_size)
    n = dataset_size(d)
    stop = n if limit is None else (limit if n is None else min(n, limit))
    if isinstance(d, torch.Tensor):
        for i in range(0, stop or 0, batch_size):
            yield i, d[i:min(i + batch_size, stop or 0)]
        return
    source = d.dataset if isinstance(d, DataLoader) else d
    if isinstance(source, IterableDataset):
        yield from _iterable_batches(d, batch_size, limit)
        return
    tensors = getattr(source, "tensors", None)  # SyntheticShapes renders a range faster in one call
    for i in range(0, stop or 0, batch_size):
        j = min(i + batch_size, stop or 0)
        if callable(tensors):
            out = tensors(i, j)
            images = out[0] if isinstance(out, (tuple, list)) else out
        else:
            images = torch.stack([image_of(source[k]) for k in range(i, j)])
        yield i, _checked(images)


def _iterable_batches(d: Any, batch_size: int, limit: int | None) -> Iterator[tuple[int, ImageBatch]]:
    buf: list[torch.Tensor] = []
    start = seen = 0
    for item in d:
        x = image_of(item)
        items = list(x) if isinstance(d, DataLoader) and x.dim() == 4 else [x]
        for img in items:
            if limit is not None and seen >= limit:
                break
            buf.append(img)
            seen += 1
            if len(buf) == batch_size:
                yield start, _checked(torch.stack(buf))
                start, buf = start + len(buf), []
    if buf:
        yield start, _checked(torch.stack(buf))


def dataset_images(dataset: DatasetLike, indices: Sequence[int], *, image_size: int = 64) -> ImageBatch:
    """The images at ``indices`` (dataset positions, as :func:`image_batches` numbers them), ``(K, C, H, W)``.

    >>> tuple(dataset_images(torch.rand(5, 3, 8, 8), [4, 0]).shape)
    (2, 3, 8, 8)
    """
    d = as_dataset(dataset, image_size=image_size)
    idx = [int(i) for i in indices]
    if isinstance(d, torch.Tensor):
        return d[idx]
    source = d.dataset if isinstance(d, DataLoader) else d
    if isinstance(source, IterableDataset):
        wanted = set(idx)
        found: dict[int, torch.Tensor] = {}
        for start, batch in image_batches(d, batch_size=64, image_size=image_size, limit=max(idx) + 1):
            for j in range(batch.shape[0]):
                if start + j in wanted:
                    found[start + j] = batch[j]
        return torch.stack([found[i] for i in idx])
    if not idx:
        raise ConfigError("dataset_images needs at least one index")
    return _checked(torch.stack([image_of(source[i]) for i in idx]))


def cached(dataset: DatasetLike, *, image_size: int = 64, max_bytes: int = MAX_CACHED_BYTES) -> DatasetLike:
    """``dataset`` read once into one tensor ``(N, C, H, W)`` when its length is known and it takes at most
    ``max_bytes`` as float32 (so passes over many checkpoints do not decode or generate it again); otherwise
    (or when it already is a tensor) ``dataset`` itself. Same images, same order as :func:`image_batches`.

    >>> x = torch.rand(5, 3, 8, 8)
    >>> cached(x) is x, cached(x, max_bytes=10) is x
    (True, True)
    """
    n = dataset_size(dataset)
    if n is None or isinstance(as_dataset(dataset, image_size=image_size), torch.Tensor):
        return dataset
    _, first = next(image_batches(dataset, batch_size=1, image_size=image_size))
    if first[0].numel() * 4 * n > max_bytes:
        return dataset
    return torch.cat([b for _, b in image_batches(dataset, batch_size=256, image_size=image_size)])


def describe(dataset: DatasetLike) -> dict[str, Any]:
    """What ``dataset`` is, for records: its kind, size and (for a folder) path."""
    if isinstance(dataset, (str, os.PathLike)):
        return {"kind": "folder", "path": str(dataset), "n": dataset_size(dataset)}
    kind = "tensor" if isinstance(dataset, torch.Tensor) else type(dataset).__name__
    inner = getattr(dataset, "dataset", None)
    out: dict[str, Any] = {"kind": kind, "n": dataset_size(dataset)}
    if inner is not None or not isinstance(dataset, torch.Tensor):
        out["repr"] = repr(inner if inner is not None else dataset)[:200]
    return out

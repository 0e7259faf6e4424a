"""The data side of the LLC samplers: ``(inputs, targets)`` batches, their size, device and mean loss.

A loader is anything iterable that yields ``(inputs, targets)`` pairs (a DataLoader,
a list of tensor pairs); ``inputs`` may be a tensor, a tuple/list of tensors or a dict
of tensors (passed to the model as one argument).

>>> import torch
>>> loader = [(torch.zeros(4, 3), torch.zeros(4)), (torch.zeros(2, 3), torch.zeros(2))]
>>> batch_size_of(loader), mean_loss(lambda x: x.sum(1), loader, lambda o, t: (o - t).abs().mean() + 1,
...                                  torch.device("cpu"))
(4, 1.0)
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator

import torch
from torch import nn

from devvis.errors import ConfigError

__all__ = ["Batch", "Criterion", "Loader", "batch_size_of", "leading_dim", "split_batch", "to_device", "cycle",
           "mean_loss"]

Batch = tuple[Any, Any]
"""One ``(inputs, targets)`` pair; ``inputs`` a tensor ``(m, ...)``, a tuple/list or a dict of them."""

Loader = Iterable[Batch]
"""An iterable of ``(inputs, targets)`` batches (a DataLoader or a list), iterated again and again."""

Criterion = Callable[[Any, Any], torch.Tensor]
"""``criterion(model(inputs), targets) -> scalar``: the mean per-sample negative log-likelihood of the batch."""


def batch_size_of(loader: Loader) -> int:
    """The minibatch size ``m``: the loader's ``batch_size``, else the leading size of its first batch."""
    bs = getattr(loader, "batch_size", None)
    if isinstance(bs, int) and bs > 0:
        return bs
    inputs, _ = split_batch(next(iter(loader)))
    return leading_dim(inputs)


def leading_dim(x: Any) -> int:
    """The number of samples in ``x`` (a tensor's first dimension, looked up inside tuples and dicts); 1 if unknown."""
    if isinstance(x, torch.Tensor):
        return int(x.shape[0]) if x.dim() else 1
    if isinstance(x, (list, tuple)) and x:
        return leading_dim(x[0])
    if isinstance(x, dict) and x:
        return leading_dim(next(iter(x.values())))
    return 1


def split_batch(batch: Any) -> Batch:
    """``(inputs, targets)`` of ``batch``; :class:`~devvis.errors.ConfigError` when it is not such a pair."""
    if isinstance(batch, (list, tuple)) and len(batch) >= 2:
        return batch[0], batch[1]
    raise ConfigError(
        f"each batch must be an (inputs, targets) pair, got {type(batch).__name__}"
        + (f" of length {len(batch)}" if isinstance(batch, (list, tuple)) else "")
    )


def to_device(x: Any, device: torch.device) -> Any:
    """``x`` with every tensor inside (tuples, lists, dicts) moved to ``device``."""
    if isinstance(x, torch.Tensor):
        return x.to(device, non_blocking=True)
    if isinstance(x, (list, tuple)):
        return type(x)(to_device(v, device) for v in x)
    if isinstance(x, dict):
        return {k: to_device(v, device) for k, v in x.items()}
    return x


def cycle(loader: Loader) -> Iterator[Batch]:
    """Iterate ``loader`` forever, restarting it when exhausted."""
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise ConfigError("the loader yielded no batches")


def mean_loss(model: nn.Module | Callable[[Any], Any], loader: Loader, criterion: Criterion, device: torch.device,
              max_batches: int | None = None) -> float:
    """The loss over ``loader`` (its first ``max_batches`` batches), batches weighted by their size; no gradients."""
    total, weight = 0.0, 0
    with torch.no_grad():
        for i, batch in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            x, y = to_device(split_batch(batch), device)
            n = leading_dim(x)
            total += float(criterion(model(x), y)) * n
            weight += n
    if weight == 0:
        raise ConfigError("the loader yielded no batches")
    return total / weight

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

__all__ = ["Batch", "Criterion", "Loader", "SeededStream", "batch_size_of", "leading_dim", "loader_generators",
           "split_batch", "to_device", "cycle",
           "batch_losses", "weighted_mean", "mean_loss"]

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


def batch_losses(model: nn.Module | Callable[[Any], Any], loader: Loader, criterion: Criterion, device: torch.device,
                 max_batches: int | None = None) -> list[tuple[float, int]]:
    """``(loss, batch size)`` of each batch of ``loader`` (its first ``max_batches``); no gradients."""
    out: list[tuple[float, int]] = []
    with torch.no_grad():
        for i, batch in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            x, y = to_device(split_batch(batch), device)
            out.append((float(criterion(model(x), y)), leading_dim(x)))
    if not out:
        raise ConfigError("the loader yielded no batches")
    return out


def weighted_mean(losses: list[tuple[float, int]]) -> float:
    """The mean of ``(loss, batch size)`` pairs, batches weighted by their size."""
    return sum(v * n for v, n in losses) / sum(n for _, n in losses)


def mean_loss(model: nn.Module | Callable[[Any], Any], loader: Loader, criterion: Criterion, device: torch.device,
              max_batches: int | None = None) -> float:
    """The loss over ``loader`` (its first ``max_batches`` batches), batches weighted by their size; no gradients."""
    return weighted_mean(batch_losses(model, loader, criterion, device, max_batches))


def loader_generators(loader: Any) -> list[torch.Generator]:
    """The ``torch.Generator`` objects a loader draws its order from (its own, its sampler's, its batch sampler's)."""
    found: list[torch.Generator] = []
    holders = [loader, getattr(loader, "sampler", None), getattr(loader, "batch_sampler", None)]
    holders.append(getattr(holders[2], "sampler", None))
    for holder in holders:
        gen = getattr(holder, "generator", None)
        if isinstance(gen, torch.Generator) and all(gen is not g for g in found):
            found.append(gen)
    return found


class SeededStream:
    """Batches of ``loader`` drawn on private random streams seeded by ``seed``.

    Every ``next()`` runs the loader with its own generators (a DataLoader's ``generator``, its
    sampler's) and the global CPU RNG (which an unseeded shuffle or a random augmentation reads)
    swapped for this stream's states, then puts the caller's states back. So the order and the
    augmentation of the batches depend only on ``seed``: the same for every checkpoint of a series,
    whatever the loader's generator had done before, and the loader's generator is left untouched.
    Several streams can be interleaved step by step (the chains of one estimate) without
    influencing each other. A loader whose workers draw from other generators is not covered.

    >>> g = torch.Generator().manual_seed(5)
    >>> dl = torch.utils.data.DataLoader(list(range(6)), batch_size=2, shuffle=True, generator=g)
    >>> state = g.get_state()
    >>> a = [next(s).tolist() for s in [SeededStream(dl, 1)] for _ in range(3)]
    >>> _ = list(dl)  # the loader's own generator advances...
    >>> b = [next(s).tolist() for s in [SeededStream(dl, 1)] for _ in range(3)]
    >>> a == b, torch.equal(g.get_state(), state) or "advanced only by list(dl)"
    (True, 'advanced only by list(dl)')
    """

    def __init__(self, loader: Loader, seed: int, *, epochs: int | None = None):
        self.loader = loader
        self.epochs = epochs
        self._generators = loader_generators(loader)
        self._states = [torch.Generator(device=g.device).manual_seed(seed + 1 + i).get_state()
                        for i, g in enumerate(self._generators)]
        self._global = torch.Generator().manual_seed(seed).get_state()
        self._it: Iterator[Any] | None = None
        self._epoch = 0
        self._empty = True

    def _swap(self) -> tuple[list[torch.Tensor], torch.Tensor]:
        saved = ([g.get_state() for g in self._generators], torch.get_rng_state())
        for g, s in zip(self._generators, self._states):
            g.set_state(s)
        torch.set_rng_state(self._global)
        return saved

    def _unswap(self, saved: tuple[list[torch.Tensor], torch.Tensor]) -> None:
        self._states = [g.get_state() for g in self._generators]
        self._global = torch.get_rng_state()
        for g, s in zip(self._generators, saved[0]):
            g.set_state(s)
        torch.set_rng_state(saved[1])

    def __iter__(self) -> "SeededStream":
        return self

    def __next__(self) -> Any:
        saved = self._swap()
        try:
            while True:
                if self._it is None:
                    if self.epochs is not None and self._epoch >= self.epochs:
                        raise StopIteration
                    self._it, self._empty = iter(self.loader), True
                try:
                    batch = next(self._it)
                    self._empty = False
                    return batch
                except StopIteration:
                    if self._empty:
                        raise ConfigError("the loader yielded no batches") from None
                    self._it, self._epoch = None, self._epoch + 1
        finally:
            self._unswap(saved)

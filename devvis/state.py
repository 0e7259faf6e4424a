"""Borrowing a model: :func:`frozen` gives it back exactly as it was.

Every part of devvis that runs someone else's model (render, evaluate,
activations, circuits, the LLC samplers) borrows it through this one context,
so the rules are the same everywhere:

- the mode of **every submodule** is saved and restored one by one (a model in
  train mode holding BatchNorm layers in eval mode comes back that way, not
  flattened to one mode);
- ``requires_grad`` and ``.grad`` of every parameter are restored;
- with ``restore_values=True`` the parameter and buffer *values* are restored
  bit-exactly too (samplers move the weights; train-mode BatchNorm updates its
  running statistics);
- with ``device=`` the model is moved there and back.

All of it happens in a ``finally``, so errors and Ctrl-C restore as well.

>>> import torch
>>> from torch import nn
>>> from devvis.state import frozen
>>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).train()
>>> _ = net[1].eval()  # a frozen BatchNorm inside a model in train mode
>>> with frozen(net) as m:
...     (m.training, m[1].training, m[0].weight.requires_grad)
(False, False, False)
>>> (net.training, net[1].training, net[0].weight.requires_grad)
(True, False, True)
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Literal

import torch
from torch import nn

from devvis.errors import ConfigError

Mode = Literal["eval", "train", "keep"]
MODES = ("eval", "train", "keep")


def as_device(device: str | torch.device | None) -> torch.device | None:
    """``device`` as a ``torch.device`` (``None`` stays ``None``: "where the model is").

    The one place a user's device string is checked, so every entry point gives the same
    one-line error.

    >>> as_device("cpu"), as_device(None)
    (device(type='cpu'), None)
    """
    if device is None or isinstance(device, torch.device):
        return device
    try:
        return torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError(f"device {device!r} is not valid; expected cpu, cuda, cuda:1, mps, ...") from None


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (else buffer); CPU for a stateless model."""
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


@contextlib.contextmanager
def frozen(model: nn.Module, *, mode: Mode = "eval", freeze: bool = True, restore_values: bool = False,
           device: str | torch.device | None = None,
           memory_format: torch.memory_format | None = None) -> Iterator[nn.Module]:
    """Borrow ``model`` for the ``with`` block and give it back exactly as it was.

    Args:
        model: any ``nn.Module``; yielded back (the same object, not a copy).
        mode: ``"eval"`` (default: what feature visualization and circuits
            analyse), ``"train"`` (what training and SGLD sampling see: BatchNorm
            on batch statistics) or ``"keep"`` (leave each submodule as it is).
        freeze: set ``requires_grad=False`` on every parameter inside the block, so
            gradients flow to the input only.
        restore_values: also restore parameter and buffer values bit-exactly
            (clones them on entry; needed when the block changes weights or when
            ``mode="train"`` updates BatchNorm statistics).
        device: move the model here inside the block and back afterwards; a model
            spread over several devices cannot be moved (``ConfigError``).
        memory_format: lay out every 4-d parameter and buffer (convolution weights) in this
            format inside the block (``torch.channels_last``: faster convolutions on a CPU), and
            give the model back in its own layout afterwards, with the values the block left.

    Restored on exit, also on errors: every submodule's train/eval flag,
    ``requires_grad`` and ``.grad`` of every parameter, the device, the memory layout and, with
    ``restore_values``, the values.
    """
    if mode not in MODES:
        raise ConfigError(f"mode {mode!r} is not valid; choose one of {', '.join(MODES)}")
    params = list(model.parameters())
    buffers = list(model.buffers())
    modes = [(m, m.training) for m in model.modules()]
    grad_flags = [p.requires_grad for p in params]
    grads = [None if p.grad is None else (p.grad.detach().clone() if restore_values else p.grad) for p in params]
    values = [t.detach().clone() for t in params + buffers] if restore_values else None
    devices = {t.device for t in params + buffers}
    target = as_device(device)
    moved = target is not None and devices != {target} and bool(devices)
    if moved and len(devices) > 1:
        raise ConfigError(f"model spans several devices {sorted(map(str, devices))}; "
                          "leave device=None to use it where it is")
    origin = next(iter(devices)) if moved else None
    relaid: list[tuple[torch.Tensor, torch.Tensor]] = []  # (tensor, its data in its own layout)
    try:
        if moved:
            model.to(target)
        if memory_format is not None:
            for t in params + buffers:
                if t.dim() == 4 and not t.is_contiguous(memory_format=memory_format):
                    relaid.append((t, t.data))
                    t.data = t.data.contiguous(memory_format=memory_format)
        if mode != "keep":
            model.train(mode == "train")
        if freeze:
            for p in params:
                p.requires_grad_(False)
        yield model
    finally:
        with torch.no_grad():
            for t, own in relaid:  # the block's values, back in the tensor's own layout
                own.copy_(t.data)
                t.data = own
        if moved:
            model.to(origin)
        with torch.no_grad():
            if values is not None:
                for t, v in zip(params + buffers, values):
                    t.copy_(v)
            for p, flag, g in zip(params, grad_flags, grads):
                p.requires_grad_(flag)
                p.grad = g
        for m, training in modes:
            m.train(training)

"""Redirected ReLU: Lucid's gradient trick so that dead units still receive gradient.

While active, every ``nn.ReLU`` module of the model computes the usual ReLU in the
forward pass, but in the backward pass, for an image whose ReLU gradient is zero
everywhere, lets through the gradient that would *raise* negative inputs. The
model is not changed permanently: the ReLU modules get their own ``forward``
back when the context ends. Functional ``F.relu`` calls are not redirected.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn


class _RedirectedReLUFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        return x.clamp_min(0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        relu_grad = torch.where(x < 0, torch.zeros_like(grad), grad)
        # grad > 0 at x < 0 would push x further down under gradient descent: block it
        redirected = torch.where((x < 0) & (grad > 0), torch.zeros_like(grad), grad)
        mag = relu_grad.reshape(relu_grad.shape[0], -1).norm(dim=1)
        keep = (mag > 0).view(-1, *([1] * (grad.dim() - 1)))
        return torch.where(keep, relu_grad, redirected)


def redirected_relu_fn(x: torch.Tensor) -> torch.Tensor:
    """ReLU forward, redirected gradient backward."""
    return _RedirectedReLUFn.apply(x)


class _Switch:
    def __init__(self, modules: list[nn.ReLU]):
        self.modules = modules
        self.active = False

    def enable(self) -> None:
        for m in self.modules:
            m.forward = redirected_relu_fn  # type: ignore[method-assign]
        self.active = True

    def disable(self) -> None:
        for m in self.modules:
            m.__dict__.pop("forward", None)
        self.active = False


@contextlib.contextmanager
def redirected_relu(model: nn.Module) -> Iterator[_Switch]:
    """Redirect the gradient of every ``nn.ReLU`` of ``model`` inside the ``with`` block.

    Yields a switch whose ``disable()`` restores the ordinary ReLUs early (``render``
    does so after 16 steps, as Lucid does).
    """
    switch = _Switch([m for m in model.modules() if isinstance(m, nn.ReLU)])
    switch.enable()
    try:
        yield switch
    finally:
        switch.disable()

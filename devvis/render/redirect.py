"""Redirected ReLU: Lucid's gradient trick so that dead units still receive gradient.

While active, every ``nn.ReLU`` and ``nn.ReLU6`` module of the model (``inplace``
or not) computes its usual forward value, but in the backward pass, for an
image whose ReLU gradient is zero everywhere, lets through the gradient that
would move a clipped input back into the active range (raise a negative input;
for ReLU6 also lower an input above 6). Early in a render, when most units of a
randomly initialized image are dead, this gives the optimizer somewhere to go.

The model is not changed permanently: each module gets back exactly the
``forward`` it had when the context ends (also on error). Limits: functional
calls (``F.relu``, ``torch.relu``, ``x.clamp(min=0)`` inside a ``forward``) are
not modules and are not redirected; other activations (GELU, SiLU, Hardswish)
have no dead zone to redirect and are left alone.

>>> import torch, torchvision
>>> m = torchvision.models.mobilenet_v2(weights=None).eval()
>>> x = torch.rand(1, 3, 32, 32)
>>> before = m(x)
>>> with redirected_relu(m) as switch:
...     len(switch.modules) > 0
True
>>> bool(torch.equal(m(x), before))
True
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

import torch
from torch import nn

_MISSING = object()

#: Steps during which ``render(redirect_relu=True)`` redirects the ReLU gradient (Lucid's 16).
REDIRECT_RELU_STEPS = 16


def _redirected_grad(x: torch.Tensor, grad: torch.Tensor, upper: float | None) -> torch.Tensor:
    """Gradient of the clip ``[0, upper]``, redirected per image when the ordinary one is zero everywhere."""
    dead = x < 0
    # grad > 0 at x < 0 would push x further down under gradient descent: block only that
    blocked = dead & (grad > 0)
    if upper is not None:
        dead = dead | (x > upper)
        blocked = blocked | ((x > upper) & (grad < 0))
    zeros = torch.zeros_like(grad)
    relu_grad = torch.where(dead, zeros, grad)
    redirected = torch.where(blocked, zeros, grad)
    mag = relu_grad.reshape(relu_grad.shape[0], -1).norm(dim=1) if relu_grad.dim() else relu_grad.abs()
    keep = (mag > 0).view(-1, *([1] * (grad.dim() - 1))) if grad.dim() else mag > 0
    return torch.where(keep, relu_grad, redirected)


class _RedirectedReLUFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        return x.clamp_min(0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return _redirected_grad(x, grad, None)


class _RedirectedReLU6Fn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        return x.clamp(0, 6)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return _redirected_grad(x, grad, 6.0)


def redirected_relu_fn(x: torch.Tensor) -> torch.Tensor:
    """ReLU forward, redirected gradient backward (``x``: any shape with the batch first)."""
    return _RedirectedReLUFn.apply(x)


def redirected_relu6_fn(x: torch.Tensor) -> torch.Tensor:
    """ReLU6 forward (``clamp(x, 0, 6)``), redirected gradient backward."""
    return _RedirectedReLU6Fn.apply(x)


def _replacement(module: nn.Module) -> Callable[[torch.Tensor], torch.Tensor] | None:
    # ReLU6 subclasses Hardtanh, not ReLU, so test it first and by exact bounds.
    if isinstance(module, nn.ReLU6):
        return redirected_relu6_fn
    if isinstance(module, nn.ReLU):
        return redirected_relu_fn
    return None


class RedirectSwitch:
    """The redirected modules, and what their instance ``forward`` was before (usually nothing)."""

    def __init__(self, modules: list[nn.Module]):
        self.modules = modules
        self._saved: list[tuple[nn.Module, Any]] = []
        self.active = False

    def enable(self) -> None:
        if self.active:
            return
        self._saved = [(m, m.__dict__.get("forward", _MISSING)) for m in self.modules]
        for m in self.modules:
            m.forward = _replacement(m)  # type: ignore[method-assign]
        self.active = True

    def disable(self) -> None:
        if not self.active:
            return
        for m, old in self._saved:
            if old is _MISSING:
                m.__dict__.pop("forward", None)
            else:
                m.forward = old  # type: ignore[method-assign]
        self._saved = []
        self.active = False


@contextlib.contextmanager
def maybe_redirected_relu(model: nn.Module, enabled: bool) -> Iterator[RedirectSwitch | None]:
    """:func:`redirected_relu` when ``enabled``, else nothing (yields ``None``)."""
    if not enabled:
        yield None
        return
    with redirected_relu(model) as switch:
        yield switch


@contextlib.contextmanager
def redirected_relu(model: nn.Module) -> Iterator[RedirectSwitch]:
    """Redirect the gradient of every ``nn.ReLU`` / ``nn.ReLU6`` of ``model`` inside the ``with`` block.

    Yields a switch whose ``disable()`` restores the ordinary modules early (``render``
    does so after :data:`REDIRECT_RELU_STEPS` steps, as Lucid does). The forward values are unchanged throughout.
    """
    switch = RedirectSwitch([m for m in model.modules() if _replacement(m) is not None])
    switch.enable()
    try:
        yield switch
    finally:
        switch.disable()

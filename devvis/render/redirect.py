"""Redirected gradients: Lucid's trick so that dead ReLU and GELU units still receive gradient.

While active (``render(redirect_relu=True)``: the first :data:`REDIRECT_RELU_STEPS` steps), the
model's forward values are unchanged; only the backward pass of two kinds of units differs.

**ReLU / ReLU6** (every ``nn.ReLU`` and ``nn.ReLU6`` module, ``inplace`` or not): for an image
whose ReLU gradient is zero everywhere, the backward lets through the gradient that would move a
clipped input back into the active range (raise a negative input; for ReLU6 also lower an input
above 6) and blocks the one that would push it further out (Lucid's ``redirected_relu_grad``).

**GELU** (every ``F.gelu`` call made inside the model's forward pass: ``nn.GELU`` modules, as in
torchvision's and timm's ViT MLP blocks, and functional calls alike, exact or ``approximate="tanh"``).
With ``y = GELU(x)``, loss ``L = -objective`` and ``g = dL/dy``, the backward returns per element::

    dL/dx = g                 where x < 0 and GELU'(x) <= 0 (the falling branch) and g < 0
    dL/dx = g * GELU'(x)      everywhere else (the ordinary gradient)

Left of GELU's minimum (``x < -0.752``, output ``>= -0.17``) the output *falls* as ``x`` rises, and
its slope vanishes as ``x`` goes down (``GELU'(-5) ~ -7e-6``, ``GELU'(-10) ~ -8e-22``): a unit
pushed there is dead. When the render wants that output higher (``g < 0``), the ordinary gradient
asks for an even lower ``x`` (the output creeps up towards 0 from below, a dead end) and is ~0 anyway;
the redirected gradient passes ``g`` as through an identity, so gradient descent raises ``x`` towards
the minimum and past it, into the range where the output can grow: "let through the gradient that
would raise a dead input", Lucid's rule for ReLU. Where the render wants the output lower, nothing
changes. Unlike ReLU's, GELU's gradient is never exactly zero, so there is no per-image "nothing got
through" test: the rule applies per element, during the redirect phase only.

The model is not changed permanently: each ReLU module gets back exactly the ``forward`` it had
when the context ends (also on error); GELU calls are caught by a
:class:`torch.overrides.TorchFunctionMode` that lives only inside the ``with`` block and acts only
while the model's own forward pass runs (the param, transforms and objective are never touched).
Limits: functional ReLU calls (``F.relu``, ``torch.relu``, ``x.clamp(min=0)`` in a ``forward``) are
not redirected; SiLU, Hardswish and Mish are left alone.

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
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

_MISSING = object()

#: Steps during which ``render(redirect_relu=True)`` redirects the ReLU and GELU gradients (Lucid's 16).
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


def redirected_gelu_grad(x: torch.Tensor, grad: torch.Tensor, approximate: str = "none") -> torch.Tensor:
    """``dL/dx`` of ``y = GELU(x)`` given ``grad = dL/dy``, redirected on the falling branch (module docstring).

    ``x`` and ``grad``: the same shape, any layout.

    >>> x = torch.tensor([-8.0, -8.0, -0.5, 2.0])   # dead, dead, rising branch, active
    >>> [round(v, 3) for v in redirected_gelu_grad(x, torch.tensor([-1.0, 1.0, -1.0, -1.0])).tolist()]
    [-1.0, 0.0, -0.133, -1.085]
    """
    ordinary = torch.ops.aten.gelu_backward(grad, x, approximate=approximate)
    slope = torch.ops.aten.gelu_backward(torch.ones_like(grad), x, approximate=approximate)
    falling = (x < 0) & (slope <= 0)
    return torch.where(falling & (grad < 0), grad, ordinary)


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


class _RedirectedGELUFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, approximate: str) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.approximate = approximate
        return F.gelu(x, approximate=approximate)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return redirected_gelu_grad(x, grad, ctx.approximate), None


def redirected_relu_fn(x: torch.Tensor) -> torch.Tensor:
    """ReLU forward, redirected gradient backward (``x``: any shape with the batch first)."""
    return _RedirectedReLUFn.apply(x)


def redirected_relu6_fn(x: torch.Tensor) -> torch.Tensor:
    """ReLU6 forward (``clamp(x, 0, 6)``), redirected gradient backward."""
    return _RedirectedReLU6Fn.apply(x)


def redirected_gelu_fn(x: torch.Tensor, approximate: str = "none") -> torch.Tensor:
    """``F.gelu(x, approximate=...)`` forward (the same values), redirected gradient backward (any shape).

    >>> x = torch.tensor([-8.0], requires_grad=True)
    >>> (-redirected_gelu_fn(x).sum()).backward()   # maximize GELU(-8): the plain gradient is ~1e-14
    >>> x.grad.tolist()
    [-1.0]
    """
    return _RedirectedGELUFn.apply(x, approximate)


def _replacement(module: nn.Module) -> Callable[[torch.Tensor], torch.Tensor] | None:
    # ReLU6 subclasses Hardtanh, not ReLU, so test it first and by exact bounds.
    if isinstance(module, nn.ReLU6):
        return redirected_relu6_fn
    if isinstance(module, nn.ReLU):
        return redirected_relu_fn
    return None


def _gelu_args(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, str]:
    """``(input, approximate)`` of an ``F.gelu(input, approximate="none")`` call."""
    x = args[0] if args else kwargs["input"]
    approximate = args[1] if len(args) > 1 else kwargs.get("approximate", "none")
    return x, approximate


class _GELURedirect(TorchFunctionMode):
    """Routes ``F.gelu`` calls through :func:`redirected_gelu_fn` while ``switch.active`` and inside the model."""

    def __init__(self, switch: "RedirectSwitch") -> None:
        super().__init__()
        self.switch = switch
        self.depth = 0  # > 0 while the model's forward pass runs
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        if func is F.gelu and self.switch.active and self.depth > 0:
            x, approximate = _gelu_args(args, kwargs)
            if isinstance(x, torch.Tensor) and torch.is_grad_enabled() and x.requires_grad:
                self.calls += 1
                return redirected_gelu_fn(x, approximate)
        return func(*args, **kwargs)


class RedirectSwitch:
    """The redirected ReLU modules, what their instance ``forward`` was before (usually nothing), and a flag.

    ``active`` also governs the GELU redirection of :func:`redirected_relu`; ``gelu_calls`` counts the
    GELU calls it redirected so far (0 when the model computes no GELU with gradient).
    """

    def __init__(self, modules: list[nn.Module]):
        self.modules = modules
        self._saved: list[tuple[nn.Module, Any]] = []
        self.active = False
        self._gelu: _GELURedirect | None = None

    @property
    def gelu_calls(self) -> int:
        """How many ``F.gelu`` calls of the model's forward passes were redirected."""
        return self._gelu.calls if self._gelu is not None else 0

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
def _gelu_scope(model: nn.Module, switch: RedirectSwitch) -> Iterator[None]:
    """Install the GELU mode for the ``with`` block, acting only while ``model``'s forward runs."""
    mode = _GELURedirect(switch)

    def enter(_m: nn.Module, _args: Any) -> None:
        mode.depth += 1

    def leave(_m: nn.Module, _args: Any, _out: Any) -> None:
        mode.depth -= 1

    handles = [model.register_forward_pre_hook(enter),
               model.register_forward_hook(leave, always_call=True)]  # also when the forward stops early
    switch._gelu = mode
    try:
        with mode:
            yield
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def redirected_relu(model: nn.Module) -> Iterator[RedirectSwitch]:
    """Redirect the gradient of every ``nn.ReLU`` / ``nn.ReLU6`` and GELU of ``model`` inside the ``with`` block.

    Yields a switch whose ``disable()`` restores the ordinary gradients early (``render`` does so
    after :data:`REDIRECT_RELU_STEPS` steps, as Lucid does). The forward values are unchanged throughout.
    """
    switch = RedirectSwitch([m for m in model.modules() if _replacement(m) is not None])
    with _gelu_scope(model, switch):
        switch.enable()
        try:
            yield switch
        finally:
            switch.disable()

"""A render's model, run faster as the same function for the duration of a render: BatchNorm folded into the
convolution before it, a ReLU moved after the max-pool that reads it (:func:`relu_after_pool`; the pool's
forward in channels-last on the CPU), and frozen weights cast to the autocast dtype and laid out in the
input's memory format once (:func:`weights_cast_once`).

In eval mode a ``BatchNorm2d`` is a fixed per-channel affine map, ``y = (x − μ)·γ/√(σ² + ε) + β``. When its
only input is the output of a ``Conv2d`` that feeds nothing else, the two compose into one convolution with
weight ``W·s`` and bias ``(b − μ)·s + β`` (``s = γ/√(σ² + ε)``): the same function, one kernel less in the
forward and one less in the backward. A render's step is mostly the model's forward and backward, so on
resnet18 this makes it 7–11% faster (``benchmarks/run.py``: layer2.1 and layer4.1 at batch 1, 16 channels of
layer3.1).

:func:`folded_batchnorm` finds the pairs from the model's ``torch.fx`` graph (a model that cannot be traced
is left as it is) and, inside the ``with`` block, swaps the conv's ``forward`` for one with the folded
weights and the BatchNorm's for the identity; on exit both get back exactly the ``forward`` they had. Left
alone: a conv whose output is recorded (an objective's layer; the BatchNorm's own output may be recorded, it
is unchanged) or a conv whose raw output is a recorded container's output, a module with hooks or an
instance-level ``forward`` of its own, a conv or BatchNorm called more than once, a BatchNorm in
train mode or without running statistics, a conv whose output goes anywhere else, and subclasses that
compute something else (timm's ``BatchNormAct2d``, ``Conv2dSame``, ``StdConv2d``). The values differ from
the unfolded model's only by float rounding (max ~1e-5 on resnet18's ``layer4``).

>>> import torch, torchvision
>>> m = torchvision.models.resnet18(weights=None).eval()
>>> x = torch.rand(1, 3, 64, 64)
>>> before = m(x)
>>> with folded_batchnorm(m, keep=["layer1.0.conv1"]) as pairs:
...     len(pairs), "layer1.0.conv1" in [c for c, _ in pairs]
...     bool(torch.allclose(m(x), before, atol=1e-4))
(19, False)
True
>>> bool(torch.equal(m(x), before))   # given back exactly
True
"""

from __future__ import annotations

import contextlib
from typing import Collection, Iterator

import torch
from torch import nn

_MISSING = object()


def fold_pairs(model: nn.Module, keep: Collection[str] = ()) -> list[tuple[str, str]]:
    """``[(conv name, batchnorm name), ...]``: the eval-mode ``Conv2d`` → ``BatchNorm2d`` pairs of ``model``
    that can be folded (see the module docstring), none whose conv is named in ``keep`` (any name the
    recorder accepts: dotted, Lucent-style underscored, with a selector); ``[]`` when the model cannot be
    traced by ``torch.fx``.

    >>> import torchvision
    >>> m = torchvision.models.resnet18(weights=None).eval()
    >>> pairs = fold_pairs(m, keep=["layer2_0_conv1", "layer3.1.bn2"])
    >>> len(pairs), ("layer2.0.conv1", "layer2.0.bn1") in pairs, ("layer3.1.conv2", "layer3.1.bn2") in pairs
    (19, False, True)
    """
    return [(c, b) for c, conv, b, bn in _module_pairs(model, keep, nn.Conv2d, nn.BatchNorm2d)
            if not bn.training and bn.running_mean is not None and bn.running_var is not None]


def relu_pool_pairs(model: nn.Module, keep: Collection[str] = ()) -> list[tuple[str, str]]:
    """``[(relu name, max-pool name), ...]``: the ``nn.ReLU`` modules whose output only an ``nn.MaxPool2d`` reads
    and that :func:`relu_after_pool` moves after it; none whose ReLU is named in ``keep`` (its raw output is
    read), ``[]`` when the model cannot be traced by ``torch.fx``.

    Each ReLU must be called once, its input read by nothing else (an in-place ReLU changes that input for
    every reader), the pool called once without ``return_indices``; neither may have hooks of its own, an
    instance-level ``forward`` (a redirected ReLU) or a subclass's ``forward``.

    >>> import torchvision
    >>> relu_pool_pairs(torchvision.models.resnet18(weights=None).eval())
    [('relu', 'maxpool')]
    >>> relu_pool_pairs(torchvision.models.resnet18(weights=None).eval(), keep=["relu"])
    []
    """
    return [(r, p) for r, relu, p, pool in _module_pairs(model, keep, nn.ReLU, nn.MaxPool2d, single_input=True)
            if not pool.return_indices]


@contextlib.contextmanager
def relu_after_pool(model: nn.Module, keep: Collection[str] = ()) -> Iterator[list[tuple[str, str]]]:
    """Inside the block, every pair of :func:`relu_pool_pairs` runs as ``relu(maxpool(x))`` instead of
    ``maxpool(relu(x))``; yields the pairs.

    The two are the same function, value for value and gradient for gradient: ReLU is monotone, so the
    window's maximum is taken at the same element (the first of equal ones), and a window whose maximum is
    not positive passes no gradient either way. The ReLU and its backward then run on the pooled tensor, a
    quarter of the elements for a 3×3/2 pool: resnet18's stem ReLU on 16 images at 224 px is 12.8 M
    elements, and its backward was the largest elementwise kernel of a render step. The model is given back
    exactly as it was, also on errors.

    >>> import torch, torchvision
    >>> m = torchvision.models.resnet18(weights=None).eval()
    >>> x = torch.rand(2, 3, 64, 64, requires_grad=True)
    >>> y = m(x); (g,) = torch.autograd.grad(y.sum(), x)
    >>> with relu_after_pool(m) as pairs:
    ...     y2 = m(x); (g2,) = torch.autograd.grad(y2.sum(), x)
    >>> pairs, bool(torch.equal(y, y2)), bool(torch.equal(g, g2))
    ([('relu', 'maxpool')], True, True)
    """
    modules = dict(model.named_modules())
    pairs = relu_pool_pairs(model, keep)
    swaps = []
    for r, p in pairs:
        relu, pool = modules[r], modules[p]
        swaps += [(relu, _identity), (pool, lambda x, relu=relu, pool=pool: type(relu).forward(relu, _max_pool(pool, x)))]
    with _swapped(swaps):
        yield pairs


def _max_pool(pool: nn.MaxPool2d, x: torch.Tensor) -> torch.Tensor:
    """``pool(x)``; for a contiguous 4-d CPU input, its forward runs in channels-last (ATen's NHWC kernel:
    1.4 ms against 5.7 ms for ``(1, 64, 112, 112)``, one thread) and its backward in the input's own format
    (NHWC's backward is the slower one), with the same values and the same indices (the first maximum of each
    window in either format)."""
    if x.device.type != "cpu" or x.dim() != 4 or not x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last):
        return type(pool).forward(pool, x)
    return _NHWCMaxPool.apply(x, pool.kernel_size, pool.stride, pool.padding, pool.dilation, pool.ceil_mode)


class _NHWCMaxPool(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, kernel_size, stride, padding, dilation, ceil_mode):  # type: ignore[override]
        out, idx = torch.ops.aten.max_pool2d_with_indices(x.contiguous(memory_format=torch.channels_last), kernel_size,
                                                          stride, padding, dilation, ceil_mode)
        idx = idx.contiguous()
        ctx.save_for_backward(x, idx)
        ctx.args = (kernel_size, stride, padding, dilation, ceil_mode)
        ctx.mark_non_differentiable(idx)
        return out.contiguous()

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        x, idx = ctx.saved_tensors
        k, s, p, d, c = ctx.args
        gx = torch.ops.aten.max_pool2d_with_indices_backward(grad.contiguous(), x, _pair(k), _pair(s if s else k),
                                                             _pair(p), _pair(d), c, idx)
        return gx, None, None, None, None, None


def _pair(v: int | tuple[int, ...]) -> list[int]:
    return [v, v] if isinstance(v, int) else list(v)


def _module_pairs(model: nn.Module, keep: Collection[str], first: type, second: type, single_input: bool = False
                  ) -> list[tuple[str, nn.Module, str, nn.Module]]:
    """``(name, module, name, module)`` for every plain ``first`` module whose output only a plain ``second``
    module reads (its one argument): each called once in the model's ``torch.fx`` graph, neither with hooks
    or an instance-level ``forward``, the first's output not recorded (``keep``: the module itself or a
    container whose output it is). ``single_input``: the first module's own input is read by it alone.
    ``[]`` without a ``second`` module or when fx cannot trace the model."""
    modules = dict(model.named_modules())
    if not any(isinstance(m, second) for m in modules.values()):
        return []
    traced = _traced(model)
    if traced is None:
        return []
    graph, calls = traced
    kept, kept_names = _kept(model, keep)
    out = []
    for node in graph.nodes:
        m2 = modules.get(node.target) if node.op == "call_module" else None
        if not _plain(m2, second) or len(node.args) != 1 or node.kwargs:
            continue
        src = node.args[0]
        m1 = modules.get(src.target) if isinstance(src, torch.fx.Node) and src.op == "call_module" else None
        if (not _plain(m1, first) or len(src.users) != 1 or id(m1) in kept
                or calls[src.target] != 1 or calls[node.target] != 1
                or (single_input and (len(src.args) != 1 or src.kwargs or not isinstance(src.args[0], torch.fx.Node)
                                      or len(src.args[0].users) != 1))
                or any(_hooked(m) for m in (m1, m2)) or _output_of_kept(str(src.target), str(node.target), kept_names)):
            continue
        out.append((str(src.target), m1, str(node.target), m2))
    return out


def _traced(model: nn.Module) -> tuple[torch.fx.Graph, dict[str, int]] | None:
    """The model's ``torch.fx`` graph and how often each module is called in it; ``None`` for a model fx cannot
    trace (data-dependent control flow, ...): such a model is run as it is."""
    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception:  # noqa: BLE001 - any model fx cannot trace stays as it is
        return None
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    return graph, calls


def _kept(model: nn.Module, keep: Collection[str]) -> tuple[set[int], list[str]]:
    """The ids of the modules named in ``keep``, and every name of each (a kept container whose output is a
    rewritten module's raw output must see that output as the model computes it)."""
    kept = {id(m) for m in _modules_named(model, keep)}
    return kept, [n for n, m in model.named_modules(remove_duplicate=False) if id(m) in kept and n]


def _output_of_kept(conv: str, bn: str, kept_names: list[str]) -> bool:
    """Whether a kept module's output is the conv's output: the conv inside it and its BatchNorm (the conv
    output's only user) outside it."""
    return any(conv.startswith(k + ".") and not bn.startswith(k + ".") for k in kept_names)


def _modules_named(model: nn.Module, names: Collection[str]) -> list[nn.Module]:
    """The modules behind ``names`` (dotted, Lucent-style underscored, with selectors); ``"input"`` and names
    that are no module are skipped (the recorder reports those)."""
    from devvis.errors import DevvisError
    from devvis.hooks import INPUT
    from devvis.hooks.names import get_module

    out = []
    for name in names:
        if name == INPUT:
            continue
        try:
            out.append(get_module(model, name))
        except (DevvisError, AttributeError, KeyError):
            continue
    return out


def _plain(m: object, cls: type) -> bool:
    """``m`` is a ``cls`` that computes what ``cls`` computes: a subclass with its own ``forward`` (timm's
    ``BatchNormAct2d`` adds an activation, ``Conv2dSame`` pads first, ``StdConv2d`` standardizes its
    weight) is not folded."""
    return isinstance(m, cls) and all(getattr(type(m), k) is getattr(cls, k)
                                      for k in ("forward", "_conv_forward") if hasattr(cls, k))


def _hooked(m: nn.Module) -> bool:
    """Hooks of its own, or a ``forward`` set on the instance (a patch the fold would replace)."""
    return "forward" in m.__dict__ or bool(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks
                or getattr(m, "_backward_pre_hooks", None))


@contextlib.contextmanager
def folded_batchnorm(model: nn.Module, keep: Collection[str] = ()) -> Iterator[list[tuple[str, str]]]:
    """Inside the block, every pair of :func:`fold_pairs` runs as one convolution; yields the pairs.

    Call it with the model in eval mode and its weights as the block will use them (device, dtype). Each
    conv's folded weights are computed at its first call inside the block and kept, also in the autocast
    dtype the block runs under: frozen for the block, they are cast once instead of at every call. The model
    is given back exactly as it was, also on errors.
    """
    modules = dict(model.named_modules())
    pairs = fold_pairs(model, keep)
    swaps = []
    for c, b in pairs:
        conv, bn = modules[c], modules[b]
        swaps += [(conv, _cached_forward(conv._conv_forward, lambda conv=conv, bn=bn: fold(conv, bn))),
                  (bn, _identity)]
    with _swapped(swaps):
        yield pairs


@contextlib.contextmanager
def weights_cast_once(model: nn.Module) -> Iterator[int]:
    """Inside the block, every plain ``Conv2d`` and ``Linear`` of ``model`` keeps its weights in the form its calls
    need, made once at the first call that needs it: under autocast, its float32 weight and bias cast to the
    autocast dtype (the values autocast gives at every call); for a channels-last input, a conv's weight laid out
    channels-last (the layout oneDNN would otherwise make anew at every call). Yields how many modules it covers.

    For a render, whose weights are frozen. ``precision="bf16"`` on a CPU with AMX: a ViT-B/16 render step
    (to ``encoder_layer_5``, 128 px) takes 0.131 s instead of 0.142–0.146 s. Channels-last: resnet18 to
    ``layer4.1`` at batch 1 runs 6% faster channels-last than contiguous, where it was ~15% slower with the
    per-call layout (``devvis.render.forward.CHANNELS_LAST_MIN_POSITIONS``). Attention's packed input projection
    (``MultiheadAttention.in_proj_weight``, used functionally) is still cast at every call. Modules with an
    instance-level ``forward`` or a ``forward`` of their own (subclasses) are left alone; hooks see the same
    outputs. Folded convolutions (:func:`folded_batchnorm`, entered first) already keep their weights so, and
    are skipped.

    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(4, 8), nn.GELU(), nn.Linear(8, 2))
    >>> x = torch.rand(3, 4)
    >>> with torch.autocast("cpu", dtype=torch.bfloat16):
    ...     before = net(x)
    ...     with weights_cast_once(net) as n:
    ...         after = net(x)
    >>> n, bool(torch.equal(before, after))
    (2, True)
    """
    swaps = []
    for m in model.modules():
        if "forward" in m.__dict__:
            continue
        if _plain(m, nn.Conv2d):
            swaps.append((m, _cached_forward(m._conv_forward, lambda m=m: (m.weight, m.bias))))
        elif _plain(m, nn.Linear):
            swaps.append((m, _cached_forward(nn.functional.linear, lambda m=m: (m.weight, m.bias))))
    with _swapped(swaps):
        yield len(swaps)


@contextlib.contextmanager
def _swapped(swaps: list[tuple[nn.Module, object]]) -> Iterator[None]:
    """Each module's ``forward`` replaced for the block; on exit (also on errors) exactly the one it had."""
    saved: list[tuple[nn.Module, object]] = []
    try:
        for m, fwd in swaps:
            saved.append((m, m.__dict__.get("forward", _MISSING)))
            m.forward = fwd  # type: ignore[method-assign]
        yield
    finally:
        for m, old in reversed(saved):
            if old is _MISSING:
                del m.forward
            else:
                m.forward = old  # type: ignore[method-assign]


def fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """``(weight, bias)`` of the one convolution that computes ``bn(conv(x))`` in eval mode: computed in float32
    (float64 for a float64 conv), returned in the conv's dtype and memory format.

    >>> conv, bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4).eval()
    >>> _ = bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.5, 2)
    >>> w, b = fold(conv, bn)
    >>> x = torch.rand(1, 3, 8, 8)
    >>> bool(torch.allclose(conv._conv_forward(x, w, b), bn(conv(x)), atol=1e-5))
    True
    """
    with torch.no_grad():
        ftype = torch.promote_types(conv.weight.dtype, torch.float32)
        scale = torch.rsqrt(bn.running_var.to(ftype) + bn.eps)
        if bn.weight is not None:
            scale = scale * bn.weight.to(ftype)
        bias = conv.bias.to(ftype) if conv.bias is not None else torch.zeros_like(scale)
        bias = (bias - bn.running_mean.to(ftype)) * scale
        if bn.bias is not None:
            bias = bias + bn.bias.to(ftype)
        weight = (conv.weight.to(ftype) * scale.reshape(-1, 1, 1, 1)).to(conv.weight.dtype)
        return weight.contiguous(memory_format=_format(conv.weight)), bias.to(conv.weight.dtype)


def _format(w: torch.Tensor) -> torch.memory_format:
    return torch.channels_last if w.dim() == 4 and w.is_contiguous(memory_format=torch.channels_last) \
        and not w.is_contiguous() else torch.contiguous_format


def _cached_forward(fn, weights):
    """A forward ``fn(x, weight, bias)`` with ``(weight, bias) = weights()`` made at the first call and kept in the
    form each call needs, made once: under autocast, cast to the autocast dtype (the values autocast would
    produce at every call; it casts float32 tensors only), and for a channels-last input, a 4-d weight laid out
    channels-last too (oneDNN would otherwise lay it out anew at every call)."""
    cache: dict[object, tuple[torch.Tensor, torch.Tensor | None]] = {}

    def forward(x: torch.Tensor) -> torch.Tensor:
        if "made" not in cache:
            cache["made"] = weights()
        w, b = cache["made"]
        kind = x.device.type
        dtype = torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) and w.dtype == torch.float32 else None
        nhwc = w.dim() == 4 and x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
        key = (dtype, nhwc)
        if key not in cache:
            with torch.no_grad():
                wk, bk = (w, b) if dtype is None else (w.to(dtype), None if b is None else b.to(dtype))
                cache[key] = (wk.contiguous(memory_format=torch.channels_last) if nhwc else wk, bk)
        return fn(x, *cache[key])
    return forward


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x

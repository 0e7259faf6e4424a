"""The path from a source layer to a target layer: one forward pass that cuts the graph at the source.

The source module's output is replaced by a fresh leaf tensor that requires
grad, so gradients of the target are taken with respect to the source
activation itself and everything upstream of the source drops out of the
graph. The forward pass stops as soon as the target has run. Every path from
the source to the target is kept, residual shortcuts included: a shortcut
that *starts* at or after the source carries the leaf, one that bypasses it
is a constant.

>>> import torch
>>> from torch import nn
>>> net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 5, 3, padding=1)).eval()
>>> cut = source_to_target(net, "0", "2", torch.rand(2, 3, 8, 8))
>>> tuple(cut.source.shape), tuple(cut.target.shape), cut.source.requires_grad
((2, 4, 8, 8), (2, 5, 8, 8), True)
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from torch import nn

from devvis.errors import ConfigError, LayoutError
from devvis.hooks import INPUT, StopForward, split_selector, infer_layout, resolve_name

#: Layouts a circuit endpoint may have: conv maps ``[B, C, H, W]`` or flat features ``[B, C]``.
SUPPORTED_LAYOUTS = ("nchw", "flat")


@dataclass
class Cut:
    """One forward pass cut at the source.

    ``source``: the leaf that replaced the source's output, ``[B, C_s, ...]``,
    ``requires_grad=True``. ``target``: the target's output, a function of
    ``source`` (``[B, C_t, ...]``).
    """

    source: torch.Tensor
    target: torch.Tensor


def model_device(model: nn.Module) -> torch.device:
    """Device of the model's first parameter (or buffer); CPU for a model with neither."""
    p = next(model.parameters(), None)
    if p is None:
        p = next(model.buffers(), None)
    return p.device if p is not None else torch.device("cpu")


def check_layer(model: nn.Module, name: str, role: str) -> str:
    """Canonical name of a circuit endpoint; selectors (``blocks.3[0]``) are refused with the reason."""
    canonical = resolve_name(model, name)
    if canonical != INPUT and split_selector(canonical)[1]:
        raise ConfigError(f"{role} layer {name!r}: circuits need a module whose output is one tensor; "
                          "selectors such as '[0]' are not supported here")
    return canonical


def _endpoint_tensor(module: nn.Module | None, out: object, name: str, role: str) -> torch.Tensor:
    if not isinstance(out, torch.Tensor):
        raise LayoutError(f"{role} layer {name!r} returns {type(out).__name__}, not a tensor; "
                          "circuits need a layer whose output is a [B, C, H, W] or [B, C] tensor")
    layout = infer_layout(module, out)
    if layout not in SUPPORTED_LAYOUTS:
        raise LayoutError(f"{role} layer {name!r} has an activation of shape {tuple(out.shape)} (layout {layout!r}); "
                          f"circuits support {' and '.join(SUPPORTED_LAYOUTS)} layouts ([B, C, H, W] or [B, C])")
    return out


def source_to_target(
    model: nn.Module,
    source: str,
    target: str,
    x: torch.Tensor,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    *,
    expand: int | None = None,
) -> Cut:
    """Run ``model`` on ``x`` with the output of ``source`` replaced by a leaf requiring grad.

    ``transform`` maps the source's actual output (detached) to the value the
    leaf takes (e.g. ``lambda s: alpha * s`` for integrated gradients); by
    default the leaf equals the actual output. ``source`` may be ``"input"``
    (the leaf is then the model input). ``expand=n`` repeats a batch-1 source
    activation ``n`` times along the batch (the layers upstream of the source
    then run once instead of ``n`` times); tensors that bypass the source keep
    batch 1, so a model that concatenates or adds them in place fails with a
    ``RuntimeError`` (the caller falls back to a batch of inputs). Only hooks installed here are removed
    afterwards; the model's mode and parameters are not touched (see
    :func:`analysis_mode`).

    Raises :class:`~devvis.errors.LayoutError` if a layer never ran or has an
    unsupported output, :class:`~devvis.errors.ConfigError` if the target runs
    before the source.
    """
    source = check_layer(model, source, "source")
    target = check_layer(model, target, "target")
    store: dict[str, torch.Tensor] = {}

    def make_leaf(actual: torch.Tensor) -> torch.Tensor:
        value = actual.detach()
        if transform is not None:
            value = transform(value)
        if expand is not None:
            value = value.expand(expand, *value.shape[1:])
        leaf = value.detach().clone().requires_grad_(True)
        store["source"] = leaf
        # Hand the network a non-leaf copy: in-place ops downstream (``out += identity``,
        # ``ReLU(inplace=True)``) may modify what they get, but never the leaf itself.
        return leaf.clone()

    def source_hook(module: nn.Module, _inp: object, out: object) -> torch.Tensor:
        if "source" in store:
            # A module called twice (torchvision's BasicBlock.relu) has no single activation to cut at.
            raise ConfigError(f"source layer {source!r} runs more than once per forward pass, so its activation "
                              "is ambiguous; name a module that runs once (e.g. the block or its conv/bn)")
        return make_leaf(_endpoint_tensor(module, out, source, "source"))

    def target_hook(module: nn.Module, _inp: object, out: object) -> None:
        if "source" not in store:
            raise ConfigError(f"target layer {target!r} runs before source layer {source!r}; "
                              "the source must be upstream of the target")
        store["target"] = _endpoint_tensor(module, out, target, "target")
        raise StopForward

    handles = []
    try:
        if source != INPUT:
            handles.append(model.get_submodule(source).register_forward_hook(source_hook))
        if target == INPUT:
            raise ConfigError(f"target layer {target!r} is the model input; name a layer downstream of the source")
        handles.append(model.get_submodule(target).register_forward_hook(target_hook))
        model_input = make_leaf(x) if source == INPUT else x
        try:
            model(model_input)
        except StopForward:
            pass
    finally:
        for h in handles:
            h.remove()
    missing = [n for n, k in ((source, "source"), (target, "target")) if k not in store]
    if missing:
        raise LayoutError(f"layers {missing} did not run during the forward pass (are they used by forward()?)")
    return Cut(store["source"], store["target"])


@contextlib.contextmanager
def analysis_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and frozen parameters for the duration of the block; both restored afterwards.

    Eval mode keeps BatchNorm from mixing the batch or updating its running
    statistics; frozen parameters keep autograd from building graphs for them.
    """
    was_training = model.training
    saved = [(p, p.requires_grad) for p in model.parameters()]
    try:
        model.eval()
        for p, _ in saved:
            p.requires_grad_(False)
        yield model
    finally:
        for p, rg in saved:
            p.requires_grad_(rg)
        model.train(was_training)


def per_channel(t: torch.Tensor) -> torch.Tensor:
    """``[B, C, *positions]`` -> ``[B, C, P]`` (``P = 1`` for flat ``[B, C]`` features)."""
    return t.reshape(t.shape[0], t.shape[1], -1)

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

from dataclasses import dataclass

import torch
from torch import nn

from devvis.errors import ConfigError, LayoutError
from devvis.hooks import INPUT, CallPlan, StopForward, count_calls, infer_layout, resolve_name, split_selector
from devvis.typing import TensorFn

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


def _order_error(plan: CallPlan, source: str, target: str) -> ConfigError:
    repeated = [d for d in (plan.describe(source), plan.describe(target)) if d]
    if not repeated:
        return ConfigError(f"target layer {target!r} runs before source layer {source!r}; "
                           "the source must be upstream of the target")
    return ConfigError(f"target layer {target!r} runs before source layer {source!r}: {'; '.join(repeated)}. "
                       f"Name a source whose last call comes before the target's (for an earlier call of a shared "
                       f"module, the module that feeds it, e.g. the BatchNorm before a shared ReLU)")


def plan_calls(model: nn.Module, source: str, target: str, x: torch.Tensor) -> CallPlan:
    """How often ``source`` and ``target`` run in one forward pass of ``x`` (:func:`devvis.hooks.count_calls`).

    Each name means its module's last call (:mod:`devvis.hooks.calls`), the
    tensor render records under that name. Compute it once and pass it to every
    :func:`source_to_target` on inputs of the same shape.
    """
    return count_calls(model, [source, target], x)


def source_to_target(
    model: nn.Module,
    source: str,
    target: str,
    x: torch.Tensor,
    transform: TensorFn | None = None,
    *,
    expand: int | None = None,
    plan: CallPlan | None = None,
) -> Cut:
    """Run ``model`` on ``x`` with the output of ``source`` replaced by a leaf requiring grad.

    ``x``: the model input, e.g. ``(B, 3, H, W)`` after preprocessing. A layer
    name means its module's *last* call in the forward pass, as in
    :class:`~devvis.hooks.ActivationRecorder` (torchvision's ``BasicBlock.relu``
    runs twice: ``layer1.0.relu`` is the block's output); ``plan`` (from
    :func:`plan_calls`) says which call that is, counted here when not given.

    ``transform`` maps the source's actual output (detached) to the value the
    leaf takes (e.g. ``lambda s: alpha * s`` for integrated gradients); by
    default the leaf equals the actual output. ``source`` may be ``"input"``
    (the leaf is then the model input). ``expand=n`` repeats a batch-1 source
    activation ``n`` times along the batch (the layers upstream of the source
    then run once instead of ``n`` times); tensors that bypass the source keep
    batch 1, so a model that concatenates or adds them in place fails with a
    ``RuntimeError`` (the caller falls back to a batch of inputs). Only hooks
    installed here are removed afterwards; the model's mode and parameters are
    not touched (borrow it with :func:`devvis.state.frozen`).

    Raises :class:`~devvis.errors.LayoutError` if a layer never ran or has an
    unsupported output, :class:`~devvis.errors.ConfigError` if the target runs
    before the source (naming how often a repeated module runs).
    """
    source = check_layer(model, source, "source")
    target = check_layer(model, target, "target")
    if target == INPUT:
        raise ConfigError(f"target layer {target!r} is the model input; name a layer downstream of the source")
    if source == target:
        raise ConfigError(f"source and target are the same layer {source!r}; name a target downstream of the source")
    if plan is None:
        plan = plan_calls(model, source, target, x)
    store: dict[str, torch.Tensor] = {}
    calls = {"source": 0, "target": 0}

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

    def source_hook(module: nn.Module, _inp: object, out: object) -> torch.Tensor | None:
        calls["source"] += 1
        if not plan.is_meant(source, calls["source"]):
            return None  # an earlier call of a repeated module: not the tensor the name means
        return make_leaf(_endpoint_tensor(module, out, source, "source"))

    def target_hook(module: nn.Module, _inp: object, out: object) -> None:
        calls["target"] += 1
        if not plan.is_meant(target, calls["target"]):
            return
        if "source" not in store:
            raise _order_error(plan, source, target)
        store["target"] = _endpoint_tensor(module, out, target, "target")
        raise StopForward

    handles = []
    try:
        if source != INPUT:
            plan.meant_call(source)  # a source that never runs: say so before the forward pass
            handles.append(model.get_submodule(source).register_forward_hook(source_hook))
        plan.meant_call(target)
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


def per_channel(t: torch.Tensor) -> torch.Tensor:
    """``[B, C, *positions]`` -> ``[B, C, P]`` (``P = 1`` for flat ``[B, C]`` features)."""
    return t.reshape(t.shape[0], t.shape[1], -1)

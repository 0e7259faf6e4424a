"""Activation layouts: how to read a recorded tensor (``nchw``, ``nhwc``, ``tokens``, ``flat``).

The layout of a 4-D map is read from the model's structure where it says (Swin
blocks and ``Permute([0, 2, 3, 1])`` are channels-last; convolutions and
BatchNorm channels-first); elementwise layers take the layout of what feeds them.

>>> import torch
>>> infer_layout(None, torch.zeros(1, 197, 768))
'tokens'
>>> infer_layout(None, torch.zeros(2, 64, 8, 8))
'nchw'
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from devvis.errors import LayoutError
from devvis.hooks.names import split_selector


#: Layouts an activation can have; see :func:`infer_layout`.
LAYOUTS: tuple[str, ...] = ("nchw", "nhwc", "tokens", "flat")

#: Blocks known to produce channels-last ``[B, H, W, C]`` maps (torchvision's Swin and timm's).
_CHANNELS_LAST_TYPES = frozenset({
    "SwinTransformerBlock", "SwinTransformerBlockV2", "PatchMerging", "PatchMergingV2",
    "ShiftedWindowAttention", "ShiftedWindowAttentionV2", "SwinTransformerStage", "WindowAttention",
})

#: Layers whose 4-D output is channels-first by construction.
_CHANNELS_FIRST_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.conv._ConvNd, nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm,
    nn.GroupNorm, nn.LocalResponseNorm, nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd,
    nn.modules.pooling._AdaptiveAvgPoolNd, nn.modules.pooling._AdaptiveMaxPoolNd, nn.Upsample, nn.PixelShuffle,
)


@dataclass(frozen=True)
class DeclaredLayout:
    """A layout a module's 4-D output has by construction, and its channel count when known."""

    layout: str
    channels: int | None = None

    def fits(self, t: torch.Tensor) -> bool:
        """Whether ``t``'s channel axis has the declared channel count (always, when none is declared)."""
        if self.channels is None:
            return True
        return t.shape[1 if self.layout == "nchw" else -1] == self.channels


def _declared_layout(module: nn.Module) -> DeclaredLayout | None:
    """The layout a module's 4-D output has by construction; None when it passes its input's through.

    Elementwise leaves (activations, dropout, stochastic depth, identity) return None:
    their layout is that of their input. A container answers with its last child that
    declares one (the child that produces the output in sequential blocks).
    """
    kind = type(module).__name__
    if kind in _CHANNELS_LAST_TYPES:
        return DeclaredLayout("nhwc")
    if kind == "Permute":  # torchvision.ops.Permute, as used by ConvNeXt and Swin
        dims = [int(d) for d in getattr(module, "dims", [])]
        return {(0, 2, 3, 1): DeclaredLayout("nhwc"), (0, 3, 1, 2): DeclaredLayout("nchw")}.get(tuple(dims))
    if kind == "LayerNorm2d":  # a LayerNorm subclass that normalizes channels of NCHW maps
        return DeclaredLayout("nchw", int(module.normalized_shape[-1])) if hasattr(module, "normalized_shape") else DeclaredLayout("nchw")
    if isinstance(module, _CHANNELS_FIRST_TYPES):
        c = getattr(module, "out_channels", None) or getattr(module, "num_features", None) or getattr(module, "num_channels", None)
        return DeclaredLayout("nchw", int(c) if isinstance(c, int) else None)
    if isinstance(module, nn.LayerNorm):  # normalizes the last dimension: channels-last on 4-D maps
        return DeclaredLayout("nhwc", int(module.normalized_shape[-1]))
    if isinstance(module, nn.Linear):  # acts on the last dimension: channels-last on 4-D maps
        return DeclaredLayout("nhwc", int(module.out_features))
    for child in reversed(list(module.children())):
        found = _declared_layout(child)
        if found is not None:
            return found
    return None


def _context_layout(model: nn.Module, name: str) -> DeclaredLayout | None:
    """Layout of the input of module ``name``: what the nearest earlier sibling (or an ancestor's) declares."""
    while name:
        parent_name, _, own = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        siblings = [n for n, _ in parent.named_children()]
        if own in siblings:
            for sib in reversed(siblings[:siblings.index(own)]):
                found = _declared_layout(getattr(parent, sib))
                if found is not None:
                    return found
        name = parent_name
    return None


def declared_layout(model: nn.Module, name: str) -> DeclaredLayout | None:
    """What the model's structure says about the layout of a 4-D output of ``name`` (None: nothing)."""
    base, _ = split_selector(name)
    module = model.get_submodule(base)
    found = _declared_layout(module)
    if found is None and not list(module.children()):
        found = _context_layout(model, base)
    return found


def infer_layout(module: nn.Module | None, t: torch.Tensor, *, model: nn.Module | None = None,
                 name: str | None = None, declared: DeclaredLayout | None = None) -> str:
    """Guess the layout of activation ``t`` produced by ``module``.

    Returns ``"flat"`` for ``[B, D]``, ``"tokens"`` for ``[B, T, D]`` (ViT blocks),
    and for 4-D maps ``"nhwc"`` (channels-last: Swin blocks, ``Permute([0, 2, 3, 1])``,
    ``nn.LayerNorm`` / ``nn.Linear`` applied to ``[B, H, W, C]`` maps, and elementwise
    layers such as GELU or dropout that follow them) or ``"nchw"`` otherwise. With
    ``model`` and ``name``, an elementwise layer takes the layout of the nearest
    earlier sibling that declares one. A declared layout whose channel count does
    not match ``t`` is ignored (e.g. timm's ConvNeXt block, which permutes back to
    NCHW in ``forward``). State a layout explicitly where this guesses wrong
    (``render(..., layouts={name: "nhwc"})`` or ``objectives.channel(..., layout=)``).

    >>> import torch, torchvision
    >>> swin = torchvision.models.swin_t(weights=None)
    >>> infer_layout(swin.features[1][0], torch.zeros(1, 8, 8, 96))
    'nhwc'
    >>> infer_layout(None, torch.zeros(1, 197, 768))
    'tokens'
    """
    if t.dim() == 2:
        return "flat"
    if t.dim() == 3:
        return "tokens"
    if t.dim() == 4:
        found = declared
        if found is None and model is not None and name:
            found = declared_layout(model, name)
        elif found is None and module is not None:
            found = _declared_layout(module)
        if found is not None and found.fits(t):
            return found.layout
        return "nchw"
    return f"{t.dim()}d"


def check_layout(layout: str, t: torch.Tensor, name: str) -> None:
    """Raise :class:`~devvis.errors.LayoutError` unless ``layout`` is valid and fits ``t``'s rank."""
    rank = {"nchw": 4, "nhwc": 4, "tokens": 3, "flat": 2}
    if layout not in rank:
        raise LayoutError(f"layout {layout!r} for layer {name!r} is not valid; choose one of {LAYOUTS}")
    if t.dim() != rank[layout]:
        raise LayoutError(f"layout {layout!r} was stated for layer {name!r}, but its activation has shape "
                          f"{tuple(t.shape)} ({t.dim()}-D; {layout} needs {rank[layout]}-D)")

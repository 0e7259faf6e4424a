"""Activation targets: channels, neurons, layers, directions.

All values are per image (``Tensor[B]``) and higher is better. They read the
layer's activation in any layout (detected by :func:`devvis.hooks.infer_layout`,
or stated with ``layout=`` here or ``render(..., layouts=...)``):

* ``nchw`` ``[B, C, H, W]`` conv maps;
* ``nhwc`` ``[B, H, W, C]`` channels-last maps (Swin blocks, ConvNeXt block internals);
* ``tokens`` ``[B, T, D]`` (ViT): a "channel" is an embedding dimension, averaged
  over tokens; ``token="patches"`` leaves out token 0 (the class token),
  ``token="cls"`` keeps only it; a neuron is a patch ``(x, y)`` of the token
  grid (after any leading class/register tokens) or one token by index (``token=i``);
* ``flat`` ``[B, D]`` (linear layers, logits).

>>> import torch
>>> from devvis.hooks import Activations
>>> acts = Activations({"conv": torch.arange(2 * 3 * 2 * 2.).reshape(2, 3, 2, 2)})
>>> channel("conv", 1)(acts).tolist()
[5.5, 17.5]
>>> vit = Activations({"blk": torch.arange(2 * 5 * 3.).reshape(2, 5, 3)})   # 1 class token + 2x2 patches
>>> channel("blk", 0)(vit).tolist(), channel("blk", 0, token="patches")(vit).tolist()
([6.0, 21.0], [7.5, 22.5])
"""

from __future__ import annotations

import math
from typing import Any, Sequence, Union

import torch

from devvis.errors import ChannelOutOfRangeError, LayoutError, ObjectiveError
from devvis.hooks import LAYOUTS, check_layout
from devvis.objectives.core import Acts, string_objective, wrap_objective

Vector = Union[torch.Tensor, Sequence[float]]
"""A direction in channel space: ``(C,)`` (a tensor, array or list of floats)."""

_TOKEN_CHOICES = ("all", "patches", "cls")
#: Leading non-patch tokens (class, distillation, registers) that :func:`token_grid` looks for.
_MAX_PREFIX_TOKENS = 16


def _layout_of(acts: Any, layer: str, layout: str | None) -> str:
    t = acts[layer]
    if layout is not None:
        check_layout(layout, t, layer)
        return layout
    return acts.layout(layer) if hasattr(acts, "layout") else _guess(t)


def _where(layer: str, t: torch.Tensor, layout: str) -> str:
    return f"layer {layer!r} (layout {layout}, shape {tuple(t.shape)})"


def channels_first(acts: Acts, layer: str, token: str = "all", layout: str | None = None) -> torch.Tensor:
    """The activation of ``layer`` as ``[B, C, *positions]`` whatever its layout.

    ``token`` selects tokens of a ``[B, T, D]`` activation: ``"all"``,
    ``"patches"`` (all but the first, the class token) or ``"cls"`` (the first);
    it is an error on other layouts. ``layout`` overrides the detected layout
    (one of ``nchw``, ``nhwc``, ``tokens``, ``flat``).

    >>> import torch
    >>> from devvis.hooks import Activations
    >>> a = Activations({"swin": torch.zeros(2, 7, 7, 96)}, {"swin": "nhwc"})
    >>> tuple(channels_first(a, "swin").shape)
    (2, 96, 7, 7)
    """
    t = acts[layer]
    found = _layout_of(acts, layer, layout)
    if token not in _TOKEN_CHOICES:
        raise ObjectiveError(f"token={token!r} is not valid; choose one of {_TOKEN_CHOICES}")
    if token != "all" and found != "tokens":
        raise LayoutError(f"token={token!r} selects tokens of a [B, T, D] activation, but {_where(layer, t, found)} "
                          "has no tokens; leave token='all' (or state layout='tokens' if that is what it is)")
    if found == "nchw":
        return t
    if found == "nhwc":
        return t.permute(0, 3, 1, 2)
    if found == "tokens":
        if token == "patches":
            if t.shape[1] < 2:
                raise LayoutError(f"token='patches' leaves no token of {_where(layer, t, found)}")
            t = t[:, 1:]
        elif token == "cls":
            t = t[:, :1]
        return t.transpose(1, 2)
    if found == "flat":
        return t.unsqueeze(-1)
    raise LayoutError(f"{_where(layer, t, found)} does not fit activation objectives, which read {LAYOUTS}; "
                      "name a layer with a tensor output of one of those layouts")


def _guess(t: torch.Tensor) -> str:
    return {2: "flat", 3: "tokens", 4: "nchw"}.get(t.dim(), f"{t.dim()}d")


def _check_channel(t: torch.Tensor, n: int, layer: str, layout: str = "nchw", shape: Sequence[int] | None = None) -> None:
    c = t.shape[1]
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n < c:
        what = {"tokens": "embedding dimensions", "nhwc": "channels (last dim)"}.get(layout, "channels")
        raise ChannelOutOfRangeError(
            f"channel {n!r} out of range for layer {layer!r} (layout {layout}, shape "
            f"{tuple(shape) if shape is not None else tuple(t.shape)}), which has {c} {what} (valid 0..{c - 1})")


REDUCTIONS = ("mean", "sum")


def _reduce(t: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Mean (or sum) over every dim but the batch: ``[B, ...] -> [B]``."""
    if reduction not in REDUCTIONS:
        raise ObjectiveError(f"reduction {reduction!r} is not valid; choose one of {', '.join(REDUCTIONS)}")
    flat = t.reshape(t.shape[0], -1)
    return flat.sum(dim=1) if reduction == "sum" else flat.mean(dim=1)


def token_grid(num_tokens: int) -> tuple[int, int] | None:
    """``(prefix, side)``: ``num_tokens = prefix + side**2`` with the fewest leading tokens, or None.

    ViT-B/16 at 224 px has 197 tokens: one class token and a 14x14 grid.

    >>> token_grid(197), token_grid(196), token_grid(1 + 4 + 256), token_grid(17 * 17 + 17)
    ((1, 14), (0, 14), (5, 16), None)
    """
    for prefix in range(0, min(_MAX_PREFIX_TOKENS, num_tokens - 1) + 1):
        side = math.isqrt(num_tokens - prefix)
        if side > 0 and side * side == num_tokens - prefix:
            return prefix, side
    return None


def position_grid(shape: Sequence[int], layout: str) -> tuple[int, int]:
    """``(rows, columns)`` of the positions a neuron can take in an activation of ``shape``.

    >>> position_grid((1, 197, 768), "tokens"), position_grid((1, 8, 8, 96), "nhwc")
    ((14, 14), (8, 8))
    """
    if layout == "nchw":
        return int(shape[2]), int(shape[3])
    if layout == "nhwc":
        return int(shape[1]), int(shape[2])
    if layout == "tokens":
        grid = token_grid(int(shape[1]))
        if grid is None:
            raise LayoutError(f"an activation of shape {tuple(shape)} has {shape[1]} tokens, not a square grid "
                              f"after up to {_MAX_PREFIX_TOKENS} leading tokens; pick a token by index (token=i)")
        return grid[1], grid[1]
    return 1, 1


@string_objective
@wrap_objective
def channel(layer: str, n: int, batch: int | None = None, token: str = "all", layout: str | None = None,
            reduction: str = "mean"):
    """Mean activation of channel ``n`` of ``layer`` over all positions (or tokens).

    On token layers (``[B, T, D]``) ``n`` is an embedding dimension; ``token``
    chooses the tokens averaged: ``"all"``, ``"patches"`` (not the class token) or ``"cls"``.
    ``reduction="sum"`` sums over positions instead (the CLI's ``--aggregation sum``).
    """
    if reduction not in REDUCTIONS:
        raise ObjectiveError(f"reduction {reduction!r} is not valid; choose one of {', '.join(REDUCTIONS)}")

    def inner(acts):
        t = channels_first(acts, layer, token, layout)
        _check_channel(t, n, layer, _layout_of(acts, layer, layout), acts[layer].shape)
        return _reduce(t[:, n], reduction)
    return inner


@wrap_objective
def channels(layer: str, channels: Sequence[int], token: str = "all", layout: str | None = None):
    """Image ``i`` maximizes channel ``channels[i]``: many channels in one batch.

    The batch must have exactly ``len(channels)`` images (``render`` sizes the
    default parameterization accordingly).
    """
    idx_list = [int(c) for c in channels]

    def inner(acts):
        t = channels_first(acts, layer, token, layout)
        if t.shape[0] != len(idx_list):
            raise ObjectiveError(
                f"channels({layer!r}, {len(idx_list)} channels) needs a batch of {len(idx_list)} images, got {t.shape[0]}")
        found = _layout_of(acts, layer, layout)
        for c in idx_list:
            _check_channel(t, c, layer, found, acts[layer].shape)
        idx = torch.tensor(idx_list, device=t.device)
        flat = t.reshape(t.shape[0], t.shape[1], -1)
        picked = flat.gather(1, idx.view(-1, 1, 1).expand(-1, 1, flat.shape[2]))
        return picked.mean(dim=(1, 2))
    return inner


def _grid_position(t: torch.Tensor, layout: str, x: int | None, y: int | None, layer: str,
                   token: int | str | None = None) -> tuple[Any, ...]:
    """Index tuple (for ``t[:, n][index]``, ``t`` channels-first) of position (x, y); centre when None."""
    where = f"layer {layer!r} (layout {layout})"
    if token is not None and layout != "tokens":
        raise LayoutError(f"token={token!r} picks a token of a [B, T, D] activation, but {where} has no tokens; "
                          "use x and y")
    if layout in ("nchw", "nhwc"):  # t: [B, C, H, W]
        h, w = t.shape[2], t.shape[3]
        xx = w // 2 if x is None else x
        yy = h // 2 if y is None else y
        if not (0 <= xx < w and 0 <= yy < h):
            raise ChannelOutOfRangeError(
                f"neuron position (x={xx}, y={yy}) out of range for {where} with a {h}x{w} map "
                f"(valid x 0..{w - 1}, y 0..{h - 1})")
        return (yy, xx)
    if layout == "tokens":  # t: [B, C, T]
        tokens = t.shape[2]
        if token is not None:
            if x is not None or y is not None:
                raise ObjectiveError(f"pass either token= or x/y for a neuron of {where}, not both")
            idx = 0 if token == "cls" else token
            if isinstance(idx, bool) or not isinstance(idx, int) or not 0 <= idx < tokens:
                raise ChannelOutOfRangeError(
                    f"token {token!r} out of range for {where} with {tokens} tokens (valid 0..{tokens - 1} or 'cls')")
            return (idx,)
        grid = token_grid(tokens)
        if grid is None:
            raise LayoutError(f"{where} has {tokens} tokens, not a square grid after up to {_MAX_PREFIX_TOKENS} "
                              "leading tokens; pick one token by index with token=i")
        prefix, side = grid
        xx = side // 2 if x is None else x
        yy = side // 2 if y is None else y
        if not (0 <= xx < side and 0 <= yy < side):
            raise ChannelOutOfRangeError(
                f"neuron position (x={xx}, y={yy}) out of range for {where} with a {side}x{side} token grid "
                f"(after {prefix} leading token{'s' if prefix != 1 else ''}; valid x, y 0..{side - 1})")
        return (prefix + yy * side + xx,)
    if x is not None or y is not None:  # flat: one value per channel, no positions
        raise LayoutError(f"{where} has no spatial positions (shape [B, {t.shape[1]}]); leave x and y unset")
    return (0,)


@wrap_objective
def neuron(layer: str, n: int, x: int | None = None, y: int | None = None, batch: int | None = None,
           token: int | str | None = None, layout: str | None = None):
    """Activation of channel ``n`` at one position: column ``x``, row ``y`` (centre by default).

    On token layers ``(x, y)`` is a patch of the token grid (after the class token
    and any other leading tokens), or ``token=i`` picks token ``i`` (``0`` or
    ``"cls"``: the class token).
    """
    def inner(acts):
        found = _layout_of(acts, layer, layout)
        t = channels_first(acts, layer, layout=found)
        _check_channel(t, n, layer, found, acts[layer].shape)
        pos = _grid_position(t, found, x, y, layer, token)
        return t[:, n][(slice(None), *pos)].reshape(t.shape[0], -1).mean(dim=1)
    return inner


@wrap_objective
def layer(layer: str, batch: int | None = None):
    """DeepDream: mean of squared activations of the whole layer."""
    def inner(acts):
        return _reduce(acts[layer].float() ** 2)
    return inner


def _dot_cossim(a: torch.Tensor, vec: torch.Tensor, cossim_pow: float) -> torch.Tensor:
    """Per position: ``(a . v) * max(0.1, cos(a, v)) ** cossim_pow``; ``a``: ``[B, C, P]``, returns ``[B, P]``."""
    v = vec.to(a.device, a.dtype).view(1, -1, 1)
    dot = (a * v).sum(dim=1)
    if cossim_pow == 0:
        return dot
    cos = dot / (a.norm(dim=1) + 1e-4) / (v.norm() + 1e-4)
    return dot * cos.clamp_min(0.1) ** cossim_pow


def _vector(vec: Vector, c: int, layer: str) -> torch.Tensor:
    v = torch.as_tensor(vec, dtype=torch.float32).flatten()
    if v.numel() != c:
        raise ObjectiveError(f"direction has {v.numel()} entries but layer {layer!r} has {c} channels")
    return v


@wrap_objective
def direction(layer: str, vec: Vector, cossim_pow: float = 0.0, batch: int | None = None, token: str = "all",
              layout: str | None = None):
    """Mean over positions of the activation's dot product with ``vec``, times ``cos^cossim_pow`` (Lucid's rule)."""
    def inner(acts):
        t = channels_first(acts, layer, token, layout)
        a = t.reshape(t.shape[0], t.shape[1], -1)
        return _dot_cossim(a, _vector(vec, a.shape[1], layer), cossim_pow).mean(dim=1)
    return inner


@wrap_objective
def direction_neuron(layer: str, vec: Vector, x: int | None = None, y: int | None = None, cossim_pow: float = 0.0,
                     batch: int | None = None, token: int | str | None = None, layout: str | None = None):
    """:func:`direction` at one position (centre by default; ``token=i`` on token layers, as in :func:`neuron`)."""
    def inner(acts):
        found = _layout_of(acts, layer, layout)
        t = channels_first(acts, layer, layout=found)
        pos = _grid_position(t, found, x, y, layer, token)
        a = t[(slice(None), slice(None), *pos)].reshape(t.shape[0], t.shape[1], -1)
        return _dot_cossim(a, _vector(vec, a.shape[1], layer), cossim_pow).mean(dim=1)
    return inner


@wrap_objective
def channel_interpolate(layer1: str, n1: int, layer2: str, n2: int):
    """Image ``i`` of ``B`` maximizes ``(1 - i/(B-1)) * channel1 + i/(B-1) * channel2``.

    With a batch of one image, the weights are (1, 0): the image shows channel 1.
    """
    def inner(acts):
        a = channels_first(acts, layer1)
        b = channels_first(acts, layer2)
        _check_channel(a, n1, layer1, _layout_of(acts, layer1, None), acts[layer1].shape)
        _check_channel(b, n2, layer2, _layout_of(acts, layer2, None), acts[layer2].shape)
        bsz = a.shape[0]
        w = torch.arange(bsz, device=a.device, dtype=a.dtype) / max(bsz - 1, 1)
        return (1 - w) * _reduce(a[:, n1]) + w * _reduce(b[:, n2])
    return inner

"""Activation targets: channels, neurons, layers, directions.

All values are per image (``Tensor[B]``) and higher is better. They read the
layer's activation in any layout: ``nchw`` conv maps, ``nhwc`` channels-last
maps (Swin), ``tokens`` ``[B, T, D]`` (ViT; a "channel" is an embedding
dimension) and ``flat`` ``[B, D]`` (linear layers, logits).

>>> import torch
>>> from devvis.hooks import Activations
>>> acts = Activations({"conv": torch.arange(2 * 3 * 2 * 2.).reshape(2, 3, 2, 2)})
>>> channel("conv", 1)(acts).tolist()
[5.5, 17.5]
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from devvis.errors import ChannelOutOfRangeError, LayoutError, ObjectiveError
from devvis.objectives.core import wrap_objective

_TOKEN_CHOICES = ("all", "patches", "cls")


def channels_first(acts: Any, layer: str, token: str = "all") -> torch.Tensor:
    """The activation of ``layer`` as ``[B, C, *positions]`` whatever its layout.

    ``token`` selects tokens of a ``[B, T, D]`` activation: ``"all"``,
    ``"patches"`` (all but the first, the class token) or ``"cls"`` (the first).
    """
    t = acts[layer]
    layout = acts.layout(layer) if hasattr(acts, "layout") else _guess(t)
    if token not in _TOKEN_CHOICES:
        raise ObjectiveError(f"token={token!r} is not valid; choose one of {_TOKEN_CHOICES}")
    if layout == "nchw":
        return t
    if layout == "nhwc":
        return t.permute(0, 3, 1, 2)
    if layout == "tokens":
        if token == "patches":
            t = t[:, 1:]
        elif token == "cls":
            t = t[:, :1]
        return t.transpose(1, 2)
    if layout == "flat":
        return t.unsqueeze(-1)
    raise LayoutError(f"layer {layer!r} has an activation of shape {tuple(t.shape)} (layout {layout!r}); "
                      "channel objectives need nchw, nhwc, tokens [B, T, D] or flat [B, D]")


def _guess(t: torch.Tensor) -> str:
    return {2: "flat", 3: "tokens", 4: "nchw"}.get(t.dim(), f"{t.dim()}d")


def _check_channel(t: torch.Tensor, n: int, layer: str) -> None:
    c = t.shape[1]
    if not isinstance(n, int) or not 0 <= n < c:
        raise ChannelOutOfRangeError(
            f"channel {n!r} out of range for layer {layer!r}, which has {c} channels (valid 0..{c - 1})")


def _reduce(t: torch.Tensor) -> torch.Tensor:
    """Mean over every dim but the batch: ``[B, ...] -> [B]``."""
    return t.reshape(t.shape[0], -1).mean(dim=1)


@wrap_objective
def channel(layer: str, n: int, batch: int | None = None, token: str = "all"):
    """Mean activation of channel ``n`` of ``layer`` over all positions (or tokens)."""
    def inner(acts):
        t = channels_first(acts, layer, token)
        _check_channel(t, n, layer)
        return _reduce(t[:, n])
    return inner


@wrap_objective
def channels(layer: str, channels: Sequence[int], token: str = "all"):
    """Image ``i`` maximizes channel ``channels[i]``: many channels in one batch.

    The batch must have exactly ``len(channels)`` images (``render`` sizes the
    default parameterization accordingly).
    """
    idx_list = [int(c) for c in channels]

    def inner(acts):
        t = channels_first(acts, layer, token)
        if t.shape[0] != len(idx_list):
            raise ObjectiveError(
                f"channels({layer!r}, {len(idx_list)} channels) needs a batch of {len(idx_list)} images, got {t.shape[0]}")
        for c in idx_list:
            _check_channel(t, c, layer)
        idx = torch.tensor(idx_list, device=t.device)
        flat = t.reshape(t.shape[0], t.shape[1], -1)
        picked = flat.gather(1, idx.view(-1, 1, 1).expand(-1, 1, flat.shape[2]))
        return picked.mean(dim=(1, 2))
    return inner


def _grid_position(t: torch.Tensor, layout: str, x: int | None, y: int | None, layer: str) -> tuple[Any, ...]:
    """Index tuple (for ``t[:, n][index]``) of the position (x, y); centre when None."""
    if t.dim() == 4:  # [B, C, H, W]
        h, w = t.shape[2], t.shape[3]
        xx = w // 2 if x is None else x
        yy = h // 2 if y is None else y
        if not (0 <= xx < w and 0 <= yy < h):
            raise ChannelOutOfRangeError(
                f"neuron position (x={xx}, y={yy}) out of range for layer {layer!r} with a {h}x{w} map (valid x 0..{w - 1}, y 0..{h - 1})")
        return (yy, xx)
    if t.dim() == 3:  # [B, C, T] tokens
        tokens = t.shape[2]
        side = math.isqrt(tokens)
        offset = 0
        if side * side != tokens:
            side = math.isqrt(tokens - 1)
            offset = 1
            if side * side != tokens - 1:
                if x is None and y is None:
                    return (tokens // 2,)
                raise LayoutError(f"layer {layer!r} has {tokens} tokens, not a square grid (+ class token); pass x only as a token index")
        xx = side // 2 if x is None else x
        yy = side // 2 if y is None else y
        if not (0 <= xx < side and 0 <= yy < side):
            raise ChannelOutOfRangeError(
                f"neuron position (x={xx}, y={yy}) out of range for layer {layer!r} with a {side}x{side} token grid")
        return (offset + yy * side + xx,)
    return ()


@wrap_objective
def neuron(layer: str, n: int, x: int | None = None, y: int | None = None, batch: int | None = None):
    """Activation of channel ``n`` at one position: column ``x``, row ``y`` (centre by default).

    On token layers the position is a patch of the token grid (after the class token, if any).
    """
    def inner(acts):
        t = channels_first(acts, layer)
        _check_channel(t, n, layer)
        pos = _grid_position(t, acts.layout(layer) if hasattr(acts, "layout") else "", x, y, layer)
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


def _vector(vec: Any, c: int, layer: str) -> torch.Tensor:
    v = torch.as_tensor(vec, dtype=torch.float32).flatten()
    if v.numel() != c:
        raise ObjectiveError(f"direction has {v.numel()} entries but layer {layer!r} has {c} channels")
    return v


@wrap_objective
def direction(layer: str, vec: Any, cossim_pow: float = 0.0, batch: int | None = None):
    """Mean over positions of the activation's dot product with ``vec``, times ``cos^cossim_pow`` (Lucid's rule)."""
    def inner(acts):
        t = channels_first(acts, layer)
        a = t.reshape(t.shape[0], t.shape[1], -1)
        return _dot_cossim(a, _vector(vec, a.shape[1], layer), cossim_pow).mean(dim=1)
    return inner


@wrap_objective
def direction_neuron(layer: str, vec: Any, x: int | None = None, y: int | None = None, cossim_pow: float = 0.0,
                     batch: int | None = None):
    """:func:`direction` at one position (centre by default)."""
    def inner(acts):
        t = channels_first(acts, layer)
        pos = _grid_position(t, "", x, y, layer)
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
        _check_channel(a, n1, layer1)
        _check_channel(b, n2, layer2)
        bsz = a.shape[0]
        w = torch.arange(bsz, device=a.device, dtype=a.dtype) / max(bsz - 1, 1)
        return (1 - w) * _reduce(a[:, n1]) + w * _reduce(b[:, n2])
    return inner

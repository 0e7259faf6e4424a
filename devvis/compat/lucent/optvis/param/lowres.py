"""Lucent's ``param.lowres_tensor``: a tensor parameterized by a lower-resolution one, linearly upsampled."""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from devvis.errors import ParameterizationError

__all__ = ["lowres_tensor", "resize_linear_nd"]


def resize_linear_nd(t: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Resize every dimension of ``t`` to ``shape`` by linear interpolation (corners aligned).

    Separable, so it equals an n-dimensional bilinear resize (Lucent's ``resize_bilinear_nd``).

    >>> resize_linear_nd(torch.tensor([[0.0, 1.0]]), (1, 3)).tolist()
    [[0.0, 0.5, 1.0]]
    """
    if len(shape) != t.dim():
        raise ParameterizationError(f"cannot resize a {t.dim()}-d tensor {tuple(t.shape)} to shape {tuple(shape)}")
    for d, n in enumerate(shape):
        if t.shape[d] == n:
            continue
        moved = t.movedim(d, -1)
        lead = moved.shape[:-1]
        out = F.interpolate(moved.reshape(-1, 1, moved.shape[-1]), size=int(n), mode="linear", align_corners=True)
        t = out.reshape(*lead, int(n)).movedim(-1, d)
    return t


def _shift_reflect(t: torch.Tensor, offsets: Sequence[int]) -> torch.Tensor:
    """Shift dimension ``d`` by ``offsets[d]`` towards higher indices, reflecting (without the edge) into the gap."""
    for d, o in enumerate(offsets):
        if o <= 0:
            continue
        n = t.shape[d]
        if o >= n:
            raise ParameterizationError(f"offset {o} on dimension {d} must be smaller than its size {n}")
        idx = torch.cat([torch.arange(o, 0, -1), torch.arange(0, n - o)]).to(t.device)
        t = t.index_select(d, idx)
    return t


class LowresTensor(nn.Module):
    """``forward()``: the ``underlying`` parameter resized to ``shape``, its last two dimensions shifted by ``offsets``."""

    def __init__(self, shape: Sequence[int], underlying_shape: Sequence[int], offsets: list[int] | None, sd: float):
        super().__init__()
        self.shape = [int(s) for s in shape]
        self.offsets = offsets
        self.underlying = nn.Parameter(torch.randn(*underlying_shape) * sd)

    def forward(self) -> torch.Tensor:
        t = resize_linear_nd(self.underlying, self.shape)
        if self.offsets is None:
            return t
        # only the spatial (last two) dimensions move, as in Lucent; leading offsets are accepted and unused
        return _shift_reflect(t, [0] * (t.dim() - 2) + self.offsets[-2:])


def lowres_tensor(shape: Sequence[int], underlying_shape: Sequence[int], offset: Any = None,
                  sd: float = 0.01) -> tuple[list[torch.Tensor], LowresTensor]:
    """``(params, image_f)``: ``image_f()`` has ``shape``; the parameter has ``underlying_shape``.

    ``offset`` shifts the upsampled tensor (like a phase): ``None`` no shift; a
    number (the same for every dimension) or a list with one entry per dimension;
    ``True`` means half the upsampling ratio of that dimension, ``False`` 0. As in
    Lucent only the last two (spatial) dimensions are shifted, and each by its own
    offset (Lucent shifted the height by the height's offset and the width by the
    *batch* offset).

    >>> params, f = lowres_tensor([1, 1, 4, 4], [1, 1, 2, 2], offset=True)
    >>> tuple(params[0].shape), tuple(f().shape)
    ((1, 1, 2, 2), (1, 1, 4, 4))
    >>> tuple(lowres_tensor([6, 3, 8, 8], [1, 3, 4, 4], offset=5)[1]().shape)   # 5 > 3 channels: not shifted
    (6, 3, 8, 8)
    """
    if len(shape) != len(underlying_shape):
        raise ParameterizationError(f"shape {list(shape)} and underlying_shape {list(underlying_shape)} "
                                    "must have the same number of dimensions")
    offsets = None
    if offset is not None:
        raw = list(offset) if isinstance(offset, (list, tuple)) else len(shape) * [offset]
        if len(raw) != len(shape):
            raise ParameterizationError(f"offset {offset!r} needs one entry per dimension of shape {list(shape)}")
        offsets = []
        for n, o in enumerate(raw):
            if o is True:
                o = shape[n] / underlying_shape[n] / 2
            elif o is False:
                o = 0
            offsets.append(int(o))
    module = LowresTensor(shape, underlying_shape, offsets, sd)
    return [module.underlying], module

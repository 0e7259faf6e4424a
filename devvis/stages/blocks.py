"""Restricted (weight-refined) LLC per block over training: which part of the network changes.

For each block (a stage of a CNN, a block of a ViT) the LLC is estimated with SGLD moving only that
block's weights (:func:`devvis.slt.estimate_llc` with ``params=[block]``), at every checkpoint, with
the same seed and settings (:func:`devvis.slt.llc_trajectory`). A stage boundary is attributed to the
block whose restricted LLC changes most across it, in units of the estimates' standard deviations.

>>> from torch import nn
>>> default_blocks(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Sequential(nn.Conv2d(4, 4, 3)), nn.Flatten()))
['0', '2']
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from torch import nn

from devvis.errors import ConfigError
from devvis.longitudinal import as_series
from devvis.slt import LLCTrajectory, llc_trajectory
from devvis.typing import SeriesLike

#: Container types whose children are blocks of their own (a ViT's ``blocks``, a ResNet's stages stay whole).
_EXPAND = (nn.ModuleList,)


def default_blocks(model: nn.Module) -> list[str]:
    """The model's top-level children that hold parameters; a ``ModuleList`` child (a ViT's ``blocks``)
    is split into its elements."""
    out = []
    for name, child in model.named_children():
        if not any(True for _ in child.parameters()):
            continue
        if isinstance(child, _EXPAND):
            out += [f"{name}.{k}" for k, sub in child.named_children() if any(True for _ in sub.parameters())]
        else:
            out.append(name)
    if not out:
        raise ConfigError("the model has no child module with parameters; give blocks=[...] by name")
    return out


def block_llc(series: SeriesLike, loader: Any, criterion: Any, *, blocks: Sequence[str] | None = None,
              progress: bool = False, **llc_kwargs: Any) -> dict[str, LLCTrajectory]:
    """``{block: LLCTrajectory}``: the restricted LLC of each block at every checkpoint of ``series``.

    ``loader``, ``criterion`` and ``llc_kwargs`` (``lr``, ``localization``, ``num_draws``, ``seed`` ...)
    go to :func:`devvis.slt.llc_trajectory` unchanged for every block; ``blocks`` default to
    :func:`default_blocks` of the first checkpoint.
    """
    s = as_series(series)
    if "params" in llc_kwargs:
        raise ConfigError("block_llc sets params per block; give blocks=[...] instead of params")
    names = list(blocks) if blocks is not None else default_blocks(s.at(0))
    return {b: llc_trajectory(s, loader, criterion, params=[b], progress=progress, **llc_kwargs) for b in names}


def attribute(boundary_index: int, per_block: dict[str, LLCTrajectory]) -> dict[str, float]:
    """Per block, ``|LLC[i+1] − LLC[i−1]| / sqrt(std[i+1]² + std[i−1]² + 1e-12)`` around checkpoint ``i``:
    how many standard deviations the block's restricted LLC moves across the boundary (NaN where undefined)."""
    out = {}
    for name, t in per_block.items():
        a, b = max(0, boundary_index - 1), min(len(t.steps) - 1, boundary_index + 1)
        d = abs(t.llc_mean[b] - t.llc_mean[a])
        sd = math.sqrt((t.llc_std[a] if math.isfinite(t.llc_std[a]) else 0.0) ** 2
                       + (t.llc_std[b] if math.isfinite(t.llc_std[b]) else 0.0) ** 2 + 1e-12)
        out[name] = d / sd if math.isfinite(d) else float("nan")
    return out

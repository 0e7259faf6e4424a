"""The batched work of a trust check at one checkpoint: one render for every unit, two recorded passes.

``trust()`` spends its time rendering; everything else is a few forward passes. So at each checkpoint

* :func:`units_objective` renders every unit of every layer, ``seeds`` images each, in **one** batch
  (image ``u * seeds + j`` maximizes unit ``u``'s channel; images are independent, the model being in
  eval mode), so the per-step overhead is paid once, not once per layer;
* :func:`score_checkpoint` records every layer any unit needs (the units' layers and their path
  layers) in one pass over the visualizations and their unseen-transform copies, and one pass over
  the top natural examples, their copies and the random natural images. A unit's activation is its
  channel's mean over positions, read from the same recorded pass (what ``objectives.channel``
  computes), so no image is run twice.

>>> import torch
>>> from devvis.hooks import Activations
>>> obj = units_objective([("a", 1), ("b", 0)], 2)
>>> acts = Activations({"a": torch.arange(32.0).view(4, 2, 2, 2), "b": torch.ones(4, 3, 2, 2)}, {})
>>> obj(acts).tolist()
[5.5, 13.5, 1.0, 1.0]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from devvis.errors import ConfigError
from devvis.objectives import Objective, channels_first
from devvis.trust.metrics import UNSEEN_TRANSFORMS
from devvis.trust.record import pooled_activations
from devvis.typing import ImageBatch, PreprocessLike


def units_objective(units: Sequence[tuple[str, int]], counts: int | Sequence[int]) -> Objective:
    """Images ``offset_u .. offset_u + counts[u] - 1`` maximize the mean of channel ``units[u][1]`` of layer
    ``units[u][0]`` (``offset_u`` the sum of the counts before ``u``; an int gives every unit that many):
    every unit of every layer in one batch of ``sum(counts)`` images."""
    per = [int(counts)] * len(units) if isinstance(counts, int) else [int(n) for n in counts]
    groups: dict[str, tuple[list[int], list[int]]] = {}
    offset = 0
    for (layer, c), n in zip(units, per):
        pos, chans = groups.setdefault(layer, ([], []))
        pos.extend(range(offset, offset + n))
        chans.extend([int(c)] * n)
        offset += n
    groups = {layer: g for layer, g in groups.items() if g[0]}
    order = [p for pos, _ in groups.values() for p in pos]
    inverse = torch.empty(len(order), dtype=torch.long)
    inverse[torch.tensor(order, dtype=torch.long)] = torch.arange(len(order))

    def fn(acts):
        parts = []
        for layer, (pos, chans) in groups.items():
            t = channels_first(acts, layer)
            flat = t.reshape(t.shape[0], t.shape[1], -1)
            p = torch.tensor(pos, device=flat.device)
            ch = torch.tensor(chans, device=flat.device)
            parts.append(flat[p, ch].mean(dim=-1))
        return torch.cat(parts)[inverse.to(parts[0].device)]

    label = ", ".join(f"{layer}:{c}x{n}" for (layer, c), n in zip(units, per) if n)
    return Objective(fn, layers=list(groups), description=f"trust units [{label}]")


def given_renders(renders: Any, units: Sequence[tuple[str, int]], *, steps: int, image_size: int,
                  transforms: Any) -> dict[tuple[str, int], dict[int, ImageBatch]]:
    """Visualizations already rendered (e.g. ``track(...).renders``), to serve as the first seed of a unit.

    ``renders``: ``{name: SeriesResult}`` (anything whose iteration gives ``(step, RenderResult)``) or one such
    series. A render of ``objectives.channels(layer, [...])`` or ``objectives.channel(layer, c)`` (its
    ``fields`` say which) gives image ``i`` to its ``i``-th channel. Its settings must be the trust check's
    (``steps``, ``image_size``, ``transforms``), else :class:`~devvis.errors.ConfigError` names the difference.
    Returns ``{(layer, c): {step: (1, C, H, W)}}`` for the wanted ``units`` found.
    """
    series = list(renders.values()) if isinstance(renders, Mapping) else [renders]
    wanted = set(units)
    out: dict[tuple[str, int], dict[int, ImageBatch]] = {}
    for sr in series:
        for step, r in sr:
            f, cfg = getattr(r, "fields", {}) or {}, getattr(r, "config", {}) or {}
            chans = f.get("channels") if f.get("objective_type") == "channels" else (
                [f["channel"]] if "channel" in f and f.get("objective_type") == "channel" else None)
            if chans is None or "layer" not in f:
                continue
            want = {"steps": steps, "image_size": [image_size, image_size],
                    "transforms": transforms if isinstance(transforms, (str, type(None))) else cfg.get("transforms")}
            for key, value in want.items():
                if key in cfg and cfg[key] != value:
                    raise ConfigError(f"given render of {f['layer']} at step {step} has {key}={cfg[key]!r}, but the "
                                      f"trust check renders with {key}={value!r}; pass matching settings")
            for i, c in enumerate(chans):
                if (f["layer"], int(c)) in wanted:
                    out.setdefault((f["layer"], int(c)), {})[int(step)] = r.images[i:i + 1]
    return out


@dataclass
class CheckpointScores:
    """Pooled activations ``{layer: (n, C)}`` of every image set the metrics compare, at one checkpoint.

    ``viz``: the visualizations, ``(U * S, C)``, unit ``u``'s rows ``u*S:(u+1)*S``; ``viz_t[name]``: the same
    under each unseen transform; ``top``: the top natural examples ``(U * k, C)``, unit ``u``'s rows
    ``u*k:(u+1)*k``; ``top_t[name]``: under each transform; ``random``: the random natural images.
    """

    viz: dict[str, torch.Tensor]
    viz_t: dict[str, dict[str, torch.Tensor]]
    top: dict[str, torch.Tensor]
    top_t: dict[str, dict[str, torch.Tensor]]
    random: dict[str, torch.Tensor]


def _split(acts: dict[str, torch.Tensor], sizes: list[int]) -> list[dict[str, torch.Tensor]]:
    parts: list[dict[str, torch.Tensor]] = [{} for _ in sizes]
    for name, t in acts.items():
        for i, chunk in enumerate(torch.split(t, sizes)):
            parts[i][name] = chunk
    return parts


def score_checkpoint(model: nn.Module, layers: Sequence[str], viz: ImageBatch, top: ImageBatch, natural: ImageBatch,
                     *, preprocess: PreprocessLike = "auto", batch_size: int = 64) -> CheckpointScores:
    """Record ``layers`` (pooled over positions) on ``viz``, ``top`` and ``natural`` and their transformed
    copies (:data:`~devvis.trust.metrics.UNSEEN_TRANSFORMS`): one pass over the visualizations and one over
    the natural images (the two may differ in size)."""
    names = list(UNSEEN_TRANSFORMS)
    v_in = torch.cat([viz] + [UNSEEN_TRANSFORMS[t](viz) for t in names])
    v_parts = _split(pooled_activations(model, layers, v_in, preprocess=preprocess, batch_size=batch_size),
                     [viz.shape[0]] * (1 + len(names)))
    n_in = torch.cat([top] + [UNSEEN_TRANSFORMS[t](top) for t in names] + [natural])
    n_parts = _split(pooled_activations(model, layers, n_in, preprocess=preprocess, batch_size=batch_size),
                     [top.shape[0]] * (1 + len(names)) + [natural.shape[0]])
    return CheckpointScores(viz=v_parts[0], viz_t=dict(zip(names, v_parts[1:])), top=n_parts[0],
                            top_t=dict(zip(names, n_parts[1:-1])), random=n_parts[-1])

"""The batched work of a trust check at one checkpoint: one render for every unit, two recorded passes.

``trust()`` spends its time rendering; everything else is a few forward passes. So at each checkpoint

* :func:`units_objective` renders every unit of every layer, ``seeds`` images each, in **one** batch
  (image ``u * seeds + j`` maximizes unit ``u``'s channel; images are independent, the model being in
  eval mode), so the per-step overhead is paid once, not once per layer;
* :func:`score_checkpoint` records every layer any unit needs (the units' layers and their path
  layers) in one pass over the visualizations and their unseen-transform copies, and one pass over
  the top natural examples, their copies and the random natural images. A unit's activation is its
  channel's mean over positions and its path vectors are the layers' activations under its strongest
  position (:func:`~devvis.trust.record.local_vectors`), all read from the same recorded pass, so no
  image is run twice;
* :func:`given_renders` takes pictures already rendered (``track(...).renders``) as each unit's first
  seed, so only the other seeds are rendered.

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
from devvis.trust.record import batched, local_vectors, recorded, strongest_positions
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


#: Most random-image patches kept per recorded batch and unit (evenly spaced).
MAX_PATCHES_PER_BATCH = 2048


@dataclass
class UnitScores:
    """What the metrics of one unit at one checkpoint read (``S`` seeds, ``k`` examples, ``R`` random images).

    ``viz_values`` ``(S,)`` / ``top_values`` ``(k,)``: the unit's activation (channel mean over positions) on its
    visualizations / top natural examples; ``viz_t`` ``(T, S)`` / ``top_t`` ``(T, k)``: the same under each unseen
    transform. ``viz``, ``top``, ``random``: ``{layer: (n, C)}``, each path layer's (and the unit layer's)
    activation vector under the unit's strongest position in each image (:func:`~devvis.trust.record.local_vectors`);
    for ``random``, under every position of the unit's map (random natural patches; at most
    :data:`MAX_PATCHES_PER_BATCH` per batch of images).
    """

    viz_values: torch.Tensor
    viz_t: torch.Tensor
    top_values: torch.Tensor
    top_t: torch.Tensor
    viz: dict[str, torch.Tensor]
    top: dict[str, torch.Tensor]
    random: dict[str, torch.Tensor]


class _Collector:
    """One recorded pass: per unit, the activation values and the local vectors of the rows that belong to it."""

    def __init__(self, units: Sequence[tuple[str, int]], paths: Mapping[str, Sequence[str]]):
        self.units, self.paths = list(units), paths
        self.values: dict[tuple[int, str], list[torch.Tensor]] = {}
        self.local: dict[tuple[int, str, str], list[torch.Tensor]] = {}

    def run(self, model: nn.Module, layers: Sequence[str], images: ImageBatch, groups: Sequence[tuple[str, int, Any]],
            preprocess: PreprocessLike, batch_size: int) -> None:
        """Record ``images`` once; ``groups`` are consecutive blocks ``(tag, n_rows, owner)``, ``owner(row)`` the
        unit indices a row of the block belongs to. Tags ending in ``_t`` keep the unit's activation only;
        the others keep local vectors too (``"random"``: at every position of the unit's map)."""
        bounds, start = [], 0
        for tag, n, owner in groups:
            bounds.append((tag, start, start + n, owner))
            start += n
        for b0, _, acts in recorded(model, layers, batched(images, batch_size), preprocess=preprocess):
            b1 = b0 + acts["input"].shape[0]
            for tag, g0, g1, owner in bounds:
                lo, hi = max(b0, g0), min(b1, g1)
                if lo >= hi:
                    continue
                by_unit: dict[int, list[int]] = {}
                for row in range(lo, hi):
                    for u in owner(row - g0):
                        by_unit.setdefault(u, []).append(row - b0)
                shared: dict[tuple[str, str], torch.Tensor] = {}  # patches are the same for a layer's units
                for u, rows in by_unit.items():
                    self._add(acts, tag, u, torch.tensor(rows), shared)

    def _add(self, acts: Any, tag: str, u: int, rows: torch.Tensor, shared: dict) -> None:
        layer, c = self.units[u]
        unit_map = channels_first(acts, layer)[rows].float().cpu()
        self.values.setdefault((u, tag), []).append(unit_map[:, c].reshape(len(rows), -1).mean(dim=1))
        if tag.endswith("_t"):
            return
        # natural images at the unit's strongest position; random natural images at every position (patches)
        pos = None if tag == "random" else strongest_positions(unit_map, torch.full((len(rows),), c))
        for name in list(self.paths[layer]) + [layer]:
            if pos is None and (layer, name) in shared:
                self.local.setdefault((u, tag, name), []).append(shared[(layer, name)])
                continue
            t = channels_first(acts, name)[rows].float().cpu()
            v = local_vectors(t, unit_map, pos)
            if pos is None:
                if v.shape[0] > MAX_PATCHES_PER_BATCH:  # evenly spaced, the same rows for every layer
                    v = v[torch.linspace(0, v.shape[0] - 1, MAX_PATCHES_PER_BATCH).long()]
                shared[(layer, name)] = v
            self.local.setdefault((u, tag, name), []).append(v)

    def vals(self, u: int, tag: str) -> torch.Tensor:
        return torch.cat(self.values[(u, tag)])

    def vecs(self, u: int, tag: str) -> dict[str, torch.Tensor]:
        layer = self.units[u][0]
        return {name: torch.cat(self.local[(u, tag, name)]) for name in list(self.paths[layer]) + [layer]}


def score_checkpoint(model: nn.Module, units: Sequence[tuple[str, int]], paths: Mapping[str, Sequence[str]],
                     viz: ImageBatch, top: ImageBatch, natural: ImageBatch, *, seeds: int, k: int,
                     preprocess: PreprocessLike = "auto", batch_size: int = 64) -> list[UnitScores]:
    """Every unit's :class:`UnitScores` at one checkpoint, from one recorded pass over the visualizations ``viz``
    ``(U * seeds, ...)`` and their unseen-transform copies (:data:`~devvis.trust.metrics.UNSEEN_TRANSFORMS`) and
    one over the natural images: the top examples ``top`` ``(U * k, ...)``, their copies and ``natural``
    (random natural images, scored under every unit's strongest position). Unit ``u`` owns rows ``u*seeds:``
    of ``viz`` and ``u*k:`` of ``top``."""
    names = list(UNSEEN_TRANSFORMS)
    layers = list(dict.fromkeys(x for layer, _ in units for x in list(paths[layer]) + [layer]))
    col = _Collector(units, paths)
    every = list(range(len(units)))
    nv, nt = viz.shape[0], top.shape[0]
    col.run(model, layers, torch.cat([viz] + [UNSEEN_TRANSFORMS[t](viz) for t in names]),
            [("viz", nv, lambda r: [r // seeds])] + [(f"{t}_t", nv, lambda r: [r // seeds]) for t in names],
            preprocess, batch_size)
    col.run(model, layers, torch.cat([top] + [UNSEEN_TRANSFORMS[t](top) for t in names] + [natural]),
            [("top", nt, lambda r: [r // k])] + [(f"top_{t}_t", nt, lambda r: [r // k]) for t in names]
            + [("random", natural.shape[0], lambda r: every)], preprocess, batch_size)
    return [UnitScores(viz_values=col.vals(u, "viz"), viz_t=torch.stack([col.vals(u, f"{t}_t") for t in names]),
                       top_values=col.vals(u, "top"), top_t=torch.stack([col.vals(u, f"top_{t}_t") for t in names]),
                       viz=col.vecs(u, "viz"), top=col.vecs(u, "top"), random=col.vecs(u, "random"))
            for u in range(len(units))]

"""Dataset examples: each unit's top-k natural images and their receptive-field crops, at every checkpoint.

For a unit (a channel of a layer) and a checkpoint, the activation of an image is the channel's mean
over positions (``objectives.channel(layer, c)``, the value a render maximizes), computed through
the render's own model-input pipeline (:mod:`devvis.trust.record`). The top-k images are the ``k``
of the dataset with the highest activation; each one's *crop* is the receptive field
(:mod:`devvis.trust.receptive`) of the position where the channel responds most in it, i.e. the
part of the image the unit was looking at. One pass over the dataset per checkpoint serves every
unit of every layer (the layers are recorded together), batched, with a progress bar.

This module imports no other part of :mod:`devvis.longitudinal` at load time (the series is
resolved inside the functions), because :mod:`devvis.longitudinal` re-exports :func:`top_k_examples`.

>>> import torch
>>> from devvis.longitudinal import CheckpointSeries
>>> nets = {s: torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3)) for s in (0, 1)}
>>> ex = dataset_examples(CheckpointSeries.from_models(nets), ["0:1"], torch.rand(20, 3, 8, 8), k=3, progress=False)
>>> tuple(ex.units["0:1"].indices.shape), tuple(ex.crops("0:1", 1).shape)
((2, 3), (3, 3, 3, 3))
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence, Union

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from devvis import io as dio
from devvis.data.sources import DatasetLike, cached, dataset_images, dataset_size, describe, image_batches
from devvis.errors import ConfigError
from devvis.objectives import channel as channel_objective
from devvis.objectives import channels_first
from devvis.render.pipeline import auto_preprocess
from devvis.trust.receptive import ReceptiveField, crops, receptive_field
from devvis.trust.record import recorded
from devvis.typing import ImageBatch, PathLike, PreprocessLike, SeriesLike

if TYPE_CHECKING:  # pragma: no cover - for type checkers only
    from devvis.longitudinal.series import CheckpointSeries

Unit = Union[str, tuple[str, int]]
"""A channel of a layer: ``"layer2.0:3"`` or ``("layer2.0", 3)``."""


def parse_units(units: Sequence[Unit]) -> list[tuple[str, int]]:
    """``["layer2.0:3", ("conv1", 0)]`` -> ``[("layer2.0", 3), ("conv1", 0)]`` (duplicates dropped).

    >>> parse_units(["layer2.0:3", ("conv1", 0), "layer2.0:3"])
    [('layer2.0', 3), ('conv1', 0)]
    """
    out: list[tuple[str, int]] = []
    for u in units:
        if isinstance(u, (tuple, list)) and len(u) == 2 and isinstance(u[1], int) and not isinstance(u[1], bool):
            item = (str(u[0]), int(u[1]))
        elif isinstance(u, str) and ":" in u and u.rpartition(":")[2].strip().isdigit():
            layer, _, ch = u.strip().rpartition(":")
            item = (layer, int(ch))
        else:
            raise ConfigError(f"cannot read unit {u!r}; expected 'layer:channel' (e.g. 'layer2.0:3') "
                              "or a (layer, channel) pair")
        if item not in out:
            out.append(item)
    if not out:
        raise ConfigError("no units given; expected e.g. ['layer2.0:3']")
    return out


def unit_label(layer: str, channel: int) -> str:
    """``"layer:channel"``."""
    return f"{layer}:{channel}"


@dataclass
class UnitExamples:
    """One unit's top-``k`` dataset examples at each checkpoint.

    ``indices`` (long) / ``values`` (float): ``(n_checkpoints, k)``, most activating first; indices
    are dataset positions. ``positions``: ``(n_checkpoints, k, 2)`` ``(y, x)`` of the channel's
    strongest position in each image (``-1`` for layers without a spatial map);
    ``receptive_field``: the layer's fields, which give each example's crop box.
    """

    layer: str
    channel: int
    steps: list[int]
    k: int
    indices: torch.Tensor
    values: torch.Tensor
    positions: torch.Tensor
    receptive_field: ReceptiveField | None = None

    @property
    def dataset_max(self) -> list[float]:
        """The unit's highest activation over the dataset, per checkpoint."""
        return self.values[:, 0].tolist()

    def boxes(self, i: int) -> list[tuple[int, int, int, int]]:
        """``(y0, y1, x0, x1)`` crop boxes of checkpoint ``i``'s examples (the whole image without a field)."""
        rf = self.receptive_field
        if rf is None:
            return []
        return [rf.box(int(y), int(x)) for y, x in self.positions[i].tolist()]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record."""
        return {"layer": self.layer, "channel": self.channel, "steps": self.steps, "k": self.k,
                "indices": self.indices.tolist(), "values": self.values.tolist(),
                "positions": self.positions.tolist(), "boxes": [self.boxes(i) for i in range(len(self.steps))],
                "dataset_max": self.dataset_max,
                "receptive_field": self.receptive_field.to_dict() if self.receptive_field else None}


@dataclass
class DatasetExamples:
    """What :func:`dataset_examples` found: ``units[label]`` (``"layer:c"``) and the example images.

    ``bank[index]``: each dataset image that is a top-k example somewhere, ``(C, H, W)`` in [0, 1].
    """

    steps: list[int]
    k: int
    n_images: int
    units: dict[str, UnitExamples]
    bank: dict[int, torch.Tensor] = field(default_factory=dict)
    dataset: dict[str, Any] = field(default_factory=dict)
    preprocess: str = "auto"

    def _at(self, label: str, step: int) -> tuple[UnitExamples, int]:
        if label not in self.units:
            raise ConfigError(f"no examples of unit {label!r}; have {', '.join(self.units)}")
        u = self.units[label]
        if step not in u.steps:
            raise ConfigError(f"no examples at step {step}; steps {u.steps}")
        return u, u.steps.index(step)

    def images(self, label: str, step: int) -> ImageBatch:
        """The unit's top-k images at ``step``, ``(k, C, H, W)`` in [0, 1], most activating first."""
        u, i = self._at(label, step)
        return torch.stack([self.bank[int(j)] for j in u.indices[i].tolist()])

    def crops(self, label: str, step: int) -> ImageBatch:
        """Their receptive-field crops, ``(k, C, rh, rw)`` (the images themselves without a spatial field)."""
        u, i = self._at(label, step)
        images = self.images(label, step)
        if u.receptive_field is None:
            return images
        return crops(u.receptive_field, images, u.positions[i])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record in devvis's metadata schema."""
        return dio.metadata("dataset_examples", steps=self.steps, k=self.k, n_images=self.n_images,
                            dataset=self.dataset, preprocess=self.preprocess,
                            units={lab: u.to_dict() for lab, u in self.units.items()},
                            definitions={"value": "mean activation of the channel over positions (objectives.channel)",
                                         "position": "(y, x) of the channel's largest activation in the image",
                                         "box": "(y0, y1, x0, x1) receptive field of that position, measured by "
                                                "gradient support, clipped to the image"})

    def save(self, output_dir: PathLike) -> list[Path]:
        """Write ``examples.json`` and, per unit and checkpoint, ``{layer}_channel_{c}/step_{step:06d}.png``
        (top row: the top-k images, most activating first; bottom row: their receptive-field crops,
        scaled to the images' height). Returns the files written."""
        out = Path(output_dir)
        files = []
        for label, u in self.units.items():
            for step in u.steps:
                path = out / f"{safe_name(u.layer)}_channel_{u.channel}" / f"step_{step:06d}.png"
                dio.atomic_write_bytes(path, dio.image_bytes(montage(self.images(label, step),
                                                                     self.crops(label, step)), format="PNG"))
                files.append(path)
        dio.write_json(out / "examples.json", self.to_dict())
        files.append(out / "examples.json")
        return files


def safe_name(layer: str) -> str:
    """A layer name fit for a file name."""
    return "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in layer)


def montage(images: ImageBatch, crops_: ImageBatch | None = None, *, gap: int = 2) -> torch.Tensor:
    """One image ``(3, H', W')``: ``images`` ``(K, C, H, W)`` in a row, their crops (scaled to height ``H``) below."""
    k, c, h, w = images.shape
    rows = [images]
    if crops_ is not None:
        rows.append(F.interpolate(crops_.float(), size=(h, w), mode="bilinear", align_corners=False).clamp(0, 1))
    canvas = torch.ones(3, len(rows) * (h + gap) - gap, k * (w + gap) - gap)
    for r, row in enumerate(rows):
        row3 = row.expand(-1, 3, -1, -1) if row.shape[1] == 1 else row[:, :3]
        for j in range(k):
            canvas[:, r * (h + gap):r * (h + gap) + h, j * (w + gap):j * (w + gap) + w] = row3[j]
    return canvas


def _as_series(series: SeriesLike) -> "CheckpointSeries":
    from devvis.longitudinal.series import as_series  # at call time: devvis.longitudinal re-exports this module

    return as_series(series)


def dataset_examples(series: SeriesLike, units: Sequence[Unit], dataset: DatasetLike, *, k: int = 9,
                     batch_size: int = 64, image_size: int = 64, preprocess: PreprocessLike = "auto",
                     receptive_fields: bool = True, keep_images: bool = True,
                     progress: bool = True) -> DatasetExamples:
    """Top-``k`` dataset examples of each unit at every checkpoint of ``series``, with receptive-field crops.

    Args:
        series: a :class:`~devvis.longitudinal.CheckpointSeries`, ``{step: model}``, a folder or files.
        units: ``["layer:c", ("layer", c), ...]``.
        dataset: an image folder path, a tensor ``(N, C, H, W)`` in [0, 1], a Dataset or a DataLoader
            (see :mod:`devvis.data.sources`; ``image_size`` applies to folders).
        k: examples per unit and checkpoint.
        preprocess: the model-input rule (``"auto"``: the model's own default; ``None``: identity).
        receptive_fields: measure each layer's field (on the final checkpoint) for the crops.
        keep_images: keep the example images (``result.bank``) for :meth:`DatasetExamples.images`/``crops``.

    One pass over ``dataset`` per checkpoint records every unit's layer together (a dataset of at most
    :data:`~devvis.data.sources.MAX_CACHED_BYTES` is read once and kept). Returns
    :class:`DatasetExamples`; ``values[i]`` are what ``objectives.evaluate(model_i, "layer:c", images)``
    gives on the examples.
    """
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ConfigError(f"k must be a positive integer, got {k!r}")
    s = _as_series(series)
    parsed = parse_units(units)
    layers = list(dict.fromkeys(layer for layer, _ in parsed))
    objectives = {(layer, c): channel_objective(layer, c) for layer, c in parsed}
    description = describe(dataset)
    if len(s) > 1:  # read (decode, generate) a small dataset once for every checkpoint's pass
        dataset = cached(dataset, image_size=image_size)
    n = dataset_size(dataset)
    if n is not None and k > n:
        raise ConfigError(f"k={k} exceeds the {n} examples given")
    n_batches = math.ceil(n / batch_size) if n is not None else None
    found: dict[tuple[str, int], list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]] = {u: [] for u in parsed}
    seen, shape, applied = 0, None, "auto"
    bar = tqdm(total=None if n_batches is None else n_batches * len(s), disable=not progress,
               desc="dataset examples", unit="batch")
    for _step, model in s:
        applied = _preprocess_name(preprocess, model)
        best: dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        seen = 0
        for start, images, acts in recorded(model, layers, image_batches(dataset, batch_size=batch_size,
                                                                         image_size=image_size),
                                            preprocess=preprocess):
            shape = tuple(images.shape[1:])
            seen = start + images.shape[0]
            idx = torch.arange(start, seen)
            for u in parsed:
                vals = objectives[u](acts).float().cpu()
                pos = _argmax_positions(acts, u)
                if u in best:
                    vals, idx_u, pos = (torch.cat([best[u][0], vals]), torch.cat([best[u][1], idx]),
                                        torch.cat([best[u][2], pos]))
                else:
                    idx_u = idx
                top = torch.topk(vals, min(k, vals.shape[0])).indices
                best[u] = (vals[top], idx_u[top], pos[top])
            bar.update(1)
        if k > seen:
            raise ConfigError(f"k={k} exceeds the {seen} examples given")
        for u in parsed:
            found[u].append(best[u])
    bar.close()
    assert shape is not None
    fields: dict[str, ReceptiveField | None] = {}
    for layer in layers:
        fields[layer] = (receptive_field(s.at(len(s) - 1), layer, shape, preprocess=preprocess)
                         if receptive_fields else None)
    result_units = {}
    for (layer, c), rows in found.items():
        result_units[unit_label(layer, c)] = UnitExamples(
            layer=layer, channel=c, steps=s.steps, k=k, indices=torch.stack([r[1] for r in rows]),
            values=torch.stack([r[0] for r in rows]), positions=torch.stack([r[2] for r in rows]),
            receptive_field=fields[layer])
    bank: dict[int, torch.Tensor] = {}
    if keep_images:
        wanted = sorted({int(i) for u in result_units.values() for i in u.indices.flatten().tolist()})
        for j, img in zip(wanted, dataset_images(dataset, wanted, image_size=image_size)):
            bank[j] = img
    return DatasetExamples(steps=s.steps, k=k, n_images=seen, units=result_units, bank=bank,
                           dataset=description, preprocess=applied)


def _preprocess_name(spec: PreprocessLike, model: torch.nn.Module) -> str:
    applied = auto_preprocess(spec, model)
    return applied if isinstance(applied, str) else repr(applied)


def _argmax_positions(acts: Any, unit: tuple[str, int]) -> torch.Tensor:
    """``(B, 2)`` long: ``(y, x)`` of the channel's largest activation per image; ``-1`` without a spatial map."""
    layer, c = unit
    t = channels_first(acts, layer)
    if t.dim() != 4:
        return torch.full((t.shape[0], 2), -1, dtype=torch.long)
    m = t[:, c].float().cpu()
    flat = m.reshape(m.shape[0], -1).argmax(dim=1)
    return torch.stack([flat // m.shape[-1], flat % m.shape[-1]], dim=1)


@dataclass
class TopKExamples:
    """Top-``k`` data-set examples of a channel at each checkpoint.

    ``indices``/``values``: ``(n_checkpoints, k)`` (long / float), most activating first;
    indices are positions in the data set. ``jaccard_consecutive[i]``: overlap
    ``|A ∩ B| / |A ∪ B|`` of the top-k sets of checkpoints ``i`` and ``i + 1`` (``n - 1``
    values); ``jaccard_final[i]``: overlap of checkpoint ``i``'s set with the final one's.
    """

    steps: list[int]
    k: int
    indices: torch.Tensor
    values: torch.Tensor
    jaccard_consecutive: list[float]
    jaccard_final: list[float]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record."""
        return {"steps": self.steps, "k": self.k, "indices": self.indices.tolist(), "values": self.values.tolist(),
                "jaccard_consecutive": self.jaccard_consecutive, "jaccard_final": self.jaccard_final}


def jaccard(a: torch.Tensor, b: torch.Tensor) -> float:
    """``|A ∩ B| / |A ∪ B|`` of two index sets (1 for two empty sets)."""
    sa, sb = set(a.tolist()), set(b.tolist())
    return len(sa & sb) / len(sa | sb) if sa | sb else 1.0


def top_k_examples(series: SeriesLike, layer: str, channel: int, loader: DatasetLike, k: int = 9, *,
                   preprocess: PreprocessLike = "auto", batch_size: int = 64) -> TopKExamples:
    """Per checkpoint, the ``k`` examples of ``loader`` that activate ``(layer, channel)`` most.

    ``loader``: an image folder, a DataLoader, a Dataset or an image tensor ``(N, C, H, W)`` in [0, 1]
    (read in data-set order, see :mod:`devvis.data.sources`). Activation = the channel's mean over
    positions. ``preprocess``: ``"auto"`` (the model's own default), ``None`` (identity),
    ``"imagenet"`` or a callable. Returns :class:`TopKExamples` with the Jaccard overlaps of the
    top-k sets; :func:`dataset_examples` adds receptive-field crops and many units at once.

    >>> import torch
    >>> from devvis.longitudinal import CheckpointSeries
    >>> nets = {s: torch.nn.Sequential(torch.nn.Conv2d(3, 2, 1)) for s in (0, 1)}
    >>> top = top_k_examples(CheckpointSeries.from_models(nets), "0", 0, torch.rand(20, 3, 4, 4), k=3)
    >>> tuple(top.indices.shape), len(top.jaccard_consecutive)
    ((2, 3), 1)
    """
    ex = dataset_examples(series, [(layer, channel)], loader, k=k, batch_size=batch_size, preprocess=preprocess,
                          receptive_fields=False, keep_images=False, progress=False)
    u = ex.units[unit_label(layer, channel)]
    indices = u.indices
    consecutive = [jaccard(indices[i], indices[i + 1]) for i in range(len(indices) - 1)]
    final = [jaccard(indices[i], indices[-1]) for i in range(len(indices))]
    return TopKExamples(u.steps, k, indices, u.values, consecutive, final)

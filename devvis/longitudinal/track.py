"""``track()``: render components across checkpoints, compute every feature-change metric, write plots.

>>> import tempfile, torch
>>> from devvis.longitudinal import CheckpointSeries, track
>>> nets = {s: torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3)) for s in (0, 10, 100)}
>>> out = track(CheckpointSeries.from_models(nets), ["0:1"], tempfile.mkdtemp(), steps=2, image_size=16,
...             transforms="none", progress=False)
>>> list(out.changes), out.changes["0:1"].steps
(['0:1'], [0, 10, 100])
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence, Union

from tqdm.auto import tqdm

from devvis import io as dio
from devvis.errors import ConfigError
from devvis.longitudinal.grid import comparison_grid, component_label
from devvis.longitudinal.inputs import ImagesLike
from devvis.longitudinal.metrics import FeatureChange, feature_change, render_preprocess
from devvis.longitudinal.plots import plot_matrix, plot_similarity
from devvis.longitudinal.render_layers import render_layers
from devvis.longitudinal.render_series import SeriesResult
from devvis.longitudinal.series import as_series
from devvis.longitudinal.settle import DEFAULT_TOLERANCE, BaselineLike
from devvis.typing import PathLike, PreprocessLike, SeriesLike

Component = Union[str, tuple[str, int]]
"""A channel of a layer: ``"layer2.0:3"`` or ``("layer2.0", 3)``."""


@dataclass
class TrackResult:
    """What :func:`track` computed and wrote: ``changes[label]`` per component (``"layer:c"``),
    the renders per layer, and every file written (PNG plots, JSONs, images, the grid)."""

    changes: dict[str, FeatureChange]
    renders: dict[str, SeriesResult]
    files: list[Path] = field(default_factory=list)
    output_dir: Path | None = None


def parse_components(components: Sequence[Component]) -> list[tuple[str, int]]:
    """``["layer2.0:3", ("conv1", 0)]`` -> ``[("layer2.0", 3), ("conv1", 0)]`` (duplicates dropped).

    >>> parse_components(["layer2.0:3", ("conv1", 0), "layer2.0:3"])
    [('layer2.0', 3), ('conv1', 0)]
    """
    out: list[tuple[str, int]] = []
    for c in components:
        if isinstance(c, (tuple, list)) and len(c) == 2 and isinstance(c[1], int) and not isinstance(c[1], bool):
            item = (str(c[0]), int(c[1]))
        elif isinstance(c, str) and re.fullmatch(r".+:\d+", c.strip()):
            layer, _, ch = c.strip().rpartition(":")
            item = (layer, int(ch))
        else:
            raise ConfigError(f"cannot read component {c!r}; expected 'layer:channel' (e.g. 'layer2.0:3') "
                              "or a (layer, channel) pair")
        if item not in out:
            out.append(item)
    if not out:
        raise ConfigError("no components given; expected e.g. ['layer2.0:3']")
    return out


def _summary(fc: FeatureChange) -> dict[str, Any]:
    """One component's line of ``track.json``: settle step, status, reason, baseline, appearance."""
    return {"settle_step": fc.settle_step, "settle_status": fc.settle_status, "settle_reason": fc.settle_reason,
            "baseline": fc.baseline, "final_driven": fc.final_driven,
            "appearance_to_final": fc.appearance.to_final if fc.appearance is not None else None}


def _safe(layer: str) -> str:
    return re.sub(r"[^A-Za-z0-9._\-]", "_", layer)


def track(series: SeriesLike, components: Sequence[Component], output_dir: PathLike, *, steps: int = 128,
          image_size: int = 64, seed: int = 0, threshold: float = 0.8, tolerance: float = DEFAULT_TOLERANCE,
          baseline: BaselineLike = "grey", appearance: bool = True, preprocess: PreprocessLike = "auto",
          loader: ImagesLike | None = None, k: int = 9, progress: bool = True, **render_kwargs: Any) -> TrackResult:
    """Render each component at every checkpoint and write its feature-change analysis.

    Components are rendered together (``objectives.channels`` per layer: one image per channel; the
    layers stacked in one render per checkpoint, :func:`~devvis.longitudinal.render_layers.render_layers`),
    with the same ``seed`` at every checkpoint; each layer's images start where a render of that layer
    alone would (``param.image(image_size, batch=len(channels), seed=seed)``). For each component ``layer:c`` it writes into ``output_dir``:

    * ``{layer}_channel_{c}_similarity.png`` (+ ``.json``): similarity to the final feature on its
      feature-driven part (``baseline`` subtracted), threshold and settle step or status marked,
      and the appearance distances below it;
    * ``{layer}_channel_{c}_matrix.png`` (+ ``.json``): the cross-checkpoint matrix;
    * ``{layer}_channel_{c}_feature_change.json``: every number (see :class:`FeatureChange`);

    and once: ``renders/layer_{layer}/`` (the visualizations, :meth:`SeriesResult.save`),
    ``grid.png`` (+ ``.json``, rows = components, columns = checkpoints) and ``track.json``
    (a summary: per component the settle step, its status and reason, the baseline and the
    appearance distances to the final visualization). ``threshold``, ``tolerance``, ``baseline``
    and ``appearance`` go to :func:`feature_change`. ``steps``/``image_size``/``render_kwargs`` go to
    :func:`devvis.render`; ``loader`` (optional) adds top-``k`` data-set examples (none with ``k=0``)
    and is the data set of ``baseline="dataset_mean"``.
    ``preprocess`` (default ``"auto"``: the model's own default) is used by the renders, and the
    metrics score the renders' images with the same preprocessing; ``track.json`` records what
    was applied (``"imagenet"``, ``"none"`` or a callable's repr).
    """
    s = as_series(series)
    comps = parse_components(components)
    out = Path(output_dir)
    by_layer: dict[str, list[int]] = {}
    for layer, c in comps:
        by_layer.setdefault(layer, []).append(c)
    # every layer's channels in one render per checkpoint (render_layers), each layer's results apart
    renders = render_layers(s, by_layer, seed=seed, steps=steps, image_size=image_size, preprocess=preprocess,
                            progress=progress, **render_kwargs)
    files: list[Path] = [res.save(out / "renders" / f"layer_{_safe(layer)}") for layer, res in renders.items()]
    changes: dict[str, FeatureChange] = {}
    for layer, c in tqdm(comps, disable=not progress, desc="metrics", unit="component"):
        label = component_label(layer, c)
        fc = feature_change(s, renders[layer], layer, c, threshold=threshold, tolerance=tolerance, baseline=baseline,
                            appearance=appearance, preprocess=preprocess, loader=loader, k=k)
        changes[label] = fc
        stem = f"{_safe(layer)}_channel_{c}"
        files.append(plot_similarity(fc, out / f"{stem}_similarity.png"))
        files.append(plot_matrix(fc, out / f"{stem}_matrix.png"))
        dio.write_json(out / f"{stem}_feature_change.json", fc.to_dict())
        files.append(out / f"{stem}_feature_change.json")
    grid_path = out / "grid.png"
    comparison_grid({(layer, c): renders[layer] for layer, c in comps}, output_path=grid_path,
                    title=f"seed {seed}, {steps} steps, {image_size}px")
    files.append(grid_path)
    applied = render_preprocess(renders[comps[0][0]], preprocess)
    summary = dio.metadata(
        "track", series=s.describe(), components=[component_label(l, c) for l, c in comps],
        settings={"steps": steps, "image_size": image_size, "seed": seed, "threshold": threshold,
                  "tolerance": tolerance, "baseline": baseline if isinstance(baseline, (str, type(None))) else "image",
                  "appearance": appearance,
                  "preprocess": applied if isinstance(applied, str) else repr(applied), "k": k,
                  **{key: v if isinstance(v, (str, int, float, bool, type(None))) else repr(v)
                     for key, v in render_kwargs.items()}},
        settle_steps={lab: fc.settle_step for lab, fc in changes.items()},
        features={lab: _summary(fc) for lab, fc in changes.items()},
        files=[str(f.relative_to(out)) if f.is_relative_to(out) else str(f) for f in files])
    dio.write_json(out / "track.json", summary)
    files.append(out / "track.json")
    return TrackResult(changes=changes, renders=renders, files=files, output_dir=out)

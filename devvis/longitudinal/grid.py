"""Comparison grids: rows are components (layer, channel), columns are checkpoints.

The grid reads renders from memory (a :class:`SeriesResult`, or ``{component:
SeriesResult}``) or from a results folder on disk written by ``devvis visualize``/``sweep``
or by :meth:`SeriesResult.save`, read with :func:`devvis.results.open_results`.

>>> import torch
>>> from devvis.longitudinal import CheckpointSeries, render_series, comparison_grid
>>> nets = {s: torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3)) for s in (0, 10)}
>>> res = render_series(CheckpointSeries.from_models(nets), "0:1", steps=1, image_size=16, transforms="none",
...                     progress=False)
>>> comparison_grid(res).size[0] > 2 * 16
True
"""

from __future__ import annotations

import io as _io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from devvis import io as dio
from devvis.errors import ConfigError, OutputError
from devvis.longitudinal.render_series import SeriesResult, image_labels, read_image
from devvis.results import open_results
from devvis.typing import PathLike

#: What a grid is drawn from: one series' renders, ``{component: renders}``, or a results folder.
GridSource = SeriesResult | Mapping[str, SeriesResult] | PathLike


@dataclass
class GridData:
    """What a grid shows: row labels, column steps, and ``cells[(row, step)]`` images ``(3, H, W)``."""

    rows: list[str]
    steps: list[int]
    cells: dict[tuple[str, int], torch.Tensor]
    sources: dict[tuple[str, int], str] = field(default_factory=dict)


def component_label(layer: str, channel: int | None, neuron: Sequence[int] | None = None) -> str:
    """Row label of a component: ``"layer3.1:7"`` (``"layer3.1:7@2,3"`` for a neuron)."""
    base = f"{layer}:{channel}" if channel is not None else str(layer)
    return base + (f"@{neuron[0]},{neuron[1]}" if neuron else "")


def _from_series_result(res: SeriesResult, image_index: int) -> GridData:
    rows: list[str] = []
    cells: dict[tuple[str, int], torch.Tensor] = {}
    for step, r in res:
        counts: dict[str, int] = {}
        for j, (layer, ch) in enumerate(image_labels(r)):
            label = component_label(layer, ch) if ch is not None else f"{r.objective} #{j}"
            n = counts.get(label, 0)
            counts[label] = n + 1
            if ch is not None and n != image_index:
                continue  # the image_index-th image of each component
            if label not in rows:
                rows.append(label)
            cells[(label, step)] = r.images[j]
    return GridData(rows, res.steps, cells)


def _from_mapping(results: Mapping[Any, SeriesResult], image_index: int) -> GridData:
    from devvis.longitudinal.metrics import component_images

    rows: list[str] = []
    steps: set[int] = set()
    cells: dict[tuple[str, int], torch.Tensor] = {}
    for key, res in results.items():
        if not isinstance(res, SeriesResult):
            raise ConfigError(f"comparison_grid: the value for {key!r} is a {type(res).__name__}, not a SeriesResult")
        layer_ch = _parse_component(key)
        label = component_label(*layer_ch) if layer_ch else str(key)
        rows.append(label)
        for step, r in res:
            steps.add(step)
            imgs = component_images(r, *layer_ch) if layer_ch else r.images
            cells[(label, step)] = imgs[min(image_index, imgs.shape[0] - 1)]
    return GridData(rows, sorted(steps), cells)


def _parse_component(key: Any) -> tuple[str, int] | None:
    """``"layer:c"`` or ``(layer, c)`` -> ``(layer, c)``; None for anything else."""
    if isinstance(key, (tuple, list)) and len(key) == 2 and isinstance(key[1], int):
        return str(key[0]), int(key[1])
    if isinstance(key, str):
        layer, sep, c = key.rpartition(":")
        if sep and layer and c.isdigit():
            return layer, int(c)
    return None


def _from_folder(root: Path, image_index: int) -> GridData:
    res = open_results(root)
    if not res.steps:
        raise OutputError(f"{str(root)!r} holds no manifest.json and no step_XXXXXX folders; "
                          "is it a folder written by `devvis visualize`?")
    rows: list[str] = []
    cells: dict[tuple[str, int], torch.Tensor] = {}
    sources: dict[tuple[str, int], str] = {}
    for e in res.select(image_number=image_index):
        if e.step is None or e.layer is None or e.image_path is None:
            continue
        label = component_label(e.layer, e.channel, e.neuron)
        if label not in rows:
            rows.append(label)
        cells[(label, e.step)] = read_image(e.image_path)
        sources[(label, e.step)] = str(e.image_path.relative_to(root))
    if not rows:
        raise OutputError(f"no images of image number {image_index} found under {str(root)!r}")
    rows.sort(key=lambda r: (_row_sort_key(r)))
    return GridData(rows, res.steps, cells, sources)


def _row_sort_key(label: str) -> tuple[Any, ...]:
    from devvis.models import natural_key

    return natural_key(label)


def _select_rows(data: GridData, components: Sequence[Any] | None) -> list[str]:
    if components is None:
        return data.rows
    out = []
    for c in components:
        parsed = _parse_component(c)
        label = component_label(*parsed) if parsed else str(c)
        if label not in data.rows:
            raise ConfigError(f"component {c!r} is not in the results; available: {', '.join(data.rows[:20])}")
        out.append(label)
    return out


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        return ImageFont.load_default()


def _draw(data: GridData, rows: list[str], cell: int, title: str | None):
    import numpy as np
    from PIL import Image, ImageDraw

    font = _font(max(10, cell // 7))
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))

    def text_w(t: str) -> int:
        box = probe.textbbox((0, 0), t, font=font)
        return int(box[2] - box[0])

    pad = 4
    label_w = max([text_w(r) for r in rows] + [text_w("step")]) + 2 * pad
    header_h = int(font.size * 1.6) + pad if hasattr(font, "size") else 18
    title_h = header_h if title else 0
    w = label_w + len(data.steps) * (cell + pad) + pad
    h = title_h + header_h + len(rows) * (cell + pad) + pad
    canvas = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(canvas)
    boxes: dict[tuple[str, int], list[int]] = {}
    if title:
        draw.text((pad, pad), title, fill="black", font=font)
    for c, step in enumerate(data.steps):
        x = label_w + c * (cell + pad)
        t = f"step {step}"
        draw.text((x + max(0, (cell - text_w(t)) // 2), title_h + pad), t, fill="black", font=font)
    for r, row in enumerate(rows):
        y = title_h + header_h + r * (cell + pad)
        draw.text((pad, y + cell // 2 - header_h // 3), row, fill="black", font=font)
        for c, step in enumerate(data.steps):
            x = label_w + c * (cell + pad)
            img = data.cells.get((row, step))
            boxes[(row, step)] = [x, y, x + cell, y + cell]
            if img is None:
                draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=(220, 220, 220))
                draw.text((x + pad, y + cell // 2 - 6), "missing", fill=(120, 120, 120), font=font)
                continue
            a = dio.to_uint8_hwc(img)
            tile = Image.fromarray(np.repeat(a, 3, axis=-1) if a.shape[-1] == 1 else a[..., :3])
            # NEAREST keeps the pixels of small renders visible instead of blurring them
            canvas.paste(tile.resize((cell, cell), Image.NEAREST), (x, y))
    return canvas, boxes


def grid_data(results: GridSource, *, image_index: int = 0) -> GridData:
    """Collect the cells of a grid from a SeriesResult, ``{component: SeriesResult}`` or a results folder."""
    if isinstance(results, SeriesResult):
        return _from_series_result(results, image_index)
    if isinstance(results, Mapping):
        return _from_mapping(results, image_index)
    if isinstance(results, (str, os.PathLike)):
        return _from_folder(Path(results), image_index)
    raise ConfigError(f"comparison_grid takes a SeriesResult, a {{component: SeriesResult}} dict or a results folder; "
                      f"got {type(results).__name__}")


def comparison_grid(results: GridSource, components: Sequence[str | int] | None = None, *,
                    output_path: PathLike | None = None,
                    image_index: int = 0, cell_size: int | None = None, title: str | None = None):
    """A labelled image grid: one row per component, one column per checkpoint.

    Parameters
    ----------
    results:
        A :class:`SeriesResult` (one row per component it rendered), ``{component: SeriesResult}``
        (rows in the dict's order, labelled by the keys), or a results folder (read via its
        ``manifest.json``/``series_result.json`` for the checkpoint order, else its ``step_*``
        folders, and each image's JSON metadata for its component).
    components:
        Rows to show, in order: ``"layer:c"`` strings or ``(layer, c)`` pairs (default: all).
    output_path:
        Write the grid there as PNG, with a JSON (same stem) listing rows, steps and sources.
    image_index:
        Which image of each component (when several were rendered per component).
    cell_size:
        Side of each cell in pixels (default: the image size, at least 64).

    Returns the grid as a ``PIL.Image.Image`` (RGB). A checkpoint without an image of a
    component shows a grey "missing" cell.
    """
    data = grid_data(results, image_index=image_index)
    rows = _select_rows(data, components)
    if not rows or not data.steps:
        raise ConfigError("the grid would be empty: no components or no checkpoints found")
    if cell_size is None:
        sides = [int(t.shape[-1]) for t in data.cells.values()]
        cell_size = max(64, max(sides) if sides else 64)
    canvas, boxes = _draw(data, rows, int(cell_size), title)
    if output_path is not None:
        out = Path(output_path)
        if out.suffix.lower() != ".png":
            raise ConfigError(f"grids are written as PNG; output path {str(out)!r} should end in .png")
        buf = _io.BytesIO()
        canvas.save(buf, format="PNG")
        dio.atomic_write_bytes(out, buf.getvalue())
        dio.write_json(out.with_suffix(".json"), dio.metadata(
            "comparison_grid", image=out.name, rows=rows, steps=data.steps, image_index=image_index,
            cell_size=cell_size, boxes={f"{r}@{s}": b for (r, s), b in boxes.items()},
            missing=[[r, s] for r in rows for s in data.steps if (r, s) not in data.cells],
            sources={f"{r}@{s}": v for (r, s), v in data.sources.items() if r in rows}))
    return canvas

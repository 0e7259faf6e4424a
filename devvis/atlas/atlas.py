"""Activation atlases (Carter et al. 2019): one feature visualization per cell of a 2-D activation map.

:func:`activation_atlas` samples a layer's activations over a dataset, lays them out in 2-D,
bins them into a grid and renders every non-empty cell from its mean activation with
``objectives.direction``. :func:`atlas_series` is the longitudinal version: the layout (which
sample lies in which cell) is fixed once, at a reference checkpoint (the final one by default),
and every checkpoint renders the *same cells* from its own activations at the same image
positions, so one can watch a region of the final atlas form over training.

>>> import torch
>>> from torch import nn
>>> model = nn.Sequential(nn.Conv2d(3, 6, 3), nn.ReLU())
>>> atlas = activation_atlas(model, "1", torch.rand(12, 3, 12, 12), grid=2, method="pca", steps=2, image_size=16,
...                          preprocess=None, transforms=None)
>>> atlas.canvas().shape[0], atlas.canvas().shape[1] == 2 * 16
(3, True)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from devvis import io as dio
from devvis import objectives
from devvis.atlas.layout import (
    Cell,
    Samples,
    activations_at,
    grid_cells,
    mean_directions,
    reduce_2d,
    sample_activations,
)
from devvis.errors import ConfigError
from devvis.render import render
from devvis.typing import DeviceLike, ImageBatch, PathLike, PreprocessLike, SeriesLike, TransformsLike

__all__ = ["Atlas", "AtlasSeries", "activation_atlas", "atlas_series", "render_cells"]


@dataclass
class Atlas:
    """A rendered atlas of ``layer``: ``grid x grid`` cells, ``cells[k]`` rendered as ``images[k]``.

    ``coords`` ``(N, 2)`` in [0, 1] place the samples; ``directions`` ``(K, C)`` are the cells'
    mean activations; ``values`` ``(K,)`` the direction objective on each final image;
    ``step`` the checkpoint's training step (``None`` for a plain model).
    """

    layer: str
    grid: int
    method: str
    coords: torch.Tensor
    cells: list[Cell]
    directions: torch.Tensor
    images: torch.Tensor
    values: torch.Tensor
    step: int | None = None
    config: dict[str, Any] = field(default_factory=dict)

    def canvas(self, background: float = 1.0) -> torch.Tensor:
        """The atlas as one image ``(3, grid * h, grid * w)``; empty cells are ``background`` (white)."""
        _, c, h, w = self.images.shape
        out = torch.full((c, self.grid * h, self.grid * w), float(background))
        for cell, img in zip(self.cells, self.images):
            out[:, cell.row * h:(cell.row + 1) * h, cell.col * w:(cell.col + 1) * w] = img
        return out

    def record(self) -> dict[str, Any]:
        """The atlas's JSON record: layer, grid, method, step, and per cell its row, column, sample count and value."""
        return dio.metadata("atlas", layer=self.layer, grid=self.grid, method=self.method, step=self.step,
                            samples=int(self.coords.shape[0]), config=self.config,
                            cells=[{"row": c.row, "col": c.col, "count": c.count, "value": float(v)}
                                   for c, v in zip(self.cells, self.values)])

    def save(self, output_dir: PathLike, name: str = "atlas") -> list[Path]:
        """Write ``NAME.png`` (the canvas) and ``NAME.json`` (:meth:`record`) atomically; returns both paths."""
        folder = Path(output_dir)
        png, js = folder / f"{name}.png", folder / f"{name}.json"
        dio.write_image(png, self.canvas())
        dio.write_json(js, self.record())
        return [png, js]


def render_cells(model: nn.Module, layer: str, directions: torch.Tensor, *, steps: int = 128, image_size: int = 64,
                 lr: float = 0.05, transforms: TransformsLike = "standard", preprocess: PreprocessLike = "auto",
                 input_size: int | tuple[int, int] | None = None, cossim_pow: float = 1.0, batch_size: int = 16,
                 seed: int = 0, device: DeviceLike = None,
                 progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Render one image per row of ``directions`` ``(K, C)`` with ``objectives.direction(layer, d, cossim_pow)``.

    Returns ``(images (K, 3, image_size, image_size), values (K,))``, ``batch_size`` directions per render.
    ``cossim_pow`` > 0 multiplies the projection by the cosine similarity to that power (Lucid's
    rule), so an icon follows its direction rather than just growing the activation.
    """
    images, values = [], []
    for s in range(0, directions.shape[0], batch_size):
        chunk = directions[s:s + batch_size]
        obj = sum(objectives.direction(layer, d, cossim_pow=cossim_pow, batch=i) for i, d in enumerate(chunk))
        res = render(model, obj, steps=steps, image_size=image_size, batch=chunk.shape[0], lr=lr,
                     transforms=transforms, preprocess=preprocess, input_size=input_size, seed=seed + s,
                     device=device, progress=progress)
        images.append(res.images)
        values.append(res.final_values)
    return torch.cat(images), torch.cat(values)


def _layout(samples: Samples, *, grid: int, method: str, min_count: int, seed: int) -> tuple[torch.Tensor, list[Cell]]:
    coords = reduce_2d(samples.vectors, method=method, seed=seed)
    cells = grid_cells(coords, grid, min_count=min_count)
    if not cells:
        raise ConfigError(f"no grid cell holds {min_count} or more of the {samples.vectors.shape[0]} samples; "
                          "lower min_count or the grid size, or use more images")
    return coords, cells


def activation_atlas(model: nn.Module, layer: str, images: ImageBatch, *, grid: int = 8, method: str = "tsne",
                     positions_per_image: int = 4, min_count: int = 1, steps: int = 128, image_size: int = 64,
                     lr: float = 0.05, transforms: TransformsLike = "standard", preprocess: PreprocessLike = "auto",
                     input_size: int | tuple[int, int] | None = None, cossim_pow: float = 1.0,
                     batch_size: int = 16, seed: int = 0, device: DeviceLike = None,
                     progress: bool = False) -> Atlas:
    """An activation atlas of ``layer`` over ``images`` ``(N, C, H, W)`` in [0, 1].

    Samples ``positions_per_image`` activation vectors per image, reduces them to 2-D with
    ``method`` (:func:`~devvis.atlas.layout.reduce_2d`), keeps the cells of a ``grid x grid``
    grid with at least ``min_count`` samples and renders each from its mean activation
    (:func:`render_cells`; ``steps``, ``image_size``, ``lr``, ``transforms``, ``preprocess``,
    ``input_size``, ``device`` as in :func:`devvis.render`).
    """
    samples = sample_activations(model, layer, images, positions_per_image=positions_per_image,
                                 preprocess=preprocess, input_size=input_size, seed=seed)
    coords, cells = _layout(samples, grid=grid, method=method, min_count=min_count, seed=seed)
    directions = mean_directions(samples.vectors, cells)
    imgs, values = render_cells(model, layer, directions, steps=steps, image_size=image_size, lr=lr,
                                transforms=transforms, preprocess=preprocess, input_size=input_size,
                                cossim_pow=cossim_pow, batch_size=batch_size, seed=seed, device=device,
                                progress=progress)
    config = {"positions_per_image": positions_per_image, "min_count": min_count, "steps": steps,
              "image_size": image_size, "lr": lr, "cossim_pow": cossim_pow, "seed": seed, "images": int(images.shape[0])}
    return Atlas(layer, grid, method, coords, cells, directions, imgs, values, config=config)


@dataclass
class AtlasSeries:
    """One atlas per checkpoint on a shared layout (``atlases[i]`` at ``steps[i]``); ``reference_step`` made it."""

    steps: list[int]
    atlases: list[Atlas]
    reference_step: int

    def save(self, output_dir: PathLike) -> list[Path]:
        """``step_XXXXXX/atlas.png|json`` per checkpoint, ``atlas_series.png`` (the atlases side by side, in step
        order) and ``atlas_series.json`` (steps, reference step, files)."""
        folder = Path(output_dir)
        written: list[Path] = []
        for a in self.atlases:
            written += a.save(folder / f"step_{a.step:06d}")
        canvases = [a.canvas() for a in self.atlases]
        gap = torch.ones(3, canvases[0].shape[1], 4)
        strip = torch.cat([t for c in canvases for t in (c, gap)][:-1], dim=2)
        dio.write_image(folder / "atlas_series.png", strip)
        dio.write_json(folder / "atlas_series.json", dio.metadata(
            "atlas_series", steps=self.steps, reference_step=self.reference_step, layer=self.atlases[0].layer,
            grid=self.atlases[0].grid, method=self.atlases[0].method,
            files=[f"step_{s:06d}/atlas.png" for s in self.steps]))
        return written + [folder / "atlas_series.png", folder / "atlas_series.json"]


def atlas_series(series: SeriesLike, layer: str, images: ImageBatch, *, reference_step: int | None = None,
                 grid: int = 8, method: str = "tsne", positions_per_image: int = 4, min_count: int = 1,
                 steps: int = 128, image_size: int = 64, lr: float = 0.05, transforms: TransformsLike = "standard",
                 preprocess: PreprocessLike = "auto", input_size: int | tuple[int, int] | None = None,
                 cossim_pow: float = 1.0, batch_size: int = 16, seed: int = 0, device: DeviceLike = None,
                 progress: bool = False) -> AtlasSeries:
    """The same atlas layout at every checkpoint of ``series``.

    The samples (image, position) and their cells come from ``reference_step`` (default: the
    final checkpoint); at every checkpoint each cell is rendered from the mean of *that*
    checkpoint's activations at the cell's samples. Other arguments as in :func:`activation_atlas`.
    """
    from devvis.longitudinal.series import as_series

    s = as_series(series)
    ref_step = s.final_step if reference_step is None else int(reference_step)
    samples = sample_activations(s[ref_step], layer, images, positions_per_image=positions_per_image,
                                 preprocess=preprocess, input_size=input_size, seed=seed)
    coords, cells = _layout(samples, grid=grid, method=method, min_count=min_count, seed=seed)
    atlases = []
    config = {"positions_per_image": positions_per_image, "min_count": min_count, "steps": steps,
              "image_size": image_size, "lr": lr, "cossim_pow": cossim_pow, "seed": seed,
              "images": int(images.shape[0]), "reference_step": ref_step}
    for step, model in s:
        vectors = samples.vectors if step == ref_step else activations_at(
            model, layer, images, samples.where, preprocess=preprocess, input_size=input_size)
        directions = mean_directions(vectors, cells)
        imgs, values = render_cells(model, layer, directions, steps=steps, image_size=image_size, lr=lr,
                                    transforms=transforms, preprocess=preprocess, input_size=input_size,
                                    cossim_pow=cossim_pow, batch_size=batch_size, seed=seed, device=device,
                                    progress=progress)
        atlases.append(Atlas(layer, grid, method, coords, cells, directions, imgs, values, step=step,
                             config=dict(config)))
    return AtlasSeries(list(s.steps), atlases, ref_step)

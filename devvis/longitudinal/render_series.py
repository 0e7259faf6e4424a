"""Render the same objective at every checkpoint of a series, and the results indexed by step.

Every checkpoint gets a fresh copy of the same initial parameterization and
the same transform random stream (``render(seed=seed)``), so two checkpoints'
images differ only because their models differ.

>>> import torch
>>> from devvis.longitudinal import CheckpointSeries, render_series
>>> nets = {s: torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3)) for s in (0, 10)}
>>> result = render_series(CheckpointSeries.from_models(nets), "0:1", steps=2, image_size=16,
...                        transforms="none", progress=False)
>>> result.steps, tuple(result[10].images.shape)
([0, 10], (1, 3, 16, 16))
"""

from __future__ import annotations

import math

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from devvis import io as dio
from devvis.errors import ConfigError, OutputError
from devvis.longitudinal.series import StepNotFoundError, as_series, format_steps
from devvis.objectives.core import as_objective
from devvis.render import RenderResult, render
from devvis.results import RECORD_KEYS, component_stem, image_component, read_record, step_dir
from devvis.typing import ImageBatch, ObjectiveLike, PathLike, SeriesLike

#: Manifest written by :meth:`SeriesResult.save` at the top of its folder.
SERIES_MANIFEST = "series_result.json"


def image_labels(result: RenderResult) -> list[tuple[str, int | None]]:
    """``(layer, channel)`` targeted by each image of ``result`` (channel None when not a channel objective).

    A ``channels(layer, [c0, c1, ...])`` render targets ``ci`` with image ``i``;
    a ``channel(layer, n)`` render targets ``n`` with every image (the rule of
    :func:`devvis.results.image_component`).
    """
    layer = result.fields.get("layer")
    labels: list[tuple[str, int | None]] = []
    for j in range(result.images.shape[0]):
        channel, _ = image_component(result.fields, j)
        labels.append((str(layer), channel) if channel is not None and layer is not None else (result.objective, None))
    return labels


def default_names(result: RenderResult) -> list[str]:
    """File stems for the images of ``result``: ``layer_{layer}_channel_{c}_average-{j}`` for channel
    objectives (the ``devvis visualize`` naming), ``image-{j}`` otherwise."""
    labels = image_labels(result)
    if all(c is not None for _, c in labels):
        counts: dict[tuple[str, int | None], int] = {}
        names = []
        for lab in labels:
            j = counts.get(lab, 0)
            counts[lab] = j + 1
            names.append(component_stem(lab[0], lab[1], "average", j))  # type: ignore[arg-type]
        return names
    return [f"image-{j}" for j in range(len(labels))]


@dataclass
class SeriesResult:
    """Renders of one objective across checkpoints: ``result[step]`` is that step's :class:`~devvis.RenderResult`.

    ``objective``: its description; ``seed``: the seed every checkpoint shared;
    ``series``: the series' description (steps, files, model); ``time_s``: total seconds.
    """

    results: dict[int, RenderResult]
    objective: str
    seed: int
    series: dict[str, Any] = field(default_factory=dict)
    time_s: float = 0.0

    @property
    def steps(self) -> list[int]:
        """Training steps, increasing."""
        return sorted(self.results)

    def __getitem__(self, step: int) -> RenderResult:
        if step not in self.results:
            raise StepNotFoundError(f"step {step!r} has no render; valid steps: {format_steps(self.steps)}")
        return self.results[step]

    def __iter__(self) -> Iterator[tuple[int, RenderResult]]:
        for s in self.steps:
            yield s, self.results[s]

    def __len__(self) -> int:
        return len(self.results)

    @property
    def images(self) -> ImageBatch:
        """All final images, ``(n_steps, B, C, H, W)`` float in [0, 1], in step order."""
        return torch.stack([self.results[s].images for s in self.steps])

    @property
    def final_values(self) -> torch.Tensor:
        """Objective value of each final image without transforms (:attr:`RenderResult.final_values`),
        ``(n_steps, B)``."""
        return torch.stack([self.results[s].final_values for s in self.steps])

    def save(self, output_dir: PathLike, names: Sequence[str] | None = None) -> Path:
        """Write ``step_{step:06d}/{name}.jpg`` + ``.json`` per image and ``series_result.json`` into ``output_dir``.

        ``names`` are the file stems per image (default: :func:`default_names`).
        Returns the manifest's path. Reload with :meth:`load`.
        """
        directory = Path(output_dir)
        checkpoints = []
        for step, res in self:
            stems = list(names) if names is not None else default_names(res)
            paths = res.save(directory / step_dir(step), stems, step=step,
                             checkpoint_path=self._path_of(step))
            checkpoints.append({"step": step, "path": self._path_of(step), "dir": step_dir(step),
                                "files": [p.name for p in paths]})
        manifest = directory / SERIES_MANIFEST
        dio.write_json(manifest, dio.metadata("series_result", objective=self.objective, seed=self.seed,
                                              steps=self.steps, time_s=self.time_s, series=self.series,
                                              checkpoints=checkpoints))
        return manifest

    def _path_of(self, step: int) -> str | None:
        steps, paths = self.series.get("steps", []), self.series.get("paths", [])
        return paths[steps.index(step)] if step in steps and len(paths) == len(steps) else None

    @classmethod
    def load(cls, results_dir: PathLike) -> "SeriesResult":
        """Read a folder ``results_dir`` written by :meth:`save`: images from the JPEG files (so up to JPEG's
        rounding), histories, configs and metadata from the JSON files. Snapshots are not saved,
        so the loaded results have none.

        Raises :class:`~devvis.errors.OutputError` when the folder has no ``series_result.json``
        or a listed file is missing.
        """
        directory = Path(results_dir)
        manifest_path = directory / SERIES_MANIFEST
        if not manifest_path.is_file():
            raise OutputError(f"{str(directory)!r} holds no {SERIES_MANIFEST}; was it written by SeriesResult.save()?")
        manifest = dio.read_json(manifest_path)
        results: dict[int, RenderResult] = {}
        for ck in manifest["checkpoints"]:
            results[int(ck["step"])] = _load_render(directory / ck["dir"], ck["files"])
        return cls(results=results, objective=manifest["objective"], seed=int(manifest["seed"]),
                   series=manifest.get("series") or {}, time_s=float(manifest.get("time_s") or 0.0))


def read_image(path: PathLike) -> torch.Tensor:
    """One image file as a float tensor ``(3, H, W)`` in [0, 1]."""
    import numpy as np
    from PIL import Image

    try:
        with Image.open(path) as im:
            a = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    except OSError as e:
        raise OutputError(f"cannot read image {str(path)!r}: {e}") from e
    return torch.from_numpy(a).permute(2, 0, 1).contiguous()


def _load_render(folder: Path, files: Sequence[str]) -> RenderResult:
    images, histories, metas, finals = [], [], [], []
    for name in files:
        img_path = folder / name
        json_path = img_path.with_suffix(".json")
        if not img_path.is_file() or not json_path.is_file():
            raise OutputError(f"series result is incomplete: {str(img_path)!r} or its .json is missing")
        images.append(read_image(img_path))
        meta = read_record(json_path)  # the one reader of image records (converts older schemas)
        metas.append(meta)
        histories.append([float("nan") if v is None else v for v in meta.get("history", [])])
        finals.append(float("nan") if meta.get("final_value") is None else float(meta["final_value"]))
    m = metas[0]
    n = min(len(h) for h in histories)
    history = torch.tensor([h[:n] for h in histories], dtype=torch.float32).T.reshape(n, len(files))
    return RenderResult(
        images=torch.stack(images), snapshots={}, history=history, objective=m["objective"], layers=list(m["layers"]),
        config=m.get("config") or {}, steps_run=int(m.get("steps_run") or n), status=m.get("status", "completed"),
        converged_step=m.get("converged_step"), time_s=float(m.get("time_s") or 0.0),
        fields={**{k: v for k, v in m.items() if k not in RECORD_KEYS}, **({"layer": m["layer"]} if m.get("layer") else {})},
        # records older than schema 3 never measured the value without transforms: leave it unknown
        final=None if any(math.isnan(v) for v in finals) else torch.tensor(finals, dtype=torch.float32),
    )


def render_series(series: SeriesLike, objective: ObjectiveLike, param: nn.Module | None = None, *, seed: int = 0,
                  progress: bool = True, **render_kwargs: Any) -> SeriesResult:
    """Render ``objective`` at every checkpoint of ``series`` from the same start.

    Parameters
    ----------
    series:
        A :class:`CheckpointSeries`, a ``{step: model}`` dict, or checkpoint paths
        (models rebuilt from their model config).
    objective:
        Anything :func:`devvis.render` takes (an Objective, ``"layer:n"``, a callable).
    param:
        The parameterization; each checkpoint renders from a deep copy of it *as given*
        (its initial state), so all start from the same image. Default: ``param.image``
        built from ``seed`` (see :func:`devvis.render`).
    seed:
        Fixes the default parameterization and the transforms' random stream, identically
        at every checkpoint.
    render_kwargs:
        Passed to :func:`devvis.render` (``steps``, ``image_size``, ``transforms``,
        ``preprocess``, ``lr``, ``thresholds``, ...).

    Returns a :class:`SeriesResult`; ``result[step].images`` is ``(B, 3, H, W)``.

    Checkpoints render one after another. Rendering several in one pass does not pay on the
    CPU: the model forward + backward of 8 checkpoints at once with ``torch.func.vmap`` over
    stacked weights took 1.65x as long as running them in turn (``benchmarks/bench_series.py``).
    """
    import time

    s = as_series(series)
    objective = as_objective(objective)
    if param is not None and not isinstance(param, nn.Module):
        raise ConfigError(f"param must be an nn.Module parameterization, got {type(param).__name__}")
    # The given param is never optimized itself: every checkpoint starts from its initial state.
    initial = copy.deepcopy(param) if param is not None else None
    t0 = time.perf_counter()
    results: dict[int, RenderResult] = {}
    bar = tqdm(total=len(s), disable=not progress, desc=f"series {objective.description[:30]}", unit="ckpt")
    try:
        for step, model in s:
            p = copy.deepcopy(initial) if initial is not None else None
            results[step] = render(model, objective, p, seed=seed, progress=False, **render_kwargs)
            bar.update(1)
    finally:
        bar.close()
    return SeriesResult(results=results, objective=objective.description, seed=seed, series=s.describe(),
                        time_s=time.perf_counter() - t0)

"""How strongly one channel responds to fixed probe images, checkpoint by checkpoint.

>>> import torch
>>> from devvis.longitudinal import CheckpointSeries, get_activations
>>> nets = {s: torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3)) for s in (0, 10, 100)}
>>> acts = get_activations(None, "0", 2, CheckpointSeries.from_models(nets), torch.rand(5, 3, 16, 16))
>>> tuple(acts.values.shape), acts.steps, acts.preprocess   # "auto" on a plain module: ImageNet statistics
((3, 5), [0, 10, 100], 'imagenet')

The images reach each model through :func:`devvis.objectives.evaluate`, i.e. the
render's own model-input pipeline (:class:`devvis.render.pipeline.ModelInput`: resize,
then preprocess, no random transforms), with the model borrowed through
:func:`devvis.state.frozen`. ``preprocess="auto"`` (the default) is the model's own
default (raw [0, 1] images for devvis zoo models, ImageNet statistics otherwise);
``None`` feeds the images unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn
from tqdm.auto import tqdm

from devvis import io as dio
from devvis.errors import ConfigError
from devvis.longitudinal.inputs import ImagesLike, images_from
from devvis.longitudinal.series import CheckpointSeries, as_series
from devvis.objectives import channel as channel_objective
from devvis.objectives import evaluate
from devvis.render.pipeline import auto_preprocess
from devvis.typing import ImageBatch, ModelFn, PathLike, PreprocessLike, SeriesLike

#: Settings of the default probe: visualizations of the channel rendered at the final checkpoint.
DEFAULT_PROBE_RENDER: dict[str, Any] = {"steps": 256, "image_size": 64, "batch": 4, "seed": 0, "lr": 0.05,
                                        "transforms": "standard"}


@dataclass
class LongitudinalActivations:
    """Mean activation of one channel on each probe image, at each checkpoint.

    ``values``: float tensor ``(n_checkpoints, n_inputs)``; row ``i`` belongs to
    ``steps[i]``, column ``j`` to probe image ``j``. ``inputs`` says what the probe
    images were (``kind``: ``"tensor"``, ``"dataset"``, ``"final_checkpoint_visualizations"``
    with its render settings). ``preprocess`` is the normalization that was applied before the
    model (``"auto"`` resolved: ``"imagenet"``, ``"none"`` or the repr of a callable).
    """

    layer: str
    channel: int
    steps: list[int]
    values: torch.Tensor
    inputs: dict[str, Any] = field(default_factory=dict)
    preprocess: str = "imagenet"
    series: dict[str, Any] = field(default_factory=dict)

    @property
    def mean(self) -> torch.Tensor:
        """Mean over probe images, ``(n_checkpoints,)``."""
        return self.values.mean(dim=1)

    @property
    def std(self) -> torch.Tensor:
        """Standard deviation over probe images (population, ``unbiased=False``), ``(n_checkpoints,)``."""
        return self.values.std(dim=1, unbiased=False)

    def quantiles(self, q: tuple[float, float] = (0.25, 0.75)) -> torch.Tensor:
        """Quantiles over probe images, ``(len(q), n_checkpoints)``."""
        return torch.quantile(self.values, torch.tensor(q, dtype=self.values.dtype), dim=1)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record (values as nested lists, per-checkpoint mean/std/quartiles)."""
        q = self.quantiles()
        return dio.metadata("longitudinal_activations", layer=self.layer, channel=self.channel, steps=self.steps,
                            n_inputs=int(self.values.shape[1]), mean=self.mean.tolist(), std=self.std.tolist(),
                            q25=q[0].tolist(), q75=q[1].tolist(), values=self.values.tolist(), inputs=self.inputs,
                            preprocess=self.preprocess, series=self.series)

    def save(self, output_path: PathLike) -> Path:
        """Write :meth:`to_dict` as JSON to ``output_path``; returns it."""
        path = Path(output_path)
        dio.write_json(path, self.to_dict())
        return path

    @classmethod
    def load(cls, path: PathLike) -> "LongitudinalActivations":
        """Read a JSON written by :meth:`save`."""
        d = dio.read_json(path)
        return cls(layer=d["layer"], channel=int(d["channel"]), steps=[int(s) for s in d["steps"]],
                   values=torch.tensor(d["values"], dtype=torch.float32), inputs=d.get("inputs") or {},
                   preprocess=d.get("preprocess", "imagenet"), series=d.get("series") or {})


def preprocess_name(spec: PreprocessLike, model: nn.Module | None = None) -> str:
    """What ``spec`` means for ``model``, as recorded in results: ``"imagenet"``, ``"none"`` or a callable's repr.

    >>> preprocess_name("auto", torch.nn.Conv2d(3, 3, 1)), preprocess_name(None)
    ('imagenet', 'none')
    """
    applied = auto_preprocess(spec, model)
    return applied if isinstance(applied, str) else repr(applied)


def _series_for(model: ModelFn, checkpoint_paths: SeriesLike, trust: bool) -> CheckpointSeries:
    if isinstance(checkpoint_paths, CheckpointSeries):
        return checkpoint_paths
    if isinstance(checkpoint_paths, Mapping):
        return CheckpointSeries.from_models(checkpoint_paths)
    if model is not None and not isinstance(model, (nn.Module, str)) and not callable(model):
        raise ConfigError(f"model must be an nn.Module, a model name or None; got {type(model).__name__}")
    return as_series(checkpoint_paths, model, trust=trust)


def _default_probe(series: CheckpointSeries, layer: str, channel: int, preprocess: PreprocessLike,
                   settings: Mapping[str, Any] | None) -> tuple[ImageBatch, dict[str, Any]]:
    from devvis.render import render

    cfg = {**DEFAULT_PROBE_RENDER, **dict(settings or {})}
    final = series.final_step
    res = render(series[final], channel_objective(layer, channel), preprocess=preprocess, progress=False, **cfg)
    info = {"kind": "final_checkpoint_visualizations", "step": final, "objective": res.objective,
            "render": {**cfg, "preprocess": preprocess_name(preprocess, series[final])},
            "final_values": res.final_values.tolist()}
    return res.images, info


def get_activations(model: ModelFn, layer_name: str, channel: int, checkpoint_paths: SeriesLike,
                    inputs: ImagesLike | None = None, *, trust: bool = False, preprocess: PreprocessLike = "auto",
                    batch_size: int = 64, probe_render: Mapping[str, Any] | None = None,
                    progress: bool = False) -> LongitudinalActivations:
    """Mean activation of ``channel`` of ``layer_name`` on each probe image, at every checkpoint.

    Parameters
    ----------
    model:
        The architecture: an ``nn.Module`` (each checkpoint's weights are loaded into it,
        in turn), a model name for :func:`devvis.models.load_model`, or None (rebuilt from
        the checkpoints' model config). Ignored when ``checkpoint_paths`` is a series.
    checkpoint_paths:
        A folder, a list of files/folders, a :class:`CheckpointSeries` or ``{step: model}``.
    inputs:
        Probe images in [0, 1]: a tensor ``(N, 3, H, W)``, a Dataset or a DataLoader
        (see :func:`~devvis.longitudinal.inputs.images_from`). Default ``None``: the
        channel's own feature visualizations rendered at the *final* checkpoint
        (:data:`DEFAULT_PROBE_RENDER`: 4 images, 256 steps, 64 px, seed 0, standard
        transforms; override with ``probe_render={...}``), so the trajectory shows when the
        channel starts responding to what it finally detects. ``result.inputs`` records which.
    preprocess:
        Normalization before the model, the one rule of :mod:`devvis.render.pipeline`:
        ``"auto"`` (default) the model's own default (``model.devvis_cfg``: raw [0, 1] for
        devvis zoo models; ``"imagenet"`` for any other model), ``"imagenet"``, ``None`` /
        ``"none"`` (the images unchanged) or a callable. The default probe is rendered with
        the same setting. ``result.preprocess`` records what was applied.

    Shapes: ``inputs`` ``(N, C, H, W)`` in [0, 1] -> ``values`` ``(n_checkpoints, N)``.

    Returns :class:`LongitudinalActivations` with ``values`` ``(n_checkpoints, N)``: the
    channel's activation averaged over spatial positions (``objectives.channel``), per image.
    """
    if not isinstance(channel, int) or isinstance(channel, bool) or channel < 0:
        raise ConfigError(f"channel must be a non-negative integer, got {channel!r}")
    series = _series_for(model, checkpoint_paths, trust)
    if inputs is None:
        images, info = _default_probe(series, layer_name, channel, preprocess, probe_render)
    else:
        if probe_render is not None:
            raise ConfigError("probe_render only applies to the default probe (inputs=None)")
        images = images_from(inputs, batch_size)
        kind = "tensor" if isinstance(inputs, torch.Tensor) else type(inputs).__name__
        info = {"kind": kind, "n": int(images.shape[0]), "shape": list(images.shape[1:])}
    objective = channel_objective(layer_name, channel)
    rows = []
    applied = preprocess_name(preprocess)
    for _step, m in tqdm(series, total=len(series), disable=not progress, desc="activations", unit="ckpt"):
        applied = preprocess_name(preprocess, m)
        rows.append(evaluate(m, objective, images, preprocess=preprocess, batch_size=batch_size))
    return LongitudinalActivations(layer=layer_name, channel=channel, steps=series.steps, values=torch.stack(rows),
                                   inputs=info, preprocess=applied, series=series.describe())

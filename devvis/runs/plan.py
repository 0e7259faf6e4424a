"""A run's plan: its checkpoints (a :class:`~devvis.longitudinal.CheckpointSeries`) and its units.

The work of a run is split into deterministic *units*: one checkpoint x one layer x
one batch of components (a component is a channel, or a channel at one neuron
position, with ``number_of_images`` images each). The same settings always give
the same units in the same order, which is what lets a killed run resume and many
workers share one run.

>>> s = RunSettings(model="resnet18", layer_names=["layer1.0"], channels=[0, 1, 2], batch_size=2, image_size=32)
>>> plan = plan_run(s)
>>> [u.id for u in plan.units]
['random_init/layer1.0/0-1/2', 'random_init/layer1.0/2/1']
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import nn

from devvis.errors import ArchitectureMismatchError, ChannelOutOfRangeError, CheckpointError, ConfigError, DevvisError
from devvis.hooks import list_layers, resolve_name
from devvis.longitudinal.series import CheckpointSeries
from devvis.results import component_stem, step_dir
from devvis.runs.settings import RunSettings


@dataclass(frozen=True)
class Component:
    """One thing to visualize: a channel of a layer, optionally at one neuron position ``(h, w)``."""

    layer: str
    channel: int
    neuron: tuple[int, int] | None = None

    def stem(self, aggregation: str, j: int) -> str:
        """File stem: ``layer_{layer}_channel_{c}_{aggregation}-{j}`` (``neuron-{h}-{w}`` for neurons)."""
        agg = aggregation if self.neuron is None else f"neuron-{self.neuron[0]}-{self.neuron[1]}"
        return component_stem(self.layer, self.channel, agg, j)


@dataclass(frozen=True)
class Unit:
    """One unit of work: a checkpoint (its position in the plan), a layer, and a batch of components."""

    checkpoint_index: int
    checkpoint_dir: str
    layer: str
    components: tuple[Component, ...]

    @property
    def id(self) -> str:
        """``{checkpoint_dir}/{layer}/{first}-{last channel}[@h,w]/{n components}``."""
        c = self.components
        span = f"{c[0].channel}-{c[-1].channel}" if len(c) > 1 else f"{c[0].channel}"
        extra = f"@{c[0].neuron[0]},{c[0].neuron[1]}" if c[0].neuron else ""
        return f"{self.checkpoint_dir}/{self.layer}/{span}{extra}/{len(c)}"


def unit_key(unit: Unit, settings_hash: str) -> str:
    """Content key of a unit: a hash of its settings hash, checkpoint, layer and components (16 hex digits).

    Two runs that would write the same images share a key, so the key names the
    unit's status record (``.units/<key>.json``) across restarts and executors.
    """
    return hashlib.sha256(f"{settings_hash}|{unit.id}".encode()).hexdigest()[:16]


@dataclass
class CheckpointEntry:
    """One checkpoint of a run: its step, file, output folder, where its step came from, and the other files
    holding the same weights (listed once)."""

    step: int | None
    path: str | None
    dir: str
    source: str
    copies: list[str] = field(default_factory=list)


def checkpoint_series(settings: RunSettings) -> CheckpointSeries | None:
    """The run's checkpoints as a series (``None`` without ``checkpoint_paths``: one randomly initialised model).

    Every checkpoint needs a distinct training step (its name or stored metadata);
    otherwise :class:`~devvis.errors.CheckpointError` names the files.
    """
    if not settings.checkpoint_paths:
        return None
    return CheckpointSeries(list(settings.checkpoint_paths), settings.model, trust=settings.trust_checkpoint,
                            device=settings.device, steps=list(settings.step), exclude=list(settings.exclude),
                            weights=settings.weights)


def checkpoint_entries(series: CheckpointSeries | None) -> list[CheckpointEntry]:
    """The checkpoints of ``series`` in step order, as the manifest lists them."""
    if series is None:
        return [CheckpointEntry(None, None, step_dir(None), "none")]
    return [CheckpointEntry(r.step, str(r.path), step_dir(r.step), r.source, [str(c) for c in r.copies])
            for r in series.refs]


def load_model_at(settings: RunSettings, series: CheckpointSeries | None, index: int) -> nn.Module:
    """The model of the ``index``-th checkpoint (random init, seeded, when there is no series)."""
    if series is not None:
        return series.at(index)
    from devvis.models import load_model

    if settings.model is None:
        raise ConfigError("--model is required when no --checkpoint-path is given")
    torch.manual_seed(settings.seed)
    return load_model(settings.model, checkpoint=None, trust=settings.trust_checkpoint, device=settings.device)


def layer_table(model: nn.Module, image_size: int, input_size: int | None,
                channels: int | None = None) -> dict[str, Any]:
    """Name -> LayerInfo with output shapes for the model at its input size (its fixed size, e.g. ViT's 224, if any)
    and input channels (``channels``, else its first layer's).

    Raises:
        ConfigError: the model does not take ``(1, C, H, W)`` images (its forward fails on one).
    """
    from devvis.architectures import resolve_input_size
    from devvis.render.pipeline import model_input_channels

    size = resolve_input_size(model, input_size) or image_size
    h, w = (size, size) if isinstance(size, int) else size
    c = channels or model_input_channels(model)
    try:
        return {r.name: r for r in list_layers(model, (1, c, h, w))}
    except DevvisError:
        raise
    except Exception as e:  # the forward pass itself failed
        text = " ".join(str(e).split())[:200]
        raise ConfigError(f"the model does not take images: its forward pass fails on a (1, {c}, {h}, {w}) image "
                          f"({type(e).__name__}: {text}); devvis visualizes image models (set --input-channels or "
                          "--input-size if it takes other image shapes)") from None


def plan_components(model: nn.Module, settings: RunSettings) -> dict[str, list[Component]]:
    """Validated components per layer (default layers: :func:`devvis.architectures.feature_sites`, the
    MLP hidden layers of a ViT-style model, else every conv layer; every channel when not given)."""
    from devvis.architectures import feature_sites

    table = layer_table(model, settings.image_size, settings.input_size, settings.input_channels)
    if settings.layer_names:
        layers = [resolve_name(model, n) for n in settings.layer_names]
    else:
        layers = [n for n in feature_sites(model) if n in table]
        if not layers:
            raise ConfigError("the model has no Conv2d layers; name layers with --layer-names")
    plan: dict[str, list[Component]] = {}
    for layer in layers:
        info = table.get(layer.split("[")[0])
        width = info.channels if info is not None else None
        if width is None:
            raise ConfigError(f"layer {layer!r} produced no tensor output for a {settings.image_size}px input; "
                              "choose a layer that runs in forward()")
        chans = settings.channels if settings.channels is not None else list(range(width))
        for c in chans:
            if not 0 <= c < width:
                raise ChannelOutOfRangeError(f"channel {c} out of range for layer {layer!r}, which has {width} "
                                             f"channels (valid 0..{width - 1})")
        positions: list[tuple[int, int] | None] = [None]
        if settings.neurons:
            from devvis.objectives.activation import position_grid

            if info.layout not in ("nchw", "nhwc", "tokens"):  # flat [B, D]: no positions to pick
                raise ConfigError(f"--neurons needs a layer with spatial positions, but {layer!r} has layout "
                                  f"{info.layout} (shape {tuple(info.output_shape)}); drop --neurons for it")
            h, w = position_grid(info.output_shape, info.layout)  # token layers: the patch grid
            for (y, x) in settings.neurons:
                if not (0 <= y < h and 0 <= x < w):
                    raise ChannelOutOfRangeError(f"neuron ({y},{x}) out of range for layer {layer!r} with a {h}x{w} "
                                                 f"map (valid h 0..{h - 1}, w 0..{w - 1})")
            positions = list(settings.neurons)
        plan[layer] = [Component(layer, c, p) for c in chans for p in positions]
    return plan


def plan_units(checkpoints: Sequence[CheckpointEntry], components: dict[str, list[Component]],
               settings: RunSettings) -> list[Unit]:
    """Deterministic units: checkpoint x layer x batches of ``batch_size // number_of_images`` components."""
    per = max(1, settings.batch_size // settings.number_of_images)
    units = []
    for i, ck in enumerate(checkpoints):
        for layer, comps in components.items():
            for k in range(0, len(comps), per):
                units.append(Unit(i, ck.dir, layer, tuple(comps[k:k + per])))
    return units


@dataclass
class RunPlan:
    """A planned run: the series, its checkpoints in order, the units and the settings hash.

    ``first_index`` is the first checkpoint whose model loaded (it validated layers
    and channels; the series keeps it in memory for the first units), or ``-1`` when
    none loads: ``failures`` then names each checkpoint's error and ``units`` is empty.
    """

    series: CheckpointSeries | None
    checkpoints: list[CheckpointEntry]
    units: list[Unit]
    settings_hash: str
    first_index: int = -1
    failures: list[str] = field(default_factory=list)
    first_model: nn.Module | None = None


def plan_run(settings: RunSettings) -> RunPlan:
    """Validate the settings and plan the units (loading checkpoints until one loads, to check layers and channels).

    Bad settings, layers or channels raise a :class:`~devvis.errors.DevvisError`
    before any work is done.
    """
    settings.validate()
    series = checkpoint_series(settings)
    checkpoints = checkpoint_entries(series)
    h = settings.hash()
    failures = []
    for i, ck in enumerate(checkpoints):
        try:
            model = load_model_at(settings, series, i)
        except ArchitectureMismatchError as e:
            # Every checkpoint of a run has one architecture: say it once, at the first, and stop.
            raise ArchitectureMismatchError(f"{e} (checked at the first checkpoint, step {ck.step}; fix --model "
                                            "or its arguments)") from None
        except CheckpointError as e:
            failures.append(str(e))
            continue
        units = plan_units(checkpoints, plan_components(model, settings), settings)
        return RunPlan(series, checkpoints, units, h, i, first_model=model)
    return RunPlan(series, checkpoints, [], h, failures=failures)

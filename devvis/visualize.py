"""Feature visualization over a series of checkpoints: the engine behind ``devvis visualize``.

The work is split into deterministic *units*: one checkpoint x one layer x one
batch of components (a component is a channel, or a channel at one neuron
position, with ``number_of_images`` images each). Every unit's files are
written atomically and recorded in ``manifest.json`` only when complete, and
each image's JSON carries the hash of the settings that made it, so re-running
the same command skips what is done and a killed run resumes where it stopped.
Each unit also has a small status record, ``.units/<key>.json`` (see
:class:`UnitRecords`), written by whichever process ran it; that is what lets
:mod:`devvis.sweep` run units in many processes or SLURM jobs at once and merge
their results into one manifest afterwards.

    results/
      manifest.json
      step_000100/layer_layer3.1_channel_0_average-0.jpg   (+ .json beside it)

>>> import tempfile
>>> out = tempfile.mkdtemp()
>>> s = VisualizeSettings(model="resnet18", layer_names=["layer1.0"], channels=[0], max_iterations=2,
...                       min_iterations=0, image_size=32, progress=False, output_path=out)
>>> summary = run_visualize(s)
>>> summary.done, summary.failed
(1, 0)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import socket
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import nn

from devvis import io as dio
from devvis import objectives as O
from devvis.errors import ChannelOutOfRangeError, CheckpointError, ConfigError, DevvisError, NonFiniteObjectiveError
from devvis.hooks import list_layers, resolve_name

AGGREGATIONS = ("average", "single", "sum")
LR_SCHEDULES = ("none", "exponential", "cosine")
PREPROCESS = ("auto", "imagenet", "none")
#: Settings that do not change an image (excluded from the settings hash).
_NOT_HASHED = {"output_path", "overwrite", "progress", "device", "checkpoint_paths", "batch_size", "trust_checkpoint",
               "layer_names", "channels", "neurons", "executor_note"}


@dataclass
class VisualizeSettings:
    """Everything ``devvis visualize`` needs; each field is a CLI flag with the same default."""

    model: str | None = None
    checkpoint_paths: list[str] = field(default_factory=list)
    layer_names: list[str] | None = None
    channels: list[int] | None = None
    neurons: list[tuple[int, int]] | None = None
    aggregation: str = "average"
    number_of_images: int = 1
    batch_size: int = 8
    max_iterations: int = 256
    min_iterations: int = 32
    convergence_threshold: float = 1e-3
    convergence_window: int = 32
    learning_rate: float = 0.05
    lr_schedule: str = "none"
    lr_warmup_steps: int = 0
    image_size: int = 128
    input_size: int | None = None
    preprocess: str = "auto"
    reg_lambda: float = 0.0
    tv_weight: float = 0.0
    l1_weight: float = 0.0
    jitter: int = 8
    pad: int = 12
    scale_range: tuple[float, float] = (0.9, 1.1)
    rotate_degrees: float = 10.0
    blur: float = 0.0
    decorrelate: bool = True
    fft: bool = True
    diversity_weight: float = 0.0
    precision: str = "fp32"
    seed: int = 0
    device: str | None = None
    output_path: str = "results"
    overwrite: bool = False
    trust_checkpoint: bool = False
    progress: bool = True

    def validate(self) -> None:
        """Raise :class:`~devvis.errors.ConfigError` naming the first invalid setting."""
        def bad(name: str, value: Any, valid: str) -> ConfigError:
            return ConfigError(f"invalid {name} {value!r}; {valid}")

        if self.aggregation not in AGGREGATIONS:
            raise bad("--aggregation", self.aggregation, f"choose one of {AGGREGATIONS}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise bad("--lr-schedule", self.lr_schedule, f"choose one of {LR_SCHEDULES}")
        for name in ("number_of_images", "batch_size", "max_iterations", "image_size", "convergence_window"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise bad("--" + name.replace("_", "-"), v, "must be a positive integer")
        if self.min_iterations < 0 or self.min_iterations > self.max_iterations:
            raise bad("--min-iterations", self.min_iterations, f"must lie in 0..--max-iterations ({self.max_iterations})")
        if self.learning_rate <= 0:
            raise bad("--learning-rate", self.learning_rate, "must be > 0")
        lo, hi = self.scale_range
        if not 0 < lo <= hi:
            raise bad("--scale-range", list(self.scale_range), "needs 0 < MIN <= MAX")
        if self.preprocess not in PREPROCESS:
            raise bad("--preprocess", self.preprocess, f"choose one of {PREPROCESS}")
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise bad("--precision", self.precision, "choose fp32, bf16 or fp16")
        if self.diversity_weight and self.number_of_images < 2:
            raise ConfigError(f"--diversity-weight {self.diversity_weight} needs --number-of-images >= 2 "
                              f"(got {self.number_of_images}): diversity compares images of one component")
        # Checked here, before any model loads, so a typo fails at once and not in every unit.
        for name in ("jitter", "pad", "lr_warmup_steps", "blur", "rotate_degrees"):
            if not getattr(self, name) >= 0:
                raise bad("--" + name.replace("_", "-"), getattr(self, name), "must be >= 0")
        if self.input_size is not None and (not isinstance(self.input_size, int) or self.input_size < 1):
            raise bad("--input-size", self.input_size, "must be a positive integer (or unset)")
        for name in ("convergence_threshold", "reg_lambda", "tv_weight", "l1_weight", "diversity_weight"):
            if not math.isfinite(getattr(self, name)):
                raise bad("--" + name.replace("_", "-"), getattr(self, name), "must be a finite number")
        if self.jitter and self.jitter * 2 + 4 >= self.image_size + 2 * self.pad:
            raise bad("--jitter", self.jitter, f"too large for --image-size {self.image_size} with --pad {self.pad}")
        if self.neurons and self.aggregation != "average":
            raise ConfigError("--neurons picks positions itself; do not combine it with --aggregation "
                              f"{self.aggregation!r}")

    def hash(self) -> str:
        """Hash of the settings that decide an image (not paths, device or batching)."""
        d = {k: v for k, v in dataclasses.asdict(self).items() if k not in _NOT_HASHED}
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Component:
    """One thing to visualize: a channel of a layer, optionally at one neuron position ``(h, w)``."""

    layer: str
    channel: int
    neuron: tuple[int, int] | None = None

    def stem(self, aggregation: str, j: int) -> str:
        """File stem: ``layer_{layer}_channel_{c}_{aggregation}-{j}`` (``neuron-{h}-{w}`` for neurons)."""
        from devvis.render import component_stem

        agg = aggregation if self.neuron is None else f"neuron-{self.neuron[0]}-{self.neuron[1]}"
        return component_stem(self.layer, self.channel, agg, j)


@dataclass(frozen=True)
class Unit:
    """One unit of work: a checkpoint, a layer, and a batch of components."""

    checkpoint_index: int
    checkpoint_dir: str
    layer: str
    components: tuple[Component, ...]

    @property
    def id(self) -> str:
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


class UnitRecords:
    """Per-unit status files ``<output>/.units/<key>.json``, each written atomically by the process running the unit.

    A record holds ``unit`` (its id), ``status`` (``queued``, ``running``, ``done`` or ``failed``),
    ``error``/``traceback``/``retryable`` for failures, ``files`` for finished units, and
    ``attempts``: one entry per execution (worker, host, pid, start and end time,
    outcome). One file per unit means concurrent workers never write the same file,
    unlike a shared ``manifest.json``, which only a coordinator rewrites.

    >>> import tempfile
    >>> r = UnitRecords(tempfile.mkdtemp())
    >>> u = Unit(0, "random_init", "layer1", (Component("layer1", 0),))
    >>> _ = r.start(u, "abc", worker="doc"); _ = r.finish(u, "abc", "done", files=["a.jpg"])
    >>> rec = r.read(u, "abc"); rec["status"], len(rec["attempts"])
    ('done', 1)
    """

    def __init__(self, out: str | os.PathLike):
        self.dir = Path(out) / ".units"

    def path(self, unit: Unit, h: str) -> Path:
        return self.dir / f"{unit_key(unit, h)}.json"

    def read(self, unit: Unit, h: str) -> dict[str, Any] | None:
        """The unit's record, or None when there is none (or it cannot be parsed)."""
        try:
            return dio.read_json(self.path(unit, h))
        except (OSError, ValueError):
            return None

    def _write(self, unit: Unit, h: str, rec: dict[str, Any]) -> dict[str, Any]:
        rec.update(unit=unit.id, key=unit_key(unit, h), settings_hash=h)
        dio.write_json(self.path(unit, h), rec)
        return rec

    def start(self, unit: Unit, h: str, *, worker: str, log: str | None = None) -> dict[str, Any]:
        """Mark the unit running and open a new attempt (kept if the process dies: a sign of a crash).

        ``worker`` names who runs it (``slurm:1234_5``, ``torchrun:rank1``, ...); ``log`` is that worker's log file.
        """
        rec = self.read(unit, h) or {}
        attempts = list(rec.get("attempts", []))
        attempts.append({"worker": worker, "host": socket.gethostname(), "pid": os.getpid(),
                         "started": time.time(), "finished": None, "status": "running", "log": log})
        return self._write(unit, h, {"status": "running", "attempts": attempts})

    def finish(self, unit: Unit, h: str, status: str, *, attempt_status: str | None = None,
               **fields: Any) -> dict[str, Any]:
        """Close the unit's last attempt with ``status`` (``done``/``failed``; the attempt gets ``attempt_status``
        if given, e.g. ``lost`` when a coordinator closes it for a dead worker) and extra fields."""
        rec = self.read(unit, h) or {}
        attempts = list(rec.get("attempts", []))
        if attempts and attempts[-1].get("finished") is None:
            attempts[-1].update(finished=time.time(), status=attempt_status or status)
        return self._write(unit, h, {"status": status, "attempts": attempts, **fields})

    def queue(self, unit: Unit, h: str, *, by: str) -> None:
        """Mark the unit handed to a worker (``by``: which job or round) so an earlier outcome is not taken for this one."""
        rec = self.read(unit, h) or {}
        self._write(unit, h, {"status": "queued", "queued_by": by, "attempts": rec.get("attempts", [])})

    def mark_done(self, unit: Unit, h: str) -> None:
        """Record a unit found complete on disk (no new attempt) unless its record already says done."""
        rec = self.read(unit, h)
        if rec is None or rec.get("status") != "done":
            self._write(unit, h, {"status": "done", "skipped": True, "attempts": (rec or {}).get("attempts", [])})


@dataclass
class VisualizeSummary:
    """What :func:`run_visualize` did: units done, skipped (already complete) and failed, and the manifest path."""

    done: int = 0
    skipped: int = 0
    failed: int = 0
    failures: list[str] = field(default_factory=list)
    manifest: Path | None = None
    time_s: float = 0.0


# ------------------------------------------------------------------------------------------
# objectives for a batch of components
# ------------------------------------------------------------------------------------------

@O.wrap_objective
def channel_sum(layer: str, n: int, batch: int | None = None):
    """Sum (not mean) of channel ``n`` over positions: the ``sum`` aggregation."""
    def inner(acts):
        t = O.channels_first(acts, layer)
        if not 0 <= n < t.shape[1]:
            raise ChannelOutOfRangeError(f"channel {n} out of range for layer {layer!r}, which has {t.shape[1]} channels (valid 0..{t.shape[1] - 1})")
        return t[:, n].reshape(t.shape[0], -1).sum(dim=1)
    return inner


def unit_objective(unit: Unit, settings: VisualizeSettings) -> O.Objective:
    """The objective of one unit: image ``i*N + j`` shows component ``i`` (``N`` images each)."""
    n = settings.number_of_images
    comps = unit.components
    if all(c.neuron is None for c in comps) and settings.aggregation == "average":
        obj = O.channels(unit.layer, [c.channel for c in comps for _ in range(n)])
    else:
        terms = []
        for i, c in enumerate(comps):
            for j in range(n):
                b = i * n + j
                if c.neuron is not None:
                    terms.append(O.neuron(unit.layer, c.channel, x=c.neuron[1], y=c.neuron[0], batch=b))
                elif settings.aggregation == "single":
                    terms.append(O.neuron(unit.layer, c.channel, batch=b))
                else:
                    terms.append(channel_sum(unit.layer, c.channel, batch=b))
        obj = sum(terms)
    if settings.diversity_weight:
        obj = obj + settings.diversity_weight * O.diversity(unit.layer, group_size=n)
    if settings.reg_lambda:
        obj = obj + settings.reg_lambda * O.l2()
    if settings.tv_weight:
        obj = obj + settings.tv_weight * O.total_variation()
    if settings.l1_weight:
        obj = obj + settings.l1_weight * O.l1()
    return obj


def build_transforms(settings: VisualizeSettings):
    """The robustness transforms the flags describe (Lucid's standard stack by default)."""
    from devvis import transforms as T

    lo, hi = settings.scale_range
    ts: list[Any] = []
    if settings.pad:
        ts.append(T.pad(settings.pad))
    if settings.jitter:
        ts.append(T.jitter(settings.jitter))
    if (lo, hi) != (1.0, 1.0):
        ts.append(T.random_scale([lo + (hi - lo) * i / 10 for i in range(11)]))
    if settings.rotate_degrees:
        r = int(round(settings.rotate_degrees))
        ts.append(T.random_rotate(list(range(-r, r + 1))))
    if settings.jitter:
        ts.append(T.jitter(max(1, settings.jitter // 2)))
    if settings.blur:
        ts.append(T.gaussian_blur(settings.blur))
    return T.compose(ts)


def _optimizer_and_schedule(settings: VisualizeSettings):
    holder: dict[str, Any] = {}
    steps, warm = settings.max_iterations, settings.lr_warmup_steps

    def factor(step: int) -> float:
        f = 1.0
        if warm and step < warm:
            f = (step + 1) / warm
        if settings.lr_schedule == "exponential":
            f *= 0.01 ** (step / max(steps, 1))  # decays to 1% of the rate at the last step
        elif settings.lr_schedule == "cosine":
            f *= 0.5 * (1 + math.cos(math.pi * min(step, steps) / steps))
        return f

    def make(params):
        opt = torch.optim.Adam(params, lr=settings.learning_rate)
        if settings.lr_schedule != "none" or warm:
            holder["sched"] = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return opt

    def step_schedule(step, images, values):
        if "sched" in holder:
            holder["sched"].step()

    make.__name__ = f"adam(lr={settings.learning_rate}, schedule={settings.lr_schedule}, warmup={warm})"
    return make, step_schedule


# ------------------------------------------------------------------------------------------
# planning
# ------------------------------------------------------------------------------------------

@dataclass
class CheckpointEntry:
    step: int | None
    path: str | None
    dir: str
    source: str


def checkpoint_dir(step: int | None) -> str:
    """Folder name of a checkpoint's outputs: ``step_{step:06d}`` (``random_init`` without a checkpoint)."""
    return "random_init" if step is None else f"step_{step:06d}"


def plan_checkpoints(settings: VisualizeSettings) -> list[CheckpointEntry]:
    """The checkpoints in training order (see :func:`devvis.models.find_checkpoints`)."""
    from devvis.models import find_checkpoints

    if not settings.checkpoint_paths:
        return [CheckpointEntry(None, None, checkpoint_dir(None), "none")]
    refs = find_checkpoints(settings.checkpoint_paths)
    out = []
    for i, r in enumerate(refs):
        step = r.step if r.step is not None else i
        d = checkpoint_dir(step)
        if any(e.dir == d for e in out):  # two files claim the same step: keep both, apart
            d = f"{d}_{i}"
        out.append(CheckpointEntry(step, str(r.path), d, r.source))
    return out


def layer_table(model: nn.Module, image_size: int, input_size: int | None) -> dict[str, Any]:
    """Name -> LayerInfo with output shapes for the model at its input size (its fixed size, e.g. ViT's 224, if any)."""
    from devvis.architectures import resolve_input_size

    size = resolve_input_size(model, input_size) or image_size
    h, w = (size, size) if isinstance(size, int) else size
    return {r.name: r for r in list_layers(model, (1, 3, h, w))}


def plan_components(model: nn.Module, settings: VisualizeSettings) -> dict[str, list[Component]]:
    """Validated components per layer (every conv layer / every channel when not given)."""
    table = layer_table(model, settings.image_size, settings.input_size)
    if settings.layer_names:
        layers = [resolve_name(model, n) for n in settings.layer_names]
    else:
        layers = [n for n, r in table.items() if r.type in ("Conv2d",)]
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
                raise ChannelOutOfRangeError(f"channel {c} out of range for layer {layer!r}, which has {width} channels (valid 0..{width - 1})")
        positions: list[tuple[int, int] | None] = [None]
        if settings.neurons:
            from devvis.objectives.activation import position_grid

            if info.layout not in ("nchw", "nhwc", "tokens"):  # flat [B, D]: no positions to pick
                raise ConfigError(f"--neurons needs a layer with spatial positions, but {layer!r} has layout "
                                  f"{info.layout} (shape {tuple(info.output_shape)}); drop --neurons for it")
            h, w = position_grid(info.output_shape, info.layout)  # token layers: the patch grid
            for (y, x) in settings.neurons:
                if not (0 <= y < h and 0 <= x < w):
                    raise ChannelOutOfRangeError(f"neuron ({y},{x}) out of range for layer {layer!r} with a {h}x{w} map (valid h 0..{h - 1}, w 0..{w - 1})")
            positions = list(settings.neurons)
        plan[layer] = [Component(layer, c, p) for c in chans for p in positions]
    return plan


def plan_units(checkpoints: Sequence[CheckpointEntry], components: dict[str, list[Component]],
               settings: VisualizeSettings) -> list[Unit]:
    """Deterministic units: checkpoint x layer x batches of ``batch_size // number_of_images`` components."""
    per = max(1, settings.batch_size // settings.number_of_images)
    units = []
    for i, ck in enumerate(checkpoints):
        for layer, comps in components.items():
            for k in range(0, len(comps), per):
                units.append(Unit(i, ck.dir, layer, tuple(comps[k:k + per])))
    return units


# ------------------------------------------------------------------------------------------
# running
# ------------------------------------------------------------------------------------------

def unit_files(unit: Unit, settings: VisualizeSettings) -> list[tuple[Component, int, str]]:
    """(component, image number, file stem) for every image of the unit."""
    return [(c, j, c.stem(settings.aggregation, j)) for c in unit.components for j in range(settings.number_of_images)]


def unit_complete(unit: Unit, settings: VisualizeSettings, out: Path, h: str) -> bool:
    """True when every image of the unit and its JSON exist, parse, and carry this settings hash."""
    for _, _, stem in unit_files(unit, settings):
        meta_p, img_p = out / unit.checkpoint_dir / f"{stem}.json", out / unit.checkpoint_dir / f"{stem}.jpg"
        if not meta_p.exists() or not img_p.exists():
            return False
        try:
            meta = dio.read_json(meta_p)
        except (OSError, ValueError):
            return False
        if meta.get("settings_hash") != h or meta.get("status") not in ("completed", "converged"):
            return False
    return True


def load_for(settings: VisualizeSettings, ck: CheckpointEntry) -> nn.Module:
    """Build the model of one checkpoint (random init, seeded, when there is none)."""
    from devvis.models import load_model

    if ck.path is None:
        torch.manual_seed(settings.seed)
        if settings.model is None:
            raise ConfigError("--model is required when no --checkpoint-path is given")
    return load_model(settings.model, checkpoint=ck.path, trust=settings.trust_checkpoint, device=settings.device)


def resolve_preprocess(settings: VisualizeSettings, checkpoint: str | None) -> str:
    """``--preprocess auto``: ``none`` for devvis zoo models (trained on raw [0, 1] images), else ``imagenet``."""
    if settings.preprocess != "auto":
        return settings.preprocess
    name = settings.model
    if name is None and checkpoint is not None:
        from devvis.models import read_model_config

        cfg = read_model_config(checkpoint, trust=settings.trust_checkpoint)
        name = cfg["name"] if cfg else None
    from devvis.zoo import MODELS

    return "none" if name in MODELS else "imagenet"


def render_unit(model: nn.Module, unit: Unit, ck: CheckpointEntry, settings: VisualizeSettings, out: Path,
                h: str) -> list[str]:
    """Render one unit and write its images and JSONs; returns the files written."""
    from devvis import param as P
    from devvis.render import Convergence, render

    n_img = len(unit.components) * settings.number_of_images
    p = P.image(settings.image_size, batch=n_img, fft=settings.fft, decorrelate=settings.decorrelate,
                seed=settings.seed)
    make_opt, sched_cb = _optimizer_and_schedule(settings)
    stop = Convergence(tol=settings.convergence_threshold, window=settings.convergence_window,
                       min_steps=settings.min_iterations)
    t0 = time.time()
    written: list[str] = []
    folder = out / unit.checkpoint_dir
    try:
        result = render(model, unit_objective(unit, settings), p, steps=settings.max_iterations,
                        optimizer=make_opt, transforms=build_transforms(settings), input_size=settings.input_size,
                        preprocess=resolve_preprocess(settings, ck.path), seed=settings.seed, device=settings.device, precision=settings.precision, progress=False,
                        callbacks=[sched_cb], stop_when=stop)
    except NonFiniteObjectiveError as e:
        # Record the failure honestly: a JSON with status "nan" and no image (not even an older one).
        for comp, j, stem in unit_files(unit, settings):
            (folder / f"{stem}.jpg").unlink(missing_ok=True)
            dio.write_json(folder / f"{stem}.json", _meta(settings, ck, comp, j, h, status="nan", error=str(e)))
        raise
    if result.interrupted:
        raise KeyboardInterrupt
    for b, (comp, j, stem) in enumerate(unit_files(unit, settings)):
        dio.write_image(folder / f"{stem}.jpg", result.images[b])
        meta = _meta(settings, ck, comp, j, h, status=result.status,
                     final_activation=float(result.history[-1, b]),
                     converged=result.status == "converged", converged_iteration=result.converged_step,
                     iterations=result.steps_run, loss_history=[-float(v) for v in result.history[:, b]],
                     objective=result.objective, wall_time_s=round(time.time() - t0, 3), image_file=f"{stem}.jpg")
        dio.write_json(folder / f"{stem}.json", meta)
        written += [f"{unit.checkpoint_dir}/{stem}.jpg", f"{unit.checkpoint_dir}/{stem}.json"]
    return written


def _meta(settings: VisualizeSettings, ck: CheckpointEntry, comp: Component, j: int, h: str, **fields: Any):
    return dio.metadata(
        "visualize", model=settings.model, checkpoint_path=ck.path, step=ck.step, layer=comp.layer,
        channel=comp.channel, neuron=list(comp.neuron) if comp.neuron else None,
        aggregation=settings.aggregation if comp.neuron is None else "single", image_number=j,
        seed=settings.seed, settings_hash=h, parameters=dataclasses.asdict(settings), **fields)


class Manifest:
    """The run's ``manifest.json``: settings, checkpoint order, and each unit's status, written atomically.

    Only one process (the run's coordinator) writes it; workers write
    :class:`UnitRecords`, which :meth:`merge` folds in. A unit is ``done`` here only
    once its files are complete.
    """

    def __init__(self, out: Path, settings: VisualizeSettings, checkpoints: Sequence[CheckpointEntry],
                 units: Sequence[Unit], h: str):
        self.path = out / "manifest.json"
        self.units = list(units)
        self.h = h
        old = {}
        if self.path.exists():
            try:
                old = dio.read_json(self.path).get("units", {})
            except (OSError, ValueError):
                old = {}
        self.data = dio.metadata(
            "visualize-run", settings=dataclasses.asdict(settings), settings_hash=h,
            checkpoints=[dataclasses.asdict(c) for c in checkpoints],
            units={u.id: old.get(u.id, {"status": "pending"}) | {"checkpoint_dir": u.checkpoint_dir, "layer": u.layer,
                   "channels": [c.channel for c in u.components], "key": unit_key(u, h)} for u in units},
        )
        self.save()

    def set(self, unit: Unit, save: bool = True, **fields: Any) -> None:
        self.data["units"][unit.id].update(fields)
        if save:
            self.save()

    def merge(self, records: UnitRecords) -> dict[str, int]:
        """Fold the workers' unit records into the manifest, save it, and return the counts per status.

        A record still ``running`` (its process died, or is still at work) leaves the unit ``pending``.
        """
        for u in self.units:
            rec = records.read(u, self.h)
            entry = self.data["units"][u.id]
            if rec is None or rec.get("status") not in ("done", "failed"):
                if entry.get("status") == "failed" or rec is not None:
                    entry.clear()
                    entry.update(checkpoint_dir=u.checkpoint_dir, layer=u.layer,
                                 channels=[c.channel for c in u.components], key=unit_key(u, self.h))
                entry["status"] = "pending"
            elif rec["status"] == "done":
                entry.pop("error", None)
                entry.update(status="done", files=rec.get("files", entry.get("files", [])),
                             skipped=bool(rec.get("skipped", False)), attempts=len(rec.get("attempts", [])))
            else:
                entry.update(status="failed", error=rec.get("error"), attempts=len(rec.get("attempts", [])))
        self.save()
        return dict(self.data["counts"])

    def save(self) -> None:
        counts: dict[str, int] = {}
        for u in self.data["units"].values():
            counts[u["status"]] = counts.get(u["status"], 0) + 1
        self.data["counts"] = counts
        dio.write_json(self.path, self.data)


@dataclass
class RunPlan:
    """A planned run: checkpoints in order, the units, the settings hash, and the first loadable model.

    ``first_model`` (the model of ``checkpoints[first_index]``, used to validate
    layers and channels) is ``None`` when no checkpoint loads; ``failures`` then
    names each checkpoint's error and ``units`` is empty.
    """

    checkpoints: list[CheckpointEntry]
    units: list[Unit]
    settings_hash: str
    first_model: nn.Module | None = None
    first_index: int = -1
    failures: list[str] = field(default_factory=list)


def plan_run(settings: VisualizeSettings) -> RunPlan:
    """Validate the settings and plan the units (loading checkpoints until one loads, to check layers and channels).

    Bad settings, layers or channels raise a :class:`~devvis.errors.DevvisError`
    before any work is done.
    """
    settings.validate()
    checkpoints = plan_checkpoints(settings)
    h = settings.hash()
    for i, ck in enumerate(checkpoints):
        try:
            model = load_for(settings, ck)
        except CheckpointError:
            continue
        units = plan_units(checkpoints, plan_components(model, settings), settings)
        return RunPlan(checkpoints, units, h, model, i)
    failures = []
    for ck in checkpoints:  # every checkpoint failed: collect each one's error
        try:
            load_for(settings, ck)
        except CheckpointError as e:
            failures.append(str(e))
    return RunPlan(checkpoints, [], h, failures=failures)


@dataclass
class UnitOutcome:
    """What happened to one unit in :func:`execute_units`.

    ``status`` is ``done``, ``skipped`` (already complete on disk) or ``failed``;
    ``scope`` is ``checkpoint`` when the failure is the checkpoint's (it did not
    load), else ``unit``. ``retryable`` is False for devvis errors, which repeat
    on every try (a NaN objective, a bad checkpoint), and True for anything else.
    """

    unit: Unit
    status: str
    error: str | None = None
    files: list[str] = field(default_factory=list)
    scope: str = "unit"
    retryable: bool = False


def execute_units(settings: VisualizeSettings, checkpoints: Sequence[CheckpointEntry], units: Sequence[Unit],
                  h: str, *, records: UnitRecords | None = None, worker: str = "local", log: str | None = None,
                  catch: tuple[type[BaseException], ...] = (DevvisError,),
                  preloaded: dict[int, nn.Module] | None = None,
                  on_outcome: Callable[[UnitOutcome], None] | None = None) -> list[UnitOutcome]:
    """Run ``units`` (skipping those complete on disk), one checkpoint's model in memory at a time.

    Each unit's files are written atomically by :func:`render_unit`; its record in
    ``records`` is opened before and closed after it. Exceptions of the types in
    ``catch`` fail only their unit (or, for a checkpoint that does not load, that
    checkpoint's units); anything else propagates. ``preloaded`` maps checkpoint
    indices to models already built (consumed, so they can be freed).
    """
    out = Path(settings.output_path)
    preloaded = preloaded if preloaded is not None else {}  # popped as used, so models can be freed
    outcomes: list[UnitOutcome] = []

    def emit(o: UnitOutcome) -> None:
        outcomes.append(o)
        if on_outcome is not None:
            on_outcome(o)

    by_ck: dict[int, list[Unit]] = {}
    for u in units:
        by_ck.setdefault(u.checkpoint_index, []).append(u)
    for ci, todo in by_ck.items():
        ck = checkpoints[ci]
        pending = []
        for u in todo:
            if not settings.overwrite and unit_complete(u, settings, out, h):
                if records is not None:
                    records.mark_done(u, h)
                emit(UnitOutcome(u, "skipped"))
            else:
                pending.append(u)
        if not pending:
            preloaded.pop(ci, None)
            continue
        try:
            model = preloaded.pop(ci) if ci in preloaded else load_for(settings, ck)
        except DevvisError as e:  # not only CheckpointError: e.g. this file alone lacks a model config
            msg = f"checkpoint {ck.path}: {e}" if ck.path and ck.path not in str(e) else str(e)
            for u in pending:
                if records is not None:
                    records.finish(u, h, "failed", error=msg, retryable=False)
                emit(UnitOutcome(u, "failed", error=msg, scope="checkpoint"))
            continue
        for u in pending:
            if records is not None:
                records.start(u, h, worker=worker, log=log)
            try:
                files = render_unit(model, u, ck, settings, out, h)
            except catch as e:
                retryable = not isinstance(e, DevvisError)
                error = str(e) if isinstance(e, DevvisError) else f"{type(e).__name__}: {e}"
                if records is not None:
                    records.finish(u, h, "failed", error=error, retryable=retryable,
                                   traceback=traceback.format_exc(limit=-8))
                emit(UnitOutcome(u, "failed", error=error, retryable=retryable))
            else:
                if records is not None:
                    records.finish(u, h, "done", files=files, skipped=False)
                emit(UnitOutcome(u, "done", files=files))
        del model
    return outcomes


def run_visualize(settings: VisualizeSettings, *, on_failure: Callable[[str], None] | None = None,
                  unit_filter: Callable[[int, Unit], bool] | None = None) -> VisualizeSummary:
    """Run (or resume) a visualization over checkpoints; see the module docstring.

    Bad settings, layers or channels raise before any work; a checkpoint that
    fails to load (or a unit whose objective becomes NaN) is reported through
    ``on_failure`` and in the summary while the rest continues.
    ``unit_filter(index, unit)`` selects a share of the units (used by sweeps).
    """
    from tqdm.auto import tqdm

    t0 = time.time()
    out = Path(settings.output_path)
    summary = VisualizeSummary()
    report = on_failure or (lambda msg: None)

    # Validate layers and channels on the architecture before any work.
    plan = plan_run(settings)
    if plan.first_model is None:
        for msg in plan.failures:  # every checkpoint failed: report each and stop
            summary.failures.append(msg)
            report(msg)
        summary.failed = len(plan.checkpoints)
        return summary
    h, units = plan.settings_hash, plan.units
    out.mkdir(parents=True, exist_ok=True)
    from devvis.sweep import _remove_stale_temp_files  # lazy: devvis.sweep imports this module

    _remove_stale_temp_files(out)  # left by writes a kill interrupted; this process is the folder's only writer
    manifest = Manifest(out, settings, plan.checkpoints, units, h)
    summary.manifest = manifest.path

    bar = tqdm(total=len(units), disable=not settings.progress, desc="visualize", unit="unit")
    mine = [u for i, u in enumerate(units) if unit_filter is None or unit_filter(i, u)]
    bar.update(len(units) - len(mine))
    reported: set[int] = set()

    def record(o: UnitOutcome) -> None:
        u = o.unit
        if o.status == "skipped":
            summary.skipped += 1
            manifest.set(u, status="done", skipped=True)
        elif o.status == "done":
            summary.done += 1
            manifest.set(u, status="done", files=o.files, skipped=False)
        else:
            summary.failed += 1
            if o.scope == "checkpoint":
                if u.checkpoint_index not in reported:  # one message per checkpoint, not per unit
                    reported.add(u.checkpoint_index)
                    summary.failures.append(o.error or "")
                    report(o.error or "")
            else:
                msg = f"unit {u.id}: {o.error}"
                summary.failures.append(msg)
                report(msg)
            manifest.set(u, status="failed", error=o.error)
        bar.set_postfix_str(f"{u.checkpoint_dir} {u.layer}")
        bar.update(1)

    preloaded = {plan.first_index: plan.first_model}
    plan.first_model = None  # one model in memory at a time: execute_units frees it after its checkpoint
    try:
        execute_units(settings, plan.checkpoints, mine, h, records=UnitRecords(out), worker=f"visualize:{os.getpid()}",
                      catch=(NonFiniteObjectiveError, DevvisError), preloaded=preloaded, on_outcome=record)
    finally:
        bar.close()
    summary.time_s = time.time() - t0
    return summary

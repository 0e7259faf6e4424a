"""Running units: one unit is one call of :func:`devvis.render` with library objectives and transforms.

:func:`render_unit` turns a unit's settings into the library's pieces (a
parameterization from :mod:`devvis.param`, an objective from :mod:`devvis.objectives`,
transforms from :mod:`devvis.transforms`, render's ``preprocess="auto"`` rule and its
``scheduler=``), renders, and writes one image record per image through
:func:`devvis.results.write_image`. :func:`execute_units` runs many units, one
checkpoint's model in memory at a time, and records each in its status record.
"""

from __future__ import annotations

import math
import os
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from devvis import objectives as O
from devvis import results
from devvis.errors import DevvisError, NonFiniteObjectiveError
from devvis.longitudinal.series import CheckpointSeries
from devvis.runs.plan import CheckpointEntry, Component, Unit, load_model_at
from devvis.runs.records import UnitRecords
from devvis.runs.settings import RunSettings


def unit_objective(unit: Unit, settings: RunSettings) -> O.Objective:
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
                    terms.append(O.channel(unit.layer, c.channel, batch=b, reduction="sum"))
        obj = sum(terms)
    if settings.diversity_weight:
        obj = obj + settings.diversity_weight * O.diversity(unit.layer, group_size=n)
    if settings.reg_lambda:
        obj = obj + settings.reg_lambda * O.l2()
    if settings.tv_weight:
        obj = obj + settings.tv_weight * O.total_variation()
    if settings.l1_weight:
        obj = obj + settings.l1_weight * O.l1()
    if settings.alpha and settings.transparency_weight:
        obj = obj + settings.transparency_weight * O.transparency()
    return obj


def unit_transforms(settings: RunSettings) -> Any:
    """The robustness transforms the flags describe: :func:`devvis.transforms.standard` with them."""
    from devvis import transforms as T

    return T.standard(pad_px=settings.pad, jitter_px=settings.jitter, scale=tuple(settings.scale_range),
                      degrees=settings.rotate_degrees, blur=settings.blur, alpha=settings.alpha)


def lr_factor(settings: RunSettings) -> Callable[[int], float]:
    """Learning-rate multiplier per step: linear warm-up, then exponential decay to 1% or a cosine to 0."""
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
    return factor


def unit_optimizer(settings: RunSettings) -> Callable[[Any], torch.optim.Optimizer]:
    """Adam at ``--learning-rate``: a factory ``params -> Optimizer`` for :func:`devvis.render`."""
    def adam(params: Any) -> torch.optim.Optimizer:
        return torch.optim.Adam(params, lr=settings.learning_rate)

    adam.__name__ = f"adam(lr={settings.learning_rate})"
    return adam


def unit_scheduler(settings: RunSettings) -> Callable[[torch.optim.Optimizer], Any] | None:
    """The ``--lr-schedule``/``--lr-warmup-steps`` schedule as a factory for render's ``scheduler=`` (None: constant)."""
    if settings.lr_schedule == "none" and not settings.lr_warmup_steps:
        return None
    factor = lr_factor(settings)

    def schedule(optimizer: torch.optim.Optimizer) -> Any:
        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)

    schedule.__name__ = f"{settings.lr_schedule}(warmup={settings.lr_warmup_steps})"
    return schedule


def unit_files(unit: Unit, settings: RunSettings) -> list[tuple[Component, int, str]]:
    """(component, image number, file stem) for every image of the unit."""
    return [(c, j, c.stem(settings.aggregation, j)) for c in unit.components for j in range(settings.number_of_images)]


def unit_complete(unit: Unit, settings: RunSettings, out: Path, h: str) -> bool:
    """True when every image of the unit and its record exist, and every record is a success with this settings hash.

    This is the one test of "done" that resuming uses: the files, not the unit's status
    record (written after them), decide.
    """
    for _, _, stem in unit_files(unit, settings):
        suffix = ".png" if settings.alpha else ".jpg"  # transparent images are PNG with alpha (results.write_image)
        meta_p, img_p = out / unit.checkpoint_dir / f"{stem}.json", out / unit.checkpoint_dir / f"{stem}{suffix}"
        if not meta_p.exists() or not img_p.exists():
            return False
        try:
            rec = results.read_record(meta_p)
        except DevvisError:
            return False
        if rec.get("settings_hash") != h or rec.get("status") not in results.SUCCESS:
            return False
    return True


def _run_fields(settings: RunSettings, ck: CheckpointEntry, comp: Component, j: int, h: str) -> dict[str, Any]:
    import dataclasses

    return dict(model=settings.model, checkpoint_path=ck.path, step=ck.step, layer=comp.layer, channel=comp.channel,
                neuron=list(comp.neuron) if comp.neuron else None,
                aggregation=settings.aggregation if comp.neuron is None else "single", image_number=j,
                seed=settings.seed, settings_hash=h, parameters=dataclasses.asdict(settings))


def render_unit(model: nn.Module, unit: Unit, ck: CheckpointEntry, settings: RunSettings, out: Path,
                h: str) -> list[str]:
    """Render one unit and write its images and records; returns the files written (relative to ``out``)."""
    from devvis import param as P
    from devvis.render import Convergence, render
    from devvis.render.pipeline import model_input_channels

    n_img = len(unit.components) * settings.number_of_images
    channels = settings.input_channels or model_input_channels(model)  # a grayscale model gets 1-channel images
    objective = unit_objective(unit, settings)
    if settings.seed_image:  # feature accentuation: start at the seed image, stay close to it
        from devvis.accentuation import load_seed_image, seeded

        seed_img = load_seed_image(settings.seed_image, size=settings.image_size).expand(n_img, -1, -1, -1)
        p, stay = seeded(model, seed_img, closeness=settings.seed_closeness, preprocess=settings.preprocess,
                         input_size=settings.input_size, fft=settings.fft, decorrelate=settings.decorrelate)
        if stay is not None:
            objective = objective + stay
    else:
        p = P.image(settings.image_size, batch=n_img, fft=settings.fft, decorrelate=settings.decorrelate,
                    seed=settings.seed, channels=channels, alpha=settings.alpha)
    stop = Convergence(tol=settings.convergence_threshold, window=settings.convergence_window,
                       min_steps=settings.min_iterations)
    folder = out / unit.checkpoint_dir
    files = unit_files(unit, settings)
    try:
        result = render(model, objective, p, steps=settings.max_iterations, optimizer=unit_optimizer(settings),
                        scheduler=unit_scheduler(settings), transforms=unit_transforms(settings),
                        input_size=settings.input_size, preprocess=settings.preprocess, seed=settings.seed,
                        device=settings.device, precision=settings.precision, progress=False, stop_when=stop)
    except NonFiniteObjectiveError as e:
        # Record the failure honestly: a record with status "nan" and no image (not even an older one).
        for b, (comp, j, stem) in enumerate(files):
            rec = results.image_record(objective=objective.description, layers=[unit.layer], status="nan",
                                       image_index=b, error=str(e), **_run_fields(settings, ck, comp, j, h))
            results.write_image(folder, stem, None, rec)
        raise
    if result.interrupted:
        raise KeyboardInterrupt
    written: list[str] = []
    for b, (comp, j, stem) in enumerate(files):
        rec = result.image_metadata(b, **_run_fields(settings, ck, comp, j, h))
        for path in results.write_image(folder, stem, result.images[b], rec):
            written.append(f"{unit.checkpoint_dir}/{path.name}")
    return written


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


def execute_units(settings: RunSettings, series: CheckpointSeries | None, checkpoints: Sequence[CheckpointEntry],
                  units: Sequence[Unit], h: str, *, records: UnitRecords | None = None, worker: str = "local",
                  log: str | None = None, catch: tuple[type[BaseException], ...] = (DevvisError,),
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
    preloaded = preloaded if preloaded is not None else {}
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
            model = preloaded.pop(ci) if ci in preloaded else load_model_at(settings, series, ci)
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


def worker_name(kind: str) -> str:
    """``kind:pid`` (``local:1234``): who ran a unit, as its status record says."""
    return f"{kind}:{os.getpid()}"


"""Running a whole run: :func:`run_visualize` (this process, one unit after another) and :func:`run_sweep`
(the coordinator of a sweep on any executor, with retries).

Both plan the same units (:func:`devvis.runs.plan.plan_run`), skip those complete on
disk, and keep ``manifest.json`` in step with the units' status records, so a run
killed at any point resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any, Callable

from devvis.errors import ConfigError, DevvisError, NonFiniteObjectiveError
from devvis.runs.executors.local import dispatch_local
from devvis.runs.executors.slurm import dispatch_slurm, import_submitit
from devvis.runs.executors.torchrun import distributed_env, run_torchrun
from devvis.runs.plan import Unit, plan_run
from devvis.runs.records import Manifest, UnitRecords, remove_stale_temp_files, retry_queue
from devvis.runs.settings import HASHED_WHEN_SET, NOT_HASHED, ExecutorOptions, RunSettings
from devvis.runs.status import SweepSummary, VisualizeSummary, pending_units, summarize
from devvis.runs.unit import UnitOutcome, execute_units, worker_name


def check_same_settings(settings: RunSettings, settings_hash: str) -> None:
    """Refuse to run into a results folder made with other settings (its images would be silently replaced).

    ``--overwrite`` replaces them on purpose.

    Raises:
        ConfigError: naming the folder and the first settings that differ.
    """
    path = Path(settings.output_path) / "manifest.json"
    if settings.overwrite or not path.is_file():
        return
    from devvis import io as dio

    try:
        old = dio.read_json(path)
    except (OSError, ValueError):
        return
    if not isinstance(old, dict) or old.get("settings_hash") in (None, settings_hash):
        return
    before, now = old.get("settings") or {}, dataclasses.asdict(settings)
    diff = [f"--{k.replace('_', '-')} {before.get(k, HASHED_WHEN_SET.get(k))!r} -> {now[k]!r}" for k in now
            if k not in NOT_HASHED and before.get(k, HASHED_WHEN_SET.get(k)) != now[k]
            and not (isinstance(now[k], tuple) and list(now[k]) == before.get(k))]
    raise ConfigError(f"results folder {settings.output_path!r} holds a run made with other settings "
                      f"({', '.join(diff[:4]) or 'settings hash ' + str(old.get('settings_hash'))}); its images would "
                      "be replaced: choose another --output-path, or pass --overwrite to replace them")


def run_visualize(settings: RunSettings, *, on_failure: Callable[[str], None] | None = None,
                  unit_filter: Callable[[int, Unit], bool] | None = None) -> VisualizeSummary:
    """Run (or resume) a visualization over checkpoints in this process.

    Bad settings, layers or channels raise before any work; a checkpoint that
    fails to load (or a unit whose objective becomes NaN) is reported through
    ``on_failure`` and in the summary while the rest continues.
    ``unit_filter(index, unit)`` selects a share of the units.

    >>> import tempfile
    >>> s = RunSettings(model="resnet18", layer_names=["layer1.0"], channels=[0], max_iterations=2,
    ...                 min_iterations=0, image_size=32, progress=False, output_path=tempfile.mkdtemp())
    >>> summary = run_visualize(s)
    >>> summary.done, summary.failed
    (1, 0)
    """
    from tqdm.auto import tqdm

    t0 = time.time()
    out = Path(settings.output_path)
    summary = VisualizeSummary()
    report = on_failure or (lambda msg: None)
    plan = plan_run(settings)  # validates layers and channels on the architecture before any work
    if plan.first_index < 0:
        for msg in plan.failures:  # every checkpoint failed: report each and stop
            summary.failures.append(msg)
            report(msg)
        summary.failed = len(plan.checkpoints)
        return summary
    h, units = plan.settings_hash, plan.units
    check_same_settings(settings, h)
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(out)  # left by writes a kill interrupted; this process is the folder's only writer
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
        execute_units(settings, plan.series, plan.checkpoints, mine, h, records=UnitRecords(out),
                      worker=worker_name("visualize"), catch=(NonFiniteObjectiveError, DevvisError),
                      preloaded=preloaded, on_outcome=record)
    finally:
        bar.close()
    summary.time_s = time.time() - t0
    return summary


def _absolute(settings: RunSettings) -> RunSettings:
    """Absolute paths (jobs may start elsewhere) and no per-worker progress bars; neither changes the settings hash."""
    paths = [os.path.abspath(p) for p in settings.checkpoint_paths]
    return dataclasses.replace(settings, checkpoint_paths=paths, output_path=os.path.abspath(settings.output_path),
                               progress=False)


def run_sweep(settings: RunSettings, options: ExecutorOptions | None = None, *,
              log: Callable[[str], None] = print) -> SweepSummary:
    """Run (or resume) a sweep with the chosen executor and return its state at the end.

    Bad settings, layers or channels raise :class:`~devvis.errors.DevvisError`
    before any job starts. Under torchrun every rank calls this; each returns the
    same summary, and only rank 0 writes the manifest and logs. Units whose failure
    may be transient (not a devvis error), or whose job died, are retried up to
    ``options.retries`` times.

    >>> import tempfile
    >>> s = RunSettings(model="compact_resnet", layer_names=["layer1"], channels=[0, 1], batch_size=1,
    ...                 max_iterations=2, min_iterations=0, image_size=32, progress=False,
    ...                 output_path=tempfile.mkdtemp())
    >>> summary = run_sweep(s, ExecutorOptions(executor="local"), log=lambda msg: None)
    >>> summary.done, summary.failed, summary.pending
    (2, 0, 0)
    """
    options = options or ExecutorOptions()
    options.validate()
    dist = distributed_env()
    executor = options.executor
    if dist is not None:
        if executor == "slurm":
            raise ConfigError("--executor slurm cannot run under torchrun (WORLD_SIZE="
                              f"{dist[1]}); use --executor torchrun or launch devvis sweep without torchrun")
        executor = "torchrun"
    elif executor == "torchrun":
        raise ConfigError("--executor torchrun needs torchrun's RANK/WORLD_SIZE; launch it as "
                          "'torchrun --nproc-per-node=K -m devvis.cli sweep ...'")
    if executor == "slurm":
        import_submitit()
    progress = settings.progress
    settings = _absolute(settings)
    if executor == "torchrun":
        assert dist is not None
        return run_torchrun(settings, options, dist, log=log, progress=progress)

    t0 = time.time()
    plan = plan_run(settings)
    summary = SweepSummary(units=len(plan.units), executor=executor)
    if plan.first_index < 0:
        summary.failed = len(plan.checkpoints)
        summary.failures = {ck.dir: msg for ck, msg in zip(plan.checkpoints, plan.failures)}
        return summary
    out, h = Path(settings.output_path), plan.settings_hash
    check_same_settings(settings, h)
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(out)
    records = UnitRecords(out)
    manifest = Manifest(out, settings, plan.checkpoints, plan.units, h)
    summary.manifest = manifest.path
    todo = pending_units(settings, plan.units, records, h)
    summary.skipped = len(plan.units) - len(todo)
    log(f"sweep: {len(plan.units)} units, {summary.skipped} already complete, {len(todo)} to run "
        f"(executor {executor}); run folder {out}")
    preloaded = {plan.first_index: plan.first_model}
    plan.first_model = None

    from tqdm.auto import tqdm

    bar = _Progress(tqdm(total=len(plan.units), initial=summary.skipped, disable=not progress, desc="sweep",
                         unit="unit"), manifest, records)
    try:
        queue, attempt = todo, 0
        while queue:
            for u in queue:
                records.queue(u, h, by=f"{executor} try {attempt + 1}")
            if executor == "slurm":
                dispatch_slurm(settings, options, plan.series, plan.checkpoints, queue, h, records, bar, attempt)
            else:
                dispatch_local(settings, options, plan.series, plan.checkpoints, queue, h, records, bar, preloaded)
            preloaded = {}
            manifest.merge(records)
            attempt += 1
            queue = retry_queue(records, queue, h) if attempt <= options.retries else []
            if queue:
                log(f"sweep: retrying {len(queue)} failed units (retry {attempt} of {options.retries})")
                bar.update(-len(queue))
    finally:
        bar.close()
        manifest.merge(records)
    summarize(summary, records, plan.units, h)
    summary.time_s = time.time() - t0
    return summary


class _Progress:
    """The coordinator's progress bar; it also folds finished units into the manifest now and then.

    Merging reads every unit's record, so it is throttled (``every_s``) to keep
    huge sweeps linear; ``--status`` reads the records directly and is always current.
    """

    def __init__(self, bar: Any, manifest: Manifest, records: UnitRecords, every_s: float = 30.0):
        self.bar, self.manifest, self.records, self.every_s = bar, manifest, records, every_s
        self.last = time.time()

    def update(self, n: int) -> None:
        self.bar.update(n)
        if n > 0 and time.time() - self.last >= self.every_s:
            self.manifest.merge(self.records)
            self.last = time.time()

    def close(self) -> None:
        self.bar.close()

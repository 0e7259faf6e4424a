"""The local executor: units in this process, or in a pool of worker processes; and the job a worker runs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from torch import nn

from devvis.longitudinal.series import CheckpointSeries
from devvis.runs.plan import CheckpointEntry, Unit
from devvis.runs.records import UnitRecords, mark_lost
from devvis.runs.settings import ExecutorOptions, RunSettings
from devvis.runs.unit import UnitOutcome, execute_units, worker_name


@dataclass(frozen=True)
class JobSpec:
    """One task for a worker process or SLURM array element: units of one checkpoint, with everything to run them.

    ``series`` is a fresh copy of the run's series (no model loaded), so a spec pickles small.
    """

    settings: RunSettings
    series: CheckpointSeries | None
    checkpoints: tuple[CheckpointEntry, ...]
    units: tuple[Unit, ...]
    settings_hash: str
    threads: int | None = None
    executor: str = "local"


def job_specs(settings: RunSettings, series: CheckpointSeries | None, checkpoints: Sequence[CheckpointEntry],
              queue: Sequence[Unit], h: str, options: ExecutorOptions, threads: int | None,
              executor: str) -> list[JobSpec]:
    """One :class:`JobSpec` per chunk of ``units_per_job`` units of one checkpoint."""
    fresh = series[:] if series is not None else None  # a slice has the same checkpoints and no model in memory
    return [JobSpec(settings, fresh, tuple(checkpoints), chunk, h, threads, executor)
            for chunk in job_chunks(queue, options.units_per_job)]


def run_job(spec: JobSpec) -> dict[str, int]:
    """Worker entry point (local pool or SLURM): run the spec's units, recording each; returns counts by status.

    Every exception of a unit is caught and recorded, so one bad unit never takes
    the job's other units with it.
    """
    import torch

    if spec.threads:
        torch.set_num_threads(spec.threads)
    worker, log = worker_name(spec.executor), None
    if spec.executor == "slurm":
        import submitit

        env = submitit.JobEnvironment()
        worker, log = f"slurm:{env.job_id}", str(env.paths.stdout)
    counts: dict[str, int] = {}

    def say(o: UnitOutcome) -> None:
        counts[o.status] = counts.get(o.status, 0) + 1
        print(f"unit {o.unit.id}: {o.status}" + (f": {o.error}" if o.error else ""), flush=True)

    execute_units(spec.settings, spec.series, spec.checkpoints, spec.units, spec.settings_hash,
                  records=UnitRecords(spec.settings.output_path), worker=worker, log=log, catch=(Exception,),
                  on_outcome=say)
    return counts


def job_chunks(units: Sequence[Unit], per_job: int) -> list[tuple[Unit, ...]]:
    """Consecutive units of one checkpoint, at most ``per_job`` each (so a job loads one model)."""
    chunks: list[list[Unit]] = []
    for u in units:
        if chunks and len(chunks[-1]) < per_job and chunks[-1][-1].checkpoint_index == u.checkpoint_index:
            chunks[-1].append(u)
        else:
            chunks.append([u])
    return [tuple(c) for c in chunks]


def dispatch_local(settings: RunSettings, options: ExecutorOptions, series: CheckpointSeries | None,
                   checkpoints: Sequence[CheckpointEntry], queue: Sequence[Unit], h: str, records: UnitRecords,
                   bar: Any, preloaded: dict[int, nn.Module]) -> None:
    """Run ``queue`` here (``workers == 1``) or in a pool of spawned worker processes."""
    if options.workers == 1:
        import torch

        old_threads = torch.get_num_threads()
        if options.threads:
            torch.set_num_threads(options.threads)
        try:
            execute_units(settings, series, checkpoints, queue, h, records=records, worker=worker_name("local"),
                          catch=(Exception,), preloaded=preloaded, on_outcome=lambda o: bar.update(1))
        finally:
            torch.set_num_threads(old_threads)
        return
    import concurrent.futures as cf

    from devvis.parallel import process_pool, worker_threads

    threads = worker_threads(options.workers, options.threads)
    specs = job_specs(settings, series, checkpoints, queue, h, options, threads, "local")
    with process_pool(options.workers) as pool:
        futures = {pool.submit(run_job, s): s for s in specs}
        for fut in cf.as_completed(futures):
            spec = futures[fut]
            try:
                fut.result()
                why = "the worker returned without finishing the unit"
            except Exception as e:  # a worker that died (killed, out of memory) breaks the pool
                why = f"worker process died ({type(e).__name__}: {e})"
            mark_lost(records, spec.units, h, lambda u: why)
            bar.update(len(spec.units))

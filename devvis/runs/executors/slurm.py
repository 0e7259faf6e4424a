"""The SLURM executor: submitit job arrays, the queue watched with ``squeue`` (no ``sacct`` needed)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from devvis.errors import ConfigError, ExecutorError
from devvis.longitudinal.series import CheckpointSeries
from devvis.runs.executors.local import job_specs, run_job
from devvis.runs.plan import CheckpointEntry, Unit
from devvis.runs.records import UnitRecords, is_final, mark_lost
from devvis.runs.settings import ExecutorOptions, RunSettings

#: SLURM job states in which a job may still run (anything else: it has ended).
ACTIVE_STATES = frozenset({"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD",
                           "REQUEUE_FED", "RESIZING", "SUSPENDED", "SIGNALING", "STAGE_OUT", "RESV_DEL_HOLD"})


def import_submitit() -> Any:
    """The ``submitit`` module, or a :class:`~devvis.errors.ConfigError` saying how to install it."""
    try:
        import submitit
    except ImportError:
        raise ConfigError("--executor slurm needs submitit: pip install 'devvis[slurm]'") from None
    return submitit


def slurm_executor(out: Path, options: ExecutorOptions) -> Any:
    """A submitit ``SlurmExecutor`` with the options' job parameters; logs under ``out/.slurm/<job id>``."""
    submitit = import_submitit()
    ex = submitit.SlurmExecutor(folder=str(out / ".slurm" / "%j"), max_num_timeout=0)
    params: dict[str, Any] = dict(job_name=options.job_name, time=options.time_min, cpus_per_task=options.cpus_per_task,
                                  array_parallelism=options.array_parallelism)
    if options.partition:
        params["partition"] = options.partition
    if options.gpus_per_node:
        params["gpus_per_node"] = options.gpus_per_node
    if options.mem_gb:
        params["mem"] = f"{int(options.mem_gb * 1024)}MB"
    if options.setup:
        params["setup"] = list(options.setup)
    if options.slurm_parameters:
        params["additional_parameters"] = dict(options.slurm_parameters)
    ex.update_parameters(**params)
    return ex


def slurm_states(job_ids: Sequence[str]) -> dict[str, str] | None:
    """States of SLURM jobs / array elements (``"12_3" -> "RUNNING"``) from ``squeue``; None when squeue fails.

    ``--states=all`` also lists jobs that ended within the controller's MinJobAge
    (``COMPLETED``, ``FAILED``, ``TIMEOUT``, ...); a job missing from the answer has
    ended long enough ago to be forgotten.
    """
    bases = sorted({j.split("_")[0] for j in job_ids})
    if not bases:
        return {}
    try:
        r = subprocess.run(["squeue", "-h", "-r", "--states=all", "-o", "%i|%T", "-j", ",".join(bases)],
                           capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if r.returncode != 0:
        # squeue exits non-zero when none of the jobs is known any more: they all ended long ago.
        return {} if "Invalid job id" in r.stderr else None
    states = {}
    for line in r.stdout.splitlines():
        jid, _, state = line.strip().partition("|")
        states[jid] = state.split()[0] if state else "UNKNOWN"
    return states


def dispatch_slurm(settings: RunSettings, options: ExecutorOptions, series: CheckpointSeries | None,
                   checkpoints: Sequence[CheckpointEntry], queue: Sequence[Unit], h: str, records: UnitRecords,
                   bar: Any, attempt: int) -> None:
    """Submit ``queue`` as one job array and follow it until every task has recorded its units or is lost."""
    out = Path(settings.output_path)
    ex = slurm_executor(out, options)
    threads = options.threads or options.cpus_per_task
    specs = job_specs(settings, series, checkpoints, queue, h, options, threads, "slurm")
    try:
        jobs = ex.map_array(run_job, specs)
    except Exception as e:  # sbatch refused the job (bad partition, limits): nothing ran
        raise ExecutorError(f"SLURM refused the sweep's job array: {str(e).strip().splitlines()[-1]}") from e
    watch = {job.job_id: (job, spec) for job, spec in zip(jobs, specs)}
    base = jobs[0].job_id.split("_")[0] if jobs else "?"
    print(f"sweep: submitted SLURM job array {base} ({len(jobs)} tasks, try {attempt + 1}); "
          f"logs in {out / '.slurm'}/{base}_*", file=sys.stderr)
    try:
        watch_slurm(watch, options, records, h, bar, base)
    except BaseException:
        # Interrupted (Ctrl-C) or lost track of the queue: stop the array rather than leave it running
        # unobserved; units that finished are recorded, so a restart runs only the rest.
        subprocess.run(["scancel", base], capture_output=True, timeout=60)
        raise


def watch_slurm(watch: dict[str, Any], options: ExecutorOptions, records: UnitRecords, h: str, bar: Any,
                base: str) -> None:
    """Follow the array until every task has recorded its units or has ended and been given up as lost."""
    ended_at: dict[str, float] = {}
    squeue_failed_since: float | None = None
    counted: set[Unit] = set()
    while watch:
        states = slurm_states(list(watch))
        now = time.time()
        if states is None:
            squeue_failed_since = squeue_failed_since or now
            if now - squeue_failed_since > max(options.lost_after_s, 300.0):
                raise ExecutorError(f"squeue has failed for {now - squeue_failed_since:.0f} s; cannot follow SLURM "
                                    f"job array {base}. Its units are recorded as they finish: restart the sweep "
                                    "to collect them or run the rest")
        else:
            squeue_failed_since = None
        for jid, (job, spec) in list(watch.items()):
            for u in spec.units:  # progress as records arrive
                if u not in counted and is_final(records.read(u, h)):
                    counted.add(u)
                    bar.update(1)
            if all(u in counted for u in spec.units):
                del watch[jid]
                continue
            state = None if states is None else states.get(jid, "GONE")
            if state is None or state in ACTIVE_STATES:
                continue
            ended_at.setdefault(jid, now)
            if now - ended_at[jid] >= options.lost_after_s:
                what = "gone from the queue" if state == "GONE" else state
                why = (f"SLURM job {jid} ended ({what}) without finishing the unit (killed, out of memory, time "
                       f"limit or node failure?); log: {job.paths.stdout}")
                n = mark_lost(records, spec.units, h, lambda u: why)
                bar.update(n)
                counted.update(spec.units)
                del watch[jid]
        if watch:
            time.sleep(options.poll_s)

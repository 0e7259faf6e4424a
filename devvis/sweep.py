"""Sweeps: ``devvis visualize`` over checkpoints x layers x channels, handed to an executor.

A sweep is the same work as :func:`devvis.visualize.run_visualize`, split into
the same deterministic units (checkpoint x layer x batch of channels, see
:func:`devvis.visualize.plan_units`), but run by an engine built for it:

* ``local``: this process (``workers=1``) or a pool of worker processes;
* ``slurm``: SLURM job arrays submitted through ``submitit`` (``pip install devvis[slurm]``);
* ``torchrun``: under ``torchrun --nproc-per-node=K``, rank ``r`` of ``K`` runs
  every ``K``-th pending unit and rank 0 merges the manifest.

Whoever runs a unit writes its images atomically and then its status record
(``RUN/.units/<key>.json``, keyed by the unit's content and the settings hash);
only the coordinator (this process, or rank 0) rewrites ``manifest.json``, from
those records. So a sweep can be killed at any point and restarted: units whose
files are complete (with this settings hash) are skipped, the rest run.
Failed units keep their error and traceback in their record; failures other than
devvis's own (which repeat on every try: a NaN objective, a bad checkpoint) and
jobs that ended without finishing their units are retried up to
``ExecutorOptions.retries`` times. :func:`sweep_status` reads it all back.

>>> import tempfile
>>> from devvis.visualize import VisualizeSettings
>>> s = VisualizeSettings(model="compact_resnet", layer_names=["layer1"], channels=[0, 1], batch_size=1,
...                       max_iterations=2, min_iterations=0, image_size=32, progress=False,
...                       output_path=tempfile.mkdtemp())
>>> summary = run_sweep(s, ExecutorOptions(executor="local"), log=lambda msg: None)
>>> summary.done, summary.failed, summary.pending
(2, 0, 0)
>>> sweep_status(s.output_path).counts()
{'done': 2, 'pending': 0, 'failed': 0}
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from devvis import io as dio
from devvis.errors import ConfigError, ExecutorError, OutputError, closest
from devvis.visualize import (
    CheckpointEntry,
    Manifest,
    Unit,
    UnitRecords,
    VisualizeSettings,
    execute_units,
    plan_run,
    unit_complete,
)

EXECUTORS = ("local", "slurm", "torchrun")
#: SLURM job states in which a job may still run (anything else: it has ended).
_ACTIVE_STATES = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED",
                  "RESIZING", "SUSPENDED", "SIGNALING", "STAGE_OUT", "RESV_DEL_HOLD"}


@dataclass
class ExecutorOptions:
    """How a sweep runs: the ``executor:`` section of a sweep config, or ``devvis sweep``'s executor flags.

    Attributes:
        executor: ``local``, ``slurm`` or ``torchrun`` (chosen automatically under torchrun).
        workers: local worker processes (1 = run in this process).
        units_per_job: units per local task / SLURM array task (1 = one log file per unit).
        retries: times a unit whose failure may be transient (or whose job died) is retried.
        threads: torch CPU threads per worker (default: SLURM ``cpus_per_task``; for a
            local pool, the CPUs divided among the workers; else torch's default).
        partition, time_min, gpus_per_node, cpus_per_task, mem_gb, array_parallelism,
        job_name, setup, slurm_parameters: the SLURM job (``setup`` are shell lines run
            before the job, e.g. ``module load cuda``; ``slurm_parameters`` are extra
            ``sbatch`` options such as ``{"account": "lab", "qos": "low"}``).
        poll_s: seconds between looks at the SLURM queue.
        lost_after_s: seconds a SLURM job may be gone from the queue with unfinished units
            before they are declared lost (covers shared-filesystem delays; without
            ``sacct`` this is how a job killed without writing results is noticed).
    """

    executor: str = "local"
    workers: int = 1
    units_per_job: int = 1
    retries: int = 1
    threads: int | None = None
    partition: str | None = None
    time_min: int = 60
    gpus_per_node: int = 0
    cpus_per_task: int = 1
    mem_gb: float | None = None
    array_parallelism: int = 256
    job_name: str = "devvis-sweep"
    setup: list[str] = field(default_factory=list)
    slurm_parameters: dict[str, Any] = field(default_factory=dict)
    poll_s: float = 5.0
    lost_after_s: float = 30.0

    def validate(self) -> None:
        """Raise :class:`~devvis.errors.ConfigError` naming the first invalid option."""
        if self.executor not in EXECUTORS:
            raise ConfigError(f"invalid executor {self.executor!r}; choose one of {EXECUTORS}")
        for name in ("workers", "units_per_job", "time_min", "cpus_per_task", "array_parallelism"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"invalid executor option {name} {v!r}; must be a positive integer")
        for name in ("retries", "gpus_per_node"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ConfigError(f"invalid executor option {name} {v!r}; must be an integer >= 0")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise ConfigError(f"invalid executor option threads {self.threads!r}; must be a positive integer")
        if self.mem_gb is not None and not self.mem_gb > 0:
            raise ConfigError(f"invalid executor option mem_gb {self.mem_gb!r}; must be > 0")
        for name in ("poll_s", "lost_after_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"invalid executor option {name} {getattr(self, name)!r}; must be > 0 seconds")


@dataclass
class SweepSummary:
    """The state of a sweep when :func:`run_sweep` returns.

    ``done`` counts complete units (``skipped`` of them were complete before this
    sweep started), ``failed`` units that failed on their last try, ``pending``
    units no one finished (only after an interruption). ``failures`` maps unit
    ids to errors.
    """

    units: int = 0
    done: int = 0
    skipped: int = 0
    failed: int = 0
    pending: int = 0
    failures: dict[str, str] = field(default_factory=dict)
    manifest: Path | None = None
    executor: str = "local"
    time_s: float = 0.0


@dataclass(frozen=True)
class JobSpec:
    """One task for a worker process or SLURM array element: units of one checkpoint, with everything to run them."""

    settings: VisualizeSettings
    checkpoints: tuple[CheckpointEntry, ...]
    units: tuple[Unit, ...]
    settings_hash: str
    threads: int | None = None
    executor: str = "local"


def run_job(spec: JobSpec) -> dict[str, int]:
    """Worker entry point (local pool or SLURM): run the spec's units, recording each; returns counts by status.

    Every exception of a unit is caught and recorded, so one bad unit never takes
    the job's other units with it.
    """
    import torch

    if spec.threads:
        torch.set_num_threads(spec.threads)
    worker, log = f"{spec.executor}:{os.getpid()}", None
    if spec.executor == "slurm":
        import submitit

        env = submitit.JobEnvironment()
        worker, log = f"slurm:{env.job_id}", str(env.paths.stdout)
    counts: dict[str, int] = {}

    def say(o) -> None:
        counts[o.status] = counts.get(o.status, 0) + 1
        print(f"unit {o.unit.id}: {o.status}" + (f": {o.error}" if o.error else ""), flush=True)

    execute_units(spec.settings, spec.checkpoints, spec.units, spec.settings_hash, records=UnitRecords(
        spec.settings.output_path), worker=worker, log=log, catch=(Exception,), on_outcome=say)
    return counts


# ------------------------------------------------------------------------------------------
# configuration
# ------------------------------------------------------------------------------------------

_SETTINGS_FIELDS = {f.name: f for f in dataclasses.fields(VisualizeSettings)}
_EXECUTOR_FIELDS = {f.name: f for f in dataclasses.fields(ExecutorOptions)}


def _check_type(where: str, name: str, value: Any, default: Any) -> Any:
    """Coerce a YAML value to the type of the field's default, or raise naming the key."""
    if value is None or default is None:
        return value
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, str):
        ok = isinstance(value, str)
    elif isinstance(default, (list, tuple)):
        ok = isinstance(value, (list, tuple))
        value = type(default)(value) if ok else value
    elif isinstance(default, dict):
        ok = isinstance(value, dict)
    else:
        ok = True
    if not ok:
        raise ConfigError(f"{where}: {name} must be a {type(default).__name__}, got {value!r}")
    return value


def _neurons(where: str, value: Any) -> list[tuple[int, int]] | None:
    from devvis.commands._common import parse_neurons

    if value is None or isinstance(value, str):
        return parse_neurons(value)
    try:
        return [(int(h), int(w)) for h, w in value]
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: neurons must be 'h,w;h,w' or a list of [h, w] pairs, got {value!r}") from None


def settings_from_mapping(data: Mapping[str, Any], where: str = "config") -> tuple[VisualizeSettings,
                                                                                   ExecutorOptions]:
    """Settings and executor options from a mapping (a parsed sweep config).

    Keys are :class:`~devvis.visualize.VisualizeSettings` fields (``-`` may stand
    for ``_``), plus ``executor``: either a name (``slurm``) or a mapping of
    :class:`ExecutorOptions` fields. Unknown keys raise naming the closest valid ones.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping of settings, got {type(data).__name__}")
    defaults, opts_default = VisualizeSettings(), ExecutorOptions()
    values: dict[str, Any] = {}
    opts: dict[str, Any] = {}
    for raw_key, value in data.items():
        key = str(raw_key).replace("-", "_")
        if key == "executor":
            if isinstance(value, str):
                value = {"executor": value}
            if not isinstance(value, Mapping):
                raise ConfigError(f"{where}: executor must be a name {EXECUTORS} or a mapping of options")
            for k, v in value.items():
                k = str(k).replace("-", "_")
                if k in ("name", "kind"):
                    k = "executor"
                if k not in _EXECUTOR_FIELDS:
                    near = closest(k, _EXECUTOR_FIELDS)
                    raise ConfigError(f"{where}: unknown executor option {k!r}"
                                      + (f" (did you mean {near[0]!r}?)" if near else "")
                                      + f"; valid: {', '.join(_EXECUTOR_FIELDS)}")
                opts[k] = _check_type(where, f"executor.{k}", v, getattr(opts_default, k))
            continue
        if key == "checkpoint_path":
            key = "checkpoint_paths"
        if key not in _SETTINGS_FIELDS:
            near = closest(key, list(_SETTINGS_FIELDS) + ["executor"])
            raise ConfigError(f"{where}: unknown setting {raw_key!r}" + (f" (did you mean {near[0]!r}?)" if near else "")
                              + f"; valid: {', '.join(_SETTINGS_FIELDS)}, executor")
        if key == "neurons":
            value = _neurons(where, value)
        elif key == "checkpoint_paths" and isinstance(value, str):
            value = [value]
        elif key in ("layer_names", "channels") and value is not None:
            value = list(value) if isinstance(value, (list, tuple)) else [value]
        else:
            value = _check_type(where, key, value, getattr(defaults, key))
        values[key] = value
    settings = dataclasses.replace(defaults, **values)
    options = dataclasses.replace(opts_default, **opts)
    settings.validate()
    options.validate()
    return settings, options


def load_config(path: str | os.PathLike) -> tuple[VisualizeSettings, ExecutorOptions]:
    """Read a sweep config (YAML; see :func:`settings_from_mapping` for the keys).

    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "sweep.yaml")
    >>> _ = open(p, "w").write("model: resnet18\\nchannels: [0, 1]\\nexecutor: {executor: slurm, retries: 2}\\n")
    >>> s, o = load_config(p)
    >>> s.channels, o.executor, o.retries
    ([0, 1], 'slurm', 2)
    """
    import yaml

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read sweep config {str(p)!r}: {e.strerror or e}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"sweep config {str(p)!r} is not valid YAML: {str(e).splitlines()[0]}") from None
    return settings_from_mapping(data or {}, where=str(p))


# ------------------------------------------------------------------------------------------
# planning shared by every executor
# ------------------------------------------------------------------------------------------

def distributed_env() -> tuple[int, int, int] | None:
    """``(rank, world_size, local_rank)`` from torchrun's environment, or None outside a multi-process launch."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise ConfigError(f"RANK/WORLD_SIZE must be integers, got RANK={os.environ.get('RANK')!r} "
                          f"WORLD_SIZE={os.environ.get('WORLD_SIZE')!r}") from None
    return (rank, world, local) if world > 1 else None


def job_chunks(units: Sequence[Unit], per_job: int) -> list[tuple[Unit, ...]]:
    """Consecutive units of one checkpoint, at most ``per_job`` each (so a job loads one model)."""
    chunks: list[list[Unit]] = []
    for u in units:
        if chunks and len(chunks[-1]) < per_job and chunks[-1][-1].checkpoint_index == u.checkpoint_index:
            chunks[-1].append(u)
        else:
            chunks.append([u])
    return [tuple(c) for c in chunks]


def _absolute(settings: VisualizeSettings) -> VisualizeSettings:
    """Absolute paths (jobs may start elsewhere) and no per-worker progress bars; neither changes the settings hash."""
    paths = [os.path.abspath(p) for p in settings.checkpoint_paths]
    return dataclasses.replace(settings, checkpoint_paths=paths, output_path=os.path.abspath(settings.output_path),
                               progress=False)


def _remove_stale_temp_files(out: Path) -> int:
    """Delete temporary files left by writes a kill interrupted (``.NAME.XXXX.tmp``, see :mod:`devvis.io`)."""
    n = 0
    for folder in [out, *[d for d in out.iterdir() if d.is_dir()]]:
        for tmp in folder.glob(".*.tmp"):
            try:
                tmp.unlink()
                n += 1
            except OSError:
                pass
    return n


def _final(rec: Mapping[str, Any] | None) -> bool:
    return rec is not None and rec.get("status") in ("done", "failed")


def _mark_lost(records: UnitRecords, units: Sequence[Unit], h: str, reason: Callable[[Unit], str]) -> int:
    """Record units that a finished job left unfinished as failed (retryable); returns how many."""
    n = 0
    for u in units:
        rec = records.read(u, h)
        if not _final(rec):
            records.finish(u, h, "failed", error=reason(u), retryable=True, attempt_status="lost")
            n += 1
    return n


def _retry_queue(records: UnitRecords, units: Sequence[Unit], h: str) -> list[Unit]:
    out = []
    for u in units:
        rec = records.read(u, h)
        if rec is not None and rec.get("status") == "failed" and rec.get("retryable"):
            out.append(u)
    return out


def _summarize(summary: SweepSummary, records: UnitRecords, units: Sequence[Unit], h: str) -> SweepSummary:
    for u in units:
        rec = records.read(u, h)
        status = rec.get("status") if rec else None
        if status == "done":
            summary.done += 1
        elif status == "failed":
            summary.failed += 1
            summary.failures[u.id] = str(rec.get("error"))
        else:
            summary.pending += 1
    return summary


# ------------------------------------------------------------------------------------------
# the sweep
# ------------------------------------------------------------------------------------------

def run_sweep(settings: VisualizeSettings, options: ExecutorOptions | None = None, *,
              log: Callable[[str], None] = print) -> SweepSummary:
    """Run (or resume) a sweep with the chosen executor and return its state at the end.

    Bad settings, layers or channels raise :class:`~devvis.errors.DevvisError`
    before any job starts. Under torchrun every rank calls this; each returns the
    same summary, and only rank 0 writes the manifest and logs.
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
        _import_submitit()
    progress = settings.progress
    settings = _absolute(settings)
    if executor == "torchrun":
        return _run_torchrun(settings, options, dist, log=log, progress=progress)

    t0 = time.time()
    plan = plan_run(settings)
    summary = SweepSummary(units=len(plan.units), executor=executor)
    if plan.first_model is None:
        summary.failed = len(plan.checkpoints)
        summary.failures = {ck.dir: msg for ck, msg in zip(plan.checkpoints, plan.failures)}
        return summary
    out, h = Path(settings.output_path), plan.settings_hash
    out.mkdir(parents=True, exist_ok=True)
    _remove_stale_temp_files(out)
    records = UnitRecords(out)
    manifest = Manifest(out, settings, plan.checkpoints, plan.units, h)
    summary.manifest = manifest.path
    todo = _pending_units(settings, plan.units, records, h)
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
                _dispatch_slurm(settings, options, plan.checkpoints, queue, h, records, bar, attempt)
            else:
                _dispatch_local(settings, options, plan.checkpoints, queue, h, records, bar, preloaded)
            preloaded = {}
            manifest.merge(records)
            attempt += 1
            queue = _retry_queue(records, queue, h) if attempt <= options.retries else []
            if queue:
                log(f"sweep: retrying {len(queue)} failed units (retry {attempt} of {options.retries})")
                bar.update(-len(queue))
    finally:
        bar.close()
        manifest.merge(records)
    _summarize(summary, records, plan.units, h)
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


def _pending_units(settings: VisualizeSettings, units: Sequence[Unit], records: UnitRecords, h: str) -> list[Unit]:
    """Units to run: all with ``overwrite``, else those whose files are not complete (the complete ones are recorded done)."""
    out = Path(settings.output_path)
    todo = []
    for u in units:
        if not settings.overwrite and unit_complete(u, settings, out, h):
            records.mark_done(u, h)
        else:
            todo.append(u)
    return todo


# ------------------------------------------------------------------------------------------
# local executor
# ------------------------------------------------------------------------------------------

def _dispatch_local(settings: VisualizeSettings, options: ExecutorOptions, checkpoints: Sequence[CheckpointEntry],
                    queue: Sequence[Unit], h: str, records: UnitRecords, bar: Any,
                    preloaded: dict[int, Any]) -> None:
    if options.workers == 1:
        import torch

        old_threads = torch.get_num_threads()
        if options.threads:
            torch.set_num_threads(options.threads)
        try:
            execute_units(settings, checkpoints, queue, h, records=records, worker=f"local:{os.getpid()}",
                          catch=(Exception,), preloaded=preloaded, on_outcome=lambda o: bar.update(1))
        finally:
            torch.set_num_threads(old_threads)
        return
    import concurrent.futures as cf
    import multiprocessing as mp

    threads = options.threads or max(1, (os.cpu_count() or 1) // options.workers)
    specs = [JobSpec(settings, tuple(checkpoints), chunk, h, threads, "local")
             for chunk in job_chunks(queue, options.units_per_job)]
    # spawn, not fork: the parent may hold threads (torch's pools) that a fork would copy mid-lock.
    with cf.ProcessPoolExecutor(max_workers=options.workers, mp_context=mp.get_context("spawn")) as pool:
        futures = {pool.submit(run_job, s): s for s in specs}
        for fut in cf.as_completed(futures):
            spec = futures[fut]
            try:
                fut.result()
                why = "the worker returned without finishing the unit"
            except Exception as e:  # a worker that died (killed, out of memory) breaks the pool
                why = f"worker process died ({type(e).__name__}: {e})"
            _mark_lost(records, spec.units, h, lambda u: why)
            bar.update(len(spec.units))


# ------------------------------------------------------------------------------------------
# SLURM executor (submitit job arrays; the queue is watched with squeue, so no sacct is needed)
# ------------------------------------------------------------------------------------------

def _import_submitit():
    try:
        import submitit
    except ImportError:
        raise ConfigError("--executor slurm needs submitit: pip install 'devvis[slurm]'") from None
    return submitit


def _slurm_executor(out: Path, options: ExecutorOptions):
    submitit = _import_submitit()
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


def _dispatch_slurm(settings: VisualizeSettings, options: ExecutorOptions, checkpoints: Sequence[CheckpointEntry],
                    queue: Sequence[Unit], h: str, records: UnitRecords, bar: Any, attempt: int) -> None:
    out = Path(settings.output_path)
    ex = _slurm_executor(out, options)
    threads = options.threads or options.cpus_per_task
    specs = [JobSpec(settings, tuple(checkpoints), chunk, h, threads, "slurm")
             for chunk in job_chunks(queue, options.units_per_job)]
    try:
        jobs = ex.map_array(run_job, specs)
    except Exception as e:  # sbatch refused the job (bad partition, limits): nothing ran
        raise ExecutorError(f"SLURM refused the sweep's job array: {str(e).strip().splitlines()[-1]}") from e
    watch = {job.job_id: (job, spec) for job, spec in zip(jobs, specs)}
    base = jobs[0].job_id.split("_")[0] if jobs else "?"
    print(f"sweep: submitted SLURM job array {base} ({len(jobs)} tasks, try {attempt + 1}); "
          f"logs in {out / '.slurm'}/{base}_*", file=sys.stderr)
    try:
        _watch_slurm(watch, options, records, h, bar, base)
    except BaseException:
        # Interrupted (Ctrl-C) or lost track of the queue: stop the array rather than leave it running
        # unobserved; units that finished are recorded, so a restart runs only the rest.
        subprocess.run(["scancel", base], capture_output=True, timeout=60)
        raise


def _watch_slurm(watch: dict[str, Any], options: ExecutorOptions, records: UnitRecords, h: str, bar: Any,
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
                if u not in counted and _final(records.read(u, h)):
                    counted.add(u)
                    bar.update(1)
            if all(u in counted for u in spec.units):
                del watch[jid]
                continue
            state = None if states is None else states.get(jid, "GONE")
            if state is None or state in _ACTIVE_STATES:
                continue
            ended_at.setdefault(jid, now)
            if now - ended_at[jid] >= options.lost_after_s:
                what = "gone from the queue" if state == "GONE" else state
                why = (f"SLURM job {jid} ended ({what}) without finishing the unit (killed, out of memory, time "
                       f"limit or node failure?); log: {job.paths.stdout}")
                n = _mark_lost(records, spec.units, h, lambda u: why)
                bar.update(n)
                counted.update(spec.units)
                del watch[jid]
        if watch:
            time.sleep(options.poll_s)


# ------------------------------------------------------------------------------------------
# torchrun
# ------------------------------------------------------------------------------------------

def _run_torchrun(settings: VisualizeSettings, options: ExecutorOptions, dist_env: tuple[int, int, int], *,
                  log: Callable[[str], None], progress: bool) -> SweepSummary:
    import datetime

    import torch
    import torch.distributed as tdist

    rank, world, local_rank = dist_env
    if settings.device and settings.device.startswith("cuda") and ":" not in settings.device:
        settings = dataclasses.replace(settings, device=f"cuda:{local_rank}")  # one GPU per rank
    created = False
    if not tdist.is_initialized():
        if "MASTER_ADDR" not in os.environ:
            raise ConfigError("WORLD_SIZE > 1 but MASTER_ADDR is not set; launch with torchrun --nproc-per-node=K")
        # gloo works on CPU and GPU alike; ranks exchange only barriers. Units can take hours, so the
        # barriers wait long (a crashed rank makes torchrun stop the others anyway).
        tdist.init_process_group("gloo", timeout=datetime.timedelta(hours=72))
        created = True
    if options.threads:
        torch.set_num_threads(options.threads)
    say = log if rank == 0 else (lambda msg: None)
    try:
        t0 = time.time()
        plan = plan_run(settings)
        summary = SweepSummary(units=len(plan.units), executor="torchrun")
        if plan.first_model is None:
            summary.failed = len(plan.checkpoints)
            summary.failures = {ck.dir: msg for ck, msg in zip(plan.checkpoints, plan.failures)}
            return summary
        out, h = Path(settings.output_path), plan.settings_hash
        records = UnitRecords(out)
        manifest = None
        if rank == 0:
            out.mkdir(parents=True, exist_ok=True)
            _remove_stale_temp_files(out)
            manifest = Manifest(out, settings, plan.checkpoints, plan.units, h)
            summary.manifest = manifest.path
        tdist.barrier()  # every rank sees the same files when it decides what is left to do
        todo = _pending_units(settings, plan.units, records, h) if rank == 0 else None
        for u in todo or []:
            records.queue(u, h, by="torchrun try 1")
        holder = [todo]
        tdist.broadcast_object_list(holder, src=0)  # one view of what is done, so the shares partition it
        queue: list[Unit] = holder[0]
        summary.skipped = len(plan.units) - len(queue)
        say(f"sweep: {len(plan.units)} units, {summary.skipped} already complete, {len(queue)} to run "
            f"on {world} ranks (torchrun); run folder {out}")
        preloaded = {plan.first_index: plan.first_model}
        plan.first_model = None
        attempt = 0
        from tqdm.auto import tqdm

        while queue:
            mine = queue[rank::world]
            # One bar, rank 0's share (the ranks' shares are the same size within one unit).
            bar = tqdm(total=len(mine), disable=not (progress and rank == 0), desc=f"sweep (rank 0 of {world})",
                       unit="unit")
            try:
                execute_units(settings, plan.checkpoints, mine, h, records=records, worker=f"torchrun:rank{rank}",
                              catch=(Exception,), preloaded=preloaded, on_outcome=lambda o: bar.update(1))
            finally:
                bar.close()
            preloaded = {}
            tdist.barrier()
            attempt += 1
            holder = [_retry_queue(records, queue, h) if rank == 0 and attempt <= options.retries else []]
            for u in holder[0]:
                records.queue(u, h, by=f"torchrun try {attempt + 1}")
            tdist.broadcast_object_list(holder, src=0)
            queue = holder[0]
            if queue:
                say(f"sweep: retrying {len(queue)} failed units (retry {attempt} of {options.retries})")
        if manifest is not None:
            manifest.merge(records)
        summary.manifest = out / "manifest.json"
        _summarize(summary, records, plan.units, h)
        summary.time_s = time.time() - t0
        return summary
    finally:
        if created:
            tdist.destroy_process_group()


# ------------------------------------------------------------------------------------------
# status
# ------------------------------------------------------------------------------------------

@dataclass
class UnitState:
    """One unit as :func:`sweep_status` sees it: id, ``done``/``pending``/``failed``, and why (error or note)."""

    id: str
    status: str
    note: str | None = None
    log: str | None = None
    attempts: int = 0


@dataclass
class SweepStatus:
    """Every unit of a run folder with its state (see :func:`sweep_status`)."""

    run_dir: Path
    units: list[UnitState]

    def counts(self) -> dict[str, int]:
        c = {"done": 0, "pending": 0, "failed": 0}
        for u in self.units:
            c[u.status] += 1
        return c

    def format(self, limit: int = 50) -> str:
        """Human-readable report: counts, then failed units with their errors, then pending units."""
        c = self.counts()
        lines = [f"{self.run_dir}: {len(self.units)} units: {c['done']} done, {c['pending']} pending, "
                 f"{c['failed']} failed"]
        for status in ("failed", "pending"):
            rows = [u for u in self.units if u.status == status]
            if not rows:
                continue
            lines.append(f"{status}:")
            for u in rows[:limit]:
                extra = f" [attempts {u.attempts}]" if u.attempts else ""
                extra += f" (log: {u.log})" if u.log else ""
                lines.append(f"  {u.id}: {u.note or status}{extra}")
            if len(rows) > limit:
                lines.append(f"  ... and {len(rows) - limit} more")
        return "\n".join(lines)


def sweep_status(run_dir: str | os.PathLike) -> SweepStatus:
    """Read a run folder's manifest and unit records: which units are done, pending or failed, and why.

    Works while a sweep is running (records appear as units finish) and on
    folders written by ``devvis visualize``.
    """
    run = Path(run_dir)
    mpath = run / "manifest.json"
    if not mpath.exists():
        raise OutputError(f"no manifest.json in {str(run)!r}: not a devvis run folder (give the --output-path of a "
                          "visualize or sweep run)")
    try:
        manifest = dio.read_json(mpath)
    except (OSError, ValueError) as e:
        raise OutputError(f"cannot read {str(mpath)!r}: {e}") from None
    states = []
    for uid, entry in manifest.get("units", {}).items():
        rec = None
        if entry.get("key"):
            try:
                rec = dio.read_json(run / ".units" / f"{entry['key']}.json")
            except (OSError, ValueError):
                rec = None
        attempts = (rec or {}).get("attempts", [])
        last = attempts[-1] if attempts else {}
        if rec is None:
            status = entry.get("status", "pending")
            states.append(UnitState(uid, status if status in ("done", "failed") else "pending", entry.get("error")))
        elif rec.get("status") == "done":
            states.append(UnitState(uid, "done", attempts=len(attempts)))
        elif rec.get("status") == "failed":
            states.append(UnitState(uid, "failed", rec.get("error"), last.get("log"), len(attempts)))
        elif rec.get("status") == "queued":
            states.append(UnitState(uid, "pending", f"queued ({rec.get('queued_by')})", attempts=len(attempts)))
        else:
            started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(last.get("started") or 0))
            note = (f"running, or interrupted, on {last.get('worker')} ({last.get('host')}, pid {last.get('pid')}) "
                    f"since {started}")
            states.append(UnitState(uid, "pending", note, last.get("log"), len(attempts)))
    return SweepStatus(run, states)

"""LLC estimates in worker processes: ``workers=`` of :func:`~devvis.slt.llc_trajectory` and
:func:`~devvis.slt.calibrate`.

Each estimate is self-contained: its chains draw their noise and their batches from streams seeded by
``seed`` alone (:mod:`devvis.slt.batches`), never from a state that an earlier estimate advanced. So
estimates can run in any order and in any process, and a checkpoint's estimate is the same number
whichever worker makes it, and the same as with ``workers=1`` at the same torch threads per process
(the tests check this bit for bit). The pool is :func:`devvis.parallel.process_pool` (spawned
processes; the loader and criterion must pickle, which is checked first).

A lazily loading series (``CheckpointSeries``) sends each worker its folder and a position, and the
worker loads that checkpoint itself; models in memory are pickled to it.

>>> import torch
>>> from torch import nn
>>> x = torch.randn(64, 2); y = x.sum(1, keepdim=True)
>>> tasks = [Task(model=nn.Linear(2, 1), kwargs=dict(lr=1e-4, num_chains=1, num_draws=10)) for _ in range(2)]
>>> res = run_estimates(tasks, [(x, y)], nn.MSELoss(), workers=1)
>>> [len(r.llc_per_chain) for r in res]
[1, 1]
"""

from __future__ import annotations

import concurrent.futures as cf
import pickle
import uuid
import warnings
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from devvis.parallel import check_workers, process_pool, require_picklable, worker_threads
from devvis.slt.batches import Criterion, Loader
from devvis.slt.diagnostics import LLCDiagnosticWarning
from devvis.slt.llc import estimate_llc
from devvis.slt.result import LLCResult

__all__ = ["Task", "EstimatePool", "run_estimates", "rewarn"]


@dataclass(frozen=True)
class Task:
    """One estimate: a ``model`` in memory, or position ``position`` of a lazily loading ``series``; and the
    :func:`~devvis.slt.estimate_llc` keywords (``progress`` and ``warn`` are set by :func:`run_estimates`)."""

    model: nn.Module | None = None
    series: Any = None
    position: int = -1
    kwargs: dict[str, Any] = field(default_factory=dict)

    def load(self) -> nn.Module:
        """The model of this task (loading it from the series when it is not in memory)."""
        return self.model if self.model is not None else self.series.at(self.position)


def rewarn(res: LLCResult) -> None:
    """Emit the :class:`~devvis.slt.diagnostics.LLCDiagnosticWarning` of each finding of ``res``, as
    :func:`~devvis.slt.estimate_llc` does with ``warn=True`` (for estimates made elsewhere)."""
    for msg in res.diagnostics:
        warnings.warn(f"LLC: {msg}", LLCDiagnosticWarning, stacklevel=3)


_WORKER: dict[str, Any] = {}


def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)


def _run_task(data_key: str, data: bytes, payload: bytes) -> bytes:
    if _WORKER.get("key") != data_key:  # the loader and criterion, unpickled once per call of run_estimates
        _WORKER.update(key=data_key, data=pickle.loads(data))
    loader, criterion = _WORKER["data"]
    task = pickle.loads(payload)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pickle.dumps(estimate_llc(task.load(), loader, criterion,
                                         **{**task.kwargs, "progress": False, "warn": False}))


class EstimatePool:
    """``workers`` spawned processes of ``threads`` torch threads each, open for several :func:`run_estimates`
    calls (a trajectory's calibration and its estimates share one, so the processes start once).

    >>> with EstimatePool(2, threads=1) as pool:    # doctest: +SKIP
    ...     results = run_estimates(tasks, loader, criterion, workers=pool)
    """

    def __init__(self, workers: int, threads: int | None = None):
        self.workers = check_workers(workers)
        self.threads = worker_threads(self.workers, threads)
        self._pool: cf.ProcessPoolExecutor | None = None

    def __enter__(self) -> "EstimatePool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the processes (they start at the first estimate)."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def run(self, tasks: Sequence[Task], loader: Loader, criterion: Criterion, *, progress: bool = False,
            desc: str = "LLC estimates") -> list[LLCResult]:
        """The estimate of each task, in the tasks' order, made in this pool's processes."""
        require_picklable(loader, "the loader")
        require_picklable(criterion, "the criterion")
        if self._pool is None:
            self._pool = process_pool(self.workers, _init_worker, (self.threads,))
        # plain pickles: tensors travel in the bytes, not through torch's shared-memory file descriptors (in this
        # project's container those failed with "unable to resize file")
        data, key = pickle.dumps((loader, criterion)), uuid.uuid4().hex
        results: list[LLCResult | None] = [None] * len(tasks)
        with tqdm(total=len(tasks), desc=desc, disable=not progress, unit="estimate") as bar:
            futures = {self._pool.submit(_run_task, key, data, pickle.dumps(t)): k for k, t in enumerate(tasks)}
            for fut in cf.as_completed(futures):
                results[futures[fut]] = pickle.loads(fut.result())
                bar.update(1)
        return results  # type: ignore[return-value]


def run_estimates(tasks: Sequence[Task], loader: Loader, criterion: Criterion, *,
                  workers: "int | EstimatePool" = 1, threads: int | None = None, progress: bool = False,
                  warn: bool = False, desc: str = "LLC estimates") -> list[LLCResult]:
    """The estimate of each task, in the tasks' order: here (``workers=1``), in ``workers`` spawned processes
    with ``threads`` torch threads each (default: the CPUs divided among the workers), or in an open
    :class:`EstimatePool`.

    With ``workers=1`` each estimate runs in this process, with its own progress bar when ``progress``.
    With more, one bar counts the finished estimates; ``warn`` emits each finding as a warning here.
    """
    if isinstance(workers, EstimatePool):
        results = workers.run(tasks, loader, criterion, progress=progress, desc=desc)
    elif check_workers(workers) == 1:
        results = [estimate_llc(t.load(), loader, criterion, **{**t.kwargs, "progress": progress, "warn": warn})
                   for t in tasks]
        return results
    else:
        with EstimatePool(workers, threads) as pool:
            results = pool.run(tasks, loader, criterion, progress=progress, desc=desc)
    if warn:
        for r in results:
            rewarn(r)  # type: ignore[arg-type]
    return results  # type: ignore[return-value]

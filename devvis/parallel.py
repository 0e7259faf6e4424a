"""Worker processes on this machine: how devvis starts them and how many torch threads each gets.

One decision, one place: the render runs' local executor (:mod:`devvis.runs.executors.local`) and the
LLC over a series (:func:`devvis.slt.llc_trajectory` and :func:`devvis.slt.calibrate` with
``workers=``) start their pools here.

* **spawn, not fork**: the parent may hold threads (torch's pools) that a fork would copy mid-lock. A
  spawned worker starts a fresh interpreter, so what it runs and its arguments must pickle: functions
  defined at a module's top level, ``nn.Module`` objects, tensors, a ``DataLoader`` over a dataset of
  tensors. Lambdas and local functions do not; :func:`require_picklable` says so before a pool starts.
* **threads**: each worker gets ``threads`` torch threads, by default the CPUs divided among the
  workers (at least one), so the workers together do not oversubscribe the machine.

>>> worker_threads(2, cpus=16), worker_threads(4, threads=1, cpus=16), worker_threads(8, cpus=2)
(8, 1, 1)
>>> require_picklable(lambda x: x, "criterion")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
devvis.errors.ConfigError: criterion is a function devvis cannot send to a worker process (...
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import os
import pickle
from typing import Any, Callable

from devvis.errors import ConfigError

__all__ = ["worker_threads", "process_pool", "require_picklable", "check_workers"]


def check_workers(workers: Any) -> int:
    """``workers`` as a positive int, or a :class:`~devvis.errors.ConfigError` naming the value given."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers must be a positive integer (1 = this process), got {workers!r}")
    return workers


def worker_threads(workers: int, threads: int | None = None, cpus: int | None = None) -> int:
    """Torch threads per worker: ``threads`` when given, else the ``cpus`` (default: this machine's) divided
    among the ``workers``, at least one."""
    if threads is not None:
        if threads < 1:
            raise ConfigError(f"threads must be a positive integer, got {threads!r}")
        return int(threads)
    return max(1, (cpus or os.cpu_count() or 1) // max(1, workers))


def process_pool(workers: int, initializer: Callable[..., object] | None = None,
                 initargs: tuple[Any, ...] = ()) -> cf.ProcessPoolExecutor:
    """A pool of ``workers`` spawned processes (module docstring), each running ``initializer(*initargs)`` first."""
    return cf.ProcessPoolExecutor(max_workers=check_workers(workers), mp_context=mp.get_context("spawn"),
                                  initializer=initializer, initargs=initargs)


def require_picklable(obj: Any, what: str) -> None:
    """Raise :class:`~devvis.errors.ConfigError` when ``obj`` (described as ``what``) cannot be sent to a spawned
    worker, naming it and what to use instead."""
    try:
        pickle.dumps(obj)
    except Exception as e:  # noqa: BLE001 - pickle raises several types (PicklingError, AttributeError, TypeError)
        kind = "a function" if callable(obj) and not hasattr(obj, "state_dict") else f"a {type(obj).__name__}"
        raise ConfigError(
            f"{what} is {kind} devvis cannot send to a worker process ({type(e).__name__}: {e}); with workers > 1 "
            f"give a top-level function or an nn.Module (e.g. torch.nn.CrossEntropyLoss()) and a DataLoader over "
            f"a dataset of tensors, or use workers=1") from None

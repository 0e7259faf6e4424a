"""A run's bookkeeping: one status record per unit, and the run's ``manifest.json``.

Whoever runs a unit writes its images and image records first (see
:mod:`devvis.runs.unit`) and then the unit's status record ``.units/<key>.json``.
One file per unit means concurrent workers never write the same file; only the
run's coordinator rewrites ``manifest.json``, folding the records in.

    results/
      manifest.json                     settings, checkpoint order, units and their status
      .units/<key>.json                 one status record per unit
      step_000100/layer_layer3.1_channel_0_average-0.jpg   (+ .json: its image record)
"""

from __future__ import annotations

import dataclasses
import os
import socket
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from devvis import io as dio
from devvis.runs.plan import CheckpointEntry, Unit, unit_key
from devvis.runs.settings import RunSettings
from devvis.typing import PathLike

FINAL = ("done", "failed")


class UnitRecords:
    """Per-unit status files ``<output>/.units/<key>.json``, each written atomically by the process running the unit.

    A record holds ``unit`` (its id), ``status`` (``queued``, ``running``, ``done`` or ``failed``),
    ``error``/``traceback``/``retryable`` for failures, ``files`` for finished units, and
    ``attempts``: one entry per execution (worker, host, pid, start and end time, outcome).

    >>> import tempfile
    >>> from devvis.runs.plan import Component
    >>> r = UnitRecords(tempfile.mkdtemp())
    >>> u = Unit(0, "random_init", "layer1", (Component("layer1", 0),))
    >>> _ = r.start(u, "abc", worker="doc"); _ = r.finish(u, "abc", "done", files=["a.jpg"])
    >>> rec = r.read(u, "abc"); rec["status"], len(rec["attempts"])
    ('done', 1)
    """

    def __init__(self, output_dir: PathLike):
        self.dir = Path(output_dir) / ".units"

    def path(self, unit: Unit, h: str) -> Path:
        """The record file of ``unit`` under settings hash ``h``."""
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
        """Record a unit found complete on disk unless its record already says done.

        This covers a unit whose process was killed after its last file and before its
        record: its files decide, so it counts as done; its last attempt stays as it was
        (``running``, never finished: the trace of the kill) and no new attempt is opened.
        """
        rec = self.read(unit, h)
        if rec is None or rec.get("status") != "done":
            self._write(unit, h, {"status": "done", "skipped": True, "attempts": (rec or {}).get("attempts", [])})


def is_final(rec: Mapping[str, Any] | None) -> bool:
    """True when a unit's record says ``done`` or ``failed``."""
    return rec is not None and rec.get("status") in FINAL


def mark_lost(records: UnitRecords, units: Sequence[Unit], h: str, reason: Callable[[Unit], str]) -> int:
    """Record units that a finished job left unfinished as failed (retryable); returns how many."""
    n = 0
    for u in units:
        if not is_final(records.read(u, h)):
            records.finish(u, h, "failed", error=reason(u), retryable=True, attempt_status="lost")
            n += 1
    return n


def retry_queue(records: UnitRecords, units: Sequence[Unit], h: str) -> list[Unit]:
    """The units of ``units`` whose record says failed and retryable."""
    out = []
    for u in units:
        rec = records.read(u, h)
        if rec is not None and rec.get("status") == "failed" and rec.get("retryable"):
            out.append(u)
    return out


def remove_stale_temp_files(output_dir: PathLike) -> int:
    """Delete temporary files left by writes a kill interrupted (``.NAME.XXXX.tmp``, see :mod:`devvis.io`)."""
    out = Path(output_dir)
    n = 0
    for folder in [out, *[d for d in out.iterdir() if d.is_dir()]]:
        for tmp in folder.glob(".*.tmp"):
            try:
                tmp.unlink()
                n += 1
            except OSError:
                pass
    return n


class Manifest:
    """The run's ``manifest.json``: settings, checkpoint order, and each unit's status, written atomically.

    Only one process (the run's coordinator) writes it; workers write
    :class:`UnitRecords`, which :meth:`merge` folds in. A unit is ``done`` here only
    once its files are complete.
    """

    def __init__(self, output_dir: PathLike, settings: RunSettings, checkpoints: Sequence[CheckpointEntry],
                 units: Sequence[Unit], h: str):
        self.path = Path(output_dir) / "manifest.json"
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
            units={u.id: old.get(u.id, {"status": "pending"}) | self._describe(u) for u in units},
        )
        self.save()

    def _describe(self, u: Unit) -> dict[str, Any]:
        return {"checkpoint_dir": u.checkpoint_dir, "layer": u.layer, "channels": [c.channel for c in u.components],
                "key": unit_key(u, self.h)}

    def set(self, unit: Unit, save: bool = True, **fields: Any) -> None:
        """Update one unit's entry (and save)."""
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
            if not is_final(rec):
                if entry.get("status") == "failed" or rec is not None:
                    entry.clear()
                    entry.update(self._describe(u))
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
        """Recount the units by status and write the manifest atomically."""
        counts: dict[str, int] = {}
        for u in self.data["units"].values():
            counts[u["status"]] = counts.get(u["status"], 0) + 1
        self.data["counts"] = counts
        dio.write_json(self.path, self.data)

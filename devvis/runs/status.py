"""Where a run stands: what is left to do, summaries of a run, and :func:`sweep_status` for a run folder."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from devvis import io as dio
from devvis.errors import OutputError
from devvis.runs.plan import Unit
from devvis.runs.records import UnitRecords
from devvis.runs.settings import RunSettings
from devvis.runs.unit import unit_complete
from devvis.typing import PathLike


@dataclass
class VisualizeSummary:
    """What :func:`~devvis.runs.run_visualize` did: units done, skipped (already complete) and failed, and the manifest."""

    done: int = 0
    skipped: int = 0
    failed: int = 0
    failures: list[str] = field(default_factory=list)
    manifest: Path | None = None
    time_s: float = 0.0


@dataclass
class SweepSummary:
    """The state of a sweep when :func:`~devvis.runs.run_sweep` returns.

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


def pending_units(settings: RunSettings, units: Sequence[Unit], records: UnitRecords, h: str) -> list[Unit]:
    """Units to run: all with ``overwrite``, else those whose files are not complete (the complete ones are
    recorded done, see :meth:`UnitRecords.mark_done`)."""
    out = Path(settings.output_path)
    todo = []
    for u in units:
        if not settings.overwrite and unit_complete(u, settings, out, h):
            records.mark_done(u, h)
        else:
            todo.append(u)
    return todo


def summarize(summary: SweepSummary, records: UnitRecords, units: Sequence[Unit], h: str) -> SweepSummary:
    """Count ``units`` by their records into ``summary`` (done, failed with errors, pending)."""
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
        """``{"done": n, "pending": n, "failed": n}``."""
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


def sweep_status(run_dir: PathLike) -> SweepStatus:
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

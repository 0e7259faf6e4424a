"""The torchrun executor: under ``torchrun --nproc-per-node=K``, rank ``r`` of ``K`` runs every ``K``-th
pending unit and rank 0 merges the manifest."""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Callable

from devvis.errors import ConfigError
from devvis.runs.plan import Unit, plan_run
from devvis.runs.records import Manifest, UnitRecords, remove_stale_temp_files, retry_queue
from devvis.runs.settings import ExecutorOptions, RunSettings
from devvis.runs.status import SweepSummary, pending_units, summarize
from devvis.runs.unit import execute_units


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


def run_torchrun(settings: RunSettings, options: ExecutorOptions, dist_env: tuple[int, int, int], *,
                 log: Callable[[str], None], progress: bool) -> SweepSummary:
    """Run this rank's share of the sweep (every rank calls it; each returns the same summary)."""
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
        if plan.first_index < 0:
            summary.failed = len(plan.checkpoints)
            summary.failures = {ck.dir: msg for ck, msg in zip(plan.checkpoints, plan.failures)}
            return summary
        out, h = Path(settings.output_path), plan.settings_hash
        records = UnitRecords(out)
        manifest = None
        if rank == 0:
            out.mkdir(parents=True, exist_ok=True)
            remove_stale_temp_files(out)
            manifest = Manifest(out, settings, plan.checkpoints, plan.units, h)
            summary.manifest = manifest.path
        tdist.barrier()  # every rank sees the same files when it decides what is left to do
        todo = pending_units(settings, plan.units, records, h) if rank == 0 else None
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
                execute_units(settings, plan.series, plan.checkpoints, mine, h, records=records,
                              worker=f"torchrun:rank{rank}", catch=(Exception,), preloaded=preloaded,
                              on_outcome=lambda o: bar.update(1))
            finally:
                bar.close()
            preloaded = {}
            tdist.barrier()
            attempt += 1
            holder = [retry_queue(records, queue, h) if rank == 0 and attempt <= options.retries else []]
            for u in holder[0]:
                records.queue(u, h, by=f"torchrun try {attempt + 1}")
            tdist.broadcast_object_list(holder, src=0)
            queue = holder[0]
            if queue:
                say(f"sweep: retrying {len(queue)} failed units (retry {attempt} of {options.retries})")
        if manifest is not None:
            manifest.merge(records)
        summary.manifest = out / "manifest.json"
        summarize(summary, records, plan.units, h)
        summary.time_s = time.time() - t0
        return summary
    finally:
        if created:
            tdist.destroy_process_group()

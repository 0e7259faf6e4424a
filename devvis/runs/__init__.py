"""The engine of ``devvis visualize`` and ``devvis sweep``, built only from library pieces.

- :mod:`~devvis.runs.settings`: :class:`RunSettings` (one dataclass: CLI flags and YAML keys)
  and :class:`ExecutorOptions`;
- :mod:`~devvis.runs.plan`: checkpoints (a :class:`~devvis.longitudinal.CheckpointSeries`) x
  layers x batches of components = units;
- :mod:`~devvis.runs.unit`: one unit = one :func:`devvis.render` call; its images and records
  written through :mod:`devvis.results`;
- :mod:`~devvis.runs.records`: unit status records and ``manifest.json``;
- :mod:`~devvis.runs.executors`: ``local``, ``slurm``, ``torchrun``;
- :mod:`~devvis.runs.status`: summaries and :func:`sweep_status`;
- :mod:`~devvis.runs.run`: :func:`run_visualize` and :func:`run_sweep`.
"""

from devvis.runs.executors.local import JobSpec, job_chunks, run_job
from devvis.runs.executors.slurm import slurm_states
from devvis.runs.executors.torchrun import distributed_env
from devvis.runs.plan import CheckpointEntry, Component, RunPlan, Unit, checkpoint_entries, checkpoint_series, plan_run, unit_key
from devvis.runs.records import Manifest, UnitRecords
from devvis.runs.run import run_sweep, run_visualize
from devvis.runs.settings import (
    AGGREGATIONS,
    EXECUTORS,
    LR_SCHEDULES,
    ExecutorOptions,
    RunSettings,
    VisualizeSettings,
    add_flags,
    from_args,
    load_config,
    parse_neurons,
    settings_from_mapping,
)
from devvis.runs.status import SweepStatus, SweepSummary, UnitState, VisualizeSummary, sweep_status
from devvis.runs.unit import UnitOutcome, execute_units, render_unit, unit_complete, unit_files, unit_objective

__all__ = [
    "AGGREGATIONS", "EXECUTORS", "LR_SCHEDULES", "CheckpointEntry", "Component", "ExecutorOptions", "JobSpec",
    "Manifest", "RunPlan", "RunSettings", "SweepStatus", "SweepSummary", "Unit", "UnitOutcome", "UnitRecords",
    "UnitState", "VisualizeSettings", "VisualizeSummary", "add_flags", "checkpoint_entries", "checkpoint_series",
    "distributed_env", "execute_units", "from_args", "job_chunks", "load_config", "parse_neurons", "plan_run",
    "render_unit", "run_job", "run_sweep", "run_visualize", "settings_from_mapping", "slurm_states", "sweep_status",
    "unit_complete", "unit_files", "unit_key", "unit_objective",
]

"""``devvis sweep``: ``devvis visualize`` over many checkpoints x layers x channels, on SLURM, torchrun or local processes.

    devvis sweep sweep.yaml                                   # settings (and executor) from a YAML file
    devvis sweep --model resnet18 --checkpoint-path ckpts/ --executor slurm --slurm-gpus 1
    torchrun --standalone --nproc-per-node=4 -m devvis.cli sweep sweep.yaml
    devvis sweep --status results/                            # done / pending / failed units, with errors
"""

from __future__ import annotations

import argparse
import os
import sys

from devvis.commands.visualize import add_visualize_flags, settings_from_args

HELP = "run a visualization sweep with SLURM (submitit), torchrun or local processes; resumable"


def add_sweep_flags(p: argparse.ArgumentParser) -> None:
    """Executor flags of ``devvis sweep`` (defaults from :class:`~devvis.sweep.ExecutorOptions`)."""
    from devvis.sweep import EXECUTORS, ExecutorOptions

    d = ExecutorOptions()
    g = p.add_argument_group("executor")
    g.add_argument("--executor", choices=EXECUTORS, default=d.executor,
                   help="local processes, SLURM job arrays (needs devvis[slurm]), or torchrun (chosen "
                        "automatically under torchrun)")
    g.add_argument("--workers", type=int, default=d.workers, help="local worker processes (1 = this process)")
    g.add_argument("--units-per-job", type=int, default=d.units_per_job,
                   help="units per local task or SLURM array task (1 = one log per unit)")
    g.add_argument("--retries", type=int, default=d.retries,
                   help="retries of units whose failure may be transient or whose job died")
    g.add_argument("--threads", type=int, default=d.threads,
                   help="torch CPU threads per worker (default: --slurm-cpus on SLURM, CPUs/workers locally)")
    s = p.add_argument_group("SLURM")
    s.add_argument("--slurm-partition", default=d.partition, help="partition (default: the cluster's default)")
    s.add_argument("--slurm-time", type=int, default=d.time_min, help="time limit per array task, minutes")
    s.add_argument("--slurm-gpus", type=int, default=d.gpus_per_node, help="GPUs per task")
    s.add_argument("--slurm-cpus", type=int, default=d.cpus_per_task, help="CPUs per task")
    s.add_argument("--slurm-mem-gb", type=float, default=d.mem_gb, help="memory per task, GB")
    s.add_argument("--slurm-array-parallelism", type=int, default=d.array_parallelism,
                   help="array tasks running at once")
    s.add_argument("--slurm-job-name", default=d.job_name, help="job name")
    s.add_argument("--slurm-setup", nargs="+", default=list(d.setup), metavar="LINE",
                   help="shell lines run before each task (e.g. 'module load cuda')")
    s.add_argument("--slurm-param", nargs="+", default=[], metavar="KEY=VALUE",
                   help="extra sbatch options, e.g. account=lab qos=low constraint=a100")
    s.add_argument("--poll-interval", type=float, default=d.poll_s, help="seconds between looks at the queue")
    s.add_argument("--lost-after", type=float, default=d.lost_after_s,
                   help="seconds after a job leaves the queue before its unfinished units count as lost")


def register(sub) -> None:
    p = sub.add_parser("sweep", help=HELP, description=HELP + ". Flags given on the command line override the "
                       "config file.", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("config", nargs="?", default=None, metavar="CONFIG.yaml",
                   help="sweep config: keys are visualize settings (model, checkpoint_paths, layer_names, ...) plus "
                        "an 'executor' section")
    p.add_argument("--status", default=None, metavar="RUN_DIR",
                   help="print done / pending / failed units of a run folder (with errors) and exit")
    add_visualize_flags(p)
    add_sweep_flags(p)
    p.set_defaults(func=run)


def _defaults() -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("config", nargs="?", default=None)
    p.add_argument("--status", default=None)
    add_visualize_flags(p)
    add_sweep_flags(p)
    return p.parse_args([])


def options_from_args(args: argparse.Namespace):
    """:class:`~devvis.sweep.ExecutorOptions` from parsed flags."""
    from devvis.errors import ConfigError
    from devvis.sweep import ExecutorOptions

    params = {}
    for item in args.slurm_param:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"invalid --slurm-param {item!r}; expected KEY=VALUE, e.g. account=lab")
        params[key.replace("-", "_")] = value
    return ExecutorOptions(
        executor=args.executor, workers=args.workers, units_per_job=args.units_per_job, retries=args.retries,
        threads=args.threads, partition=args.slurm_partition, time_min=args.slurm_time, gpus_per_node=args.slurm_gpus,
        cpus_per_task=args.slurm_cpus, mem_gb=args.slurm_mem_gb, array_parallelism=args.slurm_array_parallelism,
        job_name=args.slurm_job_name, setup=list(args.slurm_setup), slurm_parameters=params,
        poll_s=args.poll_interval, lost_after_s=args.lost_after)


def _overlay(base, flags, defaults):
    """``base`` with every field where ``flags`` differs from ``defaults`` (i.e. given on the command line)."""
    import dataclasses

    changed = {f.name: getattr(flags, f.name) for f in dataclasses.fields(flags)
               if getattr(flags, f.name) != getattr(defaults, f.name)}
    return dataclasses.replace(base, **changed)


def resolve(args: argparse.Namespace):
    """Settings and executor options of a ``devvis sweep`` call: the config file (if any), then the flags.

    A flag overrides the config when its value differs from the flag's default.
    """
    from devvis.sweep import load_config

    settings, options = settings_from_args(args), options_from_args(args)
    if args.config is not None:
        d = _defaults()
        file_settings, file_options = load_config(args.config)
        settings = _overlay(file_settings, settings, settings_from_args(d))
        if args.min_iterations == d.min_iterations:
            # settings_from_args clamps --min-iterations to --max-iterations; only an explicit flag
            # may replace the config's value, and the result is clamped the same way.
            settings.min_iterations = min(file_settings.min_iterations, settings.max_iterations)
        options = _overlay(file_options, options, options_from_args(d))
    settings.validate()
    options.validate()
    return settings, options


def run(args: argparse.Namespace) -> int:
    from devvis.errors import ConfigError
    from devvis.sweep import run_sweep, sweep_status

    if args.status is not None:
        if args.config is not None:
            raise ConfigError(f"--status {args.status!r} reads a run folder; do not also give a config "
                              f"({args.config!r})")
        print(sweep_status(args.status).format())
        return 0
    settings, options = resolve(args)
    summary = run_sweep(settings, options, log=lambda msg: print(msg, flush=True))
    if summary.executor != "torchrun" or os.environ.get("RANK", "0") == "0":  # one report, not one per rank
        for uid, err in summary.failures.items():
            what = f"unit {uid}: " if summary.units else ""  # no units: every checkpoint failed to load
            sys.stderr.write(f"devvis: error: {what}{str(err).splitlines()[0] if err else 'failed'}\n")
        print(f"sweep: {summary.done} of {summary.units} units done ({summary.skipped} were already complete), "
              f"{summary.failed} failed, {summary.pending} pending; manifest: {summary.manifest}; "
              f"{summary.time_s:.1f} s")
    return 2 if summary.failed or summary.pending else 0

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
from devvis.runs.settings import ExecutorOptions, add_flags, from_args

HELP = "run a visualization sweep with SLURM (submitit), torchrun or local processes; resumable"


def add_sweep_flags(p: argparse.ArgumentParser) -> None:
    """Executor flags of ``devvis sweep``: one per :class:`~devvis.runs.ExecutorOptions` field."""
    add_flags(p, ExecutorOptions)


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
    p.set_defaults(func=run, resumable=True)


def _defaults() -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("config", nargs="?", default=None)
    p.add_argument("--status", default=None)
    add_visualize_flags(p)
    add_sweep_flags(p)
    return p.parse_args([])


def options_from_args(args: argparse.Namespace) -> ExecutorOptions:
    """:class:`~devvis.runs.ExecutorOptions` from parsed flags."""
    return from_args(ExecutorOptions, args)


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
    from devvis.runs import load_config

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
    from devvis.runs import run_sweep, sweep_status

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

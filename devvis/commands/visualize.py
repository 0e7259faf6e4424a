"""``devvis visualize``: feature visualizations of chosen components at every checkpoint."""

from __future__ import annotations

import argparse
import sys

from devvis.runs.settings import RunSettings, add_flags, from_args

HELP = "render feature visualizations of layers/channels at every checkpoint"


def add_visualize_flags(p: argparse.ArgumentParser) -> None:
    """The flags of ``devvis visualize`` (shared with ``devvis sweep``): one per :class:`RunSettings` field."""
    add_flags(p, RunSettings)


def settings_from_args(args: argparse.Namespace) -> RunSettings:
    """:class:`~devvis.runs.RunSettings` from parsed flags."""
    return from_args(RunSettings, args)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("visualize", help=HELP, description=HELP,
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_visualize_flags(p)
    p.set_defaults(func=run, resumable=True)


def run(args: argparse.Namespace) -> int:
    from devvis.runs import checkpoint_series, run_visualize

    settings = settings_from_args(args)
    settings.validate()
    series = checkpoint_series(settings)
    print(series.order() if series is not None else "checkpoint order: random_init (no --checkpoint-path)", flush=True)

    def report(msg: str) -> None:
        sys.stderr.write(f"devvis: error: {msg.splitlines()[0]}\n")

    summary = run_visualize(settings, on_failure=report)
    print(f"done {summary.done} units, skipped {summary.skipped} already complete, failed {summary.failed}; "
          f"manifest: {summary.manifest or 'none written (no checkpoint loaded)'}")
    return 2 if summary.failed else 0

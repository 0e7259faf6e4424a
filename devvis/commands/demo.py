"""``devvis demo``: train a small model on synthetic data and show its features developing (report.html)."""

from __future__ import annotations

import argparse

HELP = "train a small model on synthetic data, analyse its checkpoints, write report.html"


def register(sub) -> None:
    p = sub.add_parser("demo", help=HELP, description=HELP, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--output-path", default="demo_output", help="folder for checkpoints, results and the report")
    p.add_argument("--quick", action="store_true", help="a smaller run: fewer units, shorter renders, fewer circuit channels and dataset images")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="hide progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from devvis.demo import run_demo

    run_demo(args.output_path, quick=args.quick, progress=args.progress)
    return 0

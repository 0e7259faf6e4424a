"""``devvis report RESULTS_DIR``: a self-contained HTML page over a results folder."""

from __future__ import annotations

import argparse

HELP = "write a self-contained report.html over a results folder"


def register(sub) -> None:
    p = sub.add_parser("report", help=HELP, description=HELP, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("results_dir", help="folder written by visualize/track/llc/circuits/demo")
    p.add_argument("--output", default=None, help="HTML file to write (default: RESULTS_DIR/report.html)")
    p.add_argument("--title", default="devvis report", help="page title")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from devvis.report import write_report

    path = write_report(args.results_dir, args.output, title=args.title)
    print(f"wrote {path}")
    return 0

"""``devvis report RESULTS_DIR``: the report's static site over a results folder (see docs/report.md)."""

from __future__ import annotations

import argparse

HELP = ("write the report over a results folder: an overview page (report.html) and beside it report_files/ "
        "with a page per layer and per unit; opens from disk, no server")


def register(sub) -> None:
    p = sub.add_parser("report", help=HELP, description=HELP, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("results_dir", help="folder written by visualize/track/trust/llc/circuits/stages/demo")
    p.add_argument("--output", default=None,
                   help="overview page to write; its other pages go into the folder beside it named "
                        "<name>_files (default: RESULTS_DIR/report.html)")
    p.add_argument("--title", default="devvis report", help="page title")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from devvis.report import write_report

    path = write_report(args.results_dir, args.output, title=args.title)
    print(f"wrote {path} (open it in a browser; the unit pages are in {path.parent / (path.stem + '_files')})")
    return 0

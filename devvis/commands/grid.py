"""``devvis grid``: a comparison grid (rows: components, columns: checkpoints) of a results folder."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "draw a grid of feature visualizations: rows = components, columns = checkpoints"


def register(sub) -> None:
    p = sub.add_parser("grid", help=HELP, description=HELP, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("results_dir", metavar="RESULTS_DIR",
                   help="folder written by `devvis visualize` (manifest.json + step_* folders) or by SeriesResult.save")
    p.add_argument("--output", default=None, help="PNG to write (default: RESULTS_DIR/longitudinal/grid.png)")
    p.add_argument("--components", nargs="+", default=None, metavar="LAYER:C", help="rows to show, in order (default: all)")
    p.add_argument("--image-index", type=int, default=0, help="which image of each component")
    p.add_argument("--cell-size", type=int, default=None, help="cell side in pixels (default: image size, at least 64)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from devvis.errors import ConfigError
    from devvis.longitudinal import comparison_grid

    if args.cell_size is not None and args.cell_size < 1:
        raise ConfigError(f"--cell-size must be a positive integer, got {args.cell_size}")
    out = Path(args.output) if args.output else Path(args.results_dir) / "longitudinal" / "grid.png"
    img = comparison_grid(args.results_dir, args.components, output_path=out, image_index=args.image_index,
                          cell_size=args.cell_size)
    print(f"wrote {out} ({img.size[0]}x{img.size[1]} px) and {out.with_suffix('.json')}")
    return 0

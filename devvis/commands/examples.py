"""``devvis examples``: each unit's top-k dataset examples and receptive-field crops at every checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path

from devvis.commands.activations import series_from_args
from devvis.commands.trust import add_dataset_flags, dataset_from_args

HELP = "find each unit's top-k dataset examples and their receptive-field crops at every checkpoint"


def register(sub) -> None:
    p = sub.add_parser("examples", help=HELP, description=HELP,
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_dataset_flags(p)
    p.add_argument("--output-path", default="results/trust/examples", help="folder for examples.json and montages")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from devvis.trust import dataset_examples

    dataset = dataset_from_args(args)
    ex = dataset_examples(series_from_args(args), args.units, dataset, k=args.k, batch_size=args.batch_size,
                          image_size=args.dataset_size, preprocess=args.preprocess, progress=args.progress)
    files = ex.save(args.output_path)
    for label, u in ex.units.items():
        print(f"{label}: top-{u.k} of {ex.n_images} images at {len(u.steps)} checkpoints; dataset maximum "
              + ", ".join(f"{v:.3g}" for v in u.dataset_max))
    print(f"wrote {len(files)} files to {args.output_path} (records: {Path(args.output_path) / 'examples.json'})")
    return 0


"""``devvis trust``: dataset examples, visualizations and trust verdicts per unit and checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from devvis.commands._common import add_bool
from devvis.commands.activations import add_series_flags, series_from_args
from devvis.errors import ConfigError

HELP = ("check how far each unit's feature visualization can be trusted, at every checkpoint: top-k dataset "
        "examples with receptive-field crops, five trust metrics and a verdict")


def add_dataset_flags(p: argparse.ArgumentParser) -> None:
    """Series flags, ``--units``, ``--dataset`` and the example search (shared with ``devvis examples``)."""
    add_series_flags(p)
    p.add_argument("--units", nargs="+", required=True, metavar="LAYER:C", help="units, e.g. layer2.0:3")
    p.add_argument("--dataset", required=True, metavar="PATH|synthetic",
                   help="natural images: an image folder, a .pt file holding an (N, 3, H, W) tensor in [0, 1], "
                        "or 'synthetic' (held-out SyntheticShapes images)")
    p.add_argument("--dataset-size", type=int, default=64,
                   help="side the images of a folder (or of 'synthetic') are resized/rendered to")
    p.add_argument("--n-images", type=int, default=512, help="number of 'synthetic' images")
    p.add_argument("--k", type=int, default=9, help="top dataset examples per unit and checkpoint")
    p.add_argument("--batch-size", type=int, default=64, help="images per forward pass")
    add_bool(p, "progress", True, "progress bars")


def dataset_from_args(args: argparse.Namespace) -> Any:
    """The ``--dataset`` flag as a library dataset: a folder path, a tensor or a SyntheticShapes."""
    for name in ("dataset_size", "n_images", "k", "batch_size"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}")
    if args.dataset == "synthetic":
        from devvis.data import SyntheticShapes

        return SyntheticShapes(args.n_images, args.dataset_size, seed=0, split="test")
    path = Path(args.dataset)
    if path.is_dir():
        return str(path)
    if path.is_file() and path.suffix == ".pt":
        from devvis.commands._common import load_inputs

        return load_inputs(str(path), 0, 0, 0)
    raise ConfigError(f"--dataset {args.dataset!r} is neither an image folder, a .pt file nor 'synthetic'")


def register(sub) -> None:
    p = sub.add_parser("trust", help=HELP, description=HELP, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_dataset_flags(p)
    p.add_argument("--output-path", default="results/trust", help="folder for trust.json, examples/, visualizations/")
    p.add_argument("--seeds", type=int, default=3, help="visualizations per unit from independent random starts")
    p.add_argument("--steps", type=int, default=128, help="optimization steps per render")
    p.add_argument("--image-size", type=int, default=64, help="visualization size (pixels)")
    p.add_argument("--seed", type=int, default=0, help="seed of the renders and of the random natural images")
    p.add_argument("--n-random", type=int, default=32, help="random natural images for the metrics' baselines")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from devvis.trust import trust

    for name in ("seeds", "steps", "image_size", "n_random"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}")
    dataset = dataset_from_args(args)
    series = series_from_args(args)
    res = trust(series, args.units, dataset, k=args.k, seeds=args.seeds, steps=args.steps,
                image_size=args.image_size, seed=args.seed, preprocess=args.preprocess, n_random=args.n_random,
                batch_size=args.batch_size, dataset_image_size=args.dataset_size, progress=args.progress)
    files = res.save(args.output_path)
    for line in res.summary_lines():
        print(line)
    print(f"wrote {len(files)} files to {args.output_path} (verdicts: {Path(args.output_path) / 'trust.json'})")
    return 0

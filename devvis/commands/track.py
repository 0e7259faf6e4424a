"""``devvis track``: render components at every checkpoint and write their feature-change analysis."""

from __future__ import annotations

import argparse

from devvis.commands._common import add_bool
from devvis.commands.activations import add_series_flags, series_from_args

HELP = "track how features change across checkpoints: similarity to the final feature, settle step, grid"


def register(sub) -> None:
    p = sub.add_parser("track", help=HELP, description=HELP, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_series_flags(p)
    p.add_argument("--components", nargs="+", required=True, metavar="LAYER:C", help="components, e.g. layer2.0:3")
    p.add_argument("--output-path", default="results/longitudinal", help="folder for PNGs, JSONs and renders")
    p.add_argument("--steps", type=int, default=128, help="optimization steps per render")
    p.add_argument("--image-size", type=int, default=64, help="feature image size (pixels)")
    p.add_argument("--lr", type=float, default=0.05, help="learning rate of the renders")
    p.add_argument("--seed", type=int, default=0, help="seed shared by every checkpoint's render")
    p.add_argument("--threshold", type=float, default=0.8, help="similarity above which a feature counts as settled")
    p.add_argument("--tolerance", type=float, default=0.05,
                   help="similarities above 1 + this are refused as not comparable")
    p.add_argument("--baseline", choices=("grey", "dataset_mean", "none"), default="grey",
                   help="neutral image whose response is subtracted before the similarity (dataset_mean: the mean "
                        "of the --examples SyntheticShapes images)")
    add_bool(p, "appearance", True, "appearance distance between checkpoints' visualizations (early layers)")
    p.add_argument("--top-k", type=int, default=0,
                   help="also find each checkpoint's top-k SyntheticShapes examples (0: off)")
    p.add_argument("--examples", type=int, default=256, help="number of SyntheticShapes images searched by --top-k "
                                                                 "(and averaged by --baseline dataset_mean)")
    p.add_argument("--examples-size", type=int, default=32, help="image size of those examples")
    add_bool(p, "progress", True, "progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from devvis.errors import ConfigError
    from devvis.longitudinal import track

    for name in ("steps", "image_size", "examples", "examples_size"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}")
    if args.top_k < 0:
        raise ConfigError(f"--top-k must be >= 0, got {args.top_k}")
    if args.tolerance < 0:
        raise ConfigError(f"--tolerance must be >= 0, got {args.tolerance}")
    series = series_from_args(args)
    loader = None
    if args.top_k or args.baseline == "dataset_mean":
        from devvis.data import SyntheticShapes

        loader = SyntheticShapes(args.examples, args.examples_size, seed=args.seed, split="test")
    out = track(series, args.components, args.output_path, steps=args.steps, image_size=args.image_size,
                seed=args.seed, threshold=args.threshold, tolerance=args.tolerance, baseline=args.baseline,
                appearance=args.appearance, preprocess=args.preprocess, loader=loader, k=args.top_k, lr=args.lr,
                progress=args.progress)
    for label, fc in out.changes.items():
        settled = f"settles at step {fc.settle_step}" if fc.settle_step is not None else fc.settle_status
        line = (f"{label}: {settled} (threshold {fc.threshold:g}, baseline {fc.baseline.split(':')[0]}; similarity "
                + ", ".join("nan" if v != v else f"{v:.2f}" for v in fc.similarity) + ")")
        if fc.appearance is not None:
            line += "; looks apart from final: " + ", ".join(f"{v:.2f}" for v in fc.appearance.to_final)
        print(line)
        if fc.settle_step is None:
            print(f"  {fc.settle_reason}")
    print(f"wrote {len(out.files)} files to {out.output_dir} (summary: {out.output_dir / 'track.json'})")
    return 0

"""``devvis activations``: one channel's response to fixed probe images at every checkpoint (PNG + JSON)."""

from __future__ import annotations

import argparse
from pathlib import Path

from typing import TYPE_CHECKING

from devvis.commands._common import add_bool, add_checkpoint_flags, load_inputs, open_series
from devvis.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover - for type checkers only
    from devvis.longitudinal import CheckpointSeries

HELP = "plot how strongly one channel responds to probe images across checkpoints"


def add_series_flags(p: argparse.ArgumentParser) -> None:
    """The checkpoint flags (:func:`~devvis.commands._common.add_checkpoint_flags`), shared with ``devvis track``."""
    add_checkpoint_flags(p)


def series_from_args(args: argparse.Namespace) -> "CheckpointSeries":
    """The series of the checkpoint flags, its step <- file mapping printed (``args.preprocess`` goes to the
    library as it is: ``"auto"`` is resolved there, per model)."""
    return open_series(args)


def register(sub) -> None:
    p = sub.add_parser("activations", help=HELP, description=HELP,
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_series_flags(p)
    p.add_argument("--layer", required=True, help="layer name, e.g. layer2.0")
    p.add_argument("--channel", type=int, required=True, help="channel of the layer")
    p.add_argument("--inputs", default="visualizations", metavar="synthetic|visualizations|FILE.pt",
                   help="probe images: the final checkpoint's feature visualizations of the channel, "
                        "held-out SyntheticShapes images, or a .pt file holding an (N, 3, H, W) tensor in [0, 1]")
    p.add_argument("--n-inputs", type=int, default=64, help="number of synthetic probe images")
    p.add_argument("--image-size", type=int, default=32, help="side of synthetic probe images")
    p.add_argument("--probe-steps", type=int, default=256, help="render steps of the visualization probe")
    p.add_argument("--probe-size", type=int, default=64, help="image size of the visualization probe")
    p.add_argument("--probe-images", type=int, default=4, help="number of visualizations in the probe")
    p.add_argument("--seed", type=int, default=0, help="seed of the probe images")
    p.add_argument("--band", choices=("std", "iqr"), default="std", help="spread band: mean ± std, or 25-75th percentile")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--output-path", default="results/longitudinal", help="folder for the PNG and JSON")
    add_bool(p, "progress", True, "progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from devvis.longitudinal import get_activations, plot_longitudinal_activations

    for name in ("n_inputs", "image_size", "probe_steps", "probe_size", "probe_images", "batch_size"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}")
    series = series_from_args(args)
    inputs = load_inputs(args.inputs, args.n_inputs, args.image_size, args.seed)
    probe = None
    if inputs is None:
        probe = {"steps": args.probe_steps, "image_size": args.probe_size, "batch": args.probe_images, "seed": args.seed}
    acts = get_activations(None, args.layer, args.channel, series, inputs, preprocess=args.preprocess,
                           batch_size=args.batch_size, probe_render=probe, progress=args.progress)
    safe = args.layer.replace("/", "_")
    png = plot_longitudinal_activations(acts, args.layer, args.channel,
                                        Path(args.output_path) / f"activations_{safe}_channel_{args.channel}.png",
                                        band=args.band)
    print(f"{len(acts.steps)} checkpoints x {acts.values.shape[1]} probe images ({acts.inputs['kind']}); "
          f"mean activation {acts.mean[0]:.4g} at step {acts.steps[0]} -> {acts.mean[-1]:.4g} at step {acts.steps[-1]}")
    print(f"wrote {png} and {png.with_suffix('.json')}")
    return 0

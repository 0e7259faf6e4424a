"""``devvis circuits``: a channel's strongest upstream channels across checkpoints, and when each settles.

    devvis circuits --checkpoint-path runs/zoo --source-layer layer1.0 --target-layer layer2.0 --channel 3 -k 4
"""

from __future__ import annotations

import argparse

from devvis.commands._common import add_bool, add_checkpoint_flags, open_series

HELP = "top upstream channels of a channel over training: influence, expanded weights, settle steps"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``circuits`` sub-parser."""
    from devvis.circuits import DEFAULT_RENDER, METHODS

    p = subparsers.add_parser("circuits", help=HELP, description=HELP,
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("what to analyse")
    add_checkpoint_flags(g)
    g.add_argument("--source-layer", required=True, help="layer whose channels feed the target (upstream)")
    g.add_argument("--target-layer", required=True, help="layer of the target channel")
    g.add_argument("--channel", type=int, required=True, help="target channel")
    g.add_argument("-k", "--top-k", dest="k", type=int, default=6, help="upstream channels to show")
    g.add_argument("--method", choices=METHODS, default="grad_x_act", help="influence attribution method")
    g.add_argument("--threshold", type=float, default=0.8, help="similarity at which a feature counts as settled")
    g.add_argument("--crop", type=int, default=5, help="size of the expanded-weight kernel (k x k)")
    g.add_argument("--probe-images", type=int, default=16, help="synthetic probe images for the influences")
    g.add_argument("--probe-size", type=int, default=32, help="side of the probe images (pixels)")
    r = p.add_argument_group("feature visualization")
    r.add_argument("--steps", type=int, default=DEFAULT_RENDER["steps"], help="optimization steps per render")
    r.add_argument("--image-size", type=int, default=DEFAULT_RENDER["image_size"], help="feature image size (pixels)")
    r.add_argument("--seed", type=int, default=0, help="seeds the initial images and the transforms")
    o = p.add_argument_group("output")
    o.add_argument("--output-path", default="results", help="results folder; figure and JSON go to its circuits/")
    add_bool(o, "progress", True, "progress bars")
    p.set_defaults(func=run)


def _positive(name: str, value: int) -> None:
    from devvis.errors import ConfigError

    if value < 1:
        raise ConfigError(f"--{name} must be a positive integer; got {value}")


def run(args: argparse.Namespace) -> int:
    """Run the analysis and write ``circuits/composition_*.png`` and ``.json`` under ``--output-path``."""
    from pathlib import Path

    from devvis.circuits import composition
    from devvis.data import probe_batch

    for name in ("k", "crop", "probe_images", "probe_size", "steps", "image_size"):
        _positive(name.replace("_", "-") if name != "k" else "top-k", getattr(args, name))
    series = open_series(args)
    result = composition(
        series, args.source_layer, args.target_layer, args.channel, k=args.k,
        inputs=probe_batch(args.probe_images, args.probe_size),
        output_dir=Path(args.output_path) / "circuits",
        render_kwargs={"steps": args.steps, "image_size": args.image_size},
        preprocess=args.preprocess, method=args.method,
        threshold=args.threshold, crop=args.crop, seed=args.seed, progress=args.progress,
    )
    settle = result.target_settle_step
    print(f"target {args.target_layer}:{args.channel} settles at step {settle if settle is not None else 'never'} "
          f"(threshold {args.threshold:g}; steps {result.steps})")
    print(f"top {len(result.upstream)} upstream channels in {args.source_layer} at step {result.steps[-1]}:")
    for u in result.upstream:
        when = u.settle_step if u.settle_step is not None else "never"
        print(f"  channel {u.channel:4d}  influence {u.influence:+.4g}  settles {when}"
              f"{'  (before the target)' if u.earlier else ''}")
    print(f"wrote {result.figure_path} and {result.json_path}")
    return 0

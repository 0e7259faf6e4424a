"""``devvis train``: train the compact ResNet on SyntheticShapes and save a checkpoint series.

    devvis train --output-path model_checkpoints/ --steps 1000
    devvis train --output-path quick/ --steps 300 --width 8 --n-train 3000 --threads 1   # ~20 s
    devvis train --output-path curriculum/ --curriculum --steps 300 --width 8 --image-size 16 \
        --n-train 2400 --n-test 240 --batch-size 64 --optimizer adam --lr 0.005 --threads 1   # stages at 100, 200
"""

from __future__ import annotations

import argparse

NAME = "train"


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``train`` subcommand to ``subparsers``."""
    p = subparsers.add_parser(
        NAME,
        help="train a compact ResNet on synthetic shapes, saving checkpoints at log-spaced steps",
        description="Train devvis's compact ResNet on the SyntheticShapes data set (generated on the fly, "
        "no download) and save step_NNNNNN.safetensors checkpoints at steps 0, 1, 2, 4, ... and the final "
        "step, with model_config.json and series.json. A finished series with the same settings is reused.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--output-path", required=True, help="folder for the checkpoints, model_config.json and series.json")
    p.add_argument("--steps", type=int, default=1000, help="optimizer steps")
    p.add_argument("--batch-size", type=int, default=64, help="images per step")
    p.add_argument("--lr", type=float, default=0.05, help="peak learning rate (warm-up, then cosine decay); about 0.003 suits adam")
    p.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd", help="SGD with Nesterov momentum, or AdamW")
    p.add_argument("--weight-decay", type=float, default=5e-4, help="weight decay of conv and linear weights")
    p.add_argument("--width", type=int, default=16, help="channels of the first stage (doubling per stage)")
    p.add_argument("--blocks", type=int, nargs="+", default=[1, 1, 1], help="BasicBlocks per stage")
    p.add_argument("--image-size", type=int, default=32, help="image side in pixels")
    p.add_argument("--n-train", type=int, default=10000, help="training images (generated once)")
    p.add_argument("--n-test", type=int, default=500, help="held-out images for the accuracy at each checkpoint")
    p.add_argument("--seed", type=int, default=0, help="seed of data, initialization and data order")
    p.add_argument(
        "--checkpoint-steps", type=int, nargs="+", default=None,
        help="steps to save instead of 0, 1, 2, 4, ... (the final step is always saved)",
    )
    p.add_argument(
        "--threads", type=int, default=None,
        help="torch CPU threads while training (default: torch's own); 1 is fastest on a busy shared machine",
    )
    p.add_argument(
        "--curriculum", type=int, nargs="*", default=None, metavar="STEP",
        help="planted curriculum: colour classes first, shapes added at the first STEP, gratings (texture) at the "
             "second (no STEP: at steps/3 and 2*steps/3); checkpoints every steps/30 and a constant learning rate "
             "unless --checkpoint-steps/--schedule say otherwise",
    )
    p.add_argument("--schedule", choices=("cosine", "constant"), default=None,
                   help="learning-rate schedule after the warm-up (default: cosine; constant with --curriculum)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Train (or reuse) the series described by ``args``; print where it is and its final accuracy."""
    from devvis.zoo.train import train_series

    r = train_series(
        args.output_path,
        steps=args.steps,
        checkpoint_steps=args.checkpoint_steps,
        batch_size=args.batch_size,
        lr=args.lr,
        optimizer=args.optimizer,
        weight_decay=args.weight_decay,
        width=args.width,
        blocks=tuple(args.blocks),
        size=args.image_size,
        n_train=args.n_train,
        n_test=args.n_test,
        seed=args.seed,
        threads=args.threads,
        progress=not args.no_progress,
        curriculum=None if args.curriculum is None else (tuple(args.curriculum) or True),
        schedule=args.schedule,
    )
    what = f"{len(r.checkpoints)} checkpoints (steps {', '.join(map(str, r.steps))})"
    if r.reused:
        print(f"reused the finished series with these settings in {r.output_dir}: {what}")
    else:
        print(f"trained in {r.seconds:.1f} s; saved {what} to {r.output_dir}")
    if "curriculum" in r.settings:
        phases = r.settings["curriculum"]["phases"]
        print("curriculum: " + ", ".join(f"{p['name']} from step {p['start']}" for p in phases))
    print(f"final held-out accuracy: {100 * r.final_accuracy:.1f}% (step {r.steps[-1]}, {args.n_test} images)")
    return 0

"""``devvis visualize``: feature visualizations of chosen components at every checkpoint."""

from __future__ import annotations

import argparse
import sys

from devvis.commands._common import add_bool, parse_neurons

HELP = "render feature visualizations of layers/channels at every checkpoint"


def add_visualize_flags(p: argparse.ArgumentParser) -> None:
    """The flags of ``devvis visualize`` (shared with ``devvis sweep``)."""
    from devvis.visualize import AGGREGATIONS, LR_SCHEDULES, VisualizeSettings

    d = VisualizeSettings()
    g = p.add_argument_group("what to visualize")
    g.add_argument("--model", default=None, help="torchvision name, timm:NAME, package.module:callable or zoo name "
                   "(optional when the checkpoint folder holds model_config.json)")
    g.add_argument("--checkpoint-path", nargs="+", default=[], metavar="PATH",
                   help="checkpoint files or folders (ordered by training step); none = random init")
    g.add_argument("--layer-names", nargs="+", default=None, metavar="LAYER", help="layers (default: every conv layer)")
    g.add_argument("--channels", nargs="+", type=int, default=None, metavar="C", help="channels (default: all)")
    g.add_argument("--neurons", default=None, metavar="'h,w;h,w'", help="visualize single neurons at these positions")
    g.add_argument("--aggregation", choices=AGGREGATIONS, default=d.aggregation,
                   help="average: mean over positions; sum: sum over positions; single: the centre neuron")
    g.add_argument("--number-of-images", type=int, default=d.number_of_images, help="images per component")
    g.add_argument("--batch-size", type=int, default=d.batch_size, help="images rendered together in one batch")
    g.add_argument("--trust-checkpoint", action="store_true",
                   help="allow checkpoints that need arbitrary unpickling (can execute code: only for files you trust)")
    o = p.add_argument_group("optimization")
    o.add_argument("--max-iterations", type=int, default=d.max_iterations, help="optimization steps at most")
    o.add_argument("--min-iterations", type=int, default=d.min_iterations, help="steps before convergence may stop")
    o.add_argument("--convergence-threshold", type=float, default=d.convergence_threshold,
                   help="stop when the relative improvement over a window falls below this")
    o.add_argument("--convergence-window", type=int, default=d.convergence_window, help="steps compared by the criterion")
    o.add_argument("--learning-rate", type=float, default=d.learning_rate, help="Adam learning rate")
    o.add_argument("--lr-schedule", choices=LR_SCHEDULES, default=d.lr_schedule, help="learning-rate schedule")
    o.add_argument("--lr-warmup-steps", type=int, default=d.lr_warmup_steps, help="linear warm-up steps")
    o.add_argument("--image-size", type=int, default=d.image_size, help="feature image size (pixels)")
    o.add_argument("--input-size", type=int, default=d.input_size, help="resize to the model's input size after transforms")
    o.add_argument("--preprocess", choices=("auto", "imagenet", "none"), default=d.preprocess,
                   help="input normalization; auto: none for devvis zoo models (trained on [0, 1] images), "
                        "imagenet otherwise")
    o.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default=d.precision, help="autocast precision of the model")
    o.add_argument("--seed", type=int, default=d.seed, help="seeds the initial image and the transforms")
    o.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cpu)")
    r = p.add_argument_group("regularization")
    r.add_argument("--reg-lambda", type=float, default=d.reg_lambda, help="L2 penalty weight")
    r.add_argument("--tv-weight", type=float, default=d.tv_weight, help="total-variation penalty weight")
    r.add_argument("--l1-weight", type=float, default=d.l1_weight, help="L1 penalty weight")
    r.add_argument("--jitter", type=int, default=d.jitter, help="jitter in pixels (0 = off)")
    r.add_argument("--pad", type=int, default=d.pad, help="padding before the transforms")
    r.add_argument("--scale-range", type=float, nargs=2, default=list(d.scale_range), metavar=("MIN", "MAX"), help="random scale range")
    r.add_argument("--rotate-degrees", type=float, default=d.rotate_degrees, help="random rotation range (+/- degrees)")
    r.add_argument("--blur", type=float, default=d.blur, help="Gaussian blur sigma in the transforms (0 = off)")
    add_bool(r, "decorrelate", d.decorrelate, "decorrelated colour parameterization")
    add_bool(r, "fft", d.fft, "Fourier parameterization")
    r.add_argument("--diversity-weight", type=float, default=d.diversity_weight,
                   help="diversity between the images of one component")
    out = p.add_argument_group("output")
    out.add_argument("--output-path", default=d.output_path, help="results folder")
    out.add_argument("--overwrite", action="store_true", help="redo components already complete")
    add_bool(out, "progress", True, "progress bar")


def settings_from_args(args: argparse.Namespace):
    """Build :class:`~devvis.visualize.VisualizeSettings` from parsed flags."""
    from devvis.visualize import VisualizeSettings

    return VisualizeSettings(
        model=args.model, checkpoint_paths=list(args.checkpoint_path), layer_names=args.layer_names,
        channels=args.channels, neurons=parse_neurons(args.neurons), aggregation=args.aggregation,
        number_of_images=args.number_of_images, batch_size=args.batch_size, max_iterations=args.max_iterations,
        min_iterations=min(args.min_iterations, args.max_iterations), convergence_threshold=args.convergence_threshold,
        convergence_window=args.convergence_window, learning_rate=args.learning_rate, lr_schedule=args.lr_schedule,
        lr_warmup_steps=args.lr_warmup_steps, image_size=args.image_size, input_size=args.input_size, preprocess=args.preprocess,
        reg_lambda=args.reg_lambda, tv_weight=args.tv_weight, l1_weight=args.l1_weight, jitter=args.jitter,
        pad=args.pad, scale_range=tuple(args.scale_range), rotate_degrees=args.rotate_degrees, blur=args.blur,
        decorrelate=args.decorrelate, fft=args.fft, diversity_weight=args.diversity_weight,
        precision=args.precision, seed=args.seed, device=args.device, output_path=args.output_path,
        overwrite=args.overwrite, trust_checkpoint=args.trust_checkpoint, progress=args.progress,
    )


def register(sub) -> None:
    p = sub.add_parser("visualize", help=HELP, description=HELP,
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_visualize_flags(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from devvis.visualize import plan_checkpoints, run_visualize

    settings = settings_from_args(args)
    settings.validate()
    order = plan_checkpoints(settings)
    print("checkpoint order: " + ", ".join(f"{c.dir} <- {c.path}" if c.path else c.dir for c in order))

    def report(msg: str) -> None:
        sys.stderr.write(f"devvis: error: {msg.splitlines()[0]}\n")

    summary = run_visualize(settings, on_failure=report)
    print(f"done {summary.done} units, skipped {summary.skipped} already complete, failed {summary.failed}; "
          f"manifest: {summary.manifest or 'none written (no checkpoint loaded)'}")
    return 2 if summary.failed else 0

"""``devvis llc``: estimate the local learning coefficient at every checkpoint.

    devvis llc --model compact_resnet --checkpoint-path ckpts/ --data synthetic --output-path results/

Writes ``<output-path>/slt/llc_trajectory.json`` and ``llc_trajectory.png`` and prints one
line per checkpoint.
"""

from __future__ import annotations

import argparse
import importlib
import math
from pathlib import Path
from typing import Any

from devvis.commands._common import add_checkpoint_flags, open_series
from devvis.errors import ConfigError

HELP = "estimate the local learning coefficient (LLC) at each checkpoint by SGLD"


def register(sub) -> None:
    p = sub.add_parser("llc", help=HELP, description=HELP, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_checkpoint_flags(p, preprocess=False)
    p.add_argument("--data", default="synthetic",
                   help="'synthetic' (devvis.data.SyntheticShapes) or 'package.module:callable' returning a "
                        "Dataset or DataLoader of (image, label) batches")
    p.add_argument("--num-samples", type=int, default=512, help="size of the synthetic data set")
    p.add_argument("--image-size", type=int, default=32, help="image size of the synthetic data set")
    p.add_argument("--output-path", default="results", help="results folder; files go to OUTPUT/slt/")
    p.add_argument("--sampler", default="sgld", choices=["sgld", "rmsprop_sgld"], help="SGLD variant")
    p.add_argument("--lr", type=float, default=None,
                   help="SGLD step size ε (default: 1e-4, flagged uncalibrated; or chosen by --calibrate)")
    p.add_argument("--localization", type=float, default=None,
                   help="localization strength γ (default: 100, flagged uncalibrated; or chosen by --calibrate)")
    p.add_argument("--calibrate", action="store_true",
                   help="choose lr, localization and nβ automatically (devvis.slt.calibrate): healthy at the first, "
                        "middle and last checkpoints and stable in lr at the last; writes OUTPUT/slt/calibration.json "
                        "and calibration.png")
    p.add_argument("--nbeta", type=float, default=None, help="inverse temperature nβ (default: m/log m, m = batch size)")
    p.add_argument("--num-chains", type=int, default=4, help="independent SGLD chains")
    p.add_argument("--num-draws", type=int, default=200, help="draws per chain after burn-in")
    p.add_argument("--num-burnin-steps", type=int, default=0, help="steps discarded at the start of each chain")
    p.add_argument("--num-steps-bw-draws", type=int, default=1, help="SGLD steps between draws")
    p.add_argument("--max-draws", type=int, default=None,
                   help="run chains that have not settled (trending, chains_disagree, burnin_short) longer, each time "
                        "to twice the draws and twice the burn-in (no burn-in: the first run's draws), up to this "
                        "many draws (default: never)")
    p.add_argument("--batch-size", type=int, default=64, help="minibatch size m (ignored when --data gives a DataLoader)")
    p.add_argument("--params", nargs="+", default=None, metavar="NAME",
                   help="restrict sampling to these modules or parameters (weight-refined LLC)")
    p.add_argument("--train-mode", action=argparse.BooleanOptionalAction, default=True,
                   help="sample in train() mode (the loss the model was trained on: BatchNorm batch statistics, "
                        "dropout on); --no-train-mode samples in eval() mode")
    p.add_argument("--seed", type=int, default=0, help="seed of every chain (the same at each checkpoint)")
    p.add_argument("--device", default=None, help="device to sample on (default: cpu)")
    p.add_argument("--workers", type=int, default=1,
                   help="checkpoints estimated at once in worker processes (the same numbers as 1)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads per worker (default: the CPUs divided among the workers)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="show progress bars")
    p.set_defaults(func=run)


def _load_data(args: argparse.Namespace):
    """A DataLoader from ``--data``."""
    import torch
    from torch.utils.data import DataLoader, Dataset

    if args.batch_size < 2:
        raise ConfigError(f"--batch-size must be at least 2, got {args.batch_size}")
    if args.data == "synthetic":
        from devvis.data import SyntheticShapes

        data: Any = SyntheticShapes(n=args.num_samples, size=args.image_size, seed=args.seed, split="train")
    elif ":" in args.data:
        modname, _, attr = args.data.partition(":")
        try:
            fn = getattr(importlib.import_module(modname), attr)
        except (ImportError, AttributeError) as e:
            raise ConfigError(f"--data {args.data!r}: cannot import {attr!r} from {modname!r} ({e})") from None
        data = fn()
    else:
        raise ConfigError(f"--data {args.data!r} is neither 'synthetic' nor 'package.module:callable'")
    if isinstance(data, DataLoader):
        return data
    if isinstance(data, Dataset) or hasattr(data, "__getitem__") and hasattr(data, "__len__"):
        if len(data) == 0:
            raise ConfigError(f"--data {args.data!r} gave an empty data set")
        # A seeded generator: the same order at every checkpoint (the estimator also forks the RNG).
        gen = torch.Generator().manual_seed(args.seed)
        return DataLoader(data, batch_size=args.batch_size, shuffle=True, drop_last=len(data) >= args.batch_size,
                          generator=gen)
    raise ConfigError(f"--data {args.data!r} returned {type(data).__name__}; expected a Dataset or DataLoader")


def run(args: argparse.Namespace) -> int:
    import torch

    from devvis.slt import llc_trajectory
    from devvis.slt.llc import resolve_params
    from devvis.state import as_device

    # flag values first, before any checkpoint loads
    for flag, value in (("--num-chains", args.num_chains), ("--num-draws", args.num_draws),
                        ("--num-steps-bw-draws", args.num_steps_bw_draws)):
        if value < 1:
            raise ConfigError(f"{flag} must be a positive integer; got {value}")
    for flag, value in (("--workers", args.workers), ("--threads", args.threads)):
        if value is not None and value < 1:
            raise ConfigError(f"{flag} must be a positive integer; got {value}")
    if args.num_burnin_steps < 0:
        raise ConfigError(f"--num-burnin-steps must be >= 0; got {args.num_burnin_steps}")
    if args.max_draws is not None and args.max_draws < args.num_draws:
        raise ConfigError(f"--max-draws must be at least --num-draws ({args.num_draws}); got {args.max_draws}")
    if args.calibrate and (args.lr is not None or args.localization is not None or args.nbeta is not None):
        raise ConfigError("--calibrate chooses --lr, --localization and --nbeta; give either --calibrate or them")
    device = as_device(args.device) or torch.device("cpu")
    # the one checkpoint series of every command: steps from names or metadata, the mapping printed
    series = open_series(args, device=device)
    if args.params:
        resolve_params(series.at(-1), args.params)  # unknown names fail before any sampling
    loader = _load_data(args)
    if args.data == "synthetic":
        _check_classes(series, loader)
    out = Path(args.output_path) / "slt"
    traj = llc_trajectory(
        series, loader, torch.nn.functional.cross_entropy, output_dir=out, progress=args.progress,
        sampler=args.sampler, lr=args.lr, localization=args.localization, nbeta=args.nbeta,
        num_chains=args.num_chains, num_draws=args.num_draws, num_burnin_steps=args.num_burnin_steps,
        num_steps_bw_draws=args.num_steps_bw_draws, max_draws=args.max_draws, seed=args.seed, params=args.params,
        train_mode=args.train_mode, calibrate=args.calibrate, workers=args.workers, threads=args.threads,
    )
    h = traj.hyperparameters
    if traj.calibration is not None:
        print(f"calibration: {traj.calibration.reason}; wrote {out / 'calibration.png'}")
    print(f"{'step':>10}  {'LLC':>10}  {'std':>8}  health")
    for step, res in zip(traj.steps, traj.results):
        # no LLC where the weights are not a local minimum: the verdict says so, no number is printed
        mean = f"{res.llc:10.3f}" if math.isfinite(res.llc) else f"{'-' if not res.at_minimum else 'nan':>10}"
        std = f"{res.llc_std:8.3f}" if res.at_minimum and math.isfinite(res.llc_std) else f"{'-':>8}"
        longer = f" (chains extended to {res.draw_traces.shape[1]} draws)" if res.extensions else ""
        print(f"{step:>10}  {mean}  {std}  {res.health}{longer}")
    print(f"settings: {h['sampler']}, lr = {h['lr']:.3g}, localization = {h['localization']:.3g}, nβ = {h['nbeta']:.4g} "
          f"({h['nbeta_source']}), {h['num_chains']} chains x {h['num_draws']} draws, burn-in {h['num_burnin_steps']}, "
          f"{'train' if h['train_mode'] else 'eval'} mode, {'calibrated' if h['calibrated'] else 'not calibrated'}")
    print(f"wrote {out / 'llc_trajectory.json'} and {out / 'llc_trajectory.png'}")
    return 0


def _check_classes(series: Any, loader: Any) -> None:
    """One-line ConfigError when the model's number of outputs is not the synthetic data's number of classes."""
    import torch

    from devvis.data import SyntheticShapes

    x, _ = next(iter(loader))
    model = series.at(0)
    with torch.no_grad():
        was = model.training
        model.eval()
        out = model(x[:2].to(next(model.parameters()).device))
        model.train(was)
    k = SyntheticShapes.num_classes
    if out.dim() != 2 or out.shape[1] != k:
        raise ConfigError(f"--data synthetic has {k} classes but the model outputs {tuple(out.shape[1:])} per "
                          f"image; pass --data package.module:callable returning the model's own data")

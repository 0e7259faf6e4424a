"""Flag helpers shared by subcommands: booleans, and the checkpoint flags every series command takes."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from devvis.render.pipeline import PREPROCESS_HELP
from devvis.runs.settings import parse_neurons

if TYPE_CHECKING:  # pragma: no cover - for type checkers only
    from devvis.longitudinal import CheckpointSeries

__all__ = ["add_bool", "add_checkpoint_flags", "open_series", "parse_neurons"]

TRUST_HELP = "allow checkpoints that need arbitrary unpickling (can execute code: only for files you trust)"


def add_bool(p: argparse.ArgumentParser | Any, name: str, default: bool, help: str) -> None:
    """``--name`` / ``--no-name`` pair with a shown default."""
    p.add_argument(f"--{name}", dest=name.replace("-", "_"), action=argparse.BooleanOptionalAction, default=default,
                   help=help)


def add_checkpoint_flags(p: argparse.ArgumentParser | Any, *, preprocess: bool = True) -> None:
    """The flags that choose a run's checkpoints, the same in every command: ``--model``,
    ``--checkpoint-path``, ``--step FILE=N``, ``--exclude GLOB``, ``--weights``,
    ``--trust-checkpoint`` (and ``--preprocess``)."""
    p.add_argument("--model", default=None,
                   help="torchvision name, timm:NAME, package.module:callable or zoo name (optional when the "
                        "checkpoint folder holds model_config.json)")
    p.add_argument("--checkpoint-path", nargs="+", required=True, metavar="PATH",
                   help="checkpoint files or folders (ordered by training step)")
    p.add_argument("--step", nargs="+", default=[], metavar="FILE=N",
                   help="set the training step of a checkpoint that has none in its name or contents")
    p.add_argument("--exclude", nargs="+", default=[], metavar="GLOB", help="leave out checkpoint files matching these")
    p.add_argument("--weights", default="model",
                   help="which model of checkpoints holding several: model, ema (timm's state_dict_ema) or an "
                        "entry's name (teacher)")
    p.add_argument("--trust-checkpoint", action="store_true", help=TRUST_HELP)
    if preprocess:
        p.add_argument("--preprocess", default="auto", metavar="SPEC", help=PREPROCESS_HELP)


def open_series(args: argparse.Namespace, **kwargs: Any) -> "CheckpointSeries":
    """The :class:`~devvis.longitudinal.CheckpointSeries` of the flags of :func:`add_checkpoint_flags`
    (``kwargs`` such as ``device=`` go to it); prints its step <- file mapping, as every command does."""
    from devvis.longitudinal import CheckpointSeries
    from devvis.render.pipeline import check_preprocess

    if getattr(args, "preprocess", None) is not None:
        check_preprocess(args.preprocess)  # before any checkpoint loads
    series = CheckpointSeries(list(args.checkpoint_path), args.model, trust=args.trust_checkpoint,
                              steps=list(args.step), exclude=list(args.exclude), weights=args.weights, **kwargs)
    print(series.order(), flush=True)
    return series

"""Flag helpers shared by subcommands: booleans, and the checkpoint flags every series command takes."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devvis.errors import ConfigError
from devvis.render.pipeline import PREPROCESS_HELP
from devvis.runs.settings import parse_neurons

if TYPE_CHECKING:  # pragma: no cover - for type checkers only
    from devvis.longitudinal import CheckpointSeries

__all__ = ["add_bool", "add_checkpoint_flags", "load_inputs", "open_series", "parse_neurons"]

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


def load_inputs(spec: str, n: int, size: int, seed: int) -> Any:
    """``"synthetic"`` -> ``n`` probe images of SyntheticShapes; a ``.pt`` file -> its image tensor;
    ``"visualizations"`` -> None (the final checkpoint's feature visualizations)."""
    import torch

    if spec == "visualizations":
        return None
    if spec == "synthetic":
        from devvis.data import probe_batch

        return probe_batch(n, size, seed)
    path = Path(spec)
    if not path.is_file():
        raise ConfigError(f"--inputs {spec!r} is neither 'synthetic', 'visualizations' nor an existing .pt file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # any failure to read means the same thing to the user
        raise ConfigError(f"cannot read --inputs file {spec!r}: {type(e).__name__}: {str(e).splitlines()[0][:200]}") from e
    if isinstance(obj, dict):
        obj = obj.get("images", obj.get("inputs"))
    if not isinstance(obj, torch.Tensor):
        raise ConfigError(f"--inputs file {spec!r} must hold an image tensor (N, 3, H, W) or a dict with 'images'")
    return obj

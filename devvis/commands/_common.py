"""Flag helpers shared by subcommands."""

from __future__ import annotations

import argparse

from devvis.runs.settings import parse_neurons

__all__ = ["add_bool", "parse_neurons"]


def add_bool(p: argparse.ArgumentParser, name: str, default: bool, help: str) -> None:
    """``--name`` / ``--no-name`` pair with a shown default."""
    p.add_argument(f"--{name}", dest=name.replace("-", "_"), action=argparse.BooleanOptionalAction, default=default,
                   help=help)

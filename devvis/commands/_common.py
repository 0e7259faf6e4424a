"""Flag helpers shared by subcommands."""

from __future__ import annotations

import argparse

from devvis.errors import ConfigError


def add_bool(p: argparse.ArgumentParser, name: str, default: bool, help: str) -> None:
    """``--name`` / ``--no-name`` pair with a shown default."""
    p.add_argument(f"--{name}", dest=name.replace("-", "_"), action=argparse.BooleanOptionalAction, default=default,
                   help=help)


def parse_neurons(text: str | None) -> list[tuple[int, int]] | None:
    """``"h,w;h,w"`` -> ``[(h, w), (h, w)]``."""
    if text is None:
        return None
    out = []
    for part in text.split(";"):
        part = part.strip()
        if not part:
            continue
        bits = part.split(",")
        if len(bits) != 2 or not all(b.strip().lstrip("-").isdigit() for b in bits):
            raise ConfigError(f"invalid --neurons entry {part!r}; expected 'h,w' pairs separated by ';', e.g. '3,4;0,0'")
        out.append((int(bits[0]), int(bits[1])))
    if not out:
        raise ConfigError(f"--neurons {text!r} names no position; expected e.g. '3,4;0,0'")
    return out

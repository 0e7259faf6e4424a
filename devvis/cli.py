"""The ``devvis`` command.

Each subcommand lives in its own module exposing ``register(subparsers)``; that
function adds an ``argparse`` sub-parser and sets ``func=run`` on it, where
``run(args) -> int`` does the work. This file only wires them together and
turns devvis errors into a one-line message with exit code 2.

    devvis --help
    devvis visualize --model resnet18 --checkpoint-path ckpts/ --layer-names layer3.1 --channels 0 1
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback
from typing import Sequence

from devvis.errors import DevvisError

#: Modules that contribute subcommands, in the order ``--help`` lists them.
SUBCOMMAND_MODULES: tuple[str, ...] = (
    "devvis.commands.visualize",
    "devvis.commands.layers",
    "devvis.commands.train",
    "devvis.commands.activations",
    "devvis.commands.grid",
    "devvis.commands.track",
    "devvis.commands.llc",
    "devvis.commands.circuits",
    "devvis.commands.sweep",
    "devvis.commands.report",
    "devvis.commands.demo",
)


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line starting with ``devvis: error:`` and exit 2."""

    def error(self, message: str):  # type: ignore[override]
        sys.stderr.write(f"devvis: error: {message} (see '{self.prog} --help')\n")
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    """The full ``devvis`` argument parser (used by ``main`` and by the tests)."""
    from devvis._version import __version__

    parser = _Parser(
        prog="devvis",
        description="Developmental interpretability for vision models.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"devvis {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for modname in SUBCOMMAND_MODULES:
        importlib.import_module(modname).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``devvis`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except DevvisError as e:
        if args.debug:
            traceback.print_exc()
        sys.stderr.write("devvis: error: " + " ".join(str(e).splitlines()) + "\n")  # one line, always
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("devvis: error: interrupted\n")
        return 130
    except BrokenPipeError:  # output piped into `head` and friends
        return 0
    except Exception as e:  # noqa: BLE001 - the CLI promises one line, not a traceback, for every failure
        if args.debug:
            traceback.print_exc()
        sys.stderr.write(f"devvis: error: {_one_line(e)}\n")
        return 2


def _one_line(e: BaseException) -> str:
    """A one-line message for an error devvis did not raise on purpose (an OS error, or a bug)."""
    if isinstance(e, OSError) and e.strerror:
        # e.g. an output path under a regular file: "cannot access 'notes.txt/results': Not a directory"
        return f"cannot access {e.filename!r}: {e.strerror}" if e.filename is not None else e.strerror
    text = " ".join(str(e).split())[:500]
    return f"unexpected {type(e).__name__}: {text} (run 'devvis --debug ...' for the traceback)"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

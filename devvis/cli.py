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
import re
import sys
import traceback
import warnings
from typing import Any, Sequence

from devvis.errors import CheckpointNotice, DevvisError, closest

#: Modules that contribute subcommands, in the order ``--help`` lists them.
SUBCOMMAND_MODULES: tuple[str, ...] = (
    "devvis.commands.visualize",
    "devvis.commands.layers",
    "devvis.commands.train",
    "devvis.commands.activations",
    "devvis.commands.atlas",
    "devvis.commands.grid",
    "devvis.commands.track",
    "devvis.commands.examples",
    "devvis.commands.trust",
    "devvis.commands.llc",
    "devvis.commands.circuits",
    "devvis.commands.stages",
    "devvis.commands.sweep",
    "devvis.commands.report",
    "devvis.commands.demo",
)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each flag's default once: not when the help text already states one ("default: all"),
    nor for flags without a value to show (``None``, ``False``, empty lists)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        text = re.sub(r" \(default: %\(default\)s\)", "", text)  # BooleanOptionalAction adds its own
        if "default" in text.lower() or action.default in (None, False, [], (), argparse.SUPPRESS):
            return text
        return super()._get_help_string(argparse.Action(action.option_strings, action.dest, default=action.default,
                                                        nargs=action.nargs, help=text))


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line starting with ``devvis: error:`` and exit 2, with
    "did you mean" for mistyped subcommands, and :class:`HelpFormatter` for every subcommand."""

    def __init__(self, *args: Any, **kwargs: Any):
        if kwargs.get("formatter_class") in (None, argparse.ArgumentDefaultsHelpFormatter, argparse.HelpFormatter):
            kwargs["formatter_class"] = HelpFormatter
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # type: ignore[override]
        m = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if m:
            near = closest(m.group(1), re.findall(r"'([^']*)'", m.group(2)), n=1)
            message += f" (did you mean {near[0]!r}?)" if near else ""
        sys.stderr.write(f"devvis: error: {message} (see '{self.prog} --help')\n")
        raise SystemExit(2)


def _subparser(parser: argparse.ArgumentParser, command: str | None) -> argparse.ArgumentParser:
    for action in parser._actions:  # argparse keeps its subparsers only here
        if isinstance(action, argparse._SubParsersAction) and command in action.choices:
            return action.choices[command]
    return parser


def _unknown_flags(parser: argparse.ArgumentParser, command: str | None, extra: list[str]) -> None:
    """Exit 2 with one line naming the first unknown argument and the closest flag of the subcommand."""
    sub = _subparser(parser, command)
    flags = [o for a in sub._actions for o in a.option_strings if o.startswith("--")]
    bad = next((x for x in extra if x.startswith("-")), extra[0])
    near = closest(bad.split("=", 1)[0].lstrip("-"), [f.lstrip("-") for f in flags], n=1) if bad.startswith("-") \
        else []
    hint = f" (did you mean --{near[0]}?)" if near else ""
    sub.error(f"unrecognized argument {bad!r}{hint}")


def _show_notice(message: Any, category: type, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
    if issubclass(category, CheckpointNotice):
        sys.stderr.write(f"devvis: note: {' '.join(str(message).split())}\n")
    else:
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def build_parser() -> argparse.ArgumentParser:
    """The full ``devvis`` argument parser (used by ``main`` and by the tests)."""
    from devvis._version import __version__

    parser = _Parser(prog="devvis", description="Developmental interpretability for vision models.")
    parser.add_argument("--version", action="version", version=f"devvis {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for modname in SUBCOMMAND_MODULES:
        importlib.import_module(modname).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``devvis`` console script; returns the exit code."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        _unknown_flags(parser, getattr(args, "command", None), extra)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default", CheckpointNotice)  # each notice once
            warnings.showwarning = _show_notice
            return int(args.func(args) or 0)
    except DevvisError as e:
        if args.debug:
            traceback.print_exc()
        sys.stderr.write("devvis: error: " + " ".join(str(e).splitlines()) + "\n")  # one line, always
        return 2
    except KeyboardInterrupt:
        again = ("; run the same command again to resume: finished work is kept and skipped"
                 if getattr(args, "resumable", False) else "")
        sys.stderr.write(f"devvis: error: interrupted{again}\n")
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

"""The ``express4d`` command. Each area registers its verbs from ``express4d_hf.commands.<area>``."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from .commands.arguments import OneLineErrorParser
from .core.constants import __version__

# Modules under express4d_hf.commands, each with `register(subparsers)`; listed in help order.
COMMAND_MODULES = ["data", "train", "generate", "evaluate", "benchmark", "convert", "demo", "model", "space"]


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog="express4d",
        description="Express4D text-to-facial-motion benchmark: data, training, generation, evaluation.",
    )
    parser.add_argument("--version", action="version", version=f"express4d-hf {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f".commands.{name}", __package__).register(subparsers)
    return parser


class CommandError(Exception):
    """An error the user can fix: printed as one line, no traceback, exit status 2."""


def main(argv: list[str] | None = None) -> int:
    """Run the command; every expected failure (a user error, a missing or unwritable file, not enough memory,
    an interrupt) prints one ``express4d <command>: error: ...`` message and returns non-zero. ``-v`` shows the
    traceback instead."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    if not getattr(args, "func", None):
        # `express4d` or `express4d data` alone: show the matching help.
        (getattr(args, "_parser", None) or parser).print_help()
        return 1
    name = " ".join(str(p) for p in (args.command, getattr(args, "verb", None)) if p)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        if args.verbose:
            raise
        print(f"express4d {name}: interrupted", file=sys.stderr)
        return 130
    except BaseException as err:
        message = _expected_failure(err)
        if message is None or args.verbose:
            raise
        print(f"express4d {name}: error: {message}", file=sys.stderr)
        return 2


def _expected_failure(err: BaseException) -> str | None:
    """The one-line message of an error a user can act on, or ``None`` for a bug (shown as a traceback)."""
    if isinstance(err, (CommandError, ValueError)):
        return str(err)
    if isinstance(err, MemoryError) or type(err).__name__ == "OutOfMemoryError":  # torch's CUDA OOM too
        detail = str(err).splitlines()[0] if str(err) else ""
        return (f"out of memory{f' ({detail})' if detail else ''}; use a smaller batch or model, fewer processes "
                "(--num-proc), or a machine with more memory")  # fmt: skip
    if isinstance(err, OSError):
        if err.strerror and err.filename is not None:
            where = f"{err.filename} -> {err.filename2}" if err.filename2 is not None else str(err.filename)
            return f"{where}: {err.strerror}"
        return str(err) or type(err).__name__
    return None


if __name__ == "__main__":
    sys.exit(main())

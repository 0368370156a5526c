"""The ``express4d`` command. Each area registers its verbs from ``express4d_hf.commands.<area>``."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from . import __version__

# Modules under express4d_hf.commands, each with `register(subparsers)`; listed in help order.
COMMAND_MODULES = ["data", "train", "generate", "benchmark", "convert", "demo"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    if not getattr(args, "func", None):
        # `express4d` or `express4d data` alone: show the matching help.
        (getattr(args, "_parser", None) or parser).print_help()
        return 1
    try:
        return int(args.func(args) or 0)
    except (CommandError, FileNotFoundError, ValueError) as err:
        if args.verbose:
            raise
        print(f"express4d {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

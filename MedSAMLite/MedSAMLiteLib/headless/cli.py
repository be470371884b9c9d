"""`medsamlite`: the headless command on the extension's core (no Slicer, no torch).

Each command module exposes `register(subparsers)`, which adds its parser and sets `func`
(taking the parsed args, returning an exit status).
"""
from __future__ import annotations

import argparse
import re
import sys

from . import batch, commands, corrections, format_commands

_NUMBERS = re.compile(r"^-?\d+(\.\d*)?(,-?\d+(\.\d*)?)+$")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medsamlite", description="Box-prompted medical image segmentation on a CPU.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.register(sub)
    format_commands.register(sub)
    batch.register(sub)
    corrections.register(sub)
    return parser


def join_negative_values(argv: list[str]) -> list[str]:
    """`--box -59,-91,...`: argparse takes a value starting with '-' for an option; glue it on."""
    out: list[str] = []
    for arg in argv:
        if out and out[-1] == "--box" and _NUMBERS.match(arg):
            out[-1] = f"--box={arg}"
        else:
            out.append(arg)
    return out


def run(parser: argparse.ArgumentParser, argv: list[str]) -> int:
    """Parse and run one subcommand: its exit status; help and 2 without one, 130 on Ctrl+C
    (shared with `medsamlite-torch`)."""
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return 130


def main(argv: list[str] | None = None) -> int:
    return run(build_parser(), join_negative_values(sys.argv[1:] if argv is None else list(argv)))


if __name__ == "__main__":
    sys.exit(main())

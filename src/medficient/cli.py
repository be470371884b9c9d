"""`medficient` command line: each subcommand lives beside the code it drives.

A command module exposes `register(subparsers)`, which adds its parser and sets `func`
(taking the parsed args, returning an exit status). Modules are imported only when needed
so that `medficient --help` and the torch-free paths stay fast.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> module that registers it
COMMANDS: dict[str, str] = {
    "predict": "medficient.inference.commands",
    "bench": "medficient.inference.commands",
    "fetch-weights": "medficient.inference.commands",
    "models": "medficient.inference.commands",
    "export": "medficient.inference.commands",
    "demo": "medficient.demo",
    "convert": "medficient.formats.commands",
    "to-image": "medficient.formats.commands",
    "segment": "medficient.formats.commands",
    "evaluate": "medficient.evaluation.commands",
    "rank": "medficient.evaluation.commands",
    "serve": "medficient.app.commands",
    "train": "medficient.training.commands",
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medficient", description="Box-prompted medical image segmentation on a CPU.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules = dict.fromkeys(COMMANDS[only] if only in COMMANDS else m for m in COMMANDS.values())
    for module_name in modules:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name and module_name.startswith(e.name):
                continue  # that part of medficient is not present in this build
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    first = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(first if first in COMMANDS else None)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("medficient: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

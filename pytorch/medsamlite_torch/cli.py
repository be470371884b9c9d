"""`medsamlite-torch` command line: each subcommand lives beside the code it drives.

A command module exposes `register(subparsers)`, which adds its parser and sets `func`
(taking the parsed args, returning an exit status). Modules are imported only when needed
so that `medsamlite-torch --help` and the torch-free evaluation stay fast.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from MedSAMLiteLib.headless.cli import run

# subcommand -> module that registers it
COMMANDS: dict[str, str] = {
    "train": "medsamlite_torch.training.commands",
    "evaluate": "medsamlite_torch.evaluation.commands",
    "rank": "medsamlite_torch.evaluation.commands",
    "crosscheck": "medsamlite_torch.crosscheck",
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medsamlite-torch", description="MedSAMLite's PyTorch side: train, evaluate, rank, cross-check conversions.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules = dict.fromkeys(COMMANDS[only] if only in COMMANDS else m for m in COMMANDS.values())
    for module_name in modules:
        importlib.import_module(module_name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    first = next((a for a in argv if not a.startswith("-")), None)
    return run(build_parser(first if first in COMMANDS else None), argv)


if __name__ == "__main__":
    sys.exit(main())

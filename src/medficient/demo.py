"""`medficient demo`: real sample cases -> predict with the embedded model -> masks, overlays, DSC."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="segment the bundled real sample cases and show the result")
    p.add_argument("--out", default="demo_out", help="folder for cases/, segs/, overlays/")
    p.add_argument("--model", default="lite_medsam")
    p.add_argument("--no-predict", action="store_true", help="only build the sample cases")
    p.add_argument("--bench-cases", action="store_true", help="with --no-predict: also build the benchmark cases")
    p.add_argument("--large-case", action="store_true", help="with --no-predict: also build the (300, 512, 512) memory case in large/")
    p.add_argument("--backend", choices=["openvino", "onnxruntime", "torch"], help="default: openvino when installed, else torch")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .inference.engine import open_engine
    from .inference.runner import predict_folder
    from .samples import dice_per_label, write_samples

    out = Path(args.out)
    print(f"building sample cases in {out / 'cases'} ...", file=sys.stderr)
    cases = write_samples(out / "cases", bench=args.bench_cases)
    if args.large_case:
        write_samples(out / "large", large=True)
    if args.no_predict:
        return 0
    from .runtime import default_backend

    engine = open_engine(args.backend or default_backend(), args.model)
    summary = predict_folder(engine, out / "cases", out / "segs", overlay_dir=out / "overlays")
    for path in cases:
        with np.load(path) as gt, np.load(out / "segs" / path.name) as pred:
            scores = dice_per_label(pred["segs"], gt["gts"])
        print(
            f"{path.stem}: {len(scores)} object(s), DSC vs the mask the boxes came from: "
            f"mean {np.mean(scores):.3f}, min {np.min(scores):.3f}\n"
            f"  mask:    {out / 'segs' / path.name}\n  overlay: {out / 'overlays' / (path.stem + '.png')}"
        )
    print(summary.report(), file=sys.stderr)
    return summary.exit_code

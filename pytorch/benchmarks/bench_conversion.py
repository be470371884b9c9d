"""Encoder latency: MedSAMLite's torch-free LiteMedSAM encoder graph vs OpenVINO's own conversion of
the PyTorch encoder (`openvino.convert_model`), same genuine weights, same compile config.

Both IRs are compiled with `MedSAMLiteLib.models.conversion.ops.compile_model` (f32 hint, LATENCY, same
threads) and timed interleaved (so load changes hit both) on the same real preprocessed image
(scikit-image coins); also reports build/convert seconds and how far the outputs are apart.

Usage: python pytorch/benchmarks/bench_conversion.py [--repeat 20] [--warmup 5] [--threads N]
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from datetime import date

import numpy as np
import openvino as ov
import torch
from MedSAMLiteLib.models.conversion import convert
from MedSAMLiteLib.models.conversion.ops import compile_model
from MedSAMLiteLib.models.store import fetch_weights
from MedSAMLiteLib.core.preprocess import preprocess
from skimage import data

from medsamlite_torch.models import build_model


def timed(make, *args, **kwargs):
    """(make(*args, **kwargs), seconds it took)."""
    t0 = time.perf_counter()
    result = make(*args, **kwargs)
    return result, time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=20, help="timed calls per encoder")
    ap.add_argument("--warmup", type=int, default=5, help="untimed calls per encoder first")
    ap.add_argument("--threads", type=int, help="OpenVINO threads for both (default: OpenVINO's choice)")
    args = ap.parse_args()

    weights = fetch_weights("litemedsam")
    model, torch_build_s = timed(build_model, "lite_medsam", weights)
    x = preprocess(data.coins(), model.spec.profile)[0]  # (1, 3, 256, 256) float32
    with torch.no_grad():
        reference = model.image_encoder(torch.from_numpy(x)).numpy()
        via_torch, ov_convert_s = timed(ov.convert_model, model.image_encoder, example_input=torch.from_numpy(x))
    (ours, _), ours_convert_s = timed(convert, "litemedsam", weights)

    encoders = {"torch-free (ours)": ours, "openvino.convert_model": via_torch}
    requests, compile_s = {}, {}
    for name, graph in encoders.items():
        compiled, compile_s[name] = timed(compile_model, graph, threads=args.threads)
        requests[name] = compiled.create_infer_request()
    times = {name: [] for name in requests}
    outputs = {}
    for i in range(args.warmup + args.repeat):
        for name, request in requests.items():
            t0 = time.perf_counter()
            request.infer({0: x})
            if i >= args.warmup:
                times[name].append(time.perf_counter() - t0)
            outputs[name] = request.get_output_tensor(0).data.copy()
    median = {name: statistics.median(t) for name, t in times.items()}

    ours_name, theirs_name = encoders
    print(f"`{' '.join(sys.orig_argv)}` on {date.today()}, {platform.machine()} "
          f"({ov.Core().get_property('CPU', 'FULL_DEVICE_NAME')}, {len(os.sched_getaffinity(0))} CPUs available), "
          f"OpenVINO {ov.__version__}, torch {torch.__version__}, threads {args.threads or 'default'}, "
          f"median of {args.repeat} after {args.warmup} warm-up, interleaved\n")
    print("| encoder IR | made by | make (s) | compile (s) | ops in graph | median latency (ms) | max abs diff vs PyTorch |")
    print("|---|---|---|---|---|---|---|")
    made = {ours_name: ("convert() from the checkpoint file (both halves)", f"{ours_convert_s:.2f}"),
            theirs_name: ("build_model (torch) + convert_model", f"{torch_build_s:.2f} + {ov_convert_s:.2f}")}
    for name, graph in encoders.items():
        diff = float(np.abs(outputs[name] - reference).max())
        how, seconds = made[name]
        print(f"| {name} | {how} | {seconds} | {compile_s[name]:.2f} | {len(graph.get_ops())} | "
              f"{1000 * median[name]:.1f} | {diff:.2e} |")
    between = float(np.abs(outputs[ours_name] - outputs[theirs_name]).max())
    print(f"\nlatency ratio ours / convert_model: {median[ours_name] / median[theirs_name]:.3f}; "
          f"max abs diff between the two IRs' embeddings: {between:.2e} (embedding max |value| "
          f"{float(np.abs(reference).max()):.3g})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

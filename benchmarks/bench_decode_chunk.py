"""Decoder time per box for different batch sizes (how many boxes one mask-decoder call takes), OpenVINO f32.

Usage: .venv/bin/python benchmarks/bench_decode_chunk.py [--boxes 24] [--repeat 5]
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from MedSAMLiteLib.headless.samples import coins_case
from MedSAMLiteLib.models.store import load_backend
from MedSAMLiteLib.core.preprocess import preprocess


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--boxes", type=int, default=24)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    case = coins_case()
    engine = load_backend("litemedsam")
    x, geom = preprocess(case["imgs"], engine.profile)
    emb = engine.encode(x)
    prompts = np.resize(case["boxes"].astype(np.float32) * (256 / 384), (args.boxes, 4))
    print(f"{args.boxes} boxes, median of {args.repeat} runs")
    for chunk in (1, 2, 4, 8, 16, args.boxes):
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            for s in range(0, len(prompts), chunk):
                engine.decode(emb, prompts[s : s + chunk])
            times.append(time.perf_counter() - t0)
        print(f"chunk {chunk:3d}: {statistics.median(times):.3f} s total, {1000 * statistics.median(times) / len(prompts):.1f} ms/box")


if __name__ == "__main__":
    main()

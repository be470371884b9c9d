"""Would a correction's decoder calls (one box each, on different slices' embeddings) finish sooner in
parallel? The cached LiteMedSAM decoder (static one-box input, f32) run N times in a row with the
LATENCY hint, as the engine does, against an AsyncInferQueue of 2 requests on a 2-stream THROUGHPUT copy.

Usage: PYTHONPATH=MedSAMLite .venv/bin/python benchmarks/bench_decode_parallel.py [--calls 19] [--repeat 7]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np

from bench_common import machine_line
from MedSAMLiteLib.models.store import ensure_converted, load_backend


def main() -> None:
    import openvino as ov

    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=19, help="decoder calls (19: correction 1 of bench_corrections.py)")
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    backend = load_backend("litemedsam")  # its compiled models stay loaded, as in the engine
    core = ov.Core()
    model = core.read_model(str(ensure_converted("litemedsam") / "decoder.xml"))
    model.reshape({"boxes": [1, 4]})
    latency = core.compile_model(model, "CPU", {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"})
    streams = core.compile_model(model, "CPU", {"PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": "2", "INFERENCE_PRECISION_HINT": "f32"})
    rng = np.random.default_rng(0)
    embeddings = [rng.standard_normal((1, 256, 64, 64), dtype=np.float32) for _ in range(args.calls)]
    box = np.array([[60, 60, 150, 170]], np.float32)
    request = latency.create_infer_request()

    def in_a_row() -> float:
        t0 = time.perf_counter()
        for e in embeddings:
            request.infer({0: e, 1: box})
            request.get_output_tensor(0).data.copy()
        return time.perf_counter() - t0

    def in_parallel() -> float:
        queue = ov.AsyncInferQueue(streams, 2)
        queue.set_callback(lambda r, _: r.get_output_tensor(0).data.copy())
        t0 = time.perf_counter()
        for i, e in enumerate(embeddings):
            queue.start_async({0: e, 1: box}, i)
        queue.wait_all()
        return time.perf_counter() - t0

    in_a_row(), in_parallel()  # warm-up
    rows, par = [], []
    for _ in range(args.repeat):
        rows.append(in_a_row())
        par.append(in_parallel())
    a, b = statistics.median(rows), statistics.median(par)
    print(machine_line(sys.argv), f"({backend.name} backend loaded)")
    print(f"{args.calls} decoder calls, median of {args.repeat}: in a row {a:.3f} s ({1000 * a / args.calls:.1f} ms per call), "
          f"2 parallel requests {b:.3f} s; in a row / parallel = {a / b:.2f}")


if __name__ == "__main__":
    main()

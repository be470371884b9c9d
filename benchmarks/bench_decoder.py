"""Is the converted decoder's reassociated form (`models/conversion/sam_decoder.py`: cross attentions
folded through the 7 prompt tokens, output upscaling on the image tokens) faster than SAM's form of
the same graph, and does it give the same logits?

The baseline is built here, from the same weights and the same helpers, as SAM's MaskDecoder computes
it: every cross attention projects the 4096 image tokens to 128 channels, and output_upscaling runs
two ConvTranspose2d on the (1, 256, 64, 64) map. Each is compiled for a static (1, 4) box, LATENCY,
f32, with the plugin's default kernels and as the backend compiles the decoder (`_compile_decoder`:
fused "snippets" kernels off); all four are timed interleaved: N decoder calls on N different
embeddings, as a correction decodes N slices.

Usage: PYTHONPATH=MedSAMLite:benchmarks .venv/bin/python benchmarks/bench_decoder.py [--calls 19] [--repeat 9]
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections import Counter

import numpy as np

from bench_common import machine_line


def published_form(weights, prompt_space: int, eps: float):
    """The decoder graph in SAM's own arrangement (the converter's builder with its two rewrites undone)."""
    import openvino as ov
    import openvino.opset13 as ops

    from MedSAMLiteLib.models.conversion import sam_decoder as sd
    from MedSAMLiteLib.models.conversion.ops import const, gelu, layer_norm, linear, reshape, transpose

    def attention(w, q, k, v, n_q, n_k):
        inner, head_dim = sd.DIM // sd.DOWNSAMPLE, sd.DIM // sd.DOWNSAMPLE // sd.HEADS

        def heads(x, name, n):
            x = linear(x, w.get(f"{name}.weight"), w.get(f"{name}.bias"))
            return transpose(reshape(x, (-1, n, sd.HEADS, head_dim)), (0, 2, 1, 3))

        q, k, v = heads(q, "q_proj", n_q), heads(k, "k_proj", n_k), heads(v, "v_proj", n_k)
        y = ops.matmul(ops.softmax(ops.divide(ops.matmul(q, k, False, True), const(math.sqrt(head_dim))), -1), v, False, False)
        y = reshape(transpose(y.output(0), (0, 2, 1, 3)), (-1, n_q, inner))
        return linear(y, w.get("out_proj.weight"), w.get("out_proj.bias"))

    def cross_attend(attn, norm, x, x_pe, other, other_pe, n_x, n_other, eps):
        y = attention(attn, sd._add(x, x_pe), sd._add(other, other_pe), other, n_x, n_other)
        return sd._norm(sd._add(x, y), norm, eps)

    def upscaled_mask(keys, hyper, w):
        def conv_transpose(x, name):
            y = ops.convolution_backprop_data(x, const(w.get(f"{name}.weight")), [2, 2], None, [0, 0], [0, 0], [1, 1])
            return ops.add(y, const(w.get(f"{name}.bias").reshape(1, -1, 1, 1))).output(0)

        x = reshape(transpose(keys, (0, 2, 1)), (-1, sd.DIM, sd.GRID, sd.GRID))
        y = gelu(layer_norm(conv_transpose(x, "0"), w.get("1.weight"), w.get("1.bias"), sd.UPSCALE_EPS, axis=1))
        y = gelu(conv_transpose(y, "3"))
        side = 4 * sd.GRID
        masks = ops.matmul(reshape(hyper, (-1, 1, sd.DIM // 8)), reshape(y, (-1, sd.DIM // 8, side * side)), False, False)
        return reshape(masks.output(0), (-1, 1, side, side))

    saved = sd._cross_attend, sd._upscaled_mask
    sd._cross_attend, sd._upscaled_mask = cross_attend, upscaled_mask
    try:
        return sd.build_decoder(weights, prompt_space, eps)
    finally:
        sd._cross_attend, sd._upscaled_mask = saved


def main() -> None:
    import openvino as ov

    from MedSAMLiteLib.models.conversion import ARCHITECTURES, load_weights
    from MedSAMLiteLib.models.conversion.ops import Weights
    from MedSAMLiteLib.models.backends import _compile_decoder
    from MedSAMLiteLib.models.conversion.sam_decoder import build_decoder
    from MedSAMLiteLib.models.store import weights_file

    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=19, help="decoder calls per timing (19: correction 1 of bench_corrections.py)")
    ap.add_argument("--repeat", type=int, default=9)
    ap.add_argument("--layers", action="store_true", help="also the plugin's per-layer-type milliseconds (PERF_COUNT)")
    args = ap.parse_args()
    state = load_weights(weights_file("litemedsam")[0])
    _, prompt_space, eps = ARCHITECTURES["litemedsam"]
    core = ov.Core()
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32", **({"PERF_COUNT": "YES"} if args.layers else {})}
    requests = {}
    for form, build in (("published form", published_form), ("reassociated (converter)", build_decoder)):
        model = build(Weights(state), prompt_space, eps)
        model.reshape({"boxes": [1, 4]})
        requests[f"{form}, default kernels"] = core.compile_model(model, "CPU", config).create_infer_request()
        requests[f"{form}, as the backend"] = _compile_decoder(core, model, config)
    rng = np.random.default_rng(0)
    embeddings = [rng.standard_normal((1, 256, 64, 64), dtype=np.float32) for _ in range(args.calls)]
    box = np.array([[60, 60, 150, 170]], np.float32)

    outputs = {name: [r.infer({0: e, 1: box})[r.model_outputs[0]].copy() for e in embeddings] for name, r in requests.items()}
    base_name = next(iter(requests))
    times = {name: [] for name in requests}
    for _ in range(args.repeat):
        for name, r in requests.items():
            t0 = time.perf_counter()
            for e in embeddings:
                r.infer({0: e, 1: box})
            times[name].append(time.perf_counter() - t0)
    print(machine_line(sys.argv))
    print(f"LiteMedSAM decoder, {args.calls} calls on different embeddings, one box each, median of {args.repeat} "
          f"(interleaved); logits and mask pixels against the {base_name}")
    base = statistics.median(times[base_name])
    for name, t in times.items():
        diff = max(float(np.abs(a - b).max()) for a, b in zip(outputs[name], outputs[base_name]))
        flips = sum(int(((a > 0) != (b > 0)).sum()) for a, b in zip(outputs[name], outputs[base_name]))
        print(f"  {name:45s} {statistics.median(t):.3f} s  {1e3 * statistics.median(t) / args.calls:5.1f} ms/call  "
              f"{base / statistics.median(t):.2f}x  max |diff| {diff:.2g}  pixels differ {flips} of {args.calls * 65536}")
        if args.layers:  # the last call's counters
            by_type = Counter()
            for layer in requests[name].profiling_info:
                by_type[f"{layer.node_type} ({layer.exec_type})"] += layer.real_time.total_seconds() * 1e3
            print("    " + ", ".join(f"{k} {v:.1f}" for k, v in by_type.most_common(6)) + " ms")


if __name__ == "__main__":
    main()

"""bf16 against f32 (OpenVINO CPU inference precision) for LiteMedSAM on real cases: how far the
masks move (DSC of bf16 vs f32 per object) and how much faster the encoder gets.

Cases: scikit-image coins (2D, every coin), TotalSegmentator's CT brain atlas (3D, a box over 20
slices, preset "brain"), MNI152 T1 (3D, 40 slices, the brain). Encoder latency: median of --repeat
calls on one real preprocessed slice, f32 and bf16 interleaved, after warm-up.

Usage: .venv/bin/python benchmarks/bench_precision.py [--repeat 20] [--threads N]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np

from bench_common import machine_line
from MedSAMLiteLib.headless.samples import brain_mask, coins_case, ct_brain_atlas_path, dice_per_label, mni152_case
from MedSAMLiteLib.models.store import load_backend
from MedSAMLiteLib.core.preprocess import preprocess
from MedSAMLiteLib.core.presets import apply_preset
from MedSAMLiteLib.core.segmenter import Segmenter

PRECISIONS = ("f32", "bf16")


def ct_brain_case(slices: int = 20) -> dict[str, np.ndarray]:
    """The CT atlas windowed with the brain preset, one 3D box around the brain over `slices` middle slices."""
    import SimpleITK as sitk

    hu = sitk.GetArrayFromImage(sitk.ReadImage(str(ct_brain_atlas_path())))  # (k, j, i), k axial
    reference = brain_mask(hu)
    zs = np.flatnonzero(reference.any(axis=(1, 2)))
    lo = (zs[0] + zs[-1]) // 2 - slices // 2
    reference[:lo] = reference[lo + slices:] = False
    z, y, x = np.nonzero(reference)
    box = [x.min(), y.min(), z.min(), x.max(), y.max(), z.max()]
    return {"imgs": apply_preset(hu, preset="brain"), "gts": reference.astype(np.uint16),
            "boxes": np.asarray([box], dtype=np.int64)}


CASES = {
    "coins 2D (all coins)": coins_case,
    "CT brain atlas 3D (20 slices, preset brain)": ct_brain_case,
    "MNI152 T1 3D (40 slices)": lambda: mni152_case(slice(60, 100)),
}


def segment(backend, case: dict[str, np.ndarray]) -> tuple[np.ndarray, float]:
    """Label map and seconds, with a fresh embedding cache (every slice encoded once)."""
    segmenter = Segmenter(backend)
    t0 = time.perf_counter()
    if case["imgs"].ndim == 2:
        segmenter.set_image(case["imgs"][None])
        segs = segmenter.label_2d(0, case["boxes"])
    else:
        segmenter.set_image(case["imgs"])
        segs = segmenter.label_3d(case["boxes"])
    return segs, time.perf_counter() - t0


def encoder_latency(backends: dict, image: np.ndarray, repeat: int, warmup: int = 5) -> dict[str, float]:
    """Median seconds of one encoder call per precision, calls interleaved so load changes hit both."""
    x = preprocess(image, backends["f32"].profile)[0]
    times = {p: [] for p in backends}
    for i in range(warmup + repeat):
        for p, backend in backends.items():
            t0 = time.perf_counter()
            backend.encode(x)
            if i >= warmup:
                times[p].append(time.perf_counter() - t0)
    return {p: statistics.median(t) for p, t in times.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=20, help="timed encoder calls per precision")
    ap.add_argument("--threads", type=int, help="CPU threads (default: OpenVINO's choice)")
    args = ap.parse_args()

    import openvino as ov

    capabilities = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    if "BF16" not in capabilities:
        print(f"this CPU has no bf16 support in OpenVINO ({capabilities}): bf16 would run as f32", file=sys.stderr)
        return 1
    backends = {p: load_backend("litemedsam", precision=p, threads=args.threads) for p in PRECISIONS}

    rows = []
    for title, make in CASES.items():
        case = make()
        segs, seconds = {}, {}
        for p, backend in backends.items():
            segs[p], seconds[p] = segment(backend, case)
        n = len(case["boxes"])
        agree = dice_per_label(segs["bf16"], segs["f32"], n)
        vs_gt = {p: float(np.mean(dice_per_label(segs[p], case["gts"], n))) for p in PRECISIONS}
        middle = case["imgs"] if case["imgs"].ndim == 2 else case["imgs"][len(case["imgs"]) // 2]
        latency = encoder_latency(backends, middle, args.repeat)
        rows.append((title, n, min(agree), float(np.mean(agree)), vs_gt, latency, seconds))

    print(machine_line(sys.orig_argv) + f", threads {args.threads or 'default'}\n")
    print("| case | objects | DSC bf16 vs f32 (min / mean) | DSC vs reference f32 / bf16 | "
          "encoder median f32 / bf16 (ms) | speed-up | case seconds f32 / bf16 |")
    print("|---|---|---|---|---|---|---|")
    for title, n, worst, mean, vs_gt, latency, seconds in rows:
        print(f"| {title} | {n} | {worst:.4f} / {mean:.4f} | {vs_gt['f32']:.4f} / {vs_gt['bf16']:.4f} | "
              f"{1000 * latency['f32']:.1f} / {1000 * latency['bf16']:.1f} | {latency['f32'] / latency['bf16']:.2f}x | "
              f"{seconds['f32']:.2f} / {seconds['bf16']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`medsamlite predict` on challenge-format cases, as separate processes (LiteMedSAM, f32):

* a 3D multi-object case (MNI152, 60 slices, 5 boxes with different z ranges): the default order
  (each slice embedded once, all objects decoded together) against `--official-order` (every object
  on its own, every slice encoded again): seconds and whether the masks are identical;
* a cold 2D case (one MNI152 slice, one box): process start to the output file, median of --repeat
  runs (the model converted and its compiled blob cached by an untimed first run, as after first use).

Usage: .venv/bin/python benchmarks/bench_predict.py [--repeat 5]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_common import PYTHON, load, machine_line, median, private_home

MEDSAMLITE = Path(PYTHON).parent / "medsamlite"


def predict(cases: Path, out: Path, *extra: str) -> tuple[float, float]:
    """(seconds from process start to its exit, seconds the case took by efficiency.csv)."""
    t0 = time.perf_counter()
    proc = subprocess.run([str(MEDSAMLITE), "predict", "-i", str(cases), "-o", str(out), "-q", *extra], check=False, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    case_seconds = float((out / "efficiency.csv").read_text().splitlines()[-1].split(",")[1])
    return seconds, case_seconds


def encoder_calls(case: dict) -> tuple[int, int]:
    """Encoder calls of the default order (each slice any object covers, once: they all fit the cache)
    and of the official order (every object encodes each slice of its z range again)."""
    from MedSAMLiteLib.core.profiles import PROFILES
    from MedSAMLiteLib.core.propagate import count_slice_steps

    shape, profile = case["imgs"].shape, PROFILES["litemedsam"]
    covered = {z for b in case["boxes"] for z in range(max(0, int(b[2])), min(shape[0] - 1, int(b[5])) + 1)}
    return len(covered), sum(count_slice_steps(shape, b[None], profile) for b in case["boxes"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5, help="cold 2D runs")
    args = ap.parse_args()

    from MedSAMLiteLib.headless.cases import atomic_savez
    from MedSAMLiteLib.headless.samples import mni152_multi_case, mni152_slice_case

    print(machine_line(sys.orig_argv) + "\n")
    with private_home(), tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        multi, single = mni152_multi_case(), mni152_slice_case()
        atomic_savez(tmp / "in3d" / "3DBox_MR_mni152x5.npz", imgs=multi["imgs"], boxes=multi["boxes"])
        atomic_savez(tmp / "in2d" / "2DBox_MR_mni152slice.npz", imgs=single["imgs"], boxes=single["boxes"])
        predict(tmp / "in2d", tmp / "warm")  # converts LiteMedSAM and fills the compiled-model cache: untimed

        before = load()
        runs = {"fast": [], "official": []}
        for i, order in enumerate(("fast", "official", "fast")):
            runs[order].append(predict(tmp / "in3d", tmp / f"out3d_{i}", *(["--official-order"] if order == "official" else [])))
        with np.load(tmp / "out3d_0" / "3DBox_MR_mni152x5.npz") as a, np.load(tmp / "out3d_1" / "3DBox_MR_mni152x5.npz") as b:
            identical = np.array_equal(a["segs"], b["segs"])
        fast_calls, official_calls = encoder_calls(multi)
        fast = median([s for s, _ in runs["fast"]])
        official = median([s for s, _ in runs["official"]])
        fast_case = median([c for _, c in runs["fast"]])
        official_case = median([c for _, c in runs["official"]])
        after_3d = load()

        cold = []
        for i in range(args.repeat):
            out = tmp / f"out2d_{i}"
            start = time.time()
            total, _ = predict(tmp / "in2d", out)
            cold.append((total, (out / "2DBox_MR_mni152slice.npz").stat().st_mtime - start))

    print(f"3D multi-object case {multi['imgs'].shape} with {len(multi['boxes'])} boxes, default order twice and "
          f"--official-order once, interleaved (load average before {before}, after {after_3d}):\n")
    print("| order | process (s) | case by efficiency.csv (s) | encoder calls | masks |")
    print("|---|---|---|---|---|")
    print(f"| default (slice-ordered, each slice embedded once) | {fast:.1f} | {fast_case:.1f} | {fast_calls} | |")
    print(f"| --official-order | {official:.1f} | {official_case:.1f} | {official_calls} | {'identical' if identical else 'DIFFER'} |")
    print(f"\nspeed-up {official / fast:.2f}x by process, {official_case / fast_case:.2f}x by case time; "
          f"the encoder-call ratio {official_calls / fast_calls:.2f} bounds it while the encoder dominates\n")
    print(f"Cold 2D case {single['imgs'].shape}, one box, {args.repeat} processes (load average after {load()}): "
          f"process start to output file median {median([f for _, f in cold]):.2f} s "
          f"(to exit {median([t for t, _ in cold]):.2f} s; runs {', '.join(f'{f:.2f}' for _, f in cold)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark `medsamlite-torch evaluate`'s DSC/NSD against the challenge's reference computation.

The reference is the challenge's evaluation/compute_metrics.py formula on DeepMind's
`surface-distance` package (PyPI `surface-distance`): per label 1..max(gts) `compute_dice_coefficient`,
and, when the case DSC > 0.2, `compute_surface_distances` + `compute_surface_dice_at_tolerance(2.0)`.

Cases are real 3D brain MR label maps: the MNI152 2009c template's grey/white-matter probability
maps (shipped in the nilearn wheel; fetched with `pip download --no-deps` through
`MedSAMLiteLib.headless.samples`, cached, never committed). Ground truth: white matter, grey matter
and a small "lesion"; predictions: the maps smoothed and thresholded differently, the lesion shifted and
enlarged, as a model's errors would look. With --synthetic (or when the wheel cannot be had)
ellipsoid phantoms of the same size are used instead.

Usage: python pytorch/benchmarks/bench_evaluate.py [--repeat 3] [--ref-repeat 1] [--synthetic]
Prints per-case times (median of repeats), the total ratio, and checks the numbers are equal.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
import warnings
from datetime import datetime, timezone

import numpy as np
from scipy import ndimage

warnings.filterwarnings("ignore", category=DeprecationWarning)  # surface-distance uses old scipy names


def _axial(data: np.ndarray) -> np.ndarray:
    """RAS (x, y, z) -> (z, y, x) axial slices."""
    return np.ascontiguousarray(np.transpose(data, (2, 1, 0))[:, ::-1])


def mni_maps() -> tuple[np.ndarray, np.ndarray]:
    import nibabel as nib

    from MedSAMLiteLib.headless.samples import mni152_paths

    paths = mni152_paths()
    gm, wm = (_axial(np.asanyarray(nib.load(paths[k]).dataobj)).astype(np.float32) / 255 for k in ("gm", "wm"))
    return gm, wm


def phantom_maps(shape=(189, 233, 197)) -> tuple[np.ndarray, np.ndarray]:
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    c = [s / 2 for s in shape]
    r = np.sqrt(((z - c[0]) / 70) ** 2 + ((y - c[1]) / 90) ** 2 + ((x - c[2]) / 75) ** 2)
    rng = np.random.default_rng(0)
    wobble = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), 6) * 4
    wm = np.clip(1.6 - 2.2 * (r + wobble), 0, 1).astype(np.float32)
    gm = np.clip(1 - np.abs(r + wobble - 0.85) * 6, 0, 1).astype(np.float32)
    return gm, wm


def label_map(gm, wm, lesion_center, lesion_radius) -> np.ndarray:
    labels = np.zeros(gm.shape, np.uint8)
    labels[wm > 0.5] = 1
    labels[(gm > 0.5) & (labels == 0)] = 2
    z, y, x = np.ogrid[: gm.shape[0], : gm.shape[1], : gm.shape[2]]
    dz, dy, dx = lesion_center
    labels[(z - dz) ** 2 + (y - dy) ** 2 + (x - dx) ** 2 <= lesion_radius**2] = 3
    return labels


def make_cases(gm, wm) -> list[tuple[str, np.ndarray, np.ndarray, tuple[float, float, float]]]:
    """(name, gts, segs, spacing in array-axis order)."""
    center = tuple(int(s * f) for s, f in zip(gm.shape, (0.55, 0.45, 0.6)))
    gts = label_map(gm, wm, center, 9)
    smooth_gm, smooth_wm = ndimage.gaussian_filter(gm, 1.2), ndimage.gaussian_filter(wm, 1.2)
    cases = []
    for i, (t_wm, t_gm, shift) in enumerate([(0.45, 0.55, 2), (0.55, 0.45, -3)]):
        segs = label_map(np.where(smooth_gm > t_gm, 1.0, 0.0), np.where(smooth_wm > t_wm, 1.0, 0.0),
                         tuple(c + shift for c in center), 10)
        cases.append((f"3DBox_MR_{i:04d}", gts, segs, (1.0, 1.0, 1.0)))
    # thick axial slices (every 3rd) and a declared anisotropic voxel
    cases.append(("3DBox_MR_0002", gts[::3].copy(), cases[0][2][::3].copy(), (3.0, 1.0, 1.0)))
    cases.append(("3DBox_MR_0003", gts, cases[1][2], (1.0, 1.2, 0.8)))
    return cases


def reference_scores(gts, segs, spacing) -> tuple[float, float]:
    import surface_distance as sd

    labels = range(1, int(gts.max()) + 1)
    dsc = float(np.mean([sd.compute_dice_coefficient(gts == i, segs == i) for i in labels]))
    if not dsc > 0.2:
        return dsc, 0.0
    nsd = float(np.mean([sd.compute_surface_dice_at_tolerance(
        sd.compute_surface_distances(gts == i, segs == i, spacing), 2.0) for i in labels]))
    return dsc, nsd


def timed(fn, repeat: int):
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=3, help="repeats of ours per case (median)")
    p.add_argument("--ref-repeat", type=int, default=1, help="repeats of the reference per case (median)")
    p.add_argument("--synthetic", action="store_true", help="ellipsoid phantoms instead of MNI152")
    args = p.parse_args(argv)

    try:
        import surface_distance  # noqa: F401
    except ImportError:
        print("needs the reference: pip install surface-distance==0.1", file=sys.stderr)
        return 2
    from medsamlite_torch.evaluation.metrics import score_case

    source = "synthetic phantoms"
    if not args.synthetic:
        try:
            gm, wm = mni_maps()
            source = "MNI152 2009c grey/white-matter maps (nilearn wheel)"
        except Exception as e:  # no index, no nibabel...
            print(f"MNI152 unavailable ({e}); using synthetic phantoms", file=sys.stderr)
            gm, wm = phantom_maps()
    else:
        gm, wm = phantom_maps()

    import scipy

    print(f"date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}")
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPU(s), {platform.platform()}")
    print(f"python {platform.python_version()}, numpy {np.__version__}, scipy {scipy.__version__}")
    print(f"cases: {source}")
    print(f"{'case':<15} {'shape':<16} {'spacing':<16} {'ref s':>8} {'ours s':>8} {'ratio':>6}  "
          f"{'DSC':>8} {'NSD':>8}  max|diff|")
    ref_total = ours_total = 0.0
    worst = 0.0
    for name, gts, segs, spacing in make_cases(gm, wm):
        t_ref, (dsc_ref, nsd_ref) = timed(lambda: reference_scores(gts, segs, spacing), args.ref_repeat)
        t_ours, score = timed(lambda: score_case(gts, segs, "3D", spacing), args.repeat)
        diff = max(abs(score.dsc - dsc_ref), abs(score.nsd - nsd_ref))
        worst = max(worst, diff)
        ref_total += t_ref
        ours_total += t_ours
        print(f"{name:<15} {str(gts.shape):<16} {str(spacing):<16} {t_ref:8.2f} {t_ours:8.2f} {t_ref / t_ours:6.1f}  "
              f"{score.dsc:8.4f} {score.nsd:8.4f}  {diff:.1e}")
    print(f"total: reference {ref_total:.2f} s, ours {ours_total:.2f} s, {ref_total / ours_total:.1f}x faster "
          f"(one process; `evaluate` also runs cases in parallel)")
    ok = worst <= 1e-6
    print(f"equal to the reference (|diff| <= 1e-6): {'yes' if ok else 'NO'} (max {worst:.1e})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

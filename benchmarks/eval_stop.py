"""When does a 3D sweep stop? The "stop after N empty slices" rule (core/propagate.EmptyRun) measured on a
real MR with 3D reference labels, as the Segment Editor effect propagates: each object's tight 2D box on
its middle slice, propagated over every slice of the volume (the effect's span reaches both ends).

LiteMedSAM never returns an empty mask past a structure: it hallucinates a few pixels. Each sweep is run
once to the volume's end (no stop) and its masks' areas are replayed through EmptyRun with each candidate
threshold: a stop truncates a sweep, so the masks before it are those of the full run. `--check` runs
the engine's own loop (objects.segment) with the default rule and asserts that it matches the replay.

    PYTHONPATH=MedSAMLite python benchmarks/make_correction_cases.py CASES   # builds CASES/3DBox_MR_aal.npz
    python benchmarks/eval_stop.py --case CASES/3DBox_MR_aal.npz --axes 0 1 [--check]

Per rule: how far past the true end (slices) each sweep stops (median, max over sweeps), sweeps that stopped
inside the structure, mean 3D DSC with the vanished masks before a stop kept or dropped, the share of the
full run's correct voxels kept, and slices decoded per object (mean).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "MedSAMLite"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_common import machine_line  # noqa: E402
from MedSAMLiteLib.core import objects  # noqa: E402
from MedSAMLiteLib.core.objects import KeySlices  # noqa: E402
from MedSAMLiteLib.core.preprocess import mask_bbox  # noqa: E402
from MedSAMLiteLib.core.propagate import VANISHED_FRACTION, VANISHED_PIXELS, EmptyRun  # noqa: E402
from MedSAMLiteLib.headless.commands import backend_args, load_segmenter  # noqa: E402

LIMIT = 3  # the module's default "Stop after empty slices"
RULES = [("empty only (before)", 0.0, 1), ("< 10 px", 0.0, 10), ("< 2 % of largest", 0.02, 1),
         ("< 5 % of largest", 0.05, 1), ("< 10 % of largest", 0.10, 1), ("< 15 % of largest", 0.15, 1),
         ("< 20 % of largest", 0.20, 1), ("< 20 % or 10 px", 0.20, 10), ("< 30 % of largest", 0.30, 1)]


def sweeps(gt: np.ndarray, segmenter):
    """Run the object to both volume ends; -> (slices up from the middle, slices down), each a list of
    (z, mask area, overlap with gt), and the middle slice."""
    zs = np.flatnonzero(gt.any(axis=(1, 2)))
    mid = int(zs[len(zs) // 2])  # the middle of the slices it is on
    depth = gt.shape[0]
    result = objects.segment(segmenter, KeySlices.from_roi(_roi(gt, mid), depth, segmenter.profile.propagation))
    assert result.decoded == depth, (result.decoded, depth)

    def row(z):
        m = result.mask(z)
        return z, int(m.sum()), int((m & gt[z]).sum())

    return [row(z) for z in range(mid, depth)], [row(z) for z in range(mid - 1, -1, -1)], mid


def replay(up, down, fraction, pixels, limit=LIMIT, drop=False):
    """The rows each sweep keeps under the rule: (up rows, down rows), all the slices decoded, or with `drop`
    the run of vanished masks that stopped a sweep left out."""
    out = []
    for rows, start in ((up, 0), (down, up[0][1])):
        rule = EmptyRun(limit, largest=start, fraction=fraction, pixels=pixels)
        kept = []
        for r in rows:
            if rule.stopped:
                break
            kept.append(r)
            rule.add(r[1])
        out.append(kept[: len(kept) - limit] if drop and rule.stopped else kept)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--case", required=True, help="npz with imgs (D, H, W) uint8 and gts labels (make_correction_cases.py's 3DBox_MR_aal)")
    p.add_argument("--axes", type=int, nargs="+", default=[0], help="voxel axes to propagate along (0: the array's D)")
    p.add_argument("--save", help="keep each object's full sweeps (z, area, overlap) in SAVE-axisN.npy; reused when there")
    p.add_argument("--check", action="store_true", help="run objects.segment with the default rule and compare with the replay")
    backend_args(p)
    args = p.parse_args()
    with np.load(args.case) as data:
        imgs, gts = data["imgs"], data["gts"]
    segmenter = None
    print(machine_line(sys.argv), f"load average {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    for axis in args.axes:
        order = (axis, *(a for a in range(3) if a != axis))
        image, labels = np.ascontiguousarray(imgs.transpose(order)), np.ascontiguousarray(gts.transpose(order))
        saved = Path(f"{args.save}-axis{axis}.npy") if args.save else None
        t0 = time.perf_counter()
        if saved is not None and saved.exists():
            runs = [(label, labels == label, up, down, mid) for label, up, down, mid in np.load(saved, allow_pickle=True)]
        else:
            if segmenter is None:
                segmenter = load_segmenter(args)
                segmenter.cache.resize(max(segmenter.cache.max_bytes, 2048 * 2**20))
            segmenter.set_image(image, key=("eval_stop", args.case, axis))
            runs = [(label, labels == label, *sweeps(labels == label, segmenter)) for label in range(1, int(labels.max()) + 1)]
            if saved is not None:
                np.save(saved, np.array([(r[0], r[2], r[3], r[4]) for r in runs], dtype=object), allow_pickle=True)
        print(f"\naxis {axis} ({image.shape[0]} slices, {len(runs)} objects; sweeps {'read' if segmenter is None else 'run'} in "
              f"{time.perf_counter() - t0:.0f} s)")
        print("| rule | past the end: median, max (slices) | stopped inside | mean DSC, vanished kept | mean DSC, vanished dropped "
              "| correct voxels kept | slices decoded (mean) |")
        print("|---|---|---|---|---|---|---|")
        for name, fraction, pixels in [("no stop", None, None)] + RULES:
            past, inside, dscs, decoded, correct = [], 0, {False: [], True: []}, [], [0, 0]
            for label, gt, up, down, mid in runs:
                zs = np.flatnonzero(gt.any(axis=(1, 2)))
                kept = (up, down) if fraction is None else replay(up, down, fraction, pixels)
                for rows, end, sign in ((kept[0], zs[-1], 1), (kept[1], zs[0], -1)):
                    last = rows[-1][0] if rows else mid
                    past.append(sign * (last - end))
                    inside += sign * (last - end) < 0
                decoded.append(len(kept[0]) + len(kept[1]))
                correct[0] += sum(r[2] for r in kept[0] + kept[1])
                correct[1] += sum(r[2] for r in up + down)
                for drop in dscs:
                    rows = sum((up, down) if fraction is None else replay(up, down, fraction, pixels, drop=drop), [])
                    dscs[drop].append(2 * sum(r[2] for r in rows) / (sum(r[1] for r in rows) + gt.sum()))
            print(f"| {name} | {np.median(past):.0f}, {max(past)} | {inside} of {len(past)} | {np.mean(dscs[False]):.3f} | "
                  f"{np.mean(dscs[True]):.3f} | {correct[0] / correct[1]:.3f} | {np.mean(decoded):.0f} |")
        if args.check:
            if segmenter is None:
                raise SystemExit("--check needs the sweeps run here: give a --save prefix without saved files")
            for label, gt, up, down, mid in runs:
                result = objects.segment(segmenter, KeySlices.from_roi(_roi(gt, mid), len(image), segmenter.profile.propagation),
                                         stop_after_empty=LIMIT)
                want = replay(up, down, VANISHED_FRACTION, VANISHED_PIXELS)
                assert result.decoded == len(want[0]) + len(want[1]), (label, result.decoded)
                assert sorted(result.masks) == sorted(r[0] for r in want[0] + want[1] if r[1]), label
            print(f"check: objects.segment with the default rule decodes the replay's slices ({len(runs)} objects)")
    return 0


def _roi(gt: np.ndarray, mid: int):
    """The tight box of `gt` on slice `mid` over the effect's span: centred there, reaching both volume ends."""
    box = mask_bbox(gt[mid])
    reach = max(mid, gt.shape[0] - 1 - mid)
    return box[0], box[1], mid - reach, box[2], box[3], mid + reach


if __name__ == "__main__":
    sys.exit(main())

"""`medsamlite evaluate-corrections`: a simulated user corrects each 3D result, as the CVPR 2025
interactive challenge scores it (a box, then up to five corrections, DSC after each).

Two users, both told only what they see on the screen (the result) and where it is wrong (the truth):
* `box`: on the slice with the most wrong voxels (a slice not already holding that exact key) the user
  draws the true box of the structure there, or marks "not on this slice" when the structure is absent;
* `click`: the challenge's click, a point at the centre (largest distance inside) of the largest
  26-connected error region. The published weights take boxes only, so a click edits the box on its
  slice: a click on missed structure grows the slice's result box to take the point in, a click on a
  false positive cuts the box at the point on the side that keeps most of the result (nothing left:
  not on this slice).
Every object of a case gets one correction per round; a correction is a key slice (core/objects.py).
The case's DSC after k corrections is the mean over its objects; DSC_AUC is the challenge's: the
trapezoid over the DSCs after corrections 1..K at unit steps (the box result is left out, as there).
NSD (2 mm, surfel areas with the case's spacing) is the challenge's (`surface.py`); it needs scipy.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import importlib.util
import sys
import time
from pathlib import Path

import numpy as np

from ..core import objects
from ..core.objects import KeySlices
from ..core.preprocess import mask_bbox

TOLERANCE_MM = 2.0
PROTOCOLS = ("box", "click")


def _log(message: str) -> None:
    print(f"medsamlite: {message}", file=sys.stderr)


def register(sub: argparse._SubParsersAction) -> None:
    from .commands import backend_args

    p = sub.add_parser("evaluate-corrections", help="simulate a user correcting 3D results on challenge cases with gts")
    p.add_argument("cases", help="folder of 3D*.npz cases with imgs, boxes, gts (and spacing)")
    p.add_argument("-o", "--output", required=True, help="folder for corrections.csv and summary.csv")
    p.add_argument("--corrections", type=int, default=5, help="corrections per object (default 5)")
    p.add_argument("--protocol", default="box", choices=[*PROTOCOLS, "both"],
                   help="box: the true box on the worst slice (default); click: the challenge's click; both")
    p.add_argument("--between", default="boxes", choices=objects.INTERPOLATE,
                   help="between two key slices interpolate their boxes as given (default) or the boxes of their masks")
    backend_args(p)
    p.set_defaults(func=_evaluate)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 2.0 * int(np.logical_and(a, b).sum()) / total if total else 1.0


def _nsd_function():
    if importlib.util.find_spec("scipy") is None:
        _log("NSD left out: it needs scipy (pip install scipy)")
        return None
    from .surface import surface_dice

    return surface_dice


def nsd(gt: np.ndarray, pred: np.ndarray, spacing, surface_dice, dsc: float) -> float:
    """Normalised surface Dice at 2 mm, computed only when DSC > 0.2 (0 otherwise), as the challenge."""
    if surface_dice is None:
        return float("nan")
    if dsc <= 0.2 or not pred.any():
        return 0.0
    zs = np.flatnonzero((gt | pred).any(axis=(1, 2)))
    lo, hi = max(0, zs[0] - 3), zs[-1] + 4  # the surfaces lie here: score a slab (same value, less work)
    return float(surface_dice(gt[lo:hi], pred[lo:hi], tuple(float(s) for s in spacing), TOLERANCE_MM))


def _truth_box(gt_slice: np.ndarray):
    box = mask_bbox(gt_slice)
    return None if box is None else tuple(float(v) for v in box)


def box_correction(obj: KeySlices, pred: np.ndarray, gt: np.ndarray):
    """(slice, box or None) the box user gives next, or None when nothing is wrong."""
    errors = np.logical_xor(pred, gt).sum(axis=(1, 2))
    for z in np.argsort(-errors, kind="stable"):
        if errors[z] == 0:
            return None
        truth = _truth_box(gt[z])
        current = dict(obj.keys)
        if int(z) in current and current[int(z)] == truth:
            continue  # already told: the next worst slice
        return int(z), truth
    return None


def click_correction(obj: KeySlices, pred: np.ndarray, gt: np.ndarray):
    """(slice, box or None) from the challenge's click at the centre of the largest error region."""
    from scipy import ndimage

    error = np.logical_xor(pred, gt)
    if not error.any():
        return None
    regions, n = ndimage.label(error, structure=np.ones((3, 3, 3), bool))
    largest = 1 + int(np.argmax(ndimage.sum_labels(error, regions, range(1, n + 1))))
    where = ndimage.find_objects(regions)[largest - 1]
    part = np.pad(regions[where] == largest, 1)
    distance = ndimage.distance_transform_edt(part)[1:-1, 1:-1, 1:-1]
    z, y, x = (int(i) + s.start for i, s in zip(np.unravel_index(np.argmax(distance), distance.shape), where))
    box = mask_bbox(pred[z])
    if gt[z, y, x]:  # missed structure: the box takes the point in
        base = box if box is not None else np.asarray(obj.keys[0][1], dtype=np.float64)
        return z, (min(base[0], x), min(base[1], y), max(base[2], x), max(base[3], y))
    x0, y0, x1, y1 = box  # a false positive: cut the box at the point, keeping most of the result
    cuts = [(x0, y0, x - 1, y1), (x + 1, y0, x1, y1), (x0, y0, x1, y - 1), (x0, y + 1, x1, y1)]
    cuts = [c for c in cuts if c[2] >= c[0] and c[3] >= c[1]]
    if not cuts:
        return z, None
    kept = [pred[z, int(c[1]) : int(c[3]) + 1, int(c[0]) : int(c[2]) + 1].sum() for c in cuts]
    best = cuts[int(np.argmax(kept))]
    return z, (tuple(float(v) for v in best) if max(kept) > 0 else None)


def simulate(segmenter, box, gt: np.ndarray, corrections: int, protocol: str, spacing, surface_dice, between: str = "boxes"):
    """[(corrections, dsc, nsd, seconds, slice, prompt)] for one object: its first result, then each correction."""
    correct = box_correction if protocol == "box" else click_correction
    obj = KeySlices.from_roi(box, gt.shape[0], segmenter.profile.propagation)
    t0 = time.perf_counter()
    result = objects.segment(segmenter, obj)
    seconds, z, prompt = time.perf_counter() - t0, obj.keys[0][0], obj.keys[0][1]
    pred = result.volume()
    rows = []
    for k in range(corrections + 1):
        if k:
            step = correct(obj, pred, gt)
            if step is None:  # nothing wrong: the result stands
                seconds, z, prompt = 0.0, "", "none needed"
            else:
                z, prompt = step
                obj = obj.with_key(z, prompt)
                t0 = time.perf_counter()
                result = objects.segment(segmenter, obj, previous=result, interpolate=between)
                seconds = time.perf_counter() - t0
                pred = result.volume()
        d = dice(pred, gt)
        rows.append((k, d, nsd(gt, pred, spacing, surface_dice, d), seconds, z,
                     "not here" if prompt is None else prompt if isinstance(prompt, str) else " ".join(f"{v:g}" for v in prompt)))
    return rows


def dsc_auc(values: list[float]) -> float:
    """The challenge's AUC: trapezoid over the values after each correction (the first result left out)."""
    after = np.asarray(values[1:], dtype=np.float64)
    return float(np.sum((after[1:] + after[:-1]) / 2)) if len(after) > 1 else 0.0


def _evaluate(args: argparse.Namespace) -> int:
    from .cases import CaseError, load_case, validate
    from .commands import load_segmenter

    folder, out = Path(args.cases), Path(args.output)
    paths = sorted(p for p in folder.glob("3D*.npz"))
    if not paths:
        _log(f"no 3D*.npz cases in {folder}")
        return 2
    if args.corrections < 0:
        _log("--corrections must be 0 or more")
        return 2
    segmenter = load_segmenter(args)
    segmenter.cache.resize(max(segmenter.cache.max_bytes, 4096 * 2**20))  # a case's slices stay encoded
    surface_dice = _nsd_function()
    protocols = PROTOCOLS if args.protocol == "both" else (args.protocol,)
    if "click" in protocols and importlib.util.find_spec("scipy") is None:
        _log("the click protocol needs scipy (3D error regions): pip install scipy, or use --protocol box")
        return 2
    out.mkdir(parents=True, exist_ok=True)
    rows, failed = [], 0
    for path in paths:
        try:
            case = load_case(path)
            validate(case)
            with np.load(path) as data:
                gts = data["gts"] if "gts" in data.files else None
            if gts is None or gts.shape != case.imgs.shape:
                raise CaseError("needs gts with the shape of imgs")
        except (CaseError, OSError, ValueError) as e:
            _log(f"{path.name}: {e}")
            failed += 1
            continue
        spacing = case.spacing if case.spacing is not None else (1.0, 1.0, 1.0)
        # keyed by content: cases cut from the same volume share their slices' embeddings
        segmenter.set_image(case.imgs, key=("imgs", case.imgs.shape, hashlib.sha1(np.ascontiguousarray(case.imgs)).hexdigest()))
        for label, box in enumerate(case.boxes, start=1):
            gt = gts == label
            for protocol in protocols:
                for row in simulate(segmenter, box, gt, args.corrections, protocol, spacing, surface_dice, args.between):
                    rows.append((case.name, label, *row[:4], protocol, *row[4:]))
                _log(f"{case.name} object {label} {protocol}: DSC " + " ".join(f"{r[3]:.3f}" for r in rows[-args.corrections - 1:]))
    _write(out, rows, protocols, args.corrections)
    return 1 if failed else 0


def _write(out: Path, rows: list, protocols, corrections: int) -> None:
    with open(out / "corrections.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["case", "object", "corrections", "dsc", "nsd", "seconds", "protocol", "slice", "prompt"])
        w.writerows([(c, o, k, f"{d:.4f}", f"{n:.4f}", f"{s:.3f}", p, z, b) for c, o, k, d, n, s, p, z, b in rows])
    ks = range(corrections + 1)
    with open(out / "summary.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["case", "protocol", "objects", *[f"DSC_{k}" for k in ks], *[f"NSD_{k}" for k in ks],
                    "DSC_AUC", "NSD_AUC", "DSC_Final", "NSD_Final", "seconds_per_correction"])
        for case in dict.fromkeys(r[0] for r in rows):
            for protocol in protocols:
                mine = [r for r in rows if r[0] == case and r[6] == protocol]
                dscs = [float(np.mean([r[3] for r in mine if r[2] == k])) for k in ks]
                nsds = [float(np.mean([r[4] for r in mine if r[2] == k])) for k in ks]
                secs = [r[5] for r in mine if r[2] > 0 and r[7] != ""]
                w.writerow([case, protocol, len({r[1] for r in mine}), *[f"{v:.4f}" for v in dscs + nsds],
                            f"{dsc_auc(dscs):.4f}", f"{dsc_auc(nsds):.4f}", f"{dscs[-1]:.4f}", f"{nsds[-1]:.4f}",
                            f"{np.mean(secs):.3f}" if secs else ""])
    for protocol in protocols:
        mine = [r for r in rows if r[6] == protocol]
        means = " ".join(f"{k}: {np.mean([r[3] for r in mine if r[2] == k]):.3f}" for k in ks)
        print(f"{protocol}: mean DSC after corrections ({len({(r[0], r[1]) for r in mine})} objects) {means}")

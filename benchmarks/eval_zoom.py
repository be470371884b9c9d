"""Default whole-slice pipeline vs ROI zoom (MedSAMLiteLib/core/zoom.py) on real images from registry packages.

Objects (reference masks from the packages' images, atlases and tissue maps; tight boxes):
* 2D: scikit-image `coins` (coins), `immunohistochemistry` (haematoxylin nuclei), axial slices of
  TotalSegmentator's CT brain atlas (brain window; lateral-ventricle pieces, the brain) and of the
  MNI152 T1 (its lateral-ventricle pieces, the brain);
* 3D: the lateral ventricles and a brain slab of both volumes.
Each object is scored on its own (one object = one case): DSC and NSD at 2 px / 2 mm tolerance
(medsamlite_torch.evaluation; 2D NSD on the contour, 3D with the voxel spacing). Size class by the
box's longer side over the slice's longer side: small < 8 %, medium 8-20 %, large > 20 %.

    python benchmarks/eval_zoom.py --tune      # choose margin / min_size / max_box_fraction on the tuning half
    python benchmarks/eval_zoom.py             # table on the held-out half (2D) and on the 3D objects
Needs scipy, scikit-image and the pytorch/ package's evaluation module (the core does not).
"""
from __future__ import annotations

import argparse
import itertools
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "MedSAMLite"))

from MedSAMLiteLib.headless import samples  # noqa: E402
from MedSAMLiteLib.headless.labels import boxes_from_labels  # noqa: E402
from MedSAMLiteLib.models.store import load_backend  # noqa: E402
from MedSAMLiteLib.core.presets import window  # noqa: E402
from MedSAMLiteLib.core.segmenter import Segmenter  # noqa: E402
from MedSAMLiteLib.core.zoom import ZoomRule  # noqa: E402

SIZES = ((0.08, "small"), (0.20, "medium"), (np.inf, "large"))
SLICE_STEP = 6  # axial slices taken for the 2D set: every 6th through the ventricles
MIN_PIECE = 20  # 2D ventricle pieces smaller than this many pixels are not objects


@dataclass
class Item:
    """One object: its image (2D slice or 3D volume), reference mask, tight box, source name."""

    source: str
    image: np.ndarray
    gt: np.ndarray
    box: np.ndarray
    spacing: tuple[float, ...] | None = None

    @property
    def size(self) -> str:
        b = self.box
        half = len(b) // 2
        side = max(b[half + i] - b[i] + 1 for i in range(2))
        frac = side / max(self.gt.shape[-2:])
        return next(name for limit, name in SIZES if frac < limit)


def _components(mask: np.ndarray, min_size: int) -> list[np.ndarray]:
    from scipy import ndimage

    labels, n = ndimage.label(mask)
    sizes = ndimage.sum_labels(mask, labels, range(1, n + 1))
    return [labels == i + 1 for i in np.flatnonzero(sizes >= min_size)]


def _largest(mask: np.ndarray, count: int) -> list[np.ndarray]:
    from scipy import ndimage

    labels, n = ndimage.label(mask)
    sizes = ndimage.sum_labels(mask, labels, range(1, n + 1))
    return [labels == i + 1 for i in np.argsort(sizes)[::-1][:count]]


def _box(mask: np.ndarray) -> np.ndarray:
    return boxes_from_labels(mask.astype(np.uint8))[1][0]


def _ventricles(csf: np.ndarray) -> list[np.ndarray]:
    """Lateral ventricles (the two largest CSF components) and the fourth ventricle (the largest
    other component whose centre lies below the lateral ventricles' lowest slice)."""
    pieces = _largest(csf, 12)
    lowest = min(np.flatnonzero(p.any(axis=(1, 2)))[0] for p in pieces[:2])
    fourth = next(p for p in pieces[2:] if np.flatnonzero(p.any(axis=(1, 2))).mean() < lowest)
    return [*pieces[:2], fourth]


def brain_volumes() -> list[tuple[str, np.ndarray, np.ndarray, list[np.ndarray]]]:
    """(name, uint8 volume, brain mask, ventricles (3 masks)): CT atlas and MNI152.
    CSF: dark voxels inside the brain eroded by 4-6 voxels (CT < 15 HU; MR T1 < 90 and grey +
    white matter probability < 100/255)."""
    import SimpleITK as sitk
    from scipy import ndimage

    hu = samples._axial(sitk.GetArrayFromImage(sitk.ReadImage(str(samples.ct_brain_atlas_path()))).T)
    ct_brain = samples.brain_mask(hu)
    ct_vents = _ventricles(ndimage.binary_erosion(ct_brain, iterations=6) & (hu < 15))
    paths = samples.mni152_paths()
    gm, wm = (samples._axial(sitk.GetArrayFromImage(sitk.ReadImage(str(paths[k]))).T) for k in ("gm", "wm"))
    mni = samples.mni152_case()
    mni_brain = mni["gts"] > 0
    dark = (mni["imgs"] < 90) & ((gm.astype(np.int32) + wm) < 100)
    mni_vents = _ventricles(ndimage.binary_erosion(mni_brain, iterations=4) & dark)
    return [("CT", window(hu, 80.0, 40.0), ct_brain, ct_vents), ("MR", mni["imgs"], mni_brain, mni_vents)]


def items_2d(volumes) -> list[Item]:
    from scipy import ndimage
    from skimage import color, data, filters

    items = []
    coins = samples.coins_case()
    items += [Item("coins", coins["imgs"], coins["gts"] == i, b) for i, b in enumerate(coins["boxes"], start=1)]
    ihc = data.immunohistochemistry()
    haem = color.rgb2hed(ihc)[..., 0]
    nuclei = ndimage.binary_fill_holes(ndimage.binary_opening(haem > filters.threshold_otsu(haem)))
    for m in _components(nuclei, 80)[::3]:  # every third nucleus keeps the run short
        box = _box(m)
        if box.min() > 0 and box[2] < ihc.shape[1] - 1 and box[3] < ihc.shape[0] - 1 and m.sum() <= 1500:
            items.append(Item("nuclei", ihc, m, box))
    for name, vol, brain, vents in volumes:
        zs = np.flatnonzero(np.any(np.logical_or.reduce(vents), axis=(1, 2)))
        for z in range(zs[0] + 2, zs[-1] - 1, SLICE_STEP):
            for vent in vents:
                items += [Item(f"{name} ventricle", vol[z], p, _box(p)) for p in _components(vent[z], MIN_PIECE)]
        zs = np.flatnonzero(np.any(brain, axis=(1, 2)))
        items += [Item(f"{name} brain", vol[z], brain[z], _box(brain[z])) for z in range(zs[0] + 10, zs[-1] - 9, 2 * SLICE_STEP)]
    return items


def items_3d(volumes) -> list[Item]:
    items = []
    for name, vol, brain, vents in volumes:
        items += [Item(f"{name} ventricle 3D", vol, v, _box(v), (1.0, 1.0, 1.0)) for v in vents]
        zs = np.flatnonzero(np.any(vents[0], axis=(1, 2)))  # the brain slab: around the lateral ventricles
        slab = slice(int(zs.mean()) - 20, int(zs.mean()) + 20)  # 40 slices through the ventricles
        items.append(Item(f"{name} brain 3D", vol[slab], brain[slab], _box(brain[slab]), (1.0, 1.0, 1.0)))
    return items


def predict(segmenter: Segmenter, item: Item) -> tuple[np.ndarray, float]:
    """Mask and seconds of one object segmented from scratch (one click: nothing cached)."""
    t0 = time.perf_counter()
    if item.gt.ndim == 2:
        segmenter.set_image(item.image[None])
        mask = segmenter.decode(0, item.box[None])[0]
    else:
        segmenter.set_image(item.image)
        mask = segmenter.label_3d(item.box[None]) > 0
    return mask, time.perf_counter() - t0


def score(item: Item, mask: np.ndarray) -> tuple[float, float]:
    from medsamlite_torch.evaluation.metrics import score_case

    kind = "2D" if item.gt.ndim == 2 else "3D"
    s = score_case(item.gt.astype(np.uint8), mask.astype(np.uint8), kind, item.spacing, nsd_mode="contour")
    return s.dsc, s.nsd


def run(engine, items: list[Item], rule: ZoomRule | None) -> list[tuple[float, float, float]]:
    segmenter = Segmenter(engine, zoom=rule)
    out = []
    for item in items:
        mask, seconds = predict(segmenter, item)
        out.append((*score(item, mask), seconds))
    return out


def summary(items: list[Item], results: list[tuple[float, float, float]], key) -> dict:
    groups: dict = {}
    for item, r in zip(items, results):
        groups.setdefault(key(item), []).append(r)
    return {k: np.asarray(v) for k, v in sorted(groups.items())}


def tune(engine, items: list[Item]) -> None:
    """Grid on the tuning half: margin x min_size on small and medium objects, then max_box_fraction."""
    small = [i for i in items if i.size != "large"]
    base = np.mean([r[0] for r in run(engine, small, None)])
    print(f"small+medium tuning objects: {len(small)}, default mean DSC {base:.3f}")
    best = None
    for margin, min_size in itertools.product((0.25, 0.5, 1.0), (32, 64, 128)):
        dsc = np.mean([r[0] for r in run(engine, small, ZoomRule(margin, min_size, 1.0))])
        print(f"margin {margin:4.2f} min_size {min_size:3d}: mean DSC {dsc:.3f}")
        best = max(best or (dsc, margin, min_size), (dsc, margin, min_size))
    _, margin, min_size = best
    default = run(engine, items, None)
    for fraction in (0.2, 0.3, 0.4, 0.6, 1.0):
        res = run(engine, items, ZoomRule(margin, min_size, fraction))
        by = summary(items, [(r[0] - d[0], 0, 0) for r, d in zip(res, default)], lambda i: i.size)
        print(f"max_box_fraction {fraction}: DSC gain " + ", ".join(f"{k} {v[:, 0].mean():+.3f}" for k, v in by.items()))


def table(engine, items: list[Item], rule: ZoomRule, title: str) -> str:
    default, zoomed = run(engine, items, None), run(engine, items, rule)
    rows = [f"| {title} | n | DSC default | DSC zoom | NSD default | NSD zoom | s/object default | s/object zoom |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for key in (lambda i: i.size, lambda i: f"{i.source} ({i.size})"):
        d, z = summary(items, default, key), summary(items, zoomed, key)
        for k in d:
            a, b = d[k].mean(axis=0), z[k].mean(axis=0)
            rows.append(f"| {k} | {len(d[k])} | {a[0]:.3f} | {b[0]:.3f} | {a[1]:.3f} | {b[1]:.3f} | {a[2]:.3f} | {b[2]:.3f} |")
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tune", action="store_true", help="grid search on the tuning half instead of the table")
    parser.add_argument("--threads", type=int, help="CPU threads for the backend")
    args = parser.parse_args()
    engine = load_backend("litemedsam", threads=args.threads)
    volumes = brain_volumes()
    all_2d = items_2d(volumes)
    tuning, held_out = all_2d[0::2], all_2d[1::2]
    if args.tune:
        tune(engine, tuning)
        return 0
    rule = ZoomRule()
    print(f"rule: {rule}\n")
    print(table(engine, held_out, rule, "2D (held-out half)"))
    print()
    print(table(engine, items_3d(volumes), rule, "3D"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""3D cases with ground truth for `medsamlite evaluate-corrections`, built from real images that registry
packages ship (TotalSegmentator's CT brain atlas, MNI152 from nilearn; eval_zoom.py's objects):

* `3DBox_CT_ventricles`, `3DBox_MR_ventricles`: both lateral ventricles and the fourth ventricle
  (three objects), the volume cut to their slices and 3 more on each side;
* `3DBox_CT_brain`, `3DBox_MR_brain`: the brain in a 40-slice slab through the lateral ventricles;
* `3DBox_CT_wholebrain`, `3DBox_MR_wholebrain`: the whole brain, every second slice (2 mm apart);
* `3DBox_MR_whitematter`: the white matter of each hemisphere (two objects), the same slices;
* `3DBox_MR_aal`: 19 structures of the AAL atlas on its own subject's T1 (Colin27 "ch2", Debian's
  mricron-data): caudate, putamen, pallidum, thalamus, hippocampus, amygdala, insula and calcarine
  cortex on each side, each cerebellar hemisphere and the vermis (AAL labels merged), the whole head.
Tight 3D boxes (the challenge's), spacing 1 mm (2 mm between slices where every second is taken).

    python benchmarks/make_correction_cases.py OUT_DIR
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "MedSAMLite"))

from eval_zoom import brain_volumes  # noqa: E402
from MedSAMLiteLib.headless.cases import atomic_savez  # noqa: E402
from MedSAMLiteLib.headless.labels import boxes_from_labels  # noqa: E402


def _save(out: Path, name: str, imgs: np.ndarray, labels: np.ndarray, spacing=(1.0, 1.0, 1.0)) -> None:
    gts, boxes, _ = boxes_from_labels(labels)
    atomic_savez(out / f"{name}.npz", imgs=np.ascontiguousarray(imgs), gts=gts, boxes=boxes, spacing=np.asarray(spacing))
    print(f"{name}: {imgs.shape}, {len(boxes)} objects, z ranges " + ", ".join(f"{b[2]}-{b[5]}" for b in boxes))


def white_matter() -> np.ndarray:
    import SimpleITK as sitk

    from MedSAMLiteLib.headless import samples

    wm = samples._axial(sitk.GetArrayFromImage(sitk.ReadImage(str(samples.mni152_paths()["wm"]))).T)
    return wm > 127


def _hemispheres(mask: np.ndarray) -> np.ndarray:
    """Label 1 left of the middle column, 2 right of it; the largest 3D component of each."""
    from scipy import ndimage

    labels = np.zeros(mask.shape, np.uint16)
    middle = mask.shape[2] // 2
    for label, part in ((1, slice(0, middle)), (2, slice(middle, None))):
        half = np.zeros_like(mask)
        half[:, :, part] = mask[:, :, part]
        comps, n = ndimage.label(half)
        labels[comps == 1 + int(np.argmax(ndimage.sum_labels(half, comps, range(1, n + 1))))] = label
    return labels


AAL_OBJECTS = [[71], [72], [73], [74], [75], [76], [77], [78], [37], [38], [41], [42], [29], [30], [43], [44],
               list(range(91, 109, 2)), list(range(92, 109, 2)), list(range(109, 117))]
"""AAL labels of each object (aal.nii.txt): left/right caudate, putamen, pallidum, thalamus, hippocampus,
amygdala, insula, calcarine; cerebellar hemispheres (Cerebelum_* L, R); vermis."""


def aal_case(out: Path) -> None:
    import SimpleITK as sitk

    from MedSAMLiteLib.headless import samples

    paths = samples.colin27_aal_paths()
    t1, aal = (samples._axial(sitk.GetArrayFromImage(sitk.ReadImage(str(paths[k]))).T) for k in ("ch2", "aal"))
    labels = np.zeros(aal.shape, np.uint16)
    for label, group in enumerate(AAL_OBJECTS, start=1):
        labels[np.isin(aal, group)] = label
    _save(out, "3DBox_MR_aal", t1, labels)


def main() -> int:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    for name, vol, brain, vents in brain_volumes():
        zs = np.flatnonzero(np.logical_or.reduce(vents).any(axis=(1, 2)))
        slab = slice(max(0, zs[0] - 3), zs[-1] + 4)
        labels = np.zeros(vol.shape, np.uint16)
        for i, v in enumerate(vents, start=1):
            labels[v] = i
        _save(out, f"3DBox_{name}_ventricles", vol[slab], labels[slab])
        middle = int(np.flatnonzero(vents[0].any(axis=(1, 2))).mean())
        slab = slice(middle - 20, middle + 20)
        _save(out, f"3DBox_{name}_brain", vol[slab], brain[slab].astype(np.uint16))
        # the whole brain, every second slice (2 mm, as many clinical scans): its ends drift when propagated
        zs = np.flatnonzero(brain.any(axis=(1, 2)))
        every2 = slice(max(0, zs[0] - 2), zs[-1] + 3, 2)
        _save(out, f"3DBox_{name}_wholebrain", vol[every2], brain[every2].astype(np.uint16), (2.0, 1.0, 1.0))
        if name == "MR":  # white matter of each hemisphere (> 50 %, largest component), same slices
            _save(out, "3DBox_MR_whitematter", vol[every2], _hemispheres(white_matter()[every2]), (2.0, 1.0, 1.0))
    aal_case(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

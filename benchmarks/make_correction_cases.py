"""3D cases with ground truth for `medsamlite evaluate-corrections`, built from real images that registry
packages ship (TotalSegmentator's CT brain atlas, MNI152 from nilearn; eval_zoom.py's objects):

* `3DBox_CT_ventricles`, `3DBox_MR_ventricles`: both lateral ventricles and the fourth ventricle
  (three objects), the volume cut to their slices and 3 more on each side;
* `3DBox_CT_brain`, `3DBox_MR_brain`: the brain in a 40-slice slab through the lateral ventricles.
Tight 3D boxes (the challenge's), spacing 1 mm.

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


def _save(out: Path, name: str, imgs: np.ndarray, labels: np.ndarray) -> None:
    gts, boxes, _ = boxes_from_labels(labels)
    atomic_savez(out / f"{name}.npz", imgs=np.ascontiguousarray(imgs), gts=gts, boxes=boxes, spacing=np.ones(3))
    print(f"{name}: {imgs.shape}, {len(boxes)} objects, z ranges " + ", ".join(f"{b[2]}-{b[5]}" for b in boxes))


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
    return 0


if __name__ == "__main__":
    sys.exit(main())

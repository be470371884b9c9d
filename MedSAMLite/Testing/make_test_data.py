"""Write the self-test's small real volume (Resources/TestData), as plain-text NRRD files.

Source: TotalSegmentator's CT brain atlas (HU, 1 mm; `samples.ct_brain_atlas_path`). Kept small
and text-only for the repository: 3 mm in-plane (mean of 3x3 blocks), 12 axial slices 4 mm apart
through the middle of the brain, int16 HU. The reference mask is `samples.brain_mask` of the 1 mm
volume, sampled the same way (majority of each block). Run: python make_test_data.py
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[1] / "Resources" / "TestData"
STEP, SLICE_STEP, SLICES = 3, 4, 12


def write_ascii_nrrd(path: Path, array: np.ndarray, spacing, origin, directions, kind: str) -> None:
    """array (k, j, i); directions: RAS unit vectors of i, j, k (columns)."""
    k, j, i = array.shape
    dirs = " ".join("(" + ",".join(f"{v * s:g}" for v in d) + ")" for d, s in zip(np.asarray(directions).T, spacing))
    header = [
        "NRRD0004", f"type: {kind}", "dimension: 3", "space: right-anterior-superior", f"sizes: {i} {j} {k}",
        f"space directions: {dirs}", "kinds: domain domain domain", "endian: little", "encoding: ascii",
        "space origin: (" + ",".join(f"{v:g}" for v in origin) + ")",
    ]
    rows = [" ".join(str(int(v)) for v in row) for row in array.reshape(-1, i)]
    path.write_text("\n".join(header) + "\n\n" + "\n".join(rows) + "\n")


def main() -> int:
    import SimpleITK as sitk

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from MedSAMLiteLib.headless.samples import brain_mask, ct_brain_atlas_path

    image = sitk.ReadImage(str(ct_brain_atlas_path()))
    hu = sitk.GetArrayFromImage(image)  # (k, j, i); k runs inferior -> superior for this atlas
    mask = brain_mask(hu)
    zs = np.flatnonzero(mask.any(axis=(1, 2)))
    middle = (zs[0] + zs[-1]) // 2
    picked = middle + SLICE_STEP * (np.arange(SLICES) - SLICES // 2)
    j, i = (hu.shape[1] // STEP) * STEP, (hu.shape[2] // STEP) * STEP

    def blocks(a):
        a = a[picked, :j, :i].astype(np.float64)
        return a.reshape(len(picked), j // STEP, STEP, i // STEP, STEP).mean(axis=(2, 4))

    volume = np.round(blocks(hu)).astype(np.int16)
    reference = (blocks(mask) > 0.5).astype(np.uint8)
    lps_to_ras = np.diag([-1.0, -1.0, 1.0])
    direction = lps_to_ras @ np.asarray(image.GetDirection()).reshape(3, 3)
    spacing = np.array(image.GetSpacing()) * [STEP, STEP, SLICE_STEP]
    # centre of the first block, in RAS
    first = image.TransformContinuousIndexToPhysicalPoint([(STEP - 1) / 2, (STEP - 1) / 2, float(picked[0])])
    origin = lps_to_ras @ np.asarray(first)
    OUT.mkdir(parents=True, exist_ok=True)
    write_ascii_nrrd(OUT / "MedSAMLiteTestVolume.nrrd", volume, spacing, origin, direction, "int16")
    write_ascii_nrrd(OUT / "MedSAMLiteTestReference.nrrd", reference, spacing, origin, direction, "uint8")
    print(f"{OUT}: volume {volume.shape} (k, j, i), {reference.sum()} reference voxels")
    return 0


if __name__ == "__main__":
    sys.exit(main())

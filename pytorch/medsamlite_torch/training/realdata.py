"""Small real training sets from images that registry packages ship (for tests and the docs' run).

* MR: the MNI152 T1 template (nilearn wheel) cut into axial slabs, each a `3DBox_MR_*` case with
  labels 1 = white matter (> 50 %), 2 = the rest of the brain (samples.mni152_case's mask).
* CT-like: scikit-image's Shepp-Logan phantom, one label per connected region of each grey level.
* Microscopy: scikit-image's coins (samples.coins_case), left and right halves as two cases.
* Fundus: scikit-image's retina.jpg, label 1 = the fundus disc.
Held out: one MNI slab (slices no training slab has) and the right half of the coins.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from MedSAMLiteLib.headless.cases import atomic_savez
from MedSAMLiteLib.headless.labels import boxes_from_labels
from MedSAMLiteLib.headless.samples import _axial, coins_case, mni152_case, mni152_paths


def _mni_labels(slab: slice) -> dict[str, np.ndarray]:
    import nibabel as nib

    case = mni152_case(slab)
    wm = _axial(np.asanyarray(nib.load(mni152_paths()["wm"]).dataobj))[slab] > 127
    brain = case["gts"] > 0
    labels = np.where(brain & wm, 1, np.where(brain, 2, 0)).astype(np.uint16)
    return {"imgs": case["imgs"], "gts": labels}


def _phantom() -> dict[str, np.ndarray]:
    from scipy import ndimage
    from skimage import data

    image = (data.shepp_logan_phantom() * 255).round().astype(np.uint8)
    labels = np.zeros(image.shape, np.uint16)
    n = 0
    for level in np.unique(image):
        if level == 0:
            continue
        comps, k = ndimage.label(image == level)
        for c in range(1, k + 1):
            region = comps == c
            if region.sum() >= 30:
                n += 1
                labels[region] = n
    return {"imgs": image, "gts": labels}


def _retina() -> dict[str, np.ndarray]:
    from scipy import ndimage
    from skimage import data, transform

    image = (transform.rescale(data.retina(), 0.25, channel_axis=-1, anti_aliasing=True) * 255).round().astype(np.uint8)
    disc = ndimage.binary_fill_holes(ndimage.binary_opening(image[..., 0] > 30, iterations=3))
    return {"imgs": image, "gts": disc.astype(np.uint16)}


def _relabel(labels: np.ndarray) -> np.ndarray:
    out = np.zeros(labels.shape, np.uint16)
    for i, v in enumerate(v for v in np.unique(labels) if v > 0):
        out[labels == v] = i + 1
    return out


def _with_boxes(case: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    case["gts"] = _relabel(case["gts"])
    case["boxes"] = boxes_from_labels(case["gts"])[1]
    if case["imgs"].ndim == 3 and case["gts"].ndim == 3:
        case["spacing"] = np.ones(3)
    return case


def write_real_data(
    out_dir: str | Path,
    train_slabs: tuple[tuple[int, int], ...] = ((40, 70), (70, 100), (130, 160)),
    val_slab: tuple[int, int] = (100, 130),
    every: int = 1,
) -> tuple[Path, Path]:
    """Write `out_dir/train` and `out_dir/val` (uncompressed .npz, so training memory-maps them).

    `every` keeps every n-th slice of the slabs (smaller sets for tests).
    """
    out = Path(out_dir)
    cases: dict[str, dict[str, dict[str, np.ndarray]]] = {"train": {}, "val": {}}
    for lo, hi in train_slabs:
        cases["train"][f"3DBox_MR_mni{lo:03d}"] = _mni_labels(slice(lo, hi, every))
    cases["val"][f"3DBox_MR_mni{val_slab[0]:03d}"] = _mni_labels(slice(val_slab[0], val_slab[1], every))
    coins = coins_case()
    half = coins["imgs"].shape[1] // 2
    cases["train"]["2DBox_Microscopy_coinsleft"] = {"imgs": coins["imgs"][:, :half], "gts": coins["gts"][:, :half]}
    cases["val"]["2DBox_Microscopy_coinsright"] = {"imgs": coins["imgs"][:, half:], "gts": coins["gts"][:, half:]}
    cases["train"]["2DBox_CT_phantom"] = _phantom()
    cases["train"]["2DBox_Fundus_retina"] = _retina()
    for split, named in cases.items():
        for name, case in named.items():
            atomic_savez(out / split / f"{name}.npz", compress=False, **_with_boxes(case))
    return out / "train", out / "val"

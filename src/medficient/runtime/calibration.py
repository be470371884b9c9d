"""Real images to calibrate int8 quantisation on (torch-free).

MNI152 slices that the benchmark cases do not use (axial slices outside z 50..109, plus coronal
and sagittal slices) and the scikit-image pictures that ship in its wheel (except `coins`, the
2D benchmark case), each preprocessed exactly as the model's profile feeds the network.
"""
from __future__ import annotations

import numpy as np

from ..inference.preprocess import preprocess
from ..profiles import Profile

# shipped inside scikit-image (no download); `coins` is left out: it is the 2D benchmark case
SKIMAGE_PICTURES = (
    "camera", "moon", "cell", "retina", "microaneurysms", "immunohistochemistry", "astronaut",
    "brick", "page", "text", "hubble_deep_field", "rocket", "coffee", "grass",
)
BENCH_AXIAL = range(50, 110)  # mni152x5 (50..109) and mni152 (60..99): never calibrated on


def _mni_slices(count: int) -> list[np.ndarray]:
    from ..samples import _axial, mni152_paths

    import nibabel as nib

    t1 = _axial(np.asanyarray(nib.load(mni152_paths()["t1"]).dataobj)).astype(np.uint8)  # (D, H, W)
    depth, height, width = t1.shape
    axial = [t1[z] for z in range(8, depth - 8, 4) if z not in BENCH_AXIAL]
    coronal = [t1[:, y] for y in range(20, height - 20, 12)]
    sagittal = [t1[:, :, x] for x in range(20, width - 20, 12)]
    slices = [s for s in axial + coronal + sagittal if s.max() > s.min()]
    pick = np.linspace(0, len(slices) - 1, min(count, len(slices))).round().astype(int)
    return [np.ascontiguousarray(slices[i]) for i in pick]


def _pictures(count: int) -> list[np.ndarray]:
    from skimage import data

    out = []
    for name in SKIMAGE_PICTURES[:count]:
        image = np.asarray(getattr(data, name)())
        if image.dtype != np.uint8:
            image = (255 * (image.astype(np.float64) / max(float(image.max()), 1e-8))).astype(np.uint8)
        if image.ndim == 3 and image.shape[2] == 4:
            image = image[:, :, :3]
        out.append(np.ascontiguousarray(image))
    return out


def calibration_images(profile: Profile, count: int = 48) -> list[np.ndarray]:
    """`count` network inputs (1, 3, S, S) float32: about 3/4 MNI152 slices, 1/4 pictures."""
    n_pictures = min(len(SKIMAGE_PICTURES), max(1, count // 4))
    images = _mni_slices(count - n_pictures) + _pictures(n_pictures)
    return [preprocess(image, profile)[0] for image in images]

"""An Image (and optional label map) -> the arrays of a challenge-format case, geometry included."""
from __future__ import annotations

import numpy as np

from ..core import presets as intensity
from .image_io import Image
from .labels import LabelError, boxes_from_labels


def make_case(
    image: Image,
    labels: np.ndarray | None = None,
    modality: str | None = None,
    preset: str | None = None,
    window_wl: tuple[float, float] | None = None,
    instances: bool = False,
    min_size: int = 1,
) -> dict[str, np.ndarray]:
    """Arrays for np.savez: `imgs` uint8, `spacing` (3D, array-axis order), the `geom_*` geometry,
    `modality` and `intensity` (what was done), and with `labels`: `gts`, `boxes`, `label_values`."""
    modality = modality or image.modality
    case = {"imgs": image.to_uint8(preset, window_wl, modality)}
    if image.kind == "3D":
        case["spacing"] = image.spacing.astype(np.float64)
    if labels is not None:
        gts, boxes, values = boxes_from_labels(labels, instances=instances, min_size=min_size)
        if len(boxes) == 0:
            raise LabelError("the label map holds no object" + (f" of at least {min_size} voxels" if min_size > 1 else ""))
        case.update(gts=gts, boxes=boxes, label_values=values)
    case.update(image.geometry.to_arrays())
    is_plain_uint8 = image.kind == "2D" and image.array.dtype == np.uint8
    case["intensity"] = np.asarray(intensity.describe(modality, preset, window_wl, is_plain_uint8))
    case["modality"] = np.asarray(modality or "")
    return case

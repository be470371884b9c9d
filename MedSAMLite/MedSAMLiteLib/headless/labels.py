"""Label maps -> challenge objects: `gts` (label i = object i) and one tight box per object.

Boxes follow the challenge convention (PIPELINES.md §1, checked by headless/cases.py): 2D
`[x_min, y_min, x_max, y_max]`, 3D `[x_min, y_min, z_min, x_max, y_max, z_max]`, where x is the
column, y the row and z the slice of the (D,H,W) array, all maxima inclusive voxel indices.
"""
from __future__ import annotations

import numpy as np

MAX_OBJECTS = np.iinfo(np.uint16).max


class LabelError(ValueError):
    """A label map that cannot give objects (the caller adds the file name)."""


def _check(labels: np.ndarray) -> np.ndarray:
    if labels.dtype.kind == "f":
        if not np.all(np.isfinite(labels)) or not np.array_equal(labels, np.round(labels)):
            raise LabelError("label values must be whole numbers")
    elif labels.dtype.kind not in "biu":
        raise LabelError(f"labels of type {labels.dtype} are not a label map")
    if labels.size and labels.min() < 0:
        raise LabelError(f"negative label value {labels.min():g}")
    return labels.astype(np.int64) if labels.dtype.kind in "bf" else labels


def boxes_from_labels(
    labels: np.ndarray, instances: bool = False, min_size: int = 1
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """-> (gts uint16 with objects numbered 1..N, boxes (N, 4|6) int64, label_values (N,) source labels).

    One object per non-zero label value (in ascending order), or with `instances` one per
    connected component of each value (voxels touching at a face, edge or corner), in ascending
    value then scan order. Objects smaller than `min_size` voxels are dropped (set to 0 in gts).
    """
    from scipy import ndimage

    labels = _check(np.asarray(labels))
    values = np.unique(labels)
    values = values[values > 0]
    gts = np.zeros(labels.shape, dtype=np.uint16)
    boxes, kept = [], []
    structure = ndimage.generate_binary_structure(labels.ndim, labels.ndim)
    per_value = ndimage.find_objects(_dense(labels, values))
    for index, value in enumerate(values):
        region = per_value[index]  # bounding slices of this value: work inside them only
        crop = labels[region] == value
        parts, count = ndimage.label(crop, structure) if instances else (crop.astype(np.int32), 1)
        for part, where in enumerate(ndimage.find_objects(parts), start=1):
            if where is None:
                continue
            mask = parts[where] == part
            if int(mask.sum()) < min_size:
                continue
            if len(kept) == MAX_OBJECTS:
                raise LabelError(f"more than {MAX_OBJECTS} objects do not fit a uint16 label map")
            kept.append(int(value))
            target = tuple(slice(r.start + w.start, r.start + w.stop) for r, w in zip(region, where))
            gts[target][mask] = len(kept)
            lo = [s.start for s in target][::-1]  # (z,)y,x -> x,y(,z)
            hi = [s.stop - 1 for s in target][::-1]
            boxes.append(lo + hi)
    width = 2 * labels.ndim
    return gts, np.asarray(boxes, dtype=np.int64).reshape(-1, width), np.asarray(kept, dtype=np.int64)


def _dense(labels: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Labels renumbered 1..len(values) in value order (0 stays 0), for one find_objects pass."""
    if len(values) and values[-1] < 1 << 20:  # a lookup table is much faster than a search
        table = np.zeros(int(values[-1]) + 1, dtype=np.int32)
        table[values] = np.arange(1, len(values) + 1)
        return table[labels]
    dense = np.searchsorted(values, labels) + 1
    dense[labels == 0] = 0
    return dense

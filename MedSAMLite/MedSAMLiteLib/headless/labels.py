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
    import SimpleITK as sitk

    labels = _check(np.asarray(labels))
    values = np.unique(labels)
    values = values[values > 0]
    gts = np.zeros(labels.shape, dtype=np.uint16)
    boxes, kept = [], []
    for value in values:
        region = _bounding_slices(labels == value)  # work inside this value's box only
        crop = labels[region] == value
        parts = crop.astype(np.uint32)
        if instances:  # numbered in scan order of their first voxel, as a raster scan meets them
            parts = sitk.GetArrayFromImage(sitk.ConnectedComponent(sitk.GetImageFromArray(crop.astype(np.uint8)), True))
        sizes = np.bincount(parts.ravel())
        for part in range(1, len(sizes)):
            if sizes[part] < min_size:
                continue
            if len(kept) == MAX_OBJECTS:
                raise LabelError(f"more than {MAX_OBJECTS} objects do not fit a uint16 label map")
            mask = parts == part
            where = _bounding_slices(mask)
            kept.append(int(value))
            target = tuple(slice(r.start + w.start, r.start + w.stop) for r, w in zip(region, where))
            gts[target][mask[where]] = len(kept)
            boxes.append([s.start for s in target][::-1] + [s.stop - 1 for s in target][::-1])  # (z,)y,x -> x,y(,z)
    width = 2 * labels.ndim
    return gts, np.asarray(boxes, dtype=np.int64).reshape(-1, width), np.asarray(kept, dtype=np.int64)


def _bounding_slices(mask: np.ndarray) -> tuple[slice, ...]:
    """The tightest index box around the True voxels of a non-empty mask."""
    slices = []
    for axis in range(mask.ndim):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        slices.append(slice(int(hit[0]), int(hit[-1]) + 1))
    return tuple(slices)

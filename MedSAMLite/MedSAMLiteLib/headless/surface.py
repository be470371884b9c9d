"""Surface elements and normalised surface dice (NSD), computed like DeepMind's `surface-distance`.

The reference (`compute_surface_distances` + `compute_surface_dice_at_tolerance`) crops both masks
to the bounding box of their union, zero-pads it by one voxel, turns every 2x2(x2) neighbourhood
into a code, keeps the codes that are neither empty nor full as surface elements ("surfels") with
the area of that code, runs a Euclidean distance transform of each surface over the whole crop,
and sorts all distances. NSD only asks whether each surfel lies within the tolerance of the other
surface, so here:

* nothing is sorted;
* a surfel can only be within the tolerance of surfels at most `floor(tol / spacing) + 1` voxels
  away on every axis; the points of one surface outside the other surface's bounding box plus that
  margin are out of tolerance without further work;
* the remaining points are tested against the integer offsets whose length is within the tolerance
  (nearest first, dropping each point at its first hit); when that would be more work than a
  distance transform, `scipy.ndimage.distance_transform_edt` runs on the intersection of the two
  surfaces' bounding boxes plus the margin instead.

Offset lengths are computed with the same float operations as `distance_transform_edt`
(per-axis offset times spacing, squared, summed in axis order, square root), so the decisions
`distance <= tolerance` and therefore the numbers equal the reference's.

The one implementation: `medsamlite evaluate-corrections` scores with it, and pytorch/'s
`medsamlite-torch evaluate` imports it from here (pytorch/ depends on the extension, never the reverse).
Evaluation only (never in Slicer): scipy is imported when its distance transform is used.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np

from .surface_tables import contour_lengths, surfel_areas

# One voxel of a distance transform costs about as much as this many offset tests (measured).
_EDT_COST_PER_VOXEL = 32.0


def bounding_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """Tightest slices around the non-zero voxels of `mask`, or None when it is empty."""
    out = []
    for axis in range(mask.ndim):
        others = tuple(a for a in range(mask.ndim) if a != axis)
        nz = np.flatnonzero(np.any(mask, axis=others) if others else mask)
        if nz.size == 0:
            return None
        out.append(slice(int(nz[0]), int(nz[-1]) + 1))
    return tuple(out)


def neighbour_codes(mask: np.ndarray) -> np.ndarray:
    """Codes of all 2^d neighbourhoods of `mask` zero-padded by one voxel on every side.

    The result has one more element than `mask` on every axis; element i covers voxels i-1 and i
    (the corner between them), exactly like the reference's correlation with its 2x2(x2) kernel.
    """
    nd = mask.ndim
    code = np.zeros(tuple(s + 2 for s in mask.shape), np.uint8)
    code[(slice(1, -1),) * nd] = mask
    for axis in range(nd - 1, -1, -1):  # separable: last axis weight 2, then 4, then 16
        lo = tuple(slice(None, -1) if a == axis else slice(None) for a in range(nd))
        hi = tuple(slice(1, None) if a == axis else slice(None) for a in range(nd))
        code = code[lo] * np.uint8(1 << (1 << (nd - 1 - axis))) + code[hi]
    return code


@dataclass
class Surface:
    """Surface points of a mask on the corner grid of its crop: flat indices and areas."""

    shape: tuple[int, ...]  # corner grid shape (crop shape + 1)
    index: np.ndarray  # flat indices into the corner grid
    area: np.ndarray  # surfel area (3D, spacing units squared) or contour length (2D)

    @property
    def border(self) -> np.ndarray:
        grid = np.zeros(int(np.prod(self.shape)), bool)
        grid[self.index] = True
        return grid.reshape(self.shape)

    @cached_property
    def coords(self) -> tuple[np.ndarray, ...]:
        """Integer coordinates of the surface points, one 1-D array per axis."""
        return np.unravel_index(self.index, self.shape)


def area_table(spacing: tuple[float, ...]) -> np.ndarray:
    if len(spacing) == 3:
        return surfel_areas(tuple(spacing))
    if len(spacing) == 2:
        return contour_lengths(tuple(spacing))
    raise ValueError(f"only 2D and 3D masks are supported, not {len(spacing)}D")


def surface(mask: np.ndarray, spacing: tuple[float, ...]) -> Surface:
    """Surface elements of a boolean mask (already cropped; padding is added here)."""
    codes = neighbour_codes(mask)
    full = (1 << (1 << mask.ndim)) - 1
    flat = codes.ravel()
    index = np.flatnonzero((flat != 0) & (flat != full))
    return Surface(codes.shape, index, area_table(spacing)[flat[index]])


def _edt_length(offsets: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """Lengths of integer offsets, with distance_transform_edt's float operations and order."""
    d = offsets.astype(np.float64) * spacing  # per axis: dt[ii] *= sampling[ii]
    d = d * d
    acc = d[:, 0].copy()
    for axis in range(1, d.shape[1]):
        acc += d[:, axis]
    return np.sqrt(acc)


@lru_cache(maxsize=64)
def tolerance_offsets(spacing: tuple[float, ...], tolerance: float) -> tuple[np.ndarray, np.ndarray]:
    """Integer offsets no longer than `tolerance` (nearest first) and the margin per axis."""
    sp = np.asarray(spacing, np.float64)
    margin = np.floor(tolerance / sp).astype(np.int64) + 1
    if np.prod(2 * margin + 1) > 5_000_000:  # absurdly fine spacing: leave it to the distance transform
        return np.zeros((0, len(sp)), np.int64), margin
    grids = np.meshgrid(*[np.arange(-m, m + 1) for m in margin], indexing="ij")
    offsets = np.stack([g.ravel() for g in grids], axis=1)
    length = _edt_length(offsets, sp)
    keep = length <= tolerance
    offsets, length = offsets[keep], length[keep]
    order = np.lexsort((np.abs(offsets).sum(axis=1), length))
    offsets = offsets[order]
    offsets.flags.writeable = False
    return offsets, margin


def _box(coords: tuple[np.ndarray, ...], margin: np.ndarray, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    lo = np.maximum(np.array([c.min() for c in coords]) - margin, 0)
    hi = np.minimum(np.array([c.max() for c in coords]) + margin + 1, shape)
    return lo, hi


def _inside(coords: tuple[np.ndarray, ...], lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    out = (coords[0] >= lo[0]) & (coords[0] < hi[0])
    for axis in range(1, len(coords)):
        out &= (coords[axis] >= lo[axis]) & (coords[axis] < hi[axis])
    return out


def _flat(coords: tuple[np.ndarray, ...], shift: np.ndarray, strides: list[int]) -> np.ndarray:
    """Flat index of (coords + shift) in a C-ordered array with the given element strides."""
    pos = (coords[0] + int(shift[0])) * strides[0]
    for axis in range(1, len(coords)):
        pos += (coords[axis] + int(shift[axis])) * strides[axis]
    return pos


def within_tolerance(src: Surface, dst: Surface, spacing: tuple[float, ...], tolerance: float) -> np.ndarray:
    """For every surface point of `src`: is the nearest point of `dst` within `tolerance`?

    Same decision as `distance_transform_edt(~dst_border, sampling=spacing) <= tolerance` read at
    the `src` points (infinite distance when `dst` is empty).
    """
    hit = np.zeros(src.index.size, bool)
    if src.index.size == 0 or dst.index.size == 0:
        return hit
    shape = src.shape
    offsets, margin = tolerance_offsets(tuple(float(s) for s in spacing), float(tolerance))
    # only src points inside dst's box + margin can be near dst; the test needs no more than that box
    dlo, dhi = _box(dst.coords, margin, shape)
    inside = _inside(src.coords, dlo, dhi)
    candidates = slice(None) if inside.all() else np.flatnonzero(inside)
    points = src.coords if isinstance(candidates, slice) else tuple(c[candidates] for c in src.coords)
    if points[0].size == 0:
        return hit
    slo, shi = _box(points, margin, shape)
    lo, hi = np.maximum(slo, dlo), np.minimum(shi, dhi)  # domain: both boxes, each with margin
    keep = _inside(dst.coords, lo, hi)
    targets = dst.coords if keep.all() else tuple(c[keep] for c in dst.coords)
    if targets[0].size == 0:
        return hit
    volume = float(np.prod(hi - lo))
    if offsets.shape[0] and points[0].size * offsets.shape[0] <= _EDT_COST_PER_VOXEL * volume:
        hit[candidates] = _offset_search(points, targets, offsets, margin, lo, hi)
    else:
        hit[candidates] = _edt_search(points, targets, spacing, tolerance, lo, hi)
    return hit


def _offset_search(points, targets, offsets, margin, lo, hi) -> np.ndarray:
    """Test each point against the targets at every offset, nearest offsets first."""
    size = hi - lo + 2 * margin  # the domain, padded so that point + offset never leaves it
    strides = [int(np.prod(size[a + 1:])) for a in range(len(size))]
    grid = np.zeros(int(np.prod(size)), bool)
    grid[_flat(targets, margin - lo, strides)] = True
    pos = _flat(points, margin - lo, strides)
    hit = np.zeros(pos.size, bool)
    active = np.arange(pos.size)
    for delta in offsets @ np.asarray(strides, np.int64):
        found = grid[pos + delta] if delta else grid[pos]
        if found.any():
            hit[active[found]] = True
            miss = ~found
            active, pos = active[miss], pos[miss]
            if active.size == 0:
                break
    return hit


def _edt_search(points, targets, spacing, tolerance, lo, hi) -> np.ndarray:
    """Distance transform of the targets restricted to the domain [lo, hi)."""
    from scipy.ndimage import distance_transform_edt

    free = np.ones(tuple(int(n) for n in hi - lo), bool)
    free[tuple(c - int(o) for c, o in zip(targets, lo))] = False
    dist = distance_transform_edt(free, sampling=np.asarray(spacing, np.float64))
    return dist[tuple(c - int(o) for c, o in zip(points, lo))] <= tolerance


def surface_dice(mask_gt: np.ndarray, mask_pred: np.ndarray, spacing, tolerance: float = 2.0) -> float:
    """Normalised surface dice of two boolean masks (2D or 3D) at `tolerance` (spacing units).

    Equal to `compute_surface_dice_at_tolerance(compute_surface_distances(gt, pred, spacing), tol)`
    of DeepMind's `surface-distance`; NaN when both masks are empty (the reference divides 0 by 0),
    0.0 when exactly one is.
    """
    mask_gt, mask_pred = np.asarray(mask_gt, bool), np.asarray(mask_pred, bool)
    if mask_gt.shape != mask_pred.shape:
        raise ValueError(f"shape mismatch: {mask_gt.shape} vs {mask_pred.shape}")
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != mask_gt.ndim or mask_gt.ndim not in (2, 3):
        raise ValueError(f"need 2D or 3D masks with one spacing per axis, got {mask_gt.shape} and {spacing}")
    box = bounding_box(mask_gt | mask_pred)
    if box is None:
        return float("nan")
    return surface_dice_cropped(mask_gt[box], mask_pred[box], spacing, tolerance)


def surface_dice_cropped(mask_gt: np.ndarray, mask_pred: np.ndarray, spacing: tuple[float, ...], tolerance: float) -> float:
    """`surface_dice` of masks already cropped to (at least) the bounding box of their union.

    Any crop that contains both objects gives the same value: the crop is padded with one empty
    voxel on every side, as the reference pads its bounding box.
    """
    gt, pred = surface(mask_gt, spacing), surface(mask_pred, spacing)
    if gt.index.size == 0 and pred.index.size == 0:
        return float("nan")
    total = gt.area.sum() + pred.area.sum()
    overlap = gt.area[within_tolerance(gt, pred, spacing, tolerance)].sum()
    overlap += pred.area[within_tolerance(pred, gt, spacing, tolerance)].sum()
    return float(overlap / total)

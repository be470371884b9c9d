"""An ROI box in the world -> a voxel box in the segmenter's slice layout (pure numpy).

The Logic hands in the ROI's 8 corners (already mapped into the volume's own RAS frame, i.e.
through any parent transforms) and the volume's geometry. The slice layout is `Geometry`'s
canonical one: axial slices (D) of rows (H, anterior -> posterior) and columns (W, right -> left),
because the models were trained on axial slices of that orientation; an oblique volume takes the
voxel axis closest to each direction (never a resampling), and a single-slice image keeps its stored
rows and columns. The box is the bounding box of the corners' voxel coordinates; a voxel is inside
when its centre is, and an ROI thinner than a voxel takes the nearest voxel (one slice thick: 2D).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .geometry import Geometry


class RoiError(ValueError):
    """An ROI that gives no usable box (outside the volume, empty)."""


@dataclass(frozen=True)
class SliceBox:
    """Inclusive voxel box in the canonical (D, H, W) layout: x = column, y = row, z = slice."""

    x0: int
    y0: int
    z0: int
    x1: int
    y1: int
    z1: int

    @property
    def is_2d(self) -> bool:
        return self.z0 == self.z1

    @property
    def xy(self) -> np.ndarray:
        """(x0, y0, x1, y1), the 2D prompt on one slice."""
        return np.array([self.x0, self.y0, self.x1, self.y1], dtype=np.float64)

    @property
    def xyz(self) -> np.ndarray:
        """(x0, y0, z0, x1, y1, z1), the challenge's 3D box."""
        return np.array([self.x0, self.y0, self.z0, self.x1, self.y1, self.z1], dtype=np.float64)


def roi_corners(center, size, object_to_world: np.ndarray) -> np.ndarray:
    """The 8 corners (8, 3) of a box of `size` around `center` in the ROI's object frame, in world mm."""
    half = np.asarray(size, dtype=float) / 2.0
    signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=float)
    local = np.asarray(center, dtype=float) + signs * half
    m = np.asarray(object_to_world, dtype=float)
    return (m[:3, :3] @ local.T).T + m[:3, 3]


# ROI coordinates are float32 in MRML: at 1000 mm from the origin that is ~1e-4 mm, so a corner placed
# on a voxel centre can land 1e-4 voxel beside it. Centres within this distance count as inside.
TOLERANCE = 1e-3


def _axis_range(lo: float, hi: float, size: int, name: str) -> tuple[int, int]:
    """Voxels whose centres lie in [lo, hi], clipped to 0..size-1; the nearest one for a thin ROI."""
    if hi < -0.5 or lo > size - 0.5:
        raise RoiError(f"the ROI lies outside the volume along {name}")
    first, last = int(np.ceil(lo - TOLERANCE)), int(np.floor(hi + TOLERANCE))
    if first > last:
        first = last = int(np.floor((lo + hi) / 2 + 0.5))
    return max(first, 0), min(last, size - 1)


def box_from_points(points_ras: np.ndarray, geometry: Geometry) -> SliceBox:
    """Bounding voxel box of RAS points (the ROI corners, in the volume's RAS frame)."""
    points = np.asarray(points_ras, dtype=float).reshape(-1, 3)
    if not np.all(np.isfinite(points)):
        raise RoiError("the ROI has no valid position")
    index = geometry.world_to_index(points)  # (N, 3) continuous (d, h, w)
    lo, hi = index.min(axis=0), index.max(axis=0)
    depth, height, width = geometry.shape
    if hi[1] - lo[1] < 1 or hi[2] - lo[2] < 1:
        raise RoiError("the ROI is empty: it must span at least one pixel in the slice plane")
    y0, y1 = _axis_range(lo[1], hi[1], height, "the rows")
    x0, x1 = _axis_range(lo[2], hi[2], width, "the columns")
    z0, z1 = (0, 0) if depth == 1 else _axis_range(lo[0], hi[0], depth, "the slices")
    if x0 == x1 or y0 == y1:
        raise RoiError("the ROI overlaps the volume by less than two pixels in the slice plane")
    return SliceBox(x0, y0, z0, x1, y1, z1)


# -- the current slice and an ROI flattened onto it (the Logic maps points in and out of the volume's RAS)


def slice_index(point_ras, geometry: Geometry) -> int:
    """The canonical slice (D) nearest a point in the volume's RAS, clipped to the volume."""
    z = geometry.world_to_index(np.asarray(point_ras, dtype=float).reshape(1, 3))[0, 0]
    return int(np.clip(np.floor(z + 0.5), 0, geometry.shape[0] - 1))


def plane_crossing(origin, normal, centre, geometry: Geometry, max_tilt_deg: float) -> np.ndarray | None:
    """Where the plane through `origin` with unit `normal` crosses the line through `centre` along the
    volume's slicing axis (D), all in the volume's RAS: the slice a view shows at the ROI. None when
    the plane is more than `max_tilt_deg` from the slices (a sagittal or coronal view of an axial stack)."""
    centre, normal = np.asarray(centre, dtype=float), np.asarray(normal, dtype=float)
    if geometry.shape[0] == 1:
        return centre
    axis = geometry.affine[:3, 0] / np.linalg.norm(geometry.affine[:3, 0])
    if abs(float(normal @ axis)) < np.cos(np.radians(max_tilt_deg)):
        return None
    return centre + float((np.asarray(origin, dtype=float) - centre) @ normal) / float(axis @ normal) * axis


def flat_roi(corners_ras, z: int, geometry: Geometry) -> tuple[np.ndarray, np.ndarray]:
    """An ROI one slice thick on slice `z`, aligned with the volume's slices, covering the rows and
    columns the `corners` (volume RAS) cover (a rotated ROI becomes its bounding box in the slice):
    (object-to-volume-RAS 4x4 with unit axes, x = columns, y = rows, z = slices; its size in mm)."""
    index = geometry.world_to_index(np.asarray(corners_ras, dtype=float).reshape(-1, 3))
    lo, hi = index[:, 1:].min(axis=0), index[:, 1:].max(axis=0)
    affine = geometry.affine  # canonical (d, h, w) index -> the volume's RAS
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    axes = affine[:3, :3] / spacing  # unit directions of d, h, w
    rotation = np.column_stack([axes[:, 2], axes[:, 1], axes[:, 0]])
    if np.linalg.det(rotation) < 0:
        rotation[:, 1] *= -1.0
    object_to_volume = np.eye(4)
    object_to_volume[:3, :3] = rotation
    object_to_volume[:3, 3] = (affine @ np.array([z, (lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, 1.0]))[:3]
    size = np.array([(hi[1] - lo[1]) * spacing[2], (hi[0] - lo[0]) * spacing[1], 0.5 * spacing[0]])
    return object_to_volume, size


# -- a box dragged on a slice view of any orientation (the Segment Editor effect)


def view_axes(slice_to_ras, geometry: Geometry, max_tilt_deg: float) -> tuple[int, int, int] | None:
    """The slice layout (`Geometry.resliced`) of what a slice view shows, snapped to the voxel axes:
    slices along the view's normal, rows down the screen, columns to its right, so the models see the
    slice the way the user does (an axial view of Slicer gives the canonical layout). `slice_to_ras`
    is the view's SliceToRAS in the volume's RAS (its first three columns are used). None when the
    normal is more than `max_tilt_deg` from every voxel axis (an oblique view shows no voxel slice)."""
    import itertools

    m = np.asarray(slice_to_ras, dtype=float)[:3, :3]
    wanted = np.column_stack([m[:, 2], -m[:, 1], m[:, 0]])
    wanted = wanted / np.linalg.norm(wanted, axis=0)
    axes = geometry.affine[:3, :3] / np.linalg.norm(geometry.affine[:3, :3], axis=0)
    dots = wanted.T @ axes  # (view direction, canonical axis)
    perm = max(itertools.permutations(range(3)), key=lambda p: sum(abs(dots[k, p[k]]) for k in range(3)))
    if abs(dots[0, perm[0]]) < np.cos(np.radians(max_tilt_deg)):
        return None
    return tuple(int(perm[k] + 1) * (1 if dots[k, perm[k]] >= 0 else -1) for k in range(3))


def drawn_box_corners(corner1, corner2, slice_to_ras) -> np.ndarray:
    """The four corners (4, 3) of a rectangle dragged on a view from `corner1` to `corner2` (RAS points
    on its plane): the other two lie along the view's screen axes."""
    m = np.asarray(slice_to_ras, dtype=float)[:3, :3]
    a, b = np.asarray(corner1, dtype=float), np.asarray(corner2, dtype=float)
    x = m[:, 0] / np.linalg.norm(m[:, 0])
    along_x = float((b - a) @ x) * x
    return np.array([a, b, a + along_x, b - along_x])


def box_on_slice(corners_ras, geometry: Geometry) -> SliceBox:
    """A box drawn on a slice (its corners in the volume's RAS; `geometry` in the view's layout): the
    rows and columns its corners cover, on the slice nearest their centre (one slice: a 2D prompt)."""
    points = np.asarray(corners_ras, dtype=float).reshape(-1, 3)
    box = box_from_points(points, geometry)
    z = slice_index(points.mean(axis=0), geometry)
    return SliceBox(box.x0, box.y0, z, box.x1, box.y1, z)

"""Where the (D,H,W) array sits: in the source file's voxel grid and in the patient (world) frame.

Volumes are turned into one orientation: array axes (D,H,W) run inferior->superior,
anterior->posterior and patient right->left, i.e. axial slices shown the radiological way (the
way ITK/SimpleITK hand out most CT, and what the challenge models were trained on). This is only
a permutation and flips of the source axes, never a resampling, so every voxel keeps its value and
the mask can be put back exactly. Oblique volumes take the source axis closest to each direction.
2D images, and single-slice scans (one voxel thick along any axis: that axis becomes D), keep the
layout they were stored in: rows top to bottom, columns left to right.

World coordinates in this module are RAS millimetres (x to the patient's Right, y Anterior,
z Superior), as in NIfTI, 3D Slicer and nibabel. SimpleITK/DICOM use LPS; the sign of x and y
differs. 2D images without a patient frame (PNG, ...) use their own physical x, y (no flip).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

GEOMETRY_KEYS = (
    "geom_shape", "geom_source_size", "geom_source_spacing", "geom_source_origin",
    "geom_source_direction", "geom_index_to_source", "geom_source_orientation", "geom_affine",
)
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_LETTERS = (("L", "R"), ("P", "A"), ("S", "I"))  # LPS world axis -> letter for + and - direction


def orientation_code(direction: np.ndarray) -> str:
    """Closest axis code of a 3D direction matrix, DICOM convention: "RAS" = axis i points to the Right."""
    perm, signs = _closest_axes(direction)
    return "".join(_LETTERS[w][0 if s > 0 else 1] for w, s in zip(perm, signs))


def _closest_axes(direction: np.ndarray) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """For each source axis a: the LPS world axis it runs closest to, and the sign (one world axis each)."""
    d = np.asarray(direction, dtype=float).reshape(3, 3)
    perm = max(itertools.permutations(range(3)), key=lambda p: sum(abs(d[p[a], a]) for a in range(3)))
    return perm, tuple(1 if d[perm[a], a] >= 0 else -1 for a in range(3))


def canonical_index_map(size: tuple[int, ...], direction: np.ndarray) -> np.ndarray:
    """(n+1, n+1) integer matrix taking a canonical array index (d,h,w,1) or (h,w,1) to the source
    voxel index (i,j,k,1) / (i,j,1) as ITK and NIfTI count it (i = fastest axis)."""
    n = len(size)
    m = np.zeros((n + 1, n + 1), dtype=np.int64)
    m[n, n] = 1
    if n == 2:  # 2D: keep the stored layout (i = column, j = row)
        m[0, 1] = m[1, 0] = 1
        return m
    if 1 in size:  # a single slice along any axis: that axis is D, the other two keep their stored order
        a = size.index(1) if size[2] != 1 else 2
        rows, cols = [b for b in range(3) if b != a][::-1]
        m[a, 0] = m[rows, 1] = m[cols, 2] = 1
        return m
    perm, signs = _closest_axes(direction)
    for a, (w, s) in enumerate(zip(perm, signs)):
        b = 2 - w  # canonical numpy axis: (z, y, x) of LPS
        m[a, b] = s
        m[a, n] = 0 if s > 0 else size[a] - 1
    return m


@dataclass(frozen=True, eq=False)
class Geometry:
    """The canonical array's place in its source file and in the world (enough to write a mask back)."""

    shape: tuple[int, ...]  # canonical spatial shape, (D,H,W) or (H,W); (1,H,W) for a single-slice scan
    source_size: tuple[int, ...]  # source voxel counts along i, j[, k]
    source_spacing: tuple[float, ...]  # mm along i, j[, k]
    source_origin: tuple[float, ...]  # centre of source voxel 0, LPS mm (ITK convention)
    source_direction: tuple[float, ...]  # row-major n x n; column a = LPS direction of source axis a
    index_to_source: np.ndarray  # (n+1, n+1) ints, see canonical_index_map
    source_orientation: str = ""  # e.g. "RAS" or "LPS" for 3D sources, "" for 2D

    @classmethod
    def from_ijk_to_ras(cls, size, ijk_to_ras: np.ndarray) -> "Geometry":
        """From Slicer's IJKToRAS matrix (4x4, RAS) and the voxel counts along i, j, k."""
        m = np.asarray(ijk_to_ras, dtype=float)
        spacing = np.linalg.norm(m[:3, :3], axis=0)
        if np.any(spacing <= 0):
            raise ValueError("the volume's IJK-to-RAS matrix is singular (zero spacing)")
        flip = np.array([-1.0, -1.0, 1.0])[:, None]  # RAS <-> LPS
        return cls.from_source(size, spacing, (flip[:, 0] * m[:3, 3]), flip * (m[:3, :3] / spacing))

    @classmethod
    def from_source(cls, size, spacing, origin, direction) -> "Geometry":
        size = tuple(int(s) for s in size)
        n = len(size)
        direction = np.asarray(direction, dtype=float).reshape(n, n)
        m = canonical_index_map(size, direction)
        shape = tuple(int(size[int(np.flatnonzero(m[:n, b])[0])]) for b in range(n))
        return cls(
            shape, size, tuple(float(s) for s in spacing), tuple(float(o) for o in origin),
            tuple(direction.ravel().tolist()), m, orientation_code(direction) if n == 3 else "",
        )

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def _source_axis(self, b: int) -> tuple[int, bool]:
        """Source axis a (i=0) behind canonical axis b, and whether it is flipped."""
        a = int(np.flatnonzero(self.index_to_source[: self.ndim, b])[0])
        return a, bool(self.index_to_source[a, b] < 0)

    @property
    def spacing(self) -> np.ndarray:
        """mm per canonical array axis, in array-axis order ((D,H,W) -> (dz, dy, dx))."""
        return np.array([self.source_spacing[self._source_axis(b)[0]] for b in range(self.ndim)])

    @property
    def source_affine(self) -> np.ndarray:
        """Source voxel index (i,j,k,1) -> LPS mm (ITK's physical space)."""
        n = self.ndim
        a = np.eye(n + 1)
        a[:n, :n] = np.reshape(self.source_direction, (n, n)) * np.asarray(self.source_spacing)
        a[:n, n] = self.source_origin
        return a

    @property
    def affine(self) -> np.ndarray:
        """Canonical array index (d,h,w,1) -> world RAS mm (3D); (h,w,1) -> physical x,y (2D)."""
        a = self.source_affine @ self.index_to_source
        return _LPS_TO_RAS @ a if self.ndim == 3 else a

    def index_to_world(self, index: np.ndarray) -> np.ndarray:
        """(N, ndim) canonical array indices (d,h,w) -> (N, ndim) world points (RAS mm for 3D)."""
        index = np.atleast_2d(np.asarray(index, dtype=float))
        return (self.affine @ np.c_[index, np.ones(len(index))].T).T[:, : self.ndim]

    def world_to_index(self, points: np.ndarray) -> np.ndarray:
        """(N, ndim) world points (RAS mm for 3D) -> (N, ndim) continuous canonical indices (d,h,w)."""
        points = np.atleast_2d(np.asarray(points, dtype=float))
        return (np.linalg.inv(self.affine) @ np.c_[points, np.ones(len(points))].T).T[:, : self.ndim]

    def canonical_view(self, source: np.ndarray) -> np.ndarray:
        """Array as SimpleITK returns it (numpy order k,j,i[,channels]) -> canonical (D,H,W[,channels]),
        a view (no copy): the engine reads single slices of a whole volume through it."""
        n = self.ndim
        axes = [self._source_axis(b) for b in range(n)]
        out = np.transpose(source, [n - 1 - a for a, _ in axes] + list(range(n, source.ndim)))
        flips = [b for b, (_, flip) in enumerate(axes) if flip]
        return np.flip(out, flips) if flips else out

    def from_source_array(self, source: np.ndarray) -> np.ndarray:
        """canonical_view as a contiguous copy."""
        return np.ascontiguousarray(self.canonical_view(source))

    def to_source_array(self, canonical: np.ndarray) -> np.ndarray:
        """Inverse of from_source_array: canonical (D,H,W) -> SimpleITK numpy order (k,j,i)."""
        n = self.ndim
        axes = [self._source_axis(b) for b in range(n)]
        flips = [b for b, (_, flip) in enumerate(axes) if flip]
        flipped = np.flip(canonical, flips) if flips else canonical
        order = np.argsort([n - 1 - a for a, _ in axes]).tolist()
        return np.ascontiguousarray(np.transpose(flipped, order + list(range(n, canonical.ndim))))

    def crop_to_source(self, crop: np.ndarray, origin) -> tuple[tuple[int, ...], np.ndarray]:
        """A crop of a canonical array, `crop` (d,h,w) starting at canonical index `origin` (z,y,x)
        -> the source extent it covers, (i0, i1, j0, j1, k0, k1) inclusive, and its voxels in source
        (k, j, i) order: a mask travels and is written as a crop, never as a whole volume."""
        n = self.ndim
        crop = np.asarray(crop)
        first = np.asarray(origin, dtype=np.int64)
        last = first + np.asarray(crop.shape[:n]) - 1
        a = self.index_to_source @ np.r_[first, 1]
        b = self.index_to_source @ np.r_[last, 1]
        lo, hi = np.minimum(a, b)[:n], np.maximum(a, b)[:n]
        return tuple(int(v) for pair in zip(lo, hi) for v in pair), self.to_source_array(crop)

    def resliced(self, axes) -> "Geometry":
        """The same voxels in another slice layout (nothing resampled): new array axis k is canonical
        axis |axes[k]| - 1, reversed where axes[k] < 0; (1, 2, 3) is the canonical layout. A sagittal or
        coronal view's slices are then a volume's D axis, and everything here (crops, world points,
        the source array) follows."""
        if self.ndim != 3 or sorted(abs(int(a)) for a in axes) != [1, 2, 3]:
            raise ValueError(f"a slice layout names each of the axes 1, 2, 3 once, signed; got {tuple(axes)}")
        p = np.zeros((4, 4), dtype=np.int64)
        p[3, 3] = 1
        for k, a in enumerate(int(a) for a in axes):
            b = abs(a) - 1
            p[b, k] = 1 if a > 0 else -1
            p[b, 3] = 0 if a > 0 else self.shape[b] - 1
        shape = tuple(self.shape[abs(int(a)) - 1] for a in axes)
        return Geometry(shape, self.source_size, self.source_spacing, self.source_origin, self.source_direction,
                        self.index_to_source @ p, self.source_orientation)

    def same_grid(self, other: "Geometry", tol: float = 1e-3) -> bool:
        """Same voxel grid in space: sizes equal, spacing, origin and direction within `tol`."""
        return (
            self.source_size == other.source_size
            and np.allclose(self.source_spacing, other.source_spacing, rtol=tol, atol=0)
            and np.allclose(self.source_origin, other.source_origin, atol=tol * max(self.source_spacing))
            and np.allclose(self.source_direction, other.source_direction, atol=tol)
        )

    def describe(self) -> str:
        size = "x".join(str(s) for s in self.source_size)
        spacing = ",".join(f"{s:g}" for s in self.source_spacing)
        origin = ",".join(f"{o:.4g}" for o in self.source_origin)
        return f"{size} voxels, spacing {spacing} mm, origin {origin}" + (f", {self.source_orientation}" if self.source_orientation else "")

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The `geom_*` arrays stored in a case .npz (numbers and one string; loads without pickle)."""
        return {
            "geom_shape": np.asarray(self.shape, dtype=np.int64),
            "geom_source_size": np.asarray(self.source_size, dtype=np.int64),
            "geom_source_spacing": np.asarray(self.source_spacing, dtype=np.float64),
            "geom_source_origin": np.asarray(self.source_origin, dtype=np.float64),
            "geom_source_direction": np.asarray(self.source_direction, dtype=np.float64),
            "geom_index_to_source": np.asarray(self.index_to_source, dtype=np.int64),
            "geom_source_orientation": np.asarray(self.source_orientation),
            "geom_affine": self.affine,
        }

    @classmethod
    def from_arrays(cls, data) -> "Geometry":
        """Inverse of to_arrays; `data` is a dict or an open np.load(...) of a case."""
        missing = [k for k in GEOMETRY_KEYS if k not in data]
        if missing:
            raise KeyError(f"no geometry stored (missing {', '.join(missing)})")
        return cls(
            tuple(int(v) for v in data["geom_shape"]),
            tuple(int(v) for v in data["geom_source_size"]),
            tuple(float(v) for v in data["geom_source_spacing"]),
            tuple(float(v) for v in data["geom_source_origin"]),
            tuple(float(v) for v in data["geom_source_direction"]),
            np.asarray(data["geom_index_to_source"], dtype=np.int64),
            str(data["geom_source_orientation"]),
        )

"""The image a tab works on: source intensities, the 8-bit version that is shown and segmented,
spacing, and the geometry that puts a label map back on the source's voxels.

Reading, intensity presets and writing masks are medficient.formats' (the same code as
`medficient convert / segment / to-image`); this module only adapts them to one-slice-or-volume
scans and to challenge `.npz` cases.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..formats import CT_WINDOWS, FormatError, Geometry, apply_preset, read_image, write_mask
from ..formats.intensity import describe

AS_STORED = "as stored"  # challenge cases: already the models' uint8
AUTO = "auto"  # the modality's rule: CT -> abdomen window, else percentiles (MR auto); 8-bit 2D left alone
CUSTOM = "custom window"
SAVE_FORMATS = {"npz": ".npz", "nifti": ".nii.gz", "nrrd": ".nrrd", "png": ".png"}


class ScanError(ValueError):
    """A file that cannot be opened or saved; the message names it and says why."""


@dataclass
class Scan:
    name: str
    raw: np.ndarray  # source intensities, (D, H, W); a 2D image is (1, H, W) or (1, H, W, 3)
    image: np.ndarray  # uint8, same shape: what is shown and what the model sees
    is_2d: bool
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)  # array-axis order
    geometry: Geometry | None = field(default=None, repr=False)  # None: the file held none
    modality: str | None = None
    preset: str = AS_STORED
    window: tuple[float, float] | None = None
    presets: tuple[str, ...] = (AS_STORED,)
    source: Path | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.image.shape[:3])  # type: ignore[return-value]

    def plane(self, axis: int, index: int) -> np.ndarray:
        """Slice `index` of view `axis` as the model gets it: (H, W) or (H, W, 3) uint8."""
        self.check_plane(axis, index)
        return np.ascontiguousarray(np.take(self.image, index, axis=axis))

    def check_plane(self, axis: int, index: int) -> None:
        if axis not in (0, 1, 2) or (self.is_2d and axis != 0):
            raise ScanError(f"view {axis} does not exist for this image")
        if not 0 <= index < self.shape[axis]:
            raise ScanError(f"slice {index} is outside 0..{self.shape[axis] - 1}")

    @property
    def intensity(self) -> str:
        if self.preset == AS_STORED:
            return "as stored in the case (uint8)"
        preset = None if self.preset in (AUTO, CUSTOM) else self.preset
        return describe(self.modality, preset, self.window, self.is_2d and self.raw.dtype == np.uint8)

    def summary(self) -> dict:
        return {
            "name": self.name,
            "shape": list(self.shape),
            "is_2d": self.is_2d,
            "rgb": self.image.ndim == 4,
            "spacing": [float(s) for s in self.spacing],
            "modality": self.modality,
            "preset": self.preset,
            "window": list(self.window) if self.window else None,
            "presets": list(self.presets),
            "intensity": self.intensity,
            "formats": save_formats(self),
            "notes": self.notes,
        }


def set_preset(scan: Scan, preset: str, window: tuple[float, float] | None = None) -> None:
    """Recompute the 8-bit image from the source intensities (formats.apply_preset's rules)."""
    if preset not in scan.presets:
        raise ScanError(f"preset {preset!r} does not apply here (choose {', '.join(scan.presets)})")
    if (preset == CUSTOM) != (window is not None):
        raise ScanError("a custom window needs width and level; other presets take none")
    if preset == AS_STORED:
        image = scan.raw
    else:
        named = None if preset in (AUTO, CUSTOM) else preset
        raw = scan.raw[0] if scan.is_2d else scan.raw
        try:
            image = apply_preset(raw, scan.modality, named, window, is_2d=scan.is_2d)
        except ValueError as e:
            raise ScanError(f"{scan.name}: {e}") from e
        image = image[None] if scan.is_2d else image
    scan.image, scan.preset, scan.window = np.ascontiguousarray(image), preset, window


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def open_npz(path: Path) -> Scan:
    """A challenge case: `imgs` (D,H,W) or (H,W[,3]) uint8, 2D/3D told by name, boxes or shape;
    the geometry too when `medficient convert` wrote it."""
    from ..inference.cases import CaseError, case_kind

    try:
        with np.load(path, allow_pickle=False) as data:
            if "imgs" not in data.files:
                raise ScanError(f"{path.name}: no `imgs` array (found: {', '.join(data.files) or 'none'})")
            imgs = data["imgs"]
            boxes = data["boxes"] if "boxes" in data.files else None
            spacing = data["spacing"] if "spacing" in data.files else None
            geometry = Geometry.from_arrays(data) if "geom_shape" in data.files else None
            modality = str(data["modality"]) or None if "modality" in data.files else None
    except ScanError:
        raise
    except Exception as e:  # zip, pickle and header errors all mean "not a readable case"
        raise ScanError(f"{path.name}: unreadable .npz ({_first_line(e)})") from e
    if imgs.dtype != np.uint8:
        raise ScanError(f"{path.name}: imgs dtype is {imgs.dtype}, expected uint8")
    try:
        kind = case_kind(path.name, boxes)
    except CaseError:
        kind = "2D" if imgs.ndim == 2 or (imgs.ndim == 3 and imgs.shape[2] == 3) else "3D"
    if kind == "2D":
        if not (imgs.ndim == 2 or (imgs.ndim == 3 and imgs.shape[2] in (1, 3))) or 0 in imgs.shape:
            raise ScanError(f"{path.name}: 2D imgs shape {imgs.shape}, expected (H,W) or (H,W,3)")
        imgs = np.ascontiguousarray((imgs[:, :, 0] if imgs.ndim == 3 and imgs.shape[2] == 1 else imgs)[None])
        return Scan(path.name, imgs, imgs, True, geometry=geometry, modality=modality, source=path)
    if imgs.ndim != 3 or 0 in imgs.shape:
        raise ScanError(f"{path.name}: 3D imgs shape {imgs.shape}, expected (D,H,W)")
    sp = tuple(float(s) for s in spacing) if spacing is not None and np.size(spacing) == 3 else (1.0, 1.0, 1.0)
    return Scan(path.name, imgs, imgs, False, sp, geometry, modality, source=path)  # type: ignore[arg-type]


def open_medical(path: Path) -> Scan:
    """NIfTI, NRRD, MHA/MHD, a DICOM folder, PNG/JPEG/TIFF/BMP, through medficient.formats."""
    try:
        image = read_image(path)
    except FormatError as e:
        raise ScanError(str(e).replace(str(path), path.name)) from e
    is_2d = image.kind == "2D"
    raw = image.array[None] if is_2d else image.array
    spacing = (1.0, *image.spacing) if is_2d else tuple(image.spacing)
    plain_8bit = is_2d and raw.dtype == np.uint8
    presets = ("none", "percentile") if plain_8bit else (AUTO, *CT_WINDOWS, "percentile", CUSTOM)
    scan = Scan(path.name, raw, raw, is_2d, tuple(float(s) for s in spacing), image.geometry, image.modality,  # type: ignore[arg-type]
                presets=presets, source=path, notes=list(image.notes))
    set_preset(scan, "none" if plain_8bit else AUTO)
    return scan


def open_scan(path: Path) -> Scan:
    """Any supported file or DICOM folder -> Scan (ScanError with a one-line reason otherwise)."""
    if not path.exists():
        raise ScanError(f"{path.name}: no such file or folder")
    if path.is_file() and path.name.lower().endswith(".npz"):
        return open_npz(path)
    return open_medical(path)


# -- saving -------------------------------------------------------------------------------------
def save_formats(scan: Scan) -> list[str]:
    return ["nifti", "nrrd", "npz", "png"] if scan.is_2d else ["nifti", "nrrd", "npz"]


def geometry_for_writing(scan: Scan) -> Geometry:
    """The source geometry; a case without one gets its spacing, origin 0 and the canonical axes."""
    if scan.geometry is not None:
        return scan.geometry
    if scan.is_2d:
        h, w = scan.shape[1:]
        return Geometry.from_source((w, h), (1.0, 1.0), (0.0, 0.0), np.eye(2))
    d, h, w = scan.shape
    # canonical (D,H,W) runs S, P, L: identity LPS directions keep the array as it is
    return Geometry.from_source((w, h, d), scan.spacing[::-1], (0.0, 0.0, 0.0), np.eye(3))


def challenge_boxes(scan: Scan, objects) -> np.ndarray:
    """One challenge box per object: 2D (N,4) xyxy; 3D (N,6) x,y,z min then max, in array indices."""
    if scan.is_2d:
        return np.array([o.box for o in objects], dtype=np.float64).reshape(-1, 4)
    rows = []
    for o in objects:
        x0, y0, x1, y1 = o.box
        s0, s1 = o.span or (o.index, o.index)
        lo, hi = {
            0: ((x0, y0, s0), (x1, y1, s1)),
            1: ((x0, s0, y0), (x1, s1, y1)),  # coronal plane: columns x, rows z
            2: ((s0, x0, y0), (s1, x1, y1)),  # sagittal plane: columns y, rows z
        }[o.axis]
        rows.append([*lo, *hi])
    return np.array(rows, dtype=np.float64).reshape(-1, 6)


def save_case(path: Path, scan: Scan, labels: np.ndarray, objects) -> None:
    """Challenge `.npz`: imgs, gts (the label map), boxes (one per object), spacing for 3D, and the
    geometry (so `medficient to-image --like` this file puts masks back on the source voxels)."""
    from ..inference.cases import atomic_savez

    arrays = {"imgs": scan.image[0] if scan.is_2d else scan.image, "gts": labels[0] if scan.is_2d else labels,
              "boxes": challenge_boxes(scan, objects)}
    if not scan.is_2d:
        arrays["spacing"] = np.asarray(scan.spacing, dtype=np.float64)
    if scan.geometry is not None:
        arrays.update(scan.geometry.to_arrays())
    arrays.update(modality=np.asarray(scan.modality or ""), intensity=np.asarray(scan.intensity))
    atomic_savez(path, **arrays)


def save_labels(path: Path, fmt: str, scan: Scan, labels: np.ndarray, objects) -> None:
    """Write the (D,H,W) label map as `fmt` at `path` (written atomically)."""
    if fmt == "png" and not scan.is_2d:
        raise ScanError("PNG holds 2D label maps; save a volume as NIfTI, NRRD or .npz")
    if fmt not in save_formats(scan):
        raise ScanError(f"cannot save as {fmt} (choose {', '.join(save_formats(scan))})")
    if fmt == "npz":
        save_case(path, scan, labels, objects)
        return
    try:
        write_mask(labels[0] if scan.is_2d else labels, geometry_for_writing(scan), path)
    except FormatError as e:
        raise ScanError(str(e)) from e

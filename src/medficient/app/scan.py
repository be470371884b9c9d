"""The image a tab works on: source intensities, the 8-bit version that is shown and segmented,
spacing, and what is needed to write a label map back in the source's geometry."""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
CASE_SUFFIXES = (".npz",)
AS_STORED = "as stored"


class ScanError(ValueError):
    """A file that cannot be opened or saved; the message names it and says why."""


@dataclass
class Scan:
    name: str
    raw: np.ndarray  # source intensities, (D, H, W) or (1, H, W, 3) for a colour image
    image: np.ndarray  # uint8, same shape: what is shown and what the model sees
    is_2d: bool
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)  # array-axis order
    preset: str = AS_STORED
    presets: tuple[str, ...] = (AS_STORED,)
    source: Path | None = None
    meta: object = field(default=None, repr=False)  # source geometry for writing back

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

    def summary(self) -> dict:
        return {
            "name": self.name,
            "shape": list(self.shape),
            "is_2d": self.is_2d,
            "rgb": self.image.ndim == 4,
            "spacing": [float(s) for s in self.spacing],
            "preset": self.preset,
            "presets": list(self.presets),
            "formats": save_formats(self),
        }


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def open_npz(path: Path) -> Scan:
    """A challenge case: `imgs` (D,H,W) or (H,W[,3]) uint8, 2D/3D told by name, boxes or shape."""
    from ..inference.cases import CaseError, case_kind

    try:
        with np.load(path, allow_pickle=False) as data:
            if "imgs" not in data.files:
                raise ScanError(f"{path.name}: no `imgs` array (found: {', '.join(data.files) or 'none'})")
            imgs = data["imgs"]
            boxes = data["boxes"] if "boxes" in data.files else None
            spacing = data["spacing"] if "spacing" in data.files else None
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
        if not (imgs.ndim == 2 or (imgs.ndim == 3 and imgs.shape[2] in (1, 3))):
            raise ScanError(f"{path.name}: 2D imgs shape {imgs.shape}, expected (H,W) or (H,W,3)")
        return image_scan(path.name, imgs, path)
    if imgs.ndim != 3 or 0 in imgs.shape:
        raise ScanError(f"{path.name}: 3D imgs shape {imgs.shape}, expected (D,H,W)")
    sp = tuple(float(s) for s in spacing) if spacing is not None and np.size(spacing) == 3 else (1.0, 1.0, 1.0)
    return Scan(path.name, imgs, imgs, is_2d=False, spacing=sp, source=path)  # type: ignore[arg-type]


def image_scan(name: str, img: np.ndarray, source: Path | None = None, meta: object = None) -> Scan:
    """An 8-bit 2D image (H, W) or (H, W, 1|3) as a one-slice scan."""
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.dtype != np.uint8 or 0 in img.shape:
        raise ScanError(f"{name}: expected a non-empty 8-bit image, got {img.dtype} {img.shape}")
    img = np.ascontiguousarray(img[None])
    return Scan(name, img, img, is_2d=True, source=source, meta=meta)


def open_image_file(path: Path) -> Scan:
    """PNG/JPEG/...: 8-bit grey or colour (colour in RGB order)."""
    import cv2

    data = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if data is None:
        raise ScanError(f"{path.name}: not a readable image")
    if data.ndim == 3 and data.shape[2] == 4:
        data = data[:, :, :3]
    if data.ndim == 3:
        data = cv2.cvtColor(data, cv2.COLOR_BGR2RGB)
    if data.dtype != np.uint8:
        raise ScanError(f"{path.name}: {data.dtype} images need an intensity preset (not yet supported here)")
    return image_scan(path.name, data, path)


def open_scan(path: Path) -> Scan:
    """Any supported file or DICOM folder -> Scan (ScanError with a one-line reason otherwise)."""
    name = path.name.lower()
    if path.is_file() and name.endswith(CASE_SUFFIXES):
        return open_npz(path)
    if path.is_file() and name.endswith(IMAGE_SUFFIXES):
        return open_image_file(path)
    if not path.exists():
        raise ScanError(f"{path.name}: no such file or folder")
    raise ScanError(f"{path.name}: not a supported image (.npz, {', '.join(IMAGE_SUFFIXES)})")


def apply_preset(scan: Scan, preset: str, window: tuple[float, float] | None = None) -> None:
    """Recompute the 8-bit image from the source intensities with another preset."""
    if preset not in scan.presets:
        raise ScanError(f"preset {preset!r} does not apply here (choose {', '.join(scan.presets)})")
    if preset == AS_STORED:
        scan.image = scan.raw
    scan.preset = preset


# -- saving -------------------------------------------------------------------------------------
def save_formats(scan: Scan) -> list[str]:
    formats = ["npz"]
    if scan.is_2d:
        formats.append("png")
    return formats


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def challenge_boxes(scan: Scan, objects) -> np.ndarray:
    """One challenge box per object: 2D (N,4) xyxy; 3D (N,6) x,y,z min then max, in array indices."""
    if scan.is_2d:
        return np.array([o.box for o in objects], dtype=np.float64).reshape(-1, 4)
    rows = []
    for o in objects:
        x0, y0, x1, y1 = o.box
        span = o.span or (o.index, o.index)
        lo, hi = {0: ((x0, y0, span[0]), (x1, y1, span[1])),
                  1: ((x0, span[0], y0), (x1, span[1], y1)),  # coronal slice: columns x, rows z
                  2: ((span[0], x0, y0), (span[1], x1, y1))}[o.axis]  # sagittal: columns y, rows z
        rows.append([*lo, *hi])
    return np.array(rows, dtype=np.float64).reshape(-1, 6)


def save_case(path: Path, scan: Scan, labels: np.ndarray, objects) -> None:
    """Challenge `.npz`: imgs, gts (the label map), boxes (one per object), spacing for 3D."""
    from ..inference.cases import atomic_savez

    if scan.is_2d:
        atomic_savez(path, imgs=scan.image[0], gts=labels[0], boxes=challenge_boxes(scan, objects))
    else:
        atomic_savez(path, imgs=scan.image, gts=labels, boxes=challenge_boxes(scan, objects), spacing=np.asarray(scan.spacing))


def save_png(path: Path, scan: Scan, labels: np.ndarray) -> None:
    """A 2D label map as a PNG of label values (8-bit, 16-bit above 255)."""
    import cv2

    plane = labels[0]
    plane = plane.astype(np.uint8) if plane.max() < 256 else plane
    ok, buf = cv2.imencode(".png", plane)
    if not ok:
        raise ScanError("could not encode the PNG")
    atomic_write_bytes(path, buf.tobytes())


def save_labels(path: Path, fmt: str, scan: Scan, labels: np.ndarray, objects) -> None:
    if fmt == "png" and not scan.is_2d:
        raise ScanError("PNG holds 2D label maps; save a volume as NIfTI, NRRD or .npz")
    if fmt not in save_formats(scan):
        raise ScanError(f"cannot save this image's labels as {fmt} (choose {', '.join(save_formats(scan))})")
    if fmt == "npz":
        save_case(path, scan, labels, objects)
    elif fmt == "png":
        save_png(path, scan, labels)

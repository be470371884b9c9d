"""Challenge-format cases: load and validate, write results atomically (PIPELINES.md §1)."""
from __future__ import annotations

import os
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAX_2D_PIXELS = 200_000_000  # beyond this a 2D image is refused rather than exhausting memory
MAX_3D_VOXELS = 2_000_000_000
MAX_LABEL = np.iinfo(np.uint16).max


class CaseError(ValueError):
    """Bad input for one case; the message names the problem (the caller adds the case name)."""


@dataclass
class Case:
    name: str  # file name without .npz
    kind: str  # "2D" or "3D"
    imgs: np.ndarray
    boxes: np.ndarray
    spacing: np.ndarray | None = None


def case_kind(name: str, boxes: np.ndarray | None = None) -> str:
    """The file name decides (2D*/3D*); otherwise the box width (4 or 6) does."""
    if name.startswith(("2D", "3D")):
        return name[:2]
    if boxes is not None and boxes.ndim == 2 and boxes.shape[1] in (4, 6):
        return "2D" if boxes.shape[1] == 4 else "3D"
    raise CaseError("cannot tell 2D from 3D: name does not start with 2D/3D and boxes are not (N,4)/(N,6)")


def load_case(path: str | Path) -> Case:
    path = Path(path)
    name = path.name[:-4] if path.name.endswith(".npz") else path.stem
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in ("imgs", "boxes") if k not in data.files]
            if missing:
                raise CaseError(f"missing key(s) {', '.join(missing)} (found: {', '.join(data.files) or 'none'})")
            imgs, boxes = data["imgs"], data["boxes"]
            spacing = data["spacing"] if "spacing" in data.files else None
    except CaseError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, KeyError) as e:
        raise CaseError(f"unreadable or corrupt .npz ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from e
    case = Case(name, case_kind(name, boxes), imgs, boxes, spacing)
    validate(case)
    return case


def validate(case: Case) -> None:
    imgs, boxes = case.imgs, case.boxes
    if imgs.dtype != np.uint8:
        raise CaseError(f"imgs dtype is {imgs.dtype}, expected uint8 (rescale to 0-255 first, e.g. `medsamlite convert`)")
    if case.kind == "2D":
        if not (imgs.ndim == 2 or (imgs.ndim == 3 and imgs.shape[2] in (1, 3))):
            raise CaseError(f"2D imgs shape {imgs.shape}, expected (H,W,3) or (H,W)")
        if imgs.shape[0] * imgs.shape[1] > MAX_2D_PIXELS:
            raise CaseError(f"image of {imgs.shape[0]}x{imgs.shape[1]} pixels is too large (limit {MAX_2D_PIXELS:,})")
        width = 4
    else:
        if imgs.ndim != 3:
            raise CaseError(f"3D imgs shape {imgs.shape}, expected (D,H,W)")
        if imgs.size > MAX_3D_VOXELS:
            raise CaseError(f"volume {imgs.shape} is too large (limit {MAX_3D_VOXELS:,} voxels)")
        width = 6
    if min(imgs.shape[:3] if case.kind == "3D" else imgs.shape[:2]) == 0:
        raise CaseError(f"imgs has an empty dimension {imgs.shape}")
    if boxes.ndim == 1 and boxes.size == width:
        boxes = case.boxes = boxes[None]
    if boxes.ndim != 2 or boxes.shape[1] != width:
        raise CaseError(f"{case.kind} boxes shape {boxes.shape}, expected (N,{width})")
    if len(boxes) == 0:
        raise CaseError("empty box list")
    if len(boxes) > MAX_LABEL:
        raise CaseError(f"{len(boxes)} boxes, at most {MAX_LABEL} fit the uint16 label map")
    if not np.issubdtype(boxes.dtype, np.number) or not np.all(np.isfinite(boxes)):
        raise CaseError("boxes must be finite numbers")
    _check_boxes(case)


def _check_boxes(case: Case) -> None:
    if case.kind == "2D":
        height, width = case.imgs.shape[:2]
        lo, hi = case.boxes[:, :2], case.boxes[:, 2:]
        limits = np.array([width, height])
        axes = "xy"
    else:
        depth, height, width = case.imgs.shape
        lo, hi = case.boxes[:, :3], case.boxes[:, 3:]
        limits = np.array([width, height, depth - 1])
        axes = "xyz"
    for i in range(len(case.boxes)):
        for a, axis in enumerate(axes):
            if lo[i, a] > hi[i, a]:
                raise CaseError(f"box {i + 1}: {axis}_min {lo[i, a]:g} > {axis}_max {hi[i, a]:g}")
            if axis == "z":
                if hi[i, a] < 0 or lo[i, a] > limits[a]:
                    raise CaseError(f"box {i + 1}: z range {lo[i, a]:g}..{hi[i, a]:g} lies outside the volume (0..{limits[a]})")
            elif lo[i, a] < 0 or hi[i, a] > limits[a]:
                raise CaseError(
                    f"box {i + 1}: {axis} range {lo[i, a]:g}..{hi[i, a]:g} outside the image (0..{limits[a]})"
                )


def atomic_savez(path: str | Path, compress: bool = True, **arrays: np.ndarray) -> None:
    """np.savez_compressed (np.savez with compress=False: members that training memory-maps) into
    a temp file beside `path`, then rename: never a half-written file."""
    _atomic_write(path, lambda f: (np.savez_compressed if compress else np.savez)(f, **arrays))


def atomic_write_text(path: str | Path, text: str) -> None:
    """A text file (sidecar, summary) written like atomic_savez: complete or not there."""
    _atomic_write(path, lambda f: f.write(text.encode()))


def _atomic_write(path: str | Path, write) -> None:
    """`write(binary file)` into a temp file beside `path`, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, 0o644)  # as a plain open() would make it, not mkstemp's owner-only 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def append_efficiency(path: str | Path, case: str, seconds: float) -> None:
    """Append `case,time` to efficiency.csv (header written when the file is new)."""
    path = Path(path)
    new = not path.exists() or path.stat().st_size == 0
    with path.open("a") as f:
        if new:
            f.write("case,time\n")
        f.write(f"{case},{seconds:.4f}\n")

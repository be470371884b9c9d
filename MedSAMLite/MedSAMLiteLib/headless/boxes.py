"""Box prompts typed by a person: voxel boxes of the (D,H,W) array, or world (RAS mm) boxes.

Voxel boxes are in the challenge convention (x = column, y = row, z = slice of the canonical
array, z range inclusive). A world box gives two opposite corners in RAS millimetres; each corner
goes to the nearest voxel centre, so a world box made from voxel centres selects those voxels.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ..core.geometry import Geometry

CSV_COLUMNS = {4: ("x_min", "y_min", "x_max", "y_max"), 6: ("x_min", "y_min", "z_min", "x_max", "y_max", "z_max")}


def parse_box(text: str) -> list[float]:
    """"x0,y0,x1,y1" or "x0,y0,z0,x1,y1,z1" -> numbers."""
    try:
        values = [float(v) for v in text.replace(" ", "").split(",")]
    except ValueError:
        raise ValueError(f"box {text!r} is not a comma-separated list of numbers") from None
    if len(values) not in (4, 6):
        raise ValueError(f"box {text!r} has {len(values)} numbers; expected x0,y0,x1,y1 (2D) or x0,y0,z0,x1,y1,z1 (3D)")
    return values


def read_boxes_csv(path: str | Path) -> list[list[float]]:
    """One box per row: 4 or 6 numbers; an optional header names the columns (x_min,y_min,[z_min,]...)."""
    path = Path(path)
    try:
        rows = [r for r in csv.reader(path.read_text().splitlines()) if r and any(c.strip() for c in r)]
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: cannot read boxes ({e})") from e
    if not rows:
        raise ValueError(f"{path}: no boxes in the file")
    order = None
    header = [c.strip().lower() for c in rows[0]]
    if not _is_number(header[0]):
        columns = CSV_COLUMNS.get(6 if "z_min" in header else 4)
        missing = [c for c in columns if c not in header]
        if missing:
            raise ValueError(f"{path}: header lacks {', '.join(missing)} (expected {','.join(columns)})")
        order = [header.index(c) for c in columns]
        rows = rows[1:]
    boxes = []
    for line, row in enumerate(rows, start=2 if order else 1):
        cells = [row[i] for i in order] if order else row
        try:
            boxes.append(parse_box(",".join(c.strip() for c in cells)))
        except (ValueError, IndexError) as e:
            raise ValueError(f"{path}, line {line}: {e}") from None
    return boxes


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def world_box_to_voxels(box: list[float], geometry: Geometry) -> np.ndarray:
    """RAS mm corners (x0,y0,z0,x1,y1,z1) -> voxel box [x_min,y_min,z_min,x_max,y_max,z_max] of the array."""
    if geometry.ndim != 3 or len(box) != 6:
        raise ValueError("world boxes need a volume and 6 numbers x0,y0,z0,x1,y1,z1 (RAS mm)")
    corners = geometry.world_to_index(np.reshape(box, (2, 3)))  # (2, 3) as (d, h, w)
    lo = np.floor(corners.min(axis=0) + 0.5)
    hi = np.floor(corners.max(axis=0) + 0.5)
    return np.concatenate([lo[::-1], hi[::-1]]).astype(np.int64)  # (d,h,w) -> x,y,z


def prompt_boxes(boxes: list[list[float]], kind: str, geometry: Geometry, world: bool = False) -> np.ndarray:
    """Typed boxes -> (N, 4) or (N, 6) array in voxel indices of the canonical array."""
    width = 6 if kind == "3D" else 4
    if not boxes:
        raise ValueError("no boxes given (use --box or --boxes)")
    if world:
        if kind != "3D":
            raise ValueError("--world boxes need a volume; for 2D images give pixel boxes x0,y0,x1,y1")
        return np.stack([world_box_to_voxels(b, geometry) for b in boxes])
    for b in boxes:
        if len(b) != width:
            want = "x0,y0,z0,x1,y1,z1" if width == 6 else "x0,y0,x1,y1"
            raise ValueError(f"box {','.join(f'{v:g}' for v in b)} has {len(b)} numbers; this {kind} image needs {want}")
    return np.asarray(boxes, dtype=np.float64)

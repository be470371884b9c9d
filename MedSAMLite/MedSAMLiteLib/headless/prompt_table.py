"""The prompt table of `medsamlite batch`: one row = one case, one object, one prompt (docs/batch.md).

Columns (CSV header, or the keys of each JSON object): `case`, optional `object` (a name) and
`label` (its value in the output), exactly one of `box`, `recist`, `labels`, and optional `space`
(`voxel`, the default, or `world` = RAS mm). Rows are checked when the table is read; a bad row
fails its case (with the table line), never the whole run.

RECIST rule: the long-axis line (two endpoints on one slice) of length L mm gives a box centred on
the line's midpoint reaching L/2 * (1 + margin) mm from it along x, y and z (a sphere-like lesion
around its longest diameter), converted with the voxel spacing, rounded outwards and clipped to the
image. The default margin is 10 %.
"""
from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.geometry import Geometry
from .boxes import parse_box

PROMPT_KINDS = ("box", "recist", "labels")
COLUMNS = ("case", "object", "label", *PROMPT_KINDS, "space")
RECIST_MARGIN = 0.10
MAX_LABEL = np.iinfo(np.uint16).max


class TableError(ValueError):
    """A table that cannot be used at all (unreadable, unknown columns); one line naming the file."""


@dataclass(frozen=True)
class PromptRow:
    """One object's prompt as typed: numbers (box, RECIST) or a label file, in voxels or world mm."""

    where: str  # "prompts.csv line 4": every message about the row starts with it
    case: str
    name: str  # "" = named after its label
    label: int | None  # None = the next free value in row order
    kind: str  # "box", "recist" or "labels"
    values: tuple[float, ...] = ()
    path: str = ""  # label file (absolute) for kind "labels"
    world: bool = False


@dataclass(frozen=True)
class BadRow:
    where: str
    case: str  # "" when the row names no case
    error: str


def read_table(path: str | Path) -> tuple[list[PromptRow], list[BadRow]]:
    """Rows of a CSV or JSON table (by suffix); label-file paths are taken relative to the table."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise TableError(f"{path}: cannot read the prompt table ({e})") from None
    if path.suffix.lower() == ".json":
        records = _json_records(path, text)
    elif path.suffix.lower() in (".csv", ".tsv", ".txt"):
        records = _csv_records(path, text)
    else:
        raise TableError(f"{path}: the prompt table must be .csv or .json")
    if not records:
        raise TableError(f"{path}: no rows in the prompt table")
    rows, bad = [], []
    for where, record in records:
        case = str(record.get("case") or "").strip()
        try:
            rows.append(_row(where, case, record, path.parent))
        except ValueError as e:
            bad.append(BadRow(where, case, f"{where}: {e}"))
    return rows, bad


def _csv_records(path: Path, text: str) -> list[tuple[str, dict]]:
    lines = list(csv.reader(text.splitlines(), delimiter="\t" if path.suffix.lower() == ".tsv" else ","))
    numbered = [(n, r) for n, r in enumerate(lines, start=1) if r and any(c.strip() for c in r) and not r[0].startswith("#")]
    if not numbered:
        return []
    header = [c.strip().lower() for c in numbered[0][1]]
    _check_columns(path, header)
    records = []
    for n, cells in numbered[1:]:
        if len(cells) > len(header):
            records.append((f"{path.name} line {n}", {"case": cells[0], "_error": f"{len(cells)} cells for {len(header)} columns (quote boxes: \"1,2,3,4,5,6\")"}))
            continue
        records.append((f"{path.name} line {n}", {k: v.strip() for k, v in zip(header, cells) if v.strip()}))
    return records


def _json_records(path: Path, text: str) -> list[tuple[str, dict]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise TableError(f"{path}: not valid JSON ({e})") from None
    if isinstance(data, dict) and isinstance(data.get("rows"), list):
        data = data["rows"]
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise TableError(f'{path}: expected a list of objects (or {{"rows": [...]}}), one per prompt')
    for record in data:
        _check_columns(path, [k.lower() for k in record])
    return [(f"{path.name} row {i}", {k.lower(): v for k, v in r.items() if v not in (None, "")}) for i, r in enumerate(data, start=1)]


def _check_columns(path: Path, columns: list[str]) -> None:
    unknown = [c for c in columns if c not in COLUMNS]
    if unknown:
        raise TableError(f"{path}: unknown column(s) {', '.join(unknown)} (columns: {', '.join(COLUMNS)})")
    if "case" not in columns:
        raise TableError(f"{path}: no 'case' column (columns: {', '.join(COLUMNS)})")


def _row(where: str, case: str, record: dict, base: Path) -> PromptRow:
    if "_error" in record:
        raise ValueError(record["_error"])
    if not case:
        raise ValueError("no case named")
    kinds = [k for k in PROMPT_KINDS if k in record]
    if len(kinds) != 1:
        raise ValueError(f"give exactly one of box, recist, labels (found {', '.join(kinds) or 'none'})")
    kind = kinds[0]
    space = str(record.get("space", "voxel")).strip().lower()
    if space not in ("voxel", "world"):
        raise ValueError(f"space {space!r} is neither voxel nor world")
    label = _label(record.get("label"))
    name = str(record.get("object", "")).strip()
    if kind == "labels":
        if space == "world":
            raise ValueError("a label file is on the image's grid; space must be voxel")
        file = Path(str(record["labels"]).strip())
        return PromptRow(where, case, name, label, kind, path=str(file if file.is_absolute() else (base / file).resolve()))
    raw = record[kind]
    text = ",".join(str(v) for v in raw) if isinstance(raw, (list, tuple)) else str(raw)
    if kind == "box":
        values = parse_box(text)
    else:
        try:
            values = [float(v) for v in text.replace(" ", "").split(",")]
        except ValueError:
            raise ValueError(f"recist {text!r} is not a comma-separated list of numbers") from None
        want = (6,) if space == "world" else (4, 5)
        if len(values) not in want:
            raise ValueError(f"recist {text!r} has {len(values)} numbers; expected "
                             + ("two RAS points x0,y0,z0,x1,y1,z1" if space == "world" else "x0,y0,x1,y1,z (a volume) or x0,y0,x1,y1 (a 2D image)"))
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"{kind} {text!r} holds a value that is not a finite number")
    return PromptRow(where, case, name, label, kind, tuple(values), world=space == "world")


def _label(value) -> int | None:
    if value is None or value == "":
        return None
    try:
        label = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"label {value!r} is not a whole number") from None
    if label != int(label) or not 1 <= label <= MAX_LABEL:
        raise ValueError(f"label {value!r} must be a whole number in 1..{MAX_LABEL}")
    return int(label)


def recist_box(values, geometry: Geometry, world: bool = False, margin: float = RECIST_MARGIN, kind: str = "3D") -> np.ndarray:
    """A RECIST long axis -> voxel box (x0,y0,z0,x1,y1,z1), or (x0,y0,x1,y1) on a 2D image (module docstring).

    Voxel endpoints are `x0,y0,x1,y1,z` (array column, row, slice); world endpoints are two RAS
    points, which must fall on one slice of the array."""
    values = [float(v) for v in values]
    if world:
        if kind != "3D":
            raise ValueError("world RECIST endpoints need a volume")
        (d0, h0, w0), (d1, h1, w1) = geometry.world_to_index(np.reshape(values, (2, 3)))
        if round(d0) != round(d1):
            raise ValueError(f"the RECIST endpoints lie on different slices (z {d0:.1f} and {d1:.1f})")
        ends, z = np.array([[w0, h0], [w1, h1]]), float(round(d0))
    elif kind == "3D":
        if len(values) != 5:
            raise ValueError(f"a volume needs the RECIST line as x0,y0,x1,y1,z, got {len(values)} numbers")
        ends, z = np.reshape(values[:4], (2, 2)), values[4]
    else:
        if len(values) != 4:
            raise ValueError(f"a 2D image needs the RECIST line as x0,y0,x1,y1, got {len(values)} numbers")
        ends, z = np.reshape(values, (2, 2)), None
    shape = geometry.shape if kind == "3D" else geometry.shape[-2:]
    spacing = geometry.spacing[-3:] if kind == "3D" else geometry.spacing[-2:]
    dx, dy = float(spacing[-1]), float(spacing[-2])
    height, width = shape[-2], shape[-1]
    for x, y in ends:
        if not (-0.5 <= x <= width - 0.5 and -0.5 <= y <= height - 0.5):
            raise ValueError(f"RECIST endpoint ({x:g}, {y:g}) lies outside the image ({width}x{height})")
    length = math.hypot((ends[1, 0] - ends[0, 0]) * dx, (ends[1, 1] - ends[0, 1]) * dy)
    if length == 0:
        raise ValueError("the two RECIST endpoints coincide")
    reach = length / 2 * (1 + margin)  # mm from the midpoint
    cx, cy = ends.mean(axis=0)
    x0, x1 = _span(cx, reach / dx, width)
    y0, y1 = _span(cy, reach / dy, height)
    if z is None:
        return np.array([x0, y0, x1, y1], dtype=np.int64)
    if not 0 <= z <= shape[0] - 1:
        raise ValueError(f"RECIST slice {z:g} lies outside the volume (0..{shape[0] - 1})")
    z0, z1 = _span(z, reach / float(spacing[0]), shape[0])
    return np.array([x0, y0, z0, x1, y1, z1], dtype=np.int64)


def _span(centre: float, half: float, size: int) -> tuple[int, int]:
    """centre ± half (voxels), rounded outwards, clipped to 0..size-1."""
    return max(0, math.floor(centre - half)), min(size - 1, math.ceil(centre + half))

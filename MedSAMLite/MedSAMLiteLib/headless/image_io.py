"""Read images (NIfTI, NRRD, MHA/MHD, DICOM, PNG/JPEG/TIFF/BMP) into the canonical array, write masks back.

SimpleITK does the reading and writing (it knows every format's geometry, DICOM series included);
this module decides what is a usable image, reorients (geometry.py) and refuses bad input with a
one-line `FormatError` that names the file.
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.geometry import Geometry
from .dicom import read_series
from .sitk import FormatError, load_sitk, sitk_reason

VOLUME_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")
PLAIN_2D_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
LOSSY_SUFFIXES = (".jpg", ".jpeg")


@dataclass
class Image:
    """An image in the canonical layout, with what is needed to put results back where they belong.

    `array`: (D,H,W) for volumes, (H,W) or (H,W,3) for 2D images and single-slice scans, with the
    stored intensities (Hounsfield units for CT, after the file's rescale slope/intercept).
    """

    array: np.ndarray
    geometry: Geometry
    path: Path
    modality: str | None = None  # DICOM (0008,0060) when the file says, else None
    notes: list[str] = field(default_factory=list)  # choices the reader made (series picked, ...)

    @property
    def kind(self) -> str:
        """"3D" for volumes, "2D" for plain images and single-slice scans (the challenge's case kinds)."""
        return "3D" if self.geometry.ndim == 3 and self.geometry.shape[0] > 1 else "2D"

    @property
    def spacing(self) -> np.ndarray:
        """mm per array axis, in array-axis order (3 values for volumes, 2 for 2D)."""
        return self.geometry.spacing if self.kind == "3D" else self.geometry.spacing[-2:]

    def to_uint8(self, preset: str | None = None, window_wl: tuple[float, float] | None = None,
                 modality: str | None = None) -> np.ndarray:
        """The array as the models' uint8 input (intensity.apply_preset; modality defaults to the file's)."""
        from ..core.presets import apply_preset

        return apply_preset(self.array, modality or self.modality, preset, window_wl, is_2d=self.kind == "2D")


def suffix_of(path: str | Path) -> str:
    name = Path(path).name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix


def read_image(path: str | Path, volume: int | None = None, series: str | None = None) -> Image:
    """Read an image file or a DICOM series folder into the canonical layout.

    `volume` picks one volume of a 4D file; `series` picks a SeriesInstanceUID in a DICOM folder
    holding several (otherwise the largest is taken and a note says so).
    """
    path = Path(path)
    notes: list[str] = []
    if not path.exists():
        raise FormatError(f"{path}: no such file or folder")
    if path.is_dir():
        img, modality = read_series(path, series, notes)
    else:
        img = _read_file(path)
        modality = _modality(img)
    img = _pick_volume(img, path, volume)
    array, geometry = _canonical(img, path)
    if array.ndim == 3 and geometry.ndim == 3 and geometry.shape[0] > 1:
        _check_spacing_recorded(path, img)
    return Image(array, geometry, path, modality, notes)


def _read_file(path: Path):
    sitk = load_sitk()
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as e:
        raise FormatError(f"{path}: not a readable image ({sitk_reason(e)})") from e


def _modality(img) -> str | None:
    if not img.HasMetaDataKey("0008|0060"):
        return None
    return img.GetMetaData("0008|0060").strip() or None


def _pick_volume(img, path: Path, volume: int | None):
    """4D -> the chosen 3D volume (a 4D file with one volume needs no choice)."""
    sitk = load_sitk()
    dim = img.GetDimension()
    if dim == 4:
        count = img.GetSize()[3]
        if volume is None and count == 1:
            volume = 0
        if volume is None:
            size = "x".join(str(s) for s in img.GetSize()[:3])
            raise FormatError(f"{path}: 4D image with {count} volumes of {size}; choose one with --volume N (0..{count - 1})")
        if not 0 <= volume < count:
            raise FormatError(f"{path}: --volume {volume} is out of range (the file has {count} volumes, 0..{count - 1})")
        return sitk.Extract(img, list(img.GetSize()[:3]) + [0], [0, 0, 0, volume])
    if volume not in (None, 0):
        raise FormatError(f"{path}: --volume {volume} given, but the image is {dim}D with a single volume")
    if dim not in (2, 3):
        raise FormatError(f"{path}: {dim}D images are not supported (expected 2D, 3D or 4D)")
    return img


def _canonical(img, path: Path) -> tuple[np.ndarray, Geometry]:
    """SimpleITK image -> (canonical array, geometry); RGB only for 2D, alpha dropped."""
    sitk = load_sitk()
    size = img.GetSize()
    channels = img.GetNumberOfComponentsPerPixel()
    single_slice = len(size) == 3 and size[2] == 1
    if channels > 1 and len(size) == 3 and not single_slice:
        raise FormatError(f"{path}: RGB/multi-channel volume ({channels} channels, {'x'.join(map(str, size))}); convert it to grayscale first")
    if channels not in (1, 2, 3, 4):
        raise FormatError(f"{path}: {channels} channels per pixel; expected grayscale or RGB(A)")
    if sitk.GetArrayViewFromImage(img).dtype.kind == "c":
        raise FormatError(f"{path}: complex-valued image; take the magnitude first")
    geometry = Geometry.from_source(size, img.GetSpacing(), img.GetOrigin(), img.GetDirection())
    source = sitk.GetArrayFromImage(img)
    if channels > 1:
        source = source[..., :3] if channels >= 3 else source[..., 0]  # drop alpha; gray+alpha -> gray
    array = geometry.from_source_array(source)
    if single_slice:
        array = array[0]
    return array, geometry


def _check_spacing_recorded(path: Path, img) -> None:
    """Refuse volumes whose file records no voxel spacing (SimpleITK would silently assume 1 mm)."""
    suffix = suffix_of(path)
    missing = False
    if suffix in (".nii", ".nii.gz"):
        missing = bool(np.any(_nifti_pixdim(path) <= 0))
    elif suffix in (".nrrd", ".nhdr", ".mha", ".mhd"):
        header = _text_header(path).lower().split("elementdatafile")[0]  # MetaImage: data may follow at once
        fields = ("spacings:", "space directions:") if suffix in (".nrrd", ".nhdr") else ("elementspacing", "elementsize")
        missing = not any(re.search(rf"^\s*{re.escape(f)}", header, re.M) for f in fields)
    # DICOM series are checked slice by slice in dicom.py
    if missing or min(img.GetSpacing()) <= 0:
        raise FormatError(f"{path}: no voxel spacing recorded for this volume; add it to the file's header")


def _nifti_pixdim(path: Path) -> np.ndarray:
    """pixdim[1..3] as stored (SimpleITK reports zeros as 1): NIfTI-1 float32 at byte 76, NIfTI-2 float64 at 104."""
    import gzip

    with (gzip.open if path.name.lower().endswith(".gz") else open)(path, "rb") as f:
        head = f.read(540)
    for endian in "<>":
        size = int(np.frombuffer(head[:4], f"{endian}i4")[0])
        if size == 348:
            return np.frombuffer(head[76:108], f"{endian}f4")[1:4]
        if size == 540:
            return np.frombuffer(head[104:168], f"{endian}f8")[1:4]
    return np.ones(3)  # not a NIfTI header we know: SimpleITK read it, trust its spacing


def _text_header(path: Path, limit: int = 65536) -> str:
    """The ASCII header of a NRRD/MetaImage file (up to the blank line / the data file line)."""
    with open(path, "rb") as f:
        head = f.read(limit)
    end = head.find(b"\n\n")
    return head[: end if end >= 0 else limit].decode("latin-1")


def read_labels(path: str | Path, like: Image) -> np.ndarray:
    """A label map on `like`'s voxel grid, in the same canonical layout; refuses another grid."""
    path = Path(path)
    if not path.exists():
        raise FormatError(f"{path}: no such file or folder")
    if path.is_dir():
        raise FormatError(f"{path}: label maps are read from a file (NIfTI, NRRD, MHA, PNG, ...), not a folder")
    img = _pick_volume(_read_file(path), path, None)
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise FormatError(f"{path}: a label map must have one value per voxel, not {img.GetNumberOfComponentsPerPixel()} channels")
    geometry = Geometry.from_source(img.GetSize(), img.GetSpacing(), img.GetOrigin(), img.GetDirection())
    plain = suffix_of(path) in PLAIN_2D_SUFFIXES  # no geometry in the file: only the pixel grid must agree
    if not (geometry.same_grid(like.geometry) or (plain and like.kind == "2D" and geometry.shape == like.array.shape[:2])):
        raise FormatError(f"{path}: label grid ({geometry.describe()}) does not match the image grid ({like.geometry.describe()})")
    source = load_sitk().GetArrayFromImage(img)
    if plain:
        return source
    labels = like.geometry.from_source_array(source)
    return labels[0] if like.geometry.ndim == 3 and like.kind == "2D" else labels


def geometry_of(like: Image | Geometry | str | Path) -> Geometry:
    """The geometry of an Image, a Geometry, an image file, or a case .npz written by `convert`."""
    if isinstance(like, Geometry):
        return like
    if isinstance(like, Image):
        return like.geometry
    path = Path(like)
    if path.is_file() and path.name.endswith(".npz"):
        try:
            with np.load(path, allow_pickle=False) as data:
                return Geometry.from_arrays(data)
        except KeyError as e:
            raise FormatError(f"{path}: {e.args[0]}; use the original image or the case .npz from `medsamlite convert`") from e
        except (OSError, ValueError) as e:
            raise FormatError(f"{path}: unreadable .npz ({e})") from e
    return read_image(path).geometry


def write_mask(mask: np.ndarray, like: Image | Geometry | str | Path, path: str | Path) -> Path:
    """Write a label map (canonical layout) with `like`'s geometry; the format follows `path`'s suffix.

    Volumes: .nii/.nii.gz/.nrrd/.nhdr/.mha/.mhd. 2D: also .png/.tif/.tiff/.bmp. uint8 when the
    labels fit, else uint16. Written into a temporary file first, so no half-written mask is left.
    """
    sitk = load_sitk()
    path = Path(path)
    geometry = geometry_of(like)
    mask = np.asarray(mask)
    if mask.shape != geometry.shape and not (geometry.ndim == 3 and geometry.shape[0] == 1 and mask.shape == geometry.shape[1:]):
        raise FormatError(f"{path}: mask shape {mask.shape} does not match the image's array shape {geometry.shape}")
    if mask.dtype.kind not in "biu" and not np.array_equal(mask, np.round(mask)):
        raise FormatError(f"{path}: mask values must be whole numbers (labels), got {mask.dtype}")
    if mask.size and (mask.min() < 0 or mask.max() > np.iinfo(np.uint16).max):
        raise FormatError(f"{path}: labels must lie in 0..65535")
    dtype = np.uint8 if not mask.size or mask.max() <= 255 else np.uint16
    source = geometry.to_source_array(mask.reshape(geometry.shape).astype(dtype))
    if mask_format(path, geometry) == "plain":
        if suffix_of(path) == ".bmp" and dtype != np.uint8:
            raise FormatError(f"{path}: more than 255 labels do not fit a BMP; use .png or .tif")
        img = sitk.GetImageFromArray(source.reshape(source.shape[-2:]))
    else:
        img = sitk.GetImageFromArray(source)
        img.SetSpacing(geometry.source_spacing)
        img.SetOrigin(geometry.source_origin)
        img.SetDirection(geometry.source_direction)
    _atomic_write_image(img, path)
    return path


def mask_format(path: str | Path, geometry: Geometry) -> str:
    """"volume" (keeps geometry) or "plain" (2D picture) for a mask at `path`; refuses what cannot hold it."""
    path, suffix = Path(path), suffix_of(path)
    if suffix in LOSSY_SUFFIXES:
        raise FormatError(f"{path}: JPEG is lossy and would change label values; write .png, .tif, .nii.gz or .nrrd")
    if suffix in (".dcm", ""):
        raise FormatError(f"{path}: writing DICOM is not supported; write .nii.gz or .nrrd (they keep the same geometry)")
    if suffix in PLAIN_2D_SUFFIXES:
        if geometry.ndim == 3 and geometry.shape[0] > 1:
            raise FormatError(f"{path}: a volume mask cannot be written as {suffix}; use .nii.gz, .nrrd or .mha")
        return "plain"
    if suffix in VOLUME_SUFFIXES:
        return "volume"
    raise FormatError(f"{path}: unknown output format {suffix!r} (use .nii.gz, .nrrd, .mha, .png, .tif, ...)")


def _atomic_write_image(img, path: Path) -> None:
    """WriteImage into a temporary folder beside `path`, then move the file(s) in (header last)."""
    sitk = load_sitk()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    try:
        sitk.WriteImage(img, str(tmp / path.name), True)
        written = sorted(tmp.iterdir(), key=lambda p: p.name == path.name)  # data file(s) first
        for part in written:
            os.replace(part, path.parent / part.name)
    except RuntimeError as e:
        raise FormatError(f"{path}: could not write ({sitk_reason(e)})") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

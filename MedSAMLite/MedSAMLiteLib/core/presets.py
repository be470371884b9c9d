"""Windowing presets: raw intensities -> the uint8 image the models see (PIPELINES.md §7).

Presets are applied in the pipeline, on a copy: the user's volume is never modified.

* CT: a window (width W, level L): clip to [L - W/2, L + W/2], scale to 0..255.
* MR, PET and anything else not already 8-bit: clip to the 0.5 and 99.5 percentiles of the
  foreground (non-zero voxels), scale to 0..255; zero voxels stay 0.
* 2D images that are already uint8 (photographs, microscopy, endoscopy, ...) are left alone.
Scaled values are truncated to integers, as the challenge's preprocessing (`np.uint8(x)`) did.
"""
from __future__ import annotations

import numpy as np

# name -> (width, level) in Hounsfield units. The first four are the 3D Slicer MedSAM plugin's;
# bone is Radiopaedia's bone window.
CT_WINDOWS: dict[str, tuple[float, float]] = {
    "abdomen": (400.0, 40.0),
    "lung": (1500.0, -600.0),
    "brain": (80.0, 40.0),
    "mediastinum": (350.0, 50.0),
    "bone": (1800.0, 400.0),
}
DEFAULT_CT_WINDOW = "abdomen"  # what MedSAM's CT preprocessing used (W400/L40)
PRESETS = (*CT_WINDOWS, "mr", "none")  # "mr": percentile clipping; "none": uint8 data as stored
CHUNK_VOXELS = 1 << 24  # work in slabs of this many voxels: float64 copies of a whole CT would need GBs
PERCENTILES = (0.5, 99.5)


def window(array: np.ndarray, width: float, level: float) -> np.ndarray:
    """CT window -> uint8: clip to [level - width/2, level + width/2], scale to 0..255, truncate."""
    if width <= 0:
        raise ValueError(f"window width must be positive, got {width:g}")
    lo = level - width / 2.0
    return _scaled(array, lo, lo + width)


def _slabs(shape: tuple[int, ...]):
    """Index ranges along axis 0 covering about CHUNK_VOXELS voxels each."""
    per = max(1, CHUNK_VOXELS // max(1, int(np.prod(shape[1:], dtype=np.int64))))
    return [slice(i, i + per) for i in range(0, max(shape[0], 1), per)] if len(shape) else [slice(None)]


def _scaled(array: np.ndarray, lo: float, hi: float, keep_zeros: bool = False) -> np.ndarray:
    """Clip to [lo, hi], scale to 0..255 and truncate, slab by slab in float64 (zeros stay 0 if asked)."""
    out = np.empty(array.shape, dtype=np.uint8)
    for part in _slabs(array.shape) if array.ndim else [()]:
        data = array[part].astype(np.float64)
        zeros = data == 0 if keep_zeros else None
        np.clip(data, lo, hi, out=data)
        data -= lo
        data /= hi - lo  # divide first: the top of the range is exactly 255
        data *= 255.0
        if zeros is not None:
            data[zeros] = 0
        out[part] = data
    return out


def percentile_range(array: np.ndarray, percentiles: tuple[float, float] = PERCENTILES) -> tuple[float, float] | None:
    """The given percentiles of the non-zero values (None when there are none): the MR preset's range,
    found once per volume so that slices can be scaled one at a time."""
    foreground = array[array != 0]
    if foreground.size == 0:
        return None
    lo, hi = np.percentile(foreground, percentiles)
    return float(lo), float(hi)


def clip_range(array: np.ndarray, bounds: tuple[float, float] | None) -> np.ndarray:
    """Clip to `bounds` (percentile_range's), scale to 0..255 (zeros stay 0), truncate; a constant
    foreground shows white, no foreground black."""
    if bounds is None:
        return np.zeros(array.shape, dtype=np.uint8)
    lo, hi = bounds
    if hi <= lo:
        return np.where(array != 0, np.uint8(255), np.uint8(0))
    return _scaled(array, lo, hi, keep_zeros=True)


def percentile_clip(array: np.ndarray, percentiles: tuple[float, float] = PERCENTILES) -> np.ndarray:
    """Clip to the given percentiles of the non-zero values, scale to 0..255 (zeros stay 0), truncate."""
    return clip_range(array, percentile_range(array, percentiles))


def parse_window(text: str) -> tuple[float, float]:
    """"W,L" (e.g. "400,40" or "1500,-600") -> (width, level)."""
    try:
        width, level = (float(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"--window wants WIDTH,LEVEL (e.g. 400,40), got {text!r}") from None
    if width <= 0:
        raise ValueError(f"--window width must be positive, got {width:g}")
    return width, level


def describe(modality: str | None = None, preset: str | None = None, window_wl: tuple[float, float] | None = None,
             is_2d_uint8: bool = False) -> str:
    """What apply_preset will do, in words (stored in the case and printed)."""
    rule = _rule(modality, preset, window_wl, is_2d_uint8)
    if rule[0] == "window":
        return f"CT window W{rule[1]:g}/L{rule[2]:g}"
    return {"mr": "clipped to the 0.5-99.5 percentiles of the non-zero values", "none": "left as stored (uint8)"}[rule[0]]


def _rule(modality, preset, window_wl, is_2d_uint8) -> tuple:
    if window_wl is not None and preset is not None:
        raise ValueError("give either --preset or --window, not both")
    if window_wl is not None:
        return ("window", *window_wl)
    if preset is not None:
        preset = preset.lower()
        if preset in CT_WINDOWS:
            return ("window", *CT_WINDOWS[preset])
        if preset in ("mr", "none"):
            return (preset,)
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)} or give --window W,L")
    if modality is not None and modality.upper() == "CT":
        return ("window", *CT_WINDOWS[DEFAULT_CT_WINDOW])
    return ("none",) if is_2d_uint8 else ("mr",)


def apply_preset(
    array: np.ndarray,
    modality: str | None = None,
    preset: str | None = None,
    window_wl: tuple[float, float] | None = None,
    is_2d: bool = False,
) -> np.ndarray:
    """Raw intensities -> uint8 image for the models.

    Precedence: `window_wl` (width, level), then `preset` (a CT window name, "mr" (percentile
    clipping) or "none"), then the modality (CT -> abdomen window), then: an 8-bit 2D image (`is_2d`) is left
    alone, anything else is percentile-clipped.
    """
    rule = _rule(modality, preset, window_wl, is_2d and array.dtype == np.uint8)
    if rule[0] == "window":
        return window(array, rule[1], rule[2])
    if rule[0] == "mr":
        return percentile_clip(array)
    if array.dtype != np.uint8:
        raise ValueError(f"preset 'none' keeps the stored values, but they are {array.dtype}, not uint8")
    return array


def volume_preset(preset: str | None, components: int, rgb: bool, uint8: bool) -> str:
    """The preset a Slicer volume is shown to the models with: `preset`, or for None (automatic) RGB
    and 8-bit data as stored ("none") and anything else through the display window ("display").
    ValueError (one line) for data the models cannot take or a preset that cannot apply to it."""
    if components != 1 and not (rgb and components in (3, 4)):
        raise ValueError(f"{components} components per voxel: only scalar volumes, RGB and RGBA images are supported "
                         "(not 4D or multi-channel data; pick one channel or frame)")
    if preset is None or (rgb and uint8):
        preset = "none" if rgb or uint8 else "display"  # RGB images are used as they are
    if preset == "none" and not uint8:
        raise ValueError("preset 'none' needs 8-bit data; choose another preset")
    return preset

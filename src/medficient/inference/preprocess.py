"""Pre- and post-processing rules of the published pipelines (PIPELINES.md §2-4), in numpy/cv2.

Every rule here is what the model's authors did, bugs that matter for exactness included
(truncating box mapping, INTER_AREA also when upscaling, the i-valued previous mask).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..profiles import Profile


@dataclass(frozen=True)
class Geometry:
    """Original (H, W), resized (newh, neww) and network size S of one image."""

    height: int
    width: int
    new_height: int
    new_width: int
    size: int

    @classmethod
    def of(cls, height: int, width: int, size: int) -> "Geometry":
        scale = size * 1.0 / max(height, width)
        return cls(height, width, int(height * scale + 0.5), int(width * scale + 0.5), size)


def to_rgb(image: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, 1) -> (H, W, 3) by repetition; (H, W, 3) unchanged."""
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=-1)
    if image.shape[-1] == 1:
        return np.repeat(image, 3, axis=-1)
    return image


def resize_area(image: np.ndarray, geom: Geometry) -> np.ndarray:
    """cv2 INTER_AREA to the longest-side size, as the official scripts do (also when upscaling)."""
    return cv2.resize(image, (geom.new_width, geom.new_height), interpolation=cv2.INTER_AREA)


def _resize_bilinear_torch(image: np.ndarray, geom: Geometry) -> np.ndarray:
    import torch
    from torch.nn import functional as F

    t = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).permute(2, 0, 1)[None]
    t = F.interpolate(t, (geom.new_height, geom.new_width), mode="bilinear", align_corners=False, antialias=False)
    return t[0].permute(1, 2, 0).numpy()


def preprocess(image: np.ndarray, profile: Profile) -> tuple[np.ndarray, Geometry]:
    """One 2D image or slice (uint8, (H,W) or (H,W,3)) -> network input (1, 3, S, S) float32."""
    # A grayscale slice is resized once and repeated: the same numbers as resizing 3 equal channels.
    gray = image if image.ndim == 2 else None
    geom = Geometry.of(image.shape[0], image.shape[1], profile.image_size)
    src = gray[:, :, None] if gray is not None else to_rgb(image)
    if profile.resize == "area":
        resized = resize_area(src, geom)
        resized = resized[:, :, None] if resized.ndim == 2 else resized
    elif profile.resize == "bilinear":
        resized = _resize_bilinear_torch(src, geom)
    else:
        raise ValueError(f"unknown resize rule {profile.resize!r}")
    resized = to_rgb(resized.astype(np.float64))
    lo, hi = resized.min(), resized.max()
    normed = (resized - lo) / np.clip(hi - lo, a_min=1e-8, a_max=None)
    normed = normed.astype(np.float32)
    if profile.pixel_mean is not None:
        normed = (normed - np.asarray(profile.pixel_mean, np.float32)) / np.asarray(profile.pixel_std, np.float32)
    out = np.zeros((1, 3, geom.size, geom.size), dtype=np.float32)
    out[0, :, : geom.new_height, : geom.new_width] = normed.transpose(2, 0, 1)
    return out, geom


def map_boxes(boxes: np.ndarray, geom: Geometry) -> np.ndarray:
    """Image-space xyxy boxes (N, 4) -> prompt space by truncation: int(c * S / max(H, W))."""
    ratio = geom.size / max(geom.height, geom.width)
    return np.trunc(np.asarray(boxes, dtype=np.float64) * ratio).astype(np.float32)


def previous_mask_box(mask: np.ndarray, value: int, geom: Geometry, margin: int = 3) -> np.ndarray | None:
    """LiteMedSAM's next-slice box: the previous slice's mask, valued `value` (not 1), resized with
    INTER_AREA to the network size, bbox of >0 grown by `margin`, clipped to [0, S]. None when empty.
    """
    dtype = np.uint8 if value < 256 else np.uint16
    valued = mask.astype(dtype) * dtype(value)
    small = resize_area(valued, geom)
    ys, xs = np.nonzero(small)
    if ys.size == 0:
        return None
    s = geom.size
    return np.array(
        [max(0, xs.min() - margin), max(0, ys.min() - margin), min(s, xs.max() + margin), min(s, ys.max() + margin)],
        dtype=np.float32,
    )


def mask_bbox(mask: np.ndarray) -> np.ndarray | None:
    """Tight xyxy bbox of a boolean mask in its own pixel space (MedficientSAM's next-slice box)."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return np.array([cols[0], rows[0], cols[-1], rows[-1]], dtype=np.float64)


def logits_to_masks(logits: np.ndarray, geom: Geometry, profile: Profile) -> np.ndarray:
    """Low-res logits (N, 1, 256, 256) -> boolean masks (N, H, W) following the profile's rule."""
    import torch
    from torch.nn import functional as F

    t = torch.from_numpy(logits)
    if profile.logits_upsample == "input":
        t = F.interpolate(t, (geom.size, geom.size), mode="bilinear", align_corners=False)
        t = t[..., : geom.new_height, : geom.new_width]
    else:  # logits already at the network size (LiteMedSAM: 256)
        t = t[..., : geom.new_height, : geom.new_width]
    t = F.interpolate(t, (geom.height, geom.width), mode="bilinear", align_corners=False)
    return (torch.sigmoid(t) > 0.5)[:, 0].numpy()

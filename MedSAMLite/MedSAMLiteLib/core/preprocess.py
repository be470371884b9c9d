"""Pre- and post-processing rules of the published pipelines (PIPELINES.md §2-4), in numpy/cv2.

Every rule here is what the model's authors did, bugs that matter for exactness included
(truncating box mapping, INTER_AREA also when upscaling, the i-valued previous mask).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .profiles import Profile


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


# ---------------------------------------------------------------------------------------------
# Bilinear resizing exactly as torch's F.interpolate(mode="bilinear", align_corners=False,
# antialias=False) computes it on a CPU with FMA (its generic, channels-first float kernel), in
# numpy: same source indices and weights, same operation order, the fused multiply-adds emulated
# in float64 (a float32 product is exact there). The published MedficientSAM pipeline resizes
# with torch, so its inputs and masks stay bit-identical without importing torch.

def _fma(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """float32 fma(a, b, c): a*b is exact in float64, one rounding to float32 (a second rounding
    of the float64 sum can differ in the last bit with probability ~2**-29)."""
    return (a.astype(np.float64) * b + c).astype(np.float32)


@dataclass(frozen=True)
class _LinearAxis:
    """Source indices and weights of one axis (torch's compute_source_index_and_lambda)."""

    i0: np.ndarray
    i1: np.ndarray
    w0: np.ndarray
    w1: np.ndarray


def _linear_axis(in_size: int, out_size: int) -> _LinearAxis:
    dst = np.arange(out_size)
    if in_size == out_size:  # torch copies: index = output index, weights 1 and 0
        return _LinearAxis(dst, dst, np.ones(out_size, np.float32), np.zeros(out_size, np.float32))
    scale = np.float32(in_size) / np.float32(out_size)
    # fma(scale, dst + 0.5f, -0.5f), clamped at 0
    real = (np.float64(scale) * (dst.astype(np.float32) + np.float32(0.5)).astype(np.float64) - 0.5).astype(np.float32)
    real = np.maximum(real, np.float32(0))
    i0 = real.astype(np.int64)
    i1 = i0 + (i0 < in_size - 1)
    w1 = np.clip(real - i0.astype(np.float32), np.float32(0), np.float32(1)).astype(np.float32)
    w0 = (np.float32(1) - w1).astype(np.float32)
    return _LinearAxis(i0, i1, w0, w1)


def _combine(t0: np.ndarray, w0: np.ndarray, t1: np.ndarray, w1: np.ndarray) -> np.ndarray:
    """torch's `t0 * w0 + t1 * w1` as compiled: fma(t0, w0, t1 * w1)."""
    return _fma(t0, w0, (t1 * w1).astype(np.float32))


# torch takes its channels-last kernel (another operation order) when out_h + out_w <= this
_SMALL_OUTPUT = 128


def _interpolate(v00, v01, v10, v11, wy0, wy1, wx0, wx1, small: bool) -> np.ndarray:
    """One output value from its 4 neighbours (v<row><col>) and weights, in torch's order."""
    if small:  # i00*w00 + i01*w01 + i10*w10 + i11*w11 with w00 = h0*w0 etc.
        acc = _fma(v00, (wy0 * wx0).astype(np.float32), (v01 * (wy0 * wx1).astype(np.float32)).astype(np.float32))
        acc = _fma(v10, (wy1 * wx0).astype(np.float32), acc)
        return _fma(v11, (wy1 * wx1).astype(np.float32), acc)
    return _combine(_combine(v00, wx0, v01, wx1), wy0, _combine(v10, wx0, v11, wx1), wy1)


def resize_bilinear(x: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """(..., h, w) float32 -> (..., out_h, out_w): torch bilinear, align_corners=False, bit for bit."""
    x = np.asarray(x, dtype=np.float32)
    ay, ax = _linear_axis(x.shape[-2], out_h), _linear_axis(x.shape[-1], out_w)
    if out_h + out_w <= _SMALL_OUTPUT:
        r, c = ay.i0[:, None], ax.i0[None]
        r1, c1 = ay.i1[:, None], ax.i1[None]
        return _interpolate(
            x[..., r, c], x[..., r, c1], x[..., r1, c], x[..., r1, c1],
            ay.w0[:, None], ay.w1[:, None], ax.w0[None], ax.w1[None], small=True,
        )
    rows = _combine(x[..., ax.i0], ax.w0, x[..., ax.i1], ax.w1)  # width first (the inner loop), separably
    return _combine(rows[..., ay.i0, :], ay.w0[:, None], rows[..., ay.i1, :], ay.w1[:, None])


def _resize_bilinear_at(x: np.ndarray, out_h: int, out_w: int, n: np.ndarray, r: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Exact values of resize_bilinear(x (N, h, w), out_h, out_w) at the points (n, r, c) only."""
    ay, ax = _linear_axis(x.shape[-2], out_h), _linear_axis(x.shape[-1], out_w)
    return _interpolate_at(lambda rows, cols: x[n, rows, cols], ay, ax, r, c, out_h + out_w <= _SMALL_OUTPUT)


def _interpolate_at(values, ay: _LinearAxis, ax: _LinearAxis, r, c, small: bool) -> np.ndarray:
    y0, y1, x0, x1 = ay.i0[r], ay.i1[r], ax.i0[c], ax.i1[c]
    return _interpolate(
        values(y0, x0), values(y0, x1), values(y1, x0), values(y1, x1), ay.w0[r], ay.w1[r], ax.w0[c], ax.w1[c], small
    )


def _resize_linear_cv2(x: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """(N, h, w) float32 -> (N, out_h, out_w) with cv2 INTER_LINEAR: the same formula as torch's
    (half-pixel centres, clamped borders), within a few float32 ulps; fast and multi-threaded."""
    if x.shape[1:] == (out_h, out_w):
        return np.array(x, dtype=np.float32)
    return np.stack([cv2.resize(m, (out_w, out_h), interpolation=cv2.INTER_LINEAR) for m in x])


# torch.sigmoid(v) > 0.5 holds exactly for float32 v >= this value (the smallest such float,
# 0x1.800002p-24: below it exp(-v) rounds to 1 - 2**-24 or more and 1 + exp(-v) to 2).
SIGMOID_HALF = np.float32(float.fromhex("0x1.800002p-24"))


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
        chw = np.ascontiguousarray(src.transpose(2, 0, 1), dtype=np.float32)
        resized = resize_bilinear(chw, geom.new_height, geom.new_width).transpose(1, 2, 0)
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
    """Low-res logits (N, 1, 256, 256) -> boolean masks (N, H, W) following the profile's rule.

    The same masks as torch's F.interpolate (bilinear, align_corners=False) then sigmoid > 0.5:
    cv2 resizes (fast), and the few pixels whose value is too close to 0 for cv2's rounding to
    decide are recomputed exactly in torch's arithmetic (`resize_bilinear`'s).
    """
    lowres = np.asarray(logits, dtype=np.float32)[:, 0]
    if profile.logits_upsample == "input":
        size = geom.size
        first = _resize_linear_cv2(lowres, size, size)[:, : geom.new_height, : geom.new_width]
    else:  # logits already at the network size (LiteMedSAM: 256)
        size = None
        first = lowres[:, : geom.new_height, : geom.new_width]
    approx = _resize_linear_cv2(np.ascontiguousarray(first), geom.height, geom.width)
    masks = approx > 0
    # bilinear values are convex combinations: cv2's error is a few ulps of the largest input
    tol = np.float32(1e-4) * max(np.float32(1), np.abs(lowres).max(initial=0))
    near = np.flatnonzero(np.abs(approx) <= tol)  # (flatnonzero: much faster than nonzero here)
    if near.size:
        n, r, c = np.unravel_index(near, approx.shape)
        exact = (_exact_crop_resize if size is None else _exact_input_resize)(lowres, geom, n, r, c)
        masks[n, r, c] = exact >= SIGMOID_HALF
    return masks


def _exact_crop_resize(lowres: np.ndarray, geom: Geometry, n, r, c) -> np.ndarray:
    """LiteMedSAM: crop to the valid area, resize to (H, W); exact at the points (n, r, c)."""
    crop = lowres[:, : geom.new_height, : geom.new_width]
    return _resize_bilinear_at(crop, geom.height, geom.width, n, r, c)


def _exact_input_resize(lowres: np.ndarray, geom: Geometry, n, r, c) -> np.ndarray:
    """MedficientSAM: resize to S, crop, resize to (H, W); exact at the points (n, r, c)."""
    s = geom.size
    ay, ax = _linear_axis(geom.new_height, geom.height), _linear_axis(geom.new_width, geom.width)

    def first(rows, cols):  # exact first-stage values (the S x S upsampling) at (n, rows, cols)
        return _resize_bilinear_at(lowres, s, s, n, rows, cols)

    return _interpolate_at(first, ay, ax, r, c, geom.height + geom.width <= _SMALL_OUTPUT)

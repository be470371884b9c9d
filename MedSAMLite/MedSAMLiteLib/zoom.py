"""ROI zoom: segment a small structure in a crop around its box instead of the whole slice.

The published pipelines resize the whole slice to the network's input, so a structure a few
percent of the slice wide covers a few input pixels. Zoom cuts a square window around the box
(the box plus a margin of context, at least `min_size` pixels), runs the backend's usual
preprocessing on the crop, decodes, and pastes the mask back; boxes too large for zooming to pay
use the whole slice. In 3D each object is propagated on its own, each slice's window following the
box of the previous slice's mask, with the backend's next-box rule applied in the window's frame.
Same weights, any backend (everything size-dependent comes from the profile). docs/zoom.md tells
how the defaults were chosen.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .preprocess import Geometry, logits_to_masks, map_boxes, mask_bbox
from .propagate import DECODE_CHUNK, Progress, _plan, _write_labels, next_prompt


@dataclass(frozen=True)
class Window:
    """A half-open pixel window [x0, x1) x [y0, y1) of a slice."""

    x0: int
    y0: int
    x1: int
    y1: int

    @classmethod
    def whole(cls, height: int, width: int) -> "Window":
        return cls(0, 0, width, height)

    @property
    def bounds(self) -> tuple[int, int, int, int]:
        return self.x0, self.y0, self.x1, self.y1

    def covers(self, height: int, width: int) -> bool:
        return self.bounds == (0, 0, width, height)

    def geometry(self, size: int) -> Geometry:
        return Geometry.of(self.y1 - self.y0, self.x1 - self.x0, size)

    def crop(self, image: np.ndarray) -> np.ndarray:
        return image[self.y0 : self.y1, self.x0 : self.x1]

    def to_window(self, boxes: np.ndarray) -> np.ndarray:
        """Image-space xyxy boxes (N, 4) -> the window's pixels, clipped to it."""
        shifted = np.asarray(boxes, dtype=np.float64).reshape(-1, 4) - [self.x0, self.y0, self.x0, self.y0]
        hi = [self.x1 - self.x0 - 1, self.y1 - self.y0 - 1] * 2
        return np.clip(shifted, 0, hi)

    def paste(self, masks: np.ndarray, height: int, width: int) -> np.ndarray:
        """Masks (N, h, w) of the window -> (N, height, width), False outside it."""
        out = np.zeros((len(masks), height, width), dtype=bool)
        out[:, self.y0 : self.y1, self.x0 : self.x1] = masks
        return out


def _span(centre: float, size: int, limit: int) -> tuple[int, int]:
    """[start, start + size) around `centre`, shifted inside [0, limit) (shrunk if it cannot fit)."""
    size = min(size, limit)
    start = min(max(int(np.floor(centre - size / 2 + 0.5)), 0), limit - size)
    return start, start + size


@dataclass(frozen=True)
class ZoomRule:
    """When and how to crop. A box whose longer side is above `max_box_fraction` of the slice's
    longer side is segmented on the whole slice (zooming gains little there and loses context);
    otherwise the window is square, `margin` x the box's longer side of context on each side, at
    least `min_size` pixels (it caps the magnification of tiny boxes), shifted inside the slice."""

    margin: float = 0.5
    min_size: int = 64
    max_box_fraction: float = 0.6

    def window(self, box, height: int, width: int) -> Window | None:
        """The crop for an image-space xyxy box on a (height, width) slice; None = whole slice."""
        x0, y0, x1, y1 = (float(v) for v in np.asarray(box, dtype=np.float64).ravel()[:4])
        longest = max(height, width)
        side = max(x1 - x0, y1 - y0) + 1
        if side > self.max_box_fraction * longest:
            return None
        size = max(int(self.min_size), int(np.ceil(side * (1 + 2 * self.margin))))
        if size >= longest:
            return None
        cx, cy = (x0 + x1 + 1) / 2, (y0 + y1 + 1) / 2
        (wx0, wx1), (wy0, wy1) = _span(cx, size, width), _span(cy, size, height)
        return Window(wx0, wy0, wx1, wy1)


NEVER = ZoomRule(max_box_fraction=0.0)  # every box on the whole slice: the published pipeline

EmbedWindow = Callable[[Window], np.ndarray]  # a window of the slice -> its image embedding
EmbedSliceWindow = Callable[[int, Window], np.ndarray]  # (slice, window) -> embedding


def object_masks(engine, image: np.ndarray, boxes: np.ndarray, rule: ZoomRule, embed: EmbedWindow) -> np.ndarray:
    """Image (H, W[, 3]), boxes (N, 4) -> one boolean mask per box (N, H, W), each decoded in its
    own window; boxes sharing a window (all whole-slice ones) are decoded together."""
    height, width = image.shape[:2]
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    groups: dict[Window, list[int]] = defaultdict(list)
    for i, box in enumerate(boxes):
        groups[rule.window(box, height, width) or Window.whole(height, width)].append(i)
    out = np.zeros((len(boxes), height, width), dtype=bool)
    for window, indices in groups.items():
        geom = window.geometry(engine.profile.image_size)
        embedding = embed(window)
        for start in range(0, len(indices), DECODE_CHUNK):
            chunk = indices[start : start + DECODE_CHUNK]
            prompts = map_boxes(window.to_window(boxes[chunk]), geom)
            masks = logits_to_masks(engine.decode(embedding, prompts), geom, engine.profile)
            out[chunk] = window.paste(masks, height, width)
    return out


def segment_2d(engine, image: np.ndarray, boxes: np.ndarray, rule: ZoomRule, embed: EmbedWindow) -> np.ndarray:
    """Label map (H, W) uint16 of zoomed boxes, label i = box i, later boxes win."""
    segs = np.zeros(image.shape[:2], dtype=np.uint16)
    masks = object_masks(engine, image, boxes, rule, embed)
    _write_labels(segs, masks, list(range(1, len(masks) + 1)))
    return segs


def segment_3d(
    engine, volume: np.ndarray, boxes: np.ndarray, rule: ZoomRule, embed: EmbedSliceWindow, progress: Progress | None = None,
    stop_after_empty: int = 0,
) -> np.ndarray:
    """Volume (D, H, W[, 3]), boxes (N, 6) -> label map (D, H, W) uint16: each object from its
    middle slice up, then down, every slice in a window around the previous slice's mask box.
    With a rule that never zooms this is exactly the published propagation; `stop_after_empty`
    as in propagate.segment_3d."""
    profile = engine.profile
    depth, height, width = volume.shape[:3]
    segs = np.zeros((depth, height, width), dtype=np.uint16)
    for label, box in enumerate(np.asarray(boxes, dtype=np.float64).reshape(-1, 6), start=1):
        obj = _plan(box, label, depth, profile.propagation)
        mid_mask = None
        for zs in (range(obj.z_mid, obj.z_up_end + 1), range(obj.z_mid - 1, obj.z_lo - 1, -1)):
            previous, obj.empty_run = mid_mask, 0
            for z in zs:
                if obj.stopped(stop_after_empty):
                    break
                bbox = mask_bbox(previous) if previous is not None else None
                window = rule.window(obj.box if bbox is None else bbox, height, width) or Window.whole(height, width)
                geom = window.geometry(profile.image_size)
                start_box = window.to_window(obj.box)[0]
                if previous is None:
                    prompt = map_boxes(start_box[None], geom)[0]
                else:
                    prompt = next_prompt(window.crop(previous), label, start_box, geom, profile.propagation)
                logits = engine.decode(embed(z, window), prompt[None])
                mask = window.paste(logits_to_masks(logits, geom, profile), height, width)[0]
                _write_labels(segs[z], mask[None], [label])
                previous = mask
                obj.empty_run = 0 if mask.any() else obj.empty_run + 1
                if z == obj.z_mid:
                    mid_mask = mask
                if progress:
                    progress(1)
    return segs


def count_slice_steps(volume_shape: tuple[int, ...], boxes: np.ndarray, propagation: str) -> int:
    """How many (object, slice) steps `segment_3d` takes (for a progress bar)."""
    objects = [_plan(b, i, volume_shape[0], propagation) for i, b in enumerate(boxes, start=1)]
    return sum(o.z_up_end - o.z_lo + 1 for o in objects)

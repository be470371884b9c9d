"""ROI zoom: segment a small structure in a crop around its box instead of the whole slice.

The published pipelines resize the whole slice to the network's input, so a structure a few
percent of the slice wide covers a few input pixels. Zoom cuts a square window around the box
(the box plus a margin of context, at least `min_size` pixels), runs the backend's usual
preprocessing on the crop, decodes, and pastes the mask back; boxes too large for zooming to pay
use the whole slice. In 3D each object is propagated on its own (object_propagation.py), each slice's
window following the box of the previous slice's mask.
Same weights, any backend (everything size-dependent comes from the profile). docs/zoom.md tells
how the defaults were chosen.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .preprocess import Geometry, logits_to_masks, map_boxes
from .propagate import DECODE_CHUNK, _write_labels


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

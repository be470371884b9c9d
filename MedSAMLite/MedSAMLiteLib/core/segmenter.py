"""The segmenter: one image, one backend, cached slice embeddings; 2D boxes and 3D propagation.

It is the same for every network: a backend (OpenVINOBackend: a preprocessing profile plus an
encoder/decoder pair) supplies `encode` and `decode`, and the segmenter does the rest in numpy:

    set_image(slices)  -> embedding(z) (cached)  -> decode(z, boxes)  -> masks
                                                 -> segment_2d(z, box) / segment_3d(box)

Images are uint8 slices stacked along axis 0, (D, H, W) or (D, H, W, 3) (after a preset; the
Logic and the headless command put the slice axis first). Boxes are in pixels of the slice,
x = column, y = row, as in the challenge format. With `zoom` (a zoom.ZoomRule) small boxes are
segmented in a crop around them (zoom.py); without it, the published pipeline exactly.
"""
from __future__ import annotations

import itertools
from collections.abc import Hashable

import numpy as np

from . import object_propagation, propagate, zoom as zooming
from .embedding_cache import EmbeddingCache
from .preprocess import preprocess
from .zoom import Window, ZoomRule

_anonymous = itertools.count()


class Segmenter:
    """Segments boxes on one image with one backend, reusing slice embeddings through `cache`.

    Pass a shared EmbeddingCache to keep embeddings across images and Segment clicks; the cache
    key is (image key, backend key, slice), so another image, preset or backend never hits; a
    zoom crop's key adds the crop, so crops and whole slices never stand in for each other.
    `zoom` (a ZoomRule, or None for the published pipeline) may be changed between calls.
    """

    def __init__(self, backend, cache: EmbeddingCache | None = None, zoom: ZoomRule | None = None) -> None:
        self.backend = backend
        self.cache = cache if cache is not None else EmbeddingCache()
        self.zoom = zoom
        self.image: np.ndarray | None = None
        self.image_key: Hashable = None

    @property
    def profile(self):
        return self.backend.profile

    @property
    def backend_key(self) -> Hashable:
        return (getattr(self.backend, "name", type(self.backend).__name__), getattr(self.backend, "precision", ""),
                getattr(self.backend, "identity", ""))

    def set_image(self, slices: np.ndarray, key: Hashable | None = None) -> None:
        """Use `slices` ((D, H, W) or (D, H, W, 3) uint8; or an object with that shape and dtype whose
        `[z]` makes slice z on demand, as the engine's) from now on. `key` names the image for the
        cache (identity, modification time, slice axis, preset); without one the image gets a
        fresh key, so nothing cached for another image is ever used."""
        if not (hasattr(slices, "shape") and hasattr(slices, "dtype")):
            slices = np.asarray(slices)
        if slices.dtype != np.uint8:
            raise ValueError(f"slices must be uint8 (apply a preset first), got {slices.dtype}")
        if not (len(slices.shape) == 3 or (len(slices.shape) == 4 and slices.shape[3] == 3)):
            raise ValueError(f"slices must be (D, H, W) or (D, H, W, 3), got shape {slices.shape}")
        if min(slices.shape[:3]) == 0:
            raise ValueError(f"empty image of shape {slices.shape}")
        self.image = slices
        self.image_key = key if key is not None else ("anonymous", next(_anonymous))

    def key(self, z: int, bounds: tuple | None = None) -> Hashable:
        """The cache key of slice z's embedding, or of the window with these bounds (x0, y0, x1, y1) of it."""
        key = (self.image_key, self.backend_key, int(z))
        if bounds is None or Window(*bounds).covers(*self.image.shape[1:3]):
            return key
        return (*key, ("crop", *bounds))

    def embedding(self, z: int, window: Window | None = None) -> np.ndarray:
        """Image embedding of slice z (or of a window of it), encoded once, then served from the cache."""
        if self.image is None:
            raise RuntimeError("no image set")
        if not 0 <= z < self.image.shape[0]:
            raise IndexError(f"slice {z} outside 0..{self.image.shape[0] - 1}")
        key = self.key(z, None if window is None else window.bounds)
        cached = self.cache.get(key)
        if cached is None:
            pixels = self.image[z] if window is None else window.crop(self.image[z])
            cached = self.backend.encode(preprocess(pixels, self.profile)[0])
            self.cache.put(key, cached)
        return cached

    def decode(self, z: int, boxes: np.ndarray) -> np.ndarray:
        """Boxes (N, 4) xyxy on slice z -> one boolean mask per box (N, H, W)."""
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        if self.zoom is not None:
            return zooming.object_masks(self.backend, self.image[z], boxes, self.zoom, lambda w: self.embedding(z, w))
        return propagate.object_masks(self.backend, self.image[z], boxes, embedding=self.embedding(z))

    def segment_2d(self, z: int, box) -> np.ndarray:
        """One xyxy box on slice z -> boolean mask (H, W)."""
        return self.decode(z, np.asarray(box)[None])[0]

    def middle_slice(self, box) -> int:
        """The slice a 3D box (x0, y0, z0, x1, y1, z1) starts from, by the backend's rule."""
        return propagate.middle_slice(np.asarray(box, dtype=np.float64), self.image.shape[0], self.profile.propagation)

    def segment_3d(self, box, progress: propagate.Progress | None = None, stop_after_empty: int = 0) -> np.ndarray:
        """One box (x0, y0, z0, x1, y1, z1) -> boolean mask (D, H, W): the middle slice with the box,
        then slice to slice, each prompted by the box of the previous slice's mask (the backend's
        published rule); optionally stopping after `stop_after_empty` vanished masks in a row (propagate.EmptyRun)."""
        return self.label_3d(np.asarray(box, dtype=np.float64)[None], progress, stop_after_empty) > 0

    def label_2d(self, z: int, boxes: np.ndarray) -> np.ndarray:
        """Many boxes on slice z -> label map (H, W) uint16, label i = box i, later boxes win."""
        if self.zoom is not None:
            return zooming.segment_2d(self.backend, self.image[z], boxes, self.zoom, lambda w: self.embedding(z, w))
        return propagate.segment_2d(self.backend, self.image[z], boxes, embedding=self.embedding(z))

    def label_3d(self, boxes: np.ndarray, progress: propagate.Progress | None = None, stop_after_empty: int = 0) -> np.ndarray:
        """Many 3D boxes (N, 6) -> label map (D, H, W) uint16, slice-ordered, each slice embedded once
        (zoomed: object by object, each crop embedded once)."""
        if self.zoom is not None:
            return object_propagation.segment_3d(self.backend, self.image, boxes, self.zoom, self.embedding, progress, stop_after_empty)
        return propagate.segment_3d(self.backend, self.image, boxes, self.embedding, progress, stop_after_empty)

    def slice_steps(self, boxes: np.ndarray) -> int:
        """How many slices label_3d visits for these boxes (for a progress bar)."""
        if self.zoom is not None:
            return object_propagation.count_slice_steps(self.image.shape, boxes, self.profile.propagation)
        return propagate.count_slice_steps(self.image.shape, boxes, self.profile)

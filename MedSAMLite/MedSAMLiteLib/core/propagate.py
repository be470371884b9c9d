"""2D segmentation and 3D middle-slice propagation, with embedding reuse and batched decoding.

`segment_3d` visits the volume slice by slice: an up sweep in ascending z for every object's
middle..top range, then a down sweep in descending z. Each slice is embedded once (through the
caller's `embed`, normally the segmenter's cache) and all objects that need it are decoded
together; masks are the same as the official per-object loop
(`object_propagation.segment_3d_official`), which the benchmark and the tests compare against. `backend` is anything with `profile`, `encode`, `decode`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .profiles import Profile
from .preprocess import Geometry, logits_to_masks, map_boxes, mask_bbox, preprocess, previous_mask_box

DECODE_CHUNK = 8  # boxes per decoder call: larger batches gain nothing on a CPU and cost memory (docs/benchmarks.md)
Progress = Callable[[int], None]  # called with 1 per slice done; may raise to stop (cancel)
Embed = Callable[[int], np.ndarray]  # slice index -> image embedding
# A propagated mask has vanished below this fraction of its sweep's largest mask, or below this many pixels. Past a
# structure's end LiteMedSAM returns a fading speck or a leak into its neighbours, never an empty mask. On a brain
# MR's 19 AAL structures propagated over the whole volume (docs/benchmarks.md, benchmarks/eval_stop.py), axially
# and coronally, 20 % ends a sweep a median 0 and 10 slices past the structure (76 and 91 with empty masks only),
# decodes 23 and 41 % of the slices and keeps 98 and 96 % of the correct voxels; 10 % still ran 52 slices past
# coronally, 30 % lost 12 % of the correct voxels there.
VANISHED_FRACTION = 0.2
VANISHED_PIXELS = 10


@dataclass
class EmptyRun:
    """The stop rule of one sweep (up or down from its start slice), the same in every 3D loop: the sweep
    ends after `limit` vanished masks in a row (0: never, as the published pipelines). Those masks are kept:
    a structure's thin end looks the same to the rule as a speck past it, and dropping them did no better.
    `vanishing` False: only empty masks count, for runs a user's ROI bounds (a tapering structure's last
    slices fall under 20 % of its largest mask and would be cut); a box dragged on a view has no bound."""

    limit: int
    largest: int = 0  # area of the sweep's largest mask so far (its start slice's, for a sweep away from it)
    run: int = 0  # vanished masks in a row
    vanishing: bool = True
    fraction: float = VANISHED_FRACTION
    pixels: int = VANISHED_PIXELS

    def add(self, area: int) -> None:
        """Count the next slice's mask (its area in pixels)."""
        self.largest = max(self.largest, area)
        floor = max(self.pixels, self.fraction * self.largest) if self.vanishing else 1
        self.run = self.run + 1 if area < floor else 0

    @property
    def stopped(self) -> bool:
        return self.limit > 0 and self.run >= self.limit


def _write_labels(segs: np.ndarray, masks: np.ndarray, labels: list[int]) -> None:
    """Later boxes win on overlap: keep the largest label whose mask covers a pixel."""
    for mask, label in zip(masks, labels):
        np.maximum(segs, label, out=segs, where=mask)


def _mask_chunks(engine, image: np.ndarray, boxes: np.ndarray, batched: bool, embedding=None):
    """One encoding (unless given), then (first box index, boolean masks (n, H, W)) per decoder call."""
    geom = Geometry.of(image.shape[0], image.shape[1], engine.profile.image_size)
    if embedding is None:
        embedding = engine.encode(preprocess(image, engine.profile)[0])
    prompts = map_boxes(boxes, geom)
    step = DECODE_CHUNK if batched else 1
    for start in range(0, len(prompts), step):
        yield start, logits_to_masks(engine.decode(embedding, prompts[start : start + step]), geom, engine.profile)


def object_masks(engine, image: np.ndarray, boxes: np.ndarray, batched: bool = True, embedding=None) -> np.ndarray:
    """Image (H, W[, 3]) uint8, boxes (N, 4) -> one boolean mask per box (N, H, W), before any
    overlap is resolved (the panel writes one object; training validation scores each on its own)."""
    chunks = [masks for _, masks in _mask_chunks(engine, image, boxes, batched, embedding)]
    return np.concatenate(chunks) if chunks else np.zeros((0, *image.shape[:2]), bool)


def segment_2d(engine, image: np.ndarray, boxes: np.ndarray, batched: bool = True, embedding=None) -> np.ndarray:
    """Image (H, W[, 3]) uint8, boxes (N, 4) -> label map (H, W) uint16, label i = box i.
    Masks are written a decoder call at a time, so memory does not grow with the number of boxes."""
    segs = np.zeros(image.shape[:2], dtype=np.uint16)
    for start, masks in _mask_chunks(engine, image, boxes, batched, embedding):
        _write_labels(segs, masks, list(range(start + 1, start + 1 + len(masks))))
    return segs


@dataclass
class _Object:
    """One 3D box being propagated: its label, z range, middle slice and next prompt."""

    label: int
    box: np.ndarray  # image-space xyxy of the middle slice
    z_lo: int
    z_mid: int
    z_up_end: int  # last slice of the up sweep (inclusive)
    prompt: np.ndarray | None = None  # prompt-space box for the next slice to segment
    mid_prompt_down: np.ndarray | None = None  # first prompt of the down sweep
    mid_area: int = 0  # the middle slice's mask area (where the down sweep starts)
    stop: EmptyRun | None = None  # the current sweep's stop rule


def _plan(box: np.ndarray, label: int, depth: int, variant: str) -> _Object:
    """z range and middle slice by the authors' rule, clipped to the volume."""
    x0, y0, z0, x1, y1, z1 = (float(v) for v in box)
    lo, hi = max(0, int(z0)), min(depth - 1, int(z1))
    if variant == "litemedsam":
        mid = int((z1 - z0) / 2 + z0)  # up sweep: mid..z_max inclusive
        up_end = hi
    elif variant == "medficient":
        mid = (int(z0) + int(z1)) // 2  # up sweep: mid..z_max exclusive (authors' rule)
        up_end = max(min(depth - 1, int(z1) - 1), mid)  # single-slice objects still get their slice
    else:
        raise ValueError(f"unknown propagation variant {variant!r}")
    mid = min(max(mid, lo), hi)
    return _Object(label, np.array([x0, y0, x1, y1]), lo, mid, min(max(up_end, mid), hi))


def middle_slice(box: np.ndarray, depth: int, variant: str) -> int:
    """The slice a 3D box starts from (the variant's rule, clipped to the volume)."""
    return _plan(box, 1, depth, variant).z_mid


def next_prompt(mask: np.ndarray, label: int, fallback: np.ndarray, geom: Geometry, variant: str) -> np.ndarray:
    """Prompt-space box for the slice after `mask`'s, by the variant's rule; an empty mask falls
    back to `fallback` (the middle-slice box, in the mask's pixels)."""
    if variant == "litemedsam":
        box = previous_mask_box(mask, label, geom)
        return box if box is not None else map_boxes(np.asarray(fallback)[None], geom)[0]
    bbox = mask_bbox(mask)
    return map_boxes((bbox if bbox is not None else np.asarray(fallback))[None], geom)[0]


def _next_prompt(obj: _Object, mask: np.ndarray, geom: Geometry, variant: str) -> np.ndarray:
    return next_prompt(mask, obj.label, obj.box, geom, variant)


def segment_3d(
    engine,
    volume: np.ndarray,
    boxes: np.ndarray,
    embed: Embed | None = None,
    progress: Progress | None = None,
    stop_after_empty: int = 0,
) -> np.ndarray:
    """Volume (D, H, W[, 3]) uint8, boxes (N, 6) -> label map (D, H, W) uint16 by middle-slice
    propagation. `embed(z)` gives slice z's embedding (default: encode it, no reuse). With
    `stop_after_empty` > 0 an object's sweep (up or down) ends after that many vanished masks in a row (EmptyRun)."""
    profile: Profile = engine.profile
    variant = profile.propagation
    depth = volume.shape[0]
    geom = Geometry.of(volume.shape[1], volume.shape[2], profile.image_size)
    objects = [_plan(b, i, depth, variant) for i, b in enumerate(boxes, start=1)]
    segs = np.zeros(volume.shape[:3], dtype=np.uint16)
    for obj in objects:
        obj.prompt, obj.stop = map_boxes(obj.box[None], geom)[0], EmptyRun(stop_after_empty)
    if embed is None:
        def embed(z: int) -> np.ndarray:
            return engine.encode(preprocess(volume[z], profile)[0])

    def run_slice(z: int, active: list[_Object]) -> None:
        embedding = embed(z)
        for start in range(0, len(active), DECODE_CHUNK):
            group = active[start : start + DECODE_CHUNK]
            logits = engine.decode(embedding, np.stack([o.prompt for o in group]))
            masks = logits_to_masks(logits, geom, profile)
            _write_labels(segs[z], masks, [o.label for o in group])
            for obj, mask in zip(group, masks):
                obj.prompt = _next_prompt(obj, mask, geom, variant)
                obj.stop.add(int(mask.sum()))
                if z == obj.z_mid:
                    obj.mid_prompt_down, obj.mid_area = obj.prompt, int(mask.sum())
        if progress:
            progress(1)

    for z in range(min(o.z_mid for o in objects), max(o.z_up_end for o in objects) + 1):
        active = [o for o in objects if o.z_mid <= z <= o.z_up_end and not o.stop.stopped]
        if active:
            run_slice(z, active)
    for obj in objects:
        obj.prompt, obj.stop = obj.mid_prompt_down, EmptyRun(stop_after_empty, largest=obj.mid_area)
    for z in range(max(o.z_mid for o in objects) - 1, min(o.z_lo for o in objects) - 1, -1):
        active = [o for o in objects if o.z_lo <= z < o.z_mid and not o.stop.stopped]
        if active:
            run_slice(z, active)
    return segs


def count_slice_steps(volume_shape: tuple[int, ...], boxes: np.ndarray, profile: Profile) -> int:
    """How many slices `segment_3d` visits (for a progress bar)."""
    objects = [_plan(b, i, volume_shape[0], profile.propagation) for i, b in enumerate(boxes, start=1)]
    up = {z for o in objects for z in range(o.z_mid, o.z_up_end + 1)}
    down = {z for o in objects for z in range(o.z_lo, o.z_mid)}
    return len(up) + len(down)

"""The object-by-object 3D loop: each box propagated on its own, from its middle slice up, then down,
every slice decoded in a window (zoom.ZoomRule) around the box of the previous slice's mask, with the
backend's next-box rule applied in the window's frame.

It serves two callers: zoomed 3D segmentation (the Segmenter with a ZoomRule), and, with a rule that
never zooms and no embedding reuse, the published pipelines' own order (`segment_3d_official`), which
propagate.segment_3d (slice order, each slice embedded once) must equal.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from .preprocess import logits_to_masks, map_boxes, mask_bbox, preprocess
from .propagate import EmptyRun, Progress, _plan, _write_labels, next_prompt
from .zoom import NEVER, Window, ZoomRule

EmbedSliceWindow = Callable[[int, Window], np.ndarray]  # (slice, window) -> embedding


def segment_3d(
    engine, volume: np.ndarray, boxes: np.ndarray, rule: ZoomRule, embed: EmbedSliceWindow, progress: Progress | None = None,
    stop_after_empty: int = 0,
) -> np.ndarray:
    """Volume (D, H, W[, 3]), boxes (N, 6) -> label map (D, H, W) uint16: each object from its
    middle slice up, then down, every slice in a window around the previous slice's mask box.
    With a rule that never zooms this is exactly the published propagation; `stop_after_empty`
    as in propagate.segment_3d (EmptyRun)."""
    profile = engine.profile
    depth, height, width = volume.shape[:3]
    segs = np.zeros((depth, height, width), dtype=np.uint16)
    for label, box in enumerate(np.asarray(boxes, dtype=np.float64).reshape(-1, 6), start=1):
        obj = _plan(box, label, depth, profile.propagation)
        mid_mask = None
        for zs in (range(obj.z_mid, obj.z_up_end + 1), range(obj.z_mid - 1, obj.z_lo - 1, -1)):
            previous = mid_mask
            stop = EmptyRun(stop_after_empty, largest=0 if mid_mask is None else int(mid_mask.sum()))
            for z in zs:
                if stop.stopped:
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
                stop.add(int(mask.sum()))
                if z == obj.z_mid:
                    mid_mask = mask
                if progress:
                    progress(1)
    return segs


def count_slice_steps(volume_shape: tuple[int, ...], boxes: np.ndarray, propagation: str) -> int:
    """How many (object, slice) steps `segment_3d` takes (for a progress bar)."""
    objects = [_plan(b, i, volume_shape[0], propagation) for i, b in enumerate(boxes, start=1)]
    return sum(o.z_up_end - o.z_lo + 1 for o in objects)


def segment_3d_official(engine, volume: np.ndarray, boxes: np.ndarray, progress: Progress | None = None) -> np.ndarray:
    """The published order: every object on its own, every slice encoded again, one box per call."""
    return segment_3d(engine, volume, boxes, NEVER, lambda z, window: engine.encode(preprocess(volume[z], engine.profile)[0]), progress)

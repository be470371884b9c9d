"""A 3D object as its key slices: the user's corrections of a propagated result.

An object is a set of key slices, each a box on that slice or "not on this slice" (None). The first is
the ROI's box on its middle slice, and with that one key slice the object is segmented exactly as the
published pipeline does (propagation from the middle slice over the ROI's slices, `propagate.py`, or
with zoom `object_propagation.py`). Every further key slice re-prompts the slices it governs:

* a key slice with a box is decoded with that box;
* a slice between two box key slices gets a box interpolated linearly between theirs (the published
  weights take boxes only; INTERPOLATE has a variant on the key slices' mask boxes, docs/benchmarks.md
  compares them);
* beyond the outermost box key slice on a side, up to the next "not here" key slice or the end of the
  ROI's slices: from the ROI's own key slice, each slice is prompted from the previous slice's mask by the
  backend's published rule (falling back to the key slice's box after an empty slice); from a key slice
  the user placed, with its box carried unchanged, as interpolation holds the nearest box past the last
  key (`carry`; on our cases it gains more than the published rule, docs/benchmarks.md). An object that
  nothing bounds (a box on a view, whose end the stop rule finds) propagates by the published rule;
* a "not here" key slice and every slice beyond it (away from the box key slices) are empty.

Every slice remembers the prompt it was decoded with (window and prompt-space box), so segmenting again
after a change decodes only the slices whose prompt changed; embeddings come from the segmenter's cache.
"""
from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .preprocess import Geometry, logits_to_masks, map_boxes, mask_bbox
from .propagate import EmptyRun, _plan, next_prompt
from .zoom import Window

Box = tuple  # (x0, y0, x1, y1) in pixels of the slice, or None: not on this slice


@dataclass(frozen=True)
class KeySlices:
    """An object: its key slices (slice -> box or None) and the slices it is segmented over.

    `z_lo`..`z_hi` (inclusive) are the ROI's slices the published rule visits; key slices outside them
    extend the object. `origin` is the ROI's own key slice (z, box), the one the published rule sweeps
    from. Immutable: `with_key` and `without_key` give a new object (the Logic keeps the old one for Undo)."""

    keys: tuple  # ((z, box or None), ...) sorted by z
    z_lo: int
    z_hi: int
    origin: tuple | None = None

    @classmethod
    def from_roi(cls, box, depth: int, variant: str) -> "KeySlices":
        """The object of a 3D ROI box (x0, y0, z0, x1, y1, z1): its box on the middle slice."""
        plan = _plan(np.asarray(box, dtype=np.float64), 1, depth, variant)
        origin = (plan.z_mid, tuple(float(v) for v in plan.box))
        return cls((origin,), plan.z_lo, plan.z_up_end, origin)

    @property
    def extent(self) -> tuple[int, int]:
        """The slices segmented (inclusive): the ROI's, widened to every key slice."""
        zs = [z for z, _ in self.keys]
        return min(self.z_lo, *zs), max(self.z_hi, *zs)

    def box(self, z: int):
        return dict(self.keys).get(int(z))

    def with_key(self, z: int, box) -> "KeySlices":
        """A key slice at z added or replaced: a box (x0, y0, x1, y1), or None for not on this slice."""
        if box is not None:
            x0, y0, x1, y1 = (float(v) for v in box)
            if not (x1 >= x0 and y1 >= y0):
                raise ValueError(f"a key slice's box needs x0 <= x1 and y0 <= y1, got {tuple(box)}")
            box = (x0, y0, x1, y1)
        keys = dict(self.keys)
        keys[int(z)] = box
        if all(b is None for b in keys.values()):
            raise ValueError("an object needs one key slice with a box")
        return KeySlices(tuple(sorted(keys.items())), self.z_lo, self.z_hi, self.origin)

    def without_key(self, z: int) -> "KeySlices":
        """The key slice at z removed (the last key slice with a box cannot be)."""
        keys = dict(self.keys)
        if int(z) not in keys:
            raise ValueError(f"slice {z} is not a key slice")
        del keys[int(z)]
        if all(b is None for b in keys.values()):
            raise ValueError("an object needs one key slice with a box: this is its last")
        return KeySlices(tuple(sorted(keys.items())), self.z_lo, self.z_hi, self.origin)

    def rules(self) -> tuple[dict, dict, list]:
        """How each slice of the extent is prompted: ({z: box} key slices with a box, {z: (key below, key
        above, fraction)} slices between two box key slices, [(key slice, direction, slices)] beyond the
        outermost box key slices, in order). Slices in none of them are empty."""
        lo, hi = self.extent
        keyed, between, sweeps = {}, {}, []
        keys = list(self.keys)
        for i, (z, box) in enumerate(keys):
            if box is None:
                continue
            keyed[z] = np.asarray(box, dtype=np.float64)
            above = keys[i + 1] if i + 1 < len(keys) else None
            if above is not None and above[1] is not None:
                for s in range(z + 1, above[0]):
                    between[s] = (z, above[0], (s - z) / (above[0] - z))
            else:
                end = hi if above is None else above[0] - 1
                sweeps.append((z, 1, range(z + 1, end + 1)))
            below = keys[i - 1] if i > 0 else None
            if below is None or below[1] is None:
                end = lo if below is None else below[0] + 1
                sweeps.append((z, -1, range(z - 1, end - 1, -1)))
        return keyed, between, sweeps


INTERPOLATE = ("boxes", "masks")
"""Between two box key slices, interpolate "boxes" (the default): the key slices' boxes as given (the ROI's is
the box of the whole ROI), or "masks": the boxes of the key slices' masks, grown as the published next-slice
rule grows a mask's box (LiteMedSAM 3 px of the network's input); "masks" did not do better on our cases
(docs/benchmarks.md)."""
MARGIN = {"litemedsam": 3, "medficient": 0}


class SliceMasks(MutableMapping):
    """z -> boolean (H, W) mask, each slice kept as the bits of its bounding box, so a kept result (the
    engine keeps several for corrections) grows with the object, not with the volume: unpacked, one
    400 x 512 x 512 result is 100 MB. Reading a slice gives a fresh full-size mask."""

    EMPTY = (0, 0, 0, 0, np.zeros((0, 0), np.uint8))

    def __init__(self, size: tuple) -> None:
        self.size = tuple(size)  # (H, W)
        self._items: dict = {}  # z -> (y0, x0, height, width, bits of the box's rows)

    def __setitem__(self, z: int, mask: np.ndarray) -> None:
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        if rows.size == 0:
            self._items[z] = self.EMPTY
            return
        y0, x0, y1, x1 = rows[0], cols[0], rows[-1] + 1, cols[-1] + 1
        self._items[z] = (int(y0), int(x0), int(y1 - y0), int(x1 - x0), np.packbits(mask[y0:y1, x0:x1], axis=-1))

    def __getitem__(self, z: int) -> np.ndarray:
        out = np.zeros(self.size, dtype=bool)
        self.paste(z, out)
        return out

    def paste(self, z: int, out: np.ndarray) -> None:
        """Write slice z's voxels into `out` (H, W), which is all False."""
        y0, x0, h, w, bits = self._items[z]
        out[y0 : y0 + h, x0 : x0 + w] = np.unpackbits(bits, axis=-1, count=w).view(bool)

    def same(self, z: int, other: "SliceMasks") -> bool:
        """Whether slice z holds the same mask here and in `other` (absent: empty; boxes are tight, so equal
        masks have equal bits)."""
        a, b = self._items.get(z, self.EMPTY), other._items.get(z, self.EMPTY)
        return a[:4] == b[:4] and np.array_equal(a[4], b[4])

    @property
    def nbytes(self) -> int:
        """Bytes of the masks' bits (what the engine keeps per result)."""
        return sum(item[4].nbytes for item in self._items.values())

    def __delitem__(self, z: int) -> None:
        del self._items[z]

    def __iter__(self):
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


@dataclass
class ObjectMasks:
    """The result of segmenting a KeySlices object: each slice's mask and the prompt it came from."""

    shape: tuple  # (D, H, W)
    masks: SliceMasks = None  # z -> boolean (H, W) (absent: empty); made from `shape`
    prompts: dict = field(default_factory=dict)  # z -> (window bounds, prompt box) it was decoded with
    decoded: int = 0  # slices decoded to make it (the rest reused from the previous result)

    def __post_init__(self) -> None:
        if self.masks is None:
            self.masks = SliceMasks(self.shape[1:])

    def mask(self, z: int) -> np.ndarray:
        return self.masks[z] if z in self.masks else np.zeros(self.shape[1:], dtype=bool)

    def volume(self, lo: int = 0, hi: int | None = None) -> np.ndarray:
        """The masks of slices lo..hi (inclusive; default all) as (hi - lo + 1, H, W)."""
        hi = self.shape[0] - 1 if hi is None else hi
        out = np.zeros((hi - lo + 1, *self.shape[1:]), dtype=bool)
        for z in self.masks:
            if lo <= z <= hi:
                self.masks.paste(z, out[z - lo])
        return out

    def changed(self, before: "ObjectMasks | None") -> list[int]:
        """The slices whose mask differs from `before` (all with a mask, or had one, when None)."""
        if before is None:
            return sorted(self.masks)
        zs = set(self.masks) | set(before.masks)
        return sorted(z for z in zs if not self.masks.same(z, before.masks))


Progress = Callable[[int], None]


def segment(segmenter, obj: KeySlices, previous: ObjectMasks | None = None, progress: Progress | None = None,
            stop_after_empty: int = 0, interpolate: str = "boxes", vanishing: bool = True, carry: bool = True) -> ObjectMasks:
    """Segment `obj` on the segmenter's image; with `previous` (this object's last result on the same
    image, backend and zoom) a slice whose prompt is unchanged keeps its mask without decoding.
    With one key slice the masks are the published pipeline's (zoomed with the segmenter's ZoomRule).
    `interpolate`: see INTERPOLATE; `stop_after_empty` and `vanishing`: propagate.EmptyRun; `carry`:
    beyond the outermost key slice a user placed, its box on every slice (False: the published rule,
    for an object that nothing but the stop rule ends)."""
    if interpolate not in INTERPOLATE:
        raise ValueError(f"interpolate must be one of {', '.join(INTERPOLATE)}")
    image = segmenter.image
    depth, height, width = image.shape[:3]
    profile, variant, rule = segmenter.profile, segmenter.profile.propagation, segmenter.zoom
    out = ObjectMasks((depth, height, width))
    lo, hi = obj.extent
    if not (0 <= lo and hi < depth):
        raise ValueError(f"key slices must lie in 0..{depth - 1}")

    def window_for(box) -> Window | None:
        return None if rule is None else (rule.window(box, height, width) or Window.whole(height, width))

    def run(z: int, window: Window | None, prompt: np.ndarray) -> np.ndarray:
        key = (None if window is None else window.bounds, tuple(float(v) for v in prompt))
        if previous is not None and previous.prompts.get(z) == key:
            mask = previous.masks.get(z)
        else:
            geom = Geometry.of(height, width, profile.image_size) if window is None else window.geometry(profile.image_size)
            logits = segmenter.backend.decode(segmenter.embedding(z, window), prompt[None])
            mask = logits_to_masks(logits, geom, profile)[0]
            if window is not None:
                mask = window.paste(mask[None], height, width)[0]
            mask = mask if mask.any() else None
            out.decoded += 1
        out.prompts[z] = key
        if mask is not None:
            out.masks[z] = mask
        if progress:
            progress(1)
        return mask

    def box_prompt(z: int, box: np.ndarray, margin: int = 0) -> np.ndarray | None:
        window = window_for(box)
        geom = Geometry.of(height, width, profile.image_size) if window is None else window.geometry(profile.image_size)
        prompt = map_boxes(box[None] if window is None else window.to_window(box), geom)[0]
        if margin:
            prompt = np.clip(prompt + np.array([-margin, -margin, margin, margin], np.float32), 0, geom.size)
        return run(z, window, prompt)

    keyed, between, sweeps = obj.rules()
    for z in sorted(keyed):
        box_prompt(z, keyed[z])
    anchors = dict(keyed)
    if interpolate == "masks":  # a key slice's mask box (its own box where it has no mask)
        anchors.update({z: mask_bbox(out.masks[z]) for z in keyed if z in out.masks})
    for z in sorted(between):
        a, b, t = between[z]
        box_prompt(z, anchors[a] + t * (anchors[b] - anchors[a]), MARGIN[variant] if interpolate == "masks" else 0)
    for key_z, direction, zs in sweeps:
        anchor = keyed[key_z]
        published = not carry or obj.origin is None or (key_z, obj.box(key_z)) == obj.origin
        previous_mask = out.masks.get(key_z)
        # the published up sweep counts its first slice, the down sweep starts afresh from it
        key_area = 0 if previous_mask is None else int(previous_mask.sum())
        stop = EmptyRun(stop_after_empty, largest=key_area, vanishing=vanishing)
        if direction > 0:
            stop.add(key_area)
        for z in zs:
            if stop.stopped:
                break
            prev = previous_mask if previous_mask is not None else np.zeros((height, width), dtype=bool)
            if not published:
                mask = box_prompt(z, anchor)
            elif rule is None:
                geom = Geometry.of(height, width, profile.image_size)
                mask = run(z, None, next_prompt(prev, 1, anchor, geom, variant))
            else:
                bbox = mask_bbox(prev)
                window = window_for(anchor if bbox is None else bbox)
                geom = window.geometry(profile.image_size)
                start_box = window.to_window(anchor)[0]
                mask = run(z, window, next_prompt(window.crop(prev), 1, start_box, geom, variant))
            previous_mask = mask
            stop.add(0 if mask is None else int(mask.sum()))
    return out


def count_steps(obj: KeySlices) -> int:
    """Slices visited at most by `segment` (for a progress bar)."""
    lo, hi = obj.extent
    return hi - lo + 1 - sum(1 for _, b in obj.keys if b is None)

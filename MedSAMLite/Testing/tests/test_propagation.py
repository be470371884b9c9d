"""The 3D propagation rules, checked with a stand-in network whose mask is exactly its box prompt."""
from dataclasses import dataclass, field

import numpy as np
import pytest

from MedSAMLiteLib.models.backends import BackendStats
from MedSAMLiteLib.core.embedding_cache import EmbeddingCache
from MedSAMLiteLib.core.object_propagation import segment_3d_official
from MedSAMLiteLib.core.propagate import count_slice_steps, segment_2d, segment_3d
from MedSAMLiteLib.core.profiles import PROFILES
from MedSAMLiteLib.core.segmenter import Segmenter


@dataclass
class BoxEngine:
    """Logits +1 inside the prompt box (on the 256 logit grid), -1 elsewhere; records prompts."""

    profile: object
    prompts: list = field(default_factory=list)
    stats: BackendStats = field(default_factory=BackendStats)
    blank_is_empty: bool = False

    def encode(self, image):
        self.stats.encoder_calls += 1
        return image

    def decode(self, embedding, boxes):
        self.stats.decoder_calls += 1
        self.prompts.append(np.array(boxes))
        f = 256 / self.profile.prompt_space
        logits = -np.ones((len(boxes), 1, 256, 256), np.float32)
        if self.blank_is_empty and not np.any(embedding):  # a blank slice: nothing there
            return logits
        for i, (x0, y0, x1, y1) in enumerate(boxes):
            logits[i, 0, int(y0 * f) : int(y1 * f) + 1, int(x0 * f) : int(x1 * f) + 1] = 1
        return logits


LITE = PROFILES["litemedsam"]
MEDFICIENT = PROFILES["medficient_l0"]


def test_litemedsam_z_range_is_inclusive_and_boxes_grow_by_margin():
    volume = np.random.default_rng(0).integers(0, 255, (12, 256, 256), dtype=np.uint8)
    engine = BoxEngine(LITE)
    segs = segment_3d(engine, volume, np.array([[100, 100, 2, 120, 120, 8]]))
    touched = np.flatnonzero(segs.reshape(12, -1).any(axis=1))
    np.testing.assert_array_equal(touched, np.arange(2, 9))  # z_min..z_max inclusive
    # middle slice int((8-2)/2+2) = 5 first, with the given box; then each slice grows by 3 px per side
    np.testing.assert_array_equal(engine.prompts[0], [[100, 100, 120, 120]])
    np.testing.assert_array_equal(engine.prompts[1], [[97, 97, 123, 123]])
    np.testing.assert_array_equal(engine.prompts[2], [[94, 94, 126, 126]])


def test_medficient_z_max_is_exclusive_and_box_is_tight():
    volume = np.random.default_rng(0).integers(0, 255, (12, 512, 512), dtype=np.uint8)
    engine = BoxEngine(MEDFICIENT)
    segs = segment_3d(engine, volume, np.array([[100, 100, 2, 121, 121, 8]]))
    touched = np.flatnonzero(segs.reshape(12, -1).any(axis=1))
    np.testing.assert_array_equal(touched, np.arange(2, 8))  # (2+8)//2 = 5 .. 7, then 4 .. 2
    assert len(engine.prompts) == 6


def test_single_slice_object_is_segmented():
    volume = np.zeros((5, 64, 64), np.uint8)
    volume[:, 20:40, 20:40] = 200
    for profile in (LITE, MEDFICIENT):
        segs = segment_3d(BoxEngine(profile), volume, np.array([[10, 10, 3, 50, 50, 3]]))
        assert segs[3].any() and not np.delete(segs, 3, axis=0).any()


def test_z_range_clipped_to_volume():
    volume = np.zeros((6, 64, 64), np.uint8)
    segs = segment_3d(BoxEngine(LITE), volume, np.array([[10, 10, -4, 50, 50, 40]]))
    assert segs.any(axis=(1, 2)).all()


@pytest.mark.parametrize("profile", [LITE, MEDFICIENT], ids=["litemedsam", "medficient"])
def test_slice_order_equals_official_order(profile):
    """Several objects with different middles: shared encodes, both sweeps, overlaps (later wins)."""
    rng = np.random.default_rng(1)
    volume = rng.integers(0, 255, (30, 200, 240), dtype=np.uint8)
    boxes = np.array([[10, 10, 0, 120, 100, 20], [60, 50, 5, 200, 180, 29], [30, 30, 12, 90, 90, 14], [0, 0, 3, 239, 199, 3]])
    fast_engine, official_engine = BoxEngine(profile), BoxEngine(profile)
    segmenter = Segmenter(fast_engine, EmbeddingCache(max_bytes=4 * 3 * 256 * 256 * 4))  # 4 slices
    segmenter.set_image(volume)
    fast = segmenter.label_3d(boxes)
    official = segment_3d_official(official_engine, volume, boxes)
    np.testing.assert_array_equal(fast, official)
    assert set(np.unique(fast)) == {0, 1, 2, 3, 4}
    assert fast_engine.stats.encoder_calls < official_engine.stats.encoder_calls
    assert fast_engine.stats.decoder_calls < official_engine.stats.decoder_calls
    steps = []
    segment_3d(BoxEngine(profile), volume, boxes, progress=steps.append)
    assert len(steps) == count_slice_steps(volume.shape, boxes, profile)


def test_each_slice_encoded_once_with_enough_cache_and_reruns_hit_it():
    volume = np.zeros((30, 64, 64), np.uint8)
    boxes = np.array([[1, 1, 0, 30, 30, 29], [5, 5, 0, 40, 40, 10], [5, 5, 20, 40, 40, 29]])
    engine = BoxEngine(LITE)
    segmenter = Segmenter(engine)
    segmenter.set_image(volume, key="volume")
    first = segmenter.label_3d(boxes)
    assert engine.stats.encoder_calls == 30
    np.testing.assert_array_equal(segmenter.label_3d(boxes), first)
    assert engine.stats.encoder_calls == 30  # the same image and backend: every slice from the cache
    segmenter.set_image(volume, key="another state of the volume")
    segmenter.label_3d(boxes[:1])
    assert engine.stats.encoder_calls == 60


def test_2d_later_boxes_win_and_grayscale_works():
    image = np.zeros((100, 100), np.uint8)
    segs = segment_2d(BoxEngine(LITE), image, np.array([[10, 10, 60, 60], [40, 40, 90, 90]]))
    assert segs.dtype == np.uint16
    assert segs[50, 50] == 2 and segs[20, 20] == 1 and segs[80, 80] == 2 and segs[5, 5] == 0


@pytest.mark.parametrize("zoomed", [False, True], ids=["slice_order", "zoom_object_order"])
def test_propagation_stops_after_empty_slices(zoomed):
    """Structure on slices 0..5 only; a box over 0..11 starts at 5: with a limit of 2 the up sweep
    stops after slices 6 and 7 come back empty; without a limit it runs to 11."""
    from MedSAMLiteLib.core.zoom import ZoomRule

    volume = np.zeros((12, 64, 64), np.uint8)
    volume[:6, 10:50, 10:50] = 200
    box = np.array([[5, 5, 0, 55, 55, 11]])
    visited = {}
    for limit in (0, 2):
        segmenter = Segmenter(BoxEngine(LITE, blank_is_empty=True), zoom=ZoomRule() if zoomed else None)
        segmenter.set_image(volume)
        steps = []
        segs = segmenter.label_3d(box, progress=steps.append, stop_after_empty=limit)
        visited[limit] = len(steps)
        assert segs[:6].any(axis=(1, 2)).all() and not segs[6:].any()
    assert visited == {0: 12, 2: 8}  # 5..7 up, 4..0 down


def test_other_weights_of_the_same_backend_never_reuse_embeddings():
    """After a new checkpoint is imported the backend has another identity: nothing cached is reused."""
    cache, volume = EmbeddingCache(), np.zeros((3, 64, 64), np.uint8)
    engines = [BoxEngine(LITE), BoxEngine(LITE), BoxEngine(LITE)]
    for engine, identity in zip(engines, ("weights-a", "weights-b", "weights-a")):
        engine.name, engine.identity = "medficient_l0", identity
        segmenter = Segmenter(engine, cache)
        segmenter.set_image(volume, key="the same volume")
        segmenter.embedding(1)
    assert [e.stats.encoder_calls for e in engines] == [1, 1, 0]


@dataclass
class StructureEngine(BoxEngine):
    """LiteMedSAM's habit past a structure's end: the mask is the bright pixels inside the prompt box and,
    where the box holds none, a 4 x 4 blob of logits at its centre, never an empty mask (256 x 256 slices
    map pixels to logits one to one)."""

    def decode(self, embedding, boxes):
        logits = super().decode(embedding, boxes)
        bright = embedding[0, 0] > 0.5
        for i, (x0, y0, x1, y1) in enumerate(boxes):
            inside = (logits[i, 0] > 0) & bright
            if inside.any():
                logits[i, 0] = np.where(inside, 1, -1)
            else:
                cx, cy = int((x0 + x1) / 2), int((y0 + y1) / 2)
                logits[i, 0] = -1
                logits[i, 0, cy : cy + 4, cx : cx + 4] = 1
        return logits


def _run_loop(loop, volume, box, limit):
    """(label map, slices visited) of one 3D box by one of the three sweeps that apply the stop rule."""
    from MedSAMLiteLib.core import objects
    from MedSAMLiteLib.core.objects import KeySlices
    from MedSAMLiteLib.core.zoom import ZoomRule

    segmenter = Segmenter(StructureEngine(LITE), zoom=ZoomRule() if loop == "zoom" else None)
    segmenter.set_image(volume)
    steps = []
    if loop == "key_slices":
        result = objects.segment(segmenter, KeySlices.from_roi(box, len(volume), "litemedsam"), progress=steps.append, stop_after_empty=limit)
        return result.volume(), len(steps)
    return segmenter.label_3d(np.asarray(box, np.float64)[None], progress=steps.append, stop_after_empty=limit), len(steps)


LOOPS = ["slice_order", "zoom", "key_slices"]


@pytest.mark.parametrize("loop", LOOPS)
def test_hallucinated_specks_past_the_end_stop_the_sweep(loop):
    """A square on slices 0..7 of 16; the box spans them all and starts at 7. Past slice 7 every mask is a
    speck of a few pixels: with a limit of 2 the up sweep decodes 8 and 9 and stops (specks kept), 10
    slices in all; without a limit it runs to 15."""
    volume = np.zeros((16, 256, 256), np.uint8)
    volume[:8, 100:160, 90:150] = 200
    box = [80, 90, 0, 160, 170, 15]
    segs, visited = _run_loop(loop, volume, box, 2)
    assert visited == 10  # 7..9 up, 6..0 down
    assert (segs[:8, 100:160, 90:150] > 0).all() and not segs[:8, :100].any() and not segs[10:].any()
    assert all(0 < segs[z].astype(bool).sum() <= 16 for z in (8, 9))
    segs, visited = _run_loop(loop, volume, box, 0)
    assert visited == 16 and all(segs[z].any() for z in range(16))


@pytest.mark.parametrize("loop", LOOPS)
def test_a_structure_shrinking_to_its_tip_is_not_stopped_early(loop):
    """A ball of radius 12 on slices 3..27 (cross-sections down to one pixel at its poles): with a limit of
    3 each sweep keeps the ball's every slice and stops at most 2 slices past its pole."""
    z, y, x = np.ogrid[:40, :256, :256]
    ball = (z - 15) ** 2 + (y - 128) ** 2 + (x - 128) ** 2 <= 144
    volume = np.where(ball, 200, 0).astype(np.uint8)
    segs, visited = _run_loop(loop, volume, [115, 115, 0, 141, 141, 30], 3)
    np.testing.assert_array_equal(segs[3:28] > 0, ball[3:28])
    assert not segs[30:].any() and not segs[:1].any()
    assert visited <= 25 + 2 + 2


def test_in_an_roi_only_an_empty_mask_stops_the_sweep():
    """`vanishing=False` (the module's ROI runs, bounded by the ROI): the specks past slice 7 are masks, so the
    sweep runs to the ROI's last slice; a tapering structure's small last slices are never cut."""
    from MedSAMLiteLib.core import objects
    from MedSAMLiteLib.core.objects import KeySlices

    volume = np.zeros((16, 256, 256), np.uint8)
    volume[:8, 100:160, 90:150] = 200
    segmenter = Segmenter(StructureEngine(LITE))
    segmenter.set_image(volume)
    steps = []
    obj = KeySlices.from_roi([80, 90, 0, 160, 170, 15], 16, "litemedsam")
    result = objects.segment(segmenter, obj, progress=steps.append, stop_after_empty=2, vanishing=False)
    assert len(steps) == 16 and all(result.volume()[z].any() for z in range(16))

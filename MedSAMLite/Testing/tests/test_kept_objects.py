"""What the engine keeps of a 3D result for its corrections: masks that grow with the object, not the
volume, and the embeddings of the last object's slices, kept before others within the cache's budget."""
import numpy as np

from MedSAMLiteLib.core import objects
from MedSAMLiteLib.core.embedding_cache import EmbeddingCache
from MedSAMLiteLib.core.objects import KeySlices, SliceMasks
from MedSAMLiteLib.core.profiles import PROFILES
from MedSAMLiteLib.core.segmenter import Segmenter
from test_propagation import BoxEngine


def test_a_small_object_in_a_big_volume_keeps_bytes_of_its_own_size():
    depth, size = 12, 512
    segmenter = Segmenter(BoxEngine(PROFILES["litemedsam"]))
    segmenter.set_image(np.full((depth, size, size), 7, np.uint8))
    box = (200, 210, 2, 219, 225, 9)  # 20 x 16 px on slices 2..9
    result = objects.segment(segmenter, KeySlices.from_roi(box, depth, "litemedsam"))
    volume = result.volume()
    slices = np.flatnonzero(volume.any(axis=(1, 2)))
    assert slices.size == 8 and result.masks.keys() == set(slices.tolist())
    # each slice's mask within its own bounding box, one bit per voxel (rows padded to whole bytes)
    ys, xs = np.nonzero(volume.any(axis=0))
    height, width = ys[-1] - ys[0] + 1, xs[-1] - xs[0] + 1
    assert height * width < size * size / 16  # the published rule grows the box slice by slice: still small
    assert result.masks.nbytes <= slices.size * height * -(-width // 8)
    assert result.masks.nbytes * 8 < size * size  # less than one slice of unpacked booleans for the whole object


def test_slice_masks_give_back_what_was_stored_and_compare_empty_with_absent():
    rng = np.random.default_rng(0)
    masks, other = SliceMasks((30, 41)), SliceMasks((30, 41))
    stored = rng.random((30, 41)) < 0.2
    stored[:3] = False
    masks[4] = stored
    masks[5] = np.zeros((30, 41), bool)
    np.testing.assert_array_equal(masks[4], stored)
    assert not masks[5].any() and masks[4] is not masks[4]  # a fresh array on every read
    assert masks.same(5, other) and masks.same(6, other) and not masks.same(4, other)
    other[4] = stored.copy()
    assert masks.same(4, other)
    flipped = stored.copy()
    flipped[10, 40] = ~flipped[10, 40]
    other[4] = flipped
    assert not masks.same(4, other)


def test_kept_keys_are_evicted_only_when_nothing_else_is_left():
    item = np.zeros(10, np.float32)  # 40 bytes
    cache = EmbeddingCache(max_bytes=3 * item.nbytes)
    cache.put("a", item.copy())
    cache.put("b", item.copy())
    cache.keep({"a", "b"})
    for key in "cde":
        cache.put(key, item.copy())
    assert "a" in cache and "b" in cache and "e" in cache and len(cache) == 3  # c, then d made room
    cache.keep({"x"})  # another object: a and b age out as usual
    cache.put("f", item.copy())
    assert "a" not in cache and "b" in cache
    cache.keep({"b", "e", "f"})
    cache.put("g", item.copy())  # every item kept: the least recently used of them goes, the budget holds
    assert "b" not in cache and cache.nbytes <= cache.max_bytes


def test_the_engine_keeps_its_kept_objects_slices_cached_until_the_object_is_dropped():
    from MedSAMLiteLib.engine.server import Engine

    engine = Engine(None)
    segmenter = Segmenter(BoxEngine(PROFILES["litemedsam"]), engine.cache)
    segmenter.set_image(np.full((30, 64, 64), 7, np.uint8), key="image")
    slice_bytes = segmenter.embedding(0).nbytes
    engine.cache.resize(12 * slice_bytes)
    result = objects.segment(segmenter, KeySlices.from_roi((10, 10, 0, 40, 40, 7), 30, "litemedsam"))
    engine.remember(1, "settings", result, segmenter)
    for z in range(8, 30):  # other work: a prefetch of other slices fills the cache
        segmenter.embedding(z)
    assert all(segmenter.key(z) in engine.cache for z in range(8))
    later = objects.segment(segmenter, KeySlices.from_roi((10, 10, 20, 40, 40, 27), 30, "litemedsam"))
    for task in range(2, 2 + engine.KEPT_OBJECTS):  # newer objects: the first is dropped, its slices age out
        engine.remember(task, "settings", later, segmenter)
    for z in range(8, 20):
        segmenter.embedding(z)
    assert not any(segmenter.key(z) in engine.cache for z in range(8))

"""Key-slice objects (core/objects.py): one key slice is the published pipeline, more re-prompt the
slices they govern, and only slices whose prompt changed are decoded again."""
import numpy as np
import pytest

from MedSAMLiteLib.core import objects
from MedSAMLiteLib.core.objects import KeySlices
from MedSAMLiteLib.core.object_propagation import segment_3d as zoomed_segment_3d
from MedSAMLiteLib.core.profiles import PROFILES
from MedSAMLiteLib.core.segmenter import Segmenter
from MedSAMLiteLib.core.zoom import ZoomRule
from test_propagation import BoxEngine

LITE = PROFILES["litemedsam"]


def _volume(depth=20, size=256, blank=()):
    volume = np.random.default_rng(1).integers(1, 255, (depth, size, size), dtype=np.uint8)
    for z in blank:
        volume[z] = 0
    return volume


def _segmenter(profile=LITE, zoom=None, volume=None):
    engine = BoxEngine(profile, blank_is_empty=True)
    segmenter = Segmenter(engine, zoom=zoom)
    segmenter.set_image(_volume() if volume is None else volume)
    return segmenter


@pytest.mark.parametrize("name", ["litemedsam", "medficient_l0"])
@pytest.mark.parametrize("zoom", [None, ZoomRule()])
@pytest.mark.parametrize("stop", [0, 2])
def test_one_key_slice_is_the_published_pipeline(name, zoom, stop):
    volume = _volume(blank=(3, 4, 5, 16))  # blank slices: empty masks, fallbacks and early stops happen
    box = np.array([60, 70, 1, 90, 110, 18], dtype=np.float64)
    published = _segmenter(PROFILES[name], zoom, volume).segment_3d(box, stop_after_empty=stop)
    segmenter = _segmenter(PROFILES[name], zoom, volume)
    obj = KeySlices.from_roi(box, len(volume), PROFILES[name].propagation)
    result = objects.segment(segmenter, obj, stop_after_empty=stop)
    np.testing.assert_array_equal(result.volume(), published)


def test_the_first_key_slice_is_the_roi_box_on_its_middle_slice():
    obj = KeySlices.from_roi([10, 20, 2, 30, 40, 8], 12, "litemedsam")
    assert obj.keys == ((5, (10.0, 20.0, 30.0, 40.0)),) and (obj.z_lo, obj.z_hi) == (2, 8)
    medficient = KeySlices.from_roi([10, 20, 2, 30, 40, 8], 12, "medficient")
    assert medficient.keys[0][0] == 5 and medficient.z_hi == 7  # z_max exclusive


def test_slices_between_two_box_key_slices_get_the_interpolated_box():
    segmenter = _segmenter()
    obj = KeySlices.from_roi([40, 40, 0, 80, 80, 19], 20, "litemedsam").with_key(13, (80, 120, 160, 200))
    assert obj.keys[0][0] == 9
    objects.segment(segmenter, obj)
    prompts = [p[0].tolist() for p in segmenter.backend.prompts]
    # the key slices 9 and 13 first, then 10..12; slice 11 is half way: (60, 80, 120, 140) (256 px: no scaling)
    assert prompts[:5] == [[40, 40, 80, 80], [80, 120, 160, 200], [50, 60, 100, 110], [60, 80, 120, 140], [70, 100, 140, 170]]
    # then down from the ROI's slice 9 (8..0) by the published rule (the mask's box grown by 3 px), and up
    # from the user's slice 13 (14..19) with its box carried
    assert prompts[5] == [37, 37, 83, 83] and prompts[5 + 9 :] == [[80, 120, 160, 200]] * 6
    assert len(prompts) == 20


def test_without_carry_the_user_key_slice_propagates_by_the_published_rule():
    """An object that nothing bounds (a box on a view): beyond the user's key slice, the published rule."""
    segmenter = _segmenter()
    obj = KeySlices.from_roi([40, 40, 0, 80, 80, 19], 20, "litemedsam").with_key(13, (80, 120, 160, 200))
    objects.segment(segmenter, obj, carry=False)
    prompts = [p[0].tolist() for p in segmenter.backend.prompts]
    assert prompts[5] == [37, 37, 83, 83] and prompts[5 + 9] == [77, 117, 163, 203] and len(prompts) == 20


def test_a_box_replacing_the_roi_key_slice_is_the_users_and_is_carried():
    segmenter = _segmenter()
    obj = KeySlices.from_roi([40, 40, 0, 80, 80, 19], 20, "litemedsam").with_key(9, (50, 50, 90, 90))
    objects.segment(segmenter, obj)
    prompts = [p[0].tolist() for p in segmenter.backend.prompts]
    assert prompts == [[50, 50, 90, 90]] * 20  # slice 9, then 10..19 up and 8..0 down


def test_masks_interpolates_the_key_slices_mask_boxes_grown_as_published():
    engine, prompts = BoxEngine(LITE), []
    engine.decode = _shrinking(engine.decode, prompts)  # masks 10 px inside their prompt box on every side
    segmenter = Segmenter(engine)
    segmenter.set_image(_volume())
    obj = KeySlices.from_roi([40, 40, 0, 120, 120, 19], 20, "litemedsam").with_key(13, (80, 120, 160, 200))
    objects.segment(segmenter, obj, interpolate="masks")
    # masks: slice 9 (50, 50)-(110, 110), slice 13 (90, 130)-(150, 190); slice 11 half way (70, 90)-(130, 150), +3 px
    assert prompts[:2] == [[40, 40, 120, 120], [80, 120, 160, 200]]
    assert prompts[3] == [67, 87, 133, 153]


def _shrinking(decode, prompts):
    def shrunk(embedding, boxes):
        prompts.append(np.asarray(boxes)[0].tolist())
        return decode(embedding, np.asarray(boxes) + np.array([10, 10, -10, -10], np.float32))

    return shrunk


def test_not_here_ends_the_object_on_that_side():
    segmenter = _segmenter()
    obj = KeySlices.from_roi([40, 40, 0, 80, 80, 19], 20, "litemedsam").with_key(13, None).with_key(4, None)
    mask = objects.segment(segmenter, obj).volume()
    touched = np.flatnonzero(mask.reshape(20, -1).any(axis=1))
    np.testing.assert_array_equal(touched, np.arange(5, 13))  # 5..12: propagated from 9 up and down
    assert not mask[13:].any() and not mask[:5].any()


def test_only_slices_whose_prompt_changed_are_decoded_again():
    segmenter = _segmenter()
    obj = KeySlices.from_roi([40, 40, 0, 80, 80, 19], 20, "litemedsam")
    first = objects.segment(segmenter, obj)
    assert first.decoded == 20
    calls = segmenter.backend.stats.decoder_calls
    corrected = obj.with_key(15, (50, 50, 70, 70))
    second = objects.segment(segmenter, corrected, previous=first)
    # 10..14 interpolated, 15 its box, 16..19 propagated from 15; 0..9 keep their prompts
    assert second.decoded == 10 and segmenter.backend.stats.decoder_calls - calls == 10
    assert second.changed(first) == list(range(10, 20))
    again = objects.segment(segmenter, corrected, previous=second)
    assert again.decoded == 0 and again.changed(second) == []
    np.testing.assert_array_equal(again.volume(), objects.segment(_segmenter(), corrected).volume())


def test_a_key_slice_outside_the_roi_widens_the_object():
    segmenter = _segmenter()
    obj = KeySlices.from_roi([40, 40, 5, 80, 80, 10], 20, "litemedsam").with_key(14, (40, 40, 80, 80))
    assert obj.extent == (5, 14)
    touched = np.flatnonzero(objects.segment(segmenter, obj).volume().reshape(20, -1).any(axis=1))
    np.testing.assert_array_equal(touched, np.arange(5, 15))


def test_key_slice_edits_are_checked():
    obj = KeySlices.from_roi([40, 40, 0, 80, 80, 19], 20, "litemedsam")
    with pytest.raises(ValueError, match="one key slice with a box"):
        obj.with_key(9, None)
    with pytest.raises(ValueError, match="its last"):
        obj.with_key(3, None).without_key(9)
    with pytest.raises(ValueError, match="x0 <= x1"):
        obj.with_key(3, (10, 10, 5, 20))
    assert obj.with_key(3, (1, 2, 3, 4)).without_key(3) == obj
    with pytest.raises(ValueError, match="not a key slice"):
        obj.without_key(4)


@pytest.mark.parametrize("zoom", [None, ZoomRule()])
def test_one_key_slice_reproduces_litemedsam_on_a_real_brain(zoom):
    """Genuine weights, MNI152 slab: voxel for voxel the published order (zoomed: object_propagation)."""
    from MedSAMLiteLib.core.object_propagation import segment_3d_official
    from MedSAMLiteLib.headless.samples import mni152_case
    from MedSAMLiteLib.models.store import load_backend

    case = mni152_case()
    box = case["boxes"][0]
    volume = case["imgs"][70:76]
    small = np.array([box[0] + 40, box[1] + 40, 0, box[0] + 90, box[1] + 90, 5], dtype=np.float64)
    backend = load_backend("litemedsam")
    segmenter = Segmenter(backend, zoom=zoom)
    segmenter.set_image(volume)
    if zoom is None:
        published = segment_3d_official(backend, volume, small[None]) > 0
    else:
        published = zoomed_segment_3d(backend, volume, small[None], zoom, segmenter.embedding) > 0
    result = objects.segment(segmenter, KeySlices.from_roi(small, len(volume), "litemedsam"))
    assert published.any()
    np.testing.assert_array_equal(result.volume(), published)


@pytest.mark.parametrize("name", ["litemedsam", "medficient_l0", "repvit_medsam"])
def test_corrections_work_zoomed_with_every_propagation_rule(name):
    segmenter = _segmenter(PROFILES[name], ZoomRule())
    obj = KeySlices.from_roi([60, 60, 2, 90, 90, 17], 20, PROFILES[name].propagation)
    first = objects.segment(segmenter, obj)
    corrected = obj.with_key(obj.keys[0][0] + 4, (70, 70, 100, 100)).with_key(3, None)
    second = objects.segment(segmenter, corrected, previous=first)
    volume = second.volume()
    key = obj.keys[0][0]
    assert volume[4 : key + 5].any(axis=(1, 2)).all() and not volume[:4].any()
    rows, cols = np.flatnonzero(volume[key + 4].any(axis=1)), np.flatnonzero(volume[key + 4].any(axis=0))
    np.testing.assert_allclose([cols[0], rows[0], cols[-1], rows[-1]], [70, 70, 100, 100], atol=2)  # mask = box (resized)
    assert 0 < second.decoded < first.decoded + 1 and objects.segment(segmenter, corrected, previous=second).decoded == 0

"""Each preprocessing rule of PIPELINES.md §2-4 against hand-computed values."""
import numpy as np

from MedSAMLiteLib.core.preprocess import (
    Geometry,
    logits_to_masks,
    map_boxes,
    mask_bbox,
    preprocess,
    previous_mask_box,
)
from MedSAMLiteLib.core.profiles import PROFILES

LITE = PROFILES["litemedsam"]
MEDFICIENT = PROFILES["medficient_l0"]
REPVIT = PROFILES["repvit_medsam"]


def test_geometry_rounds_half_up():
    g = Geometry.of(300, 400, 256)  # scale 0.64 -> 192 x 256
    assert (g.new_height, g.new_width) == (192, 256)
    g = Geometry.of(233, 197, 256)  # 197 * 256/233 = 216.45 -> int(216.95) = 216
    assert (g.new_height, g.new_width) == (256, 216)
    g = Geometry.of(100, 50, 512)  # upscaling: 512 x 256
    assert (g.new_height, g.new_width) == (512, 256)


def test_box_mapping_truncates():
    g = Geometry.of(300, 400, 256)  # ratio 0.64
    out = map_boxes(np.array([[10, 20, 399, 299]]), g)
    np.testing.assert_array_equal(out, [[6, 12, 255, 191]])  # 12.8 -> 12, not 13


def test_minmax_normalisation_and_zero_padding():
    image = np.full((128, 256), 10, np.uint8)
    image[:, 128:] = 20
    x, g = preprocess(image, LITE)  # already 256 wide: no resize, 10 -> 0 and 20 -> 1
    assert x.shape == (1, 3, 256, 256) and x.dtype == np.float32
    assert (g.new_height, g.new_width) == (128, 256)
    assert np.all(x[0, :, :128, :128] == 0.0) and np.all(x[0, :, :128, 128:] == 1.0)
    assert np.all(x[0, :, 128:, :] == 0)  # zero padding below


def test_padding_region_is_zero_and_constant_image_is_zero():
    image = np.full((100, 200), 77, np.uint8)
    x, g = preprocess(image, LITE)
    assert (g.new_height, g.new_width) == (128, 256)
    assert np.all(x == 0)  # (x - min) / clip(0, 1e-8) = 0 everywhere


def test_grayscale_equals_repeated_rgb():
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (97, 131), dtype=np.uint8)
    for profile in (LITE, MEDFICIENT):
        a, _ = preprocess(gray, profile)
        b, _ = preprocess(np.repeat(gray[:, :, None], 3, axis=-1), profile)
        np.testing.assert_array_equal(a, b)


def test_repvit_mean_std_after_minmax():
    image = np.zeros((64, 64, 3), np.uint8)
    image[:32] = 255
    x, _ = preprocess(image, REPVIT)
    mean, std = np.array(REPVIT.pixel_mean), np.array(REPVIT.pixel_std)
    np.testing.assert_allclose(x[0, :, 0, 0], (1 - mean) / std, rtol=1e-6)
    np.testing.assert_allclose(x[0, :, 1000, 0], (0 - mean) / std, rtol=1e-6)


def _mask_with_speck() -> np.ndarray:
    mask = np.zeros((512, 512), bool)
    mask[100:200, 50:150] = True  # 2x2-block aligned: rows 50-99, cols 25-74 at 256
    mask[301, 301] = True  # one pixel of the 2x2 block (150, 150): averages to value/4
    return mask


def test_previous_mask_box_margin_and_value_dependence():
    g = Geometry.of(512, 512, 256)
    # value 1: the speck averages to 0.25 and vanishes -> bbox of the square, grown by 3
    np.testing.assert_array_equal(previous_mask_box(_mask_with_speck(), 1, g), [22, 47, 77, 102])
    # value 4: the speck averages to 1 and stays (the official i-valued mask)
    np.testing.assert_array_equal(previous_mask_box(_mask_with_speck(), 4, g), [22, 47, 153, 153])


def test_previous_mask_box_clips_to_256_not_255_and_empty_is_none():
    g = Geometry.of(256, 256, 256)
    mask = np.zeros((256, 256), bool)
    mask[250:, 1:] = True
    np.testing.assert_array_equal(previous_mask_box(mask, 1, g), [0, 247, 256, 256])
    assert previous_mask_box(np.zeros((256, 256), bool), 1, g) is None


def test_mask_bbox_has_no_margin():
    mask = np.zeros((50, 60), bool)
    mask[10:20, 30:41] = True
    np.testing.assert_array_equal(mask_bbox(mask), [30, 10, 40, 19])
    assert mask_bbox(np.zeros((5, 5), bool)) is None


def test_logits_cropped_to_valid_area_before_resize():
    g = Geometry.of(128, 256, 256)  # valid area rows 0..127 of the 256 grid
    logits = -np.ones((2, 1, 256, 256), np.float32)
    logits[0, 0, :128] = 1.0  # positive exactly on the valid area
    logits[1, 0, 128:] = 1.0  # positive only on padding
    masks = logits_to_masks(logits, g, LITE)
    assert masks.shape == (2, 128, 256)
    assert masks[0].all() and not masks[1].any()


def test_medficient_logits_go_through_input_size():
    g = Geometry.of(300, 600, 512)  # valid 256 x 512 of the 512 input
    logits = -np.ones((1, 1, 256, 256), np.float32)
    logits[0, 0, :128] = 1.0  # top half of the 256 grid = rows 0..255 of 512 = the whole valid area
    masks = logits_to_masks(logits, g, MEDFICIENT)
    assert masks.shape == (1, 300, 600)
    assert masks.mean() > 0.99

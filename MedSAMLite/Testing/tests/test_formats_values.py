"""Intensity presets against hand-computed values; boxes from label maps; typed boxes."""
import numpy as np
import pytest

from MedSAMLiteLib.headless.boxes import read_boxes_csv
from MedSAMLiteLib.headless.labels import boxes_from_labels
from MedSAMLiteLib.core.presets import apply_preset, percentile_clip, volume_preset, window
from MedSAMLiteLib.headless.boxes import parse_box
from MedSAMLiteLib.headless.labels import LabelError


@pytest.mark.parametrize(
    "preset,hu,expected",
    [
        # abdomen W400/L40: [-160, 240] -> 0..255, 255/400 = 0.6375 per HU, truncated
        ("abdomen", [-1000, -160, -159, 40, 239, 240, 3000], [0, 0, 0, 127, 254, 255, 255]),
        # lung W1500/L-600: [-1350, 150], 0.17 per HU
        ("lung", [-1350, -1000, -600, 0, 150], [0, 59, 127, 229, 255]),
        # brain W80/L40: [0, 80], 3.1875 per HU
        ("brain", [-5, 0, 1, 20, 40, 79, 80], [0, 0, 3, 63, 127, 251, 255]),
        # mediastinum W350/L50: [-125, 225], 255/350 per HU
        ("mediastinum", [-125, 0, 50, 225], [0, 91, 127, 255]),
        # bone W1800/L400: [-500, 1300], 255/1800 per HU
        ("bone", [-500, 0, 400, 1300], [0, 70, 127, 255]),
    ],
)
def test_ct_windows_by_hand(preset, hu, expected):
    out = apply_preset(np.array(hu, dtype=np.int16), preset=preset)
    assert out.dtype == np.uint8
    assert out.tolist() == expected


def test_custom_window_and_ct_default():
    hu = np.array([-100, 0, 50, 100], dtype=np.float32)
    # W200/L0: [-100, 100], 1.275 per HU
    assert apply_preset(hu, window_wl=(200, 0)).tolist() == [0, 127, 191, 255]
    assert window(hu, 200, 0).tolist() == [0, 127, 191, 255]
    # modality CT without a preset: the abdomen window
    assert apply_preset(hu, modality="CT").tolist() == [38, 102, 133, 165]  # (hu + 160) * 0.6375
    with pytest.raises(ValueError, match="either --preset or --window"):
        apply_preset(hu, preset="lung", window_wl=(1, 1))


def test_percentile_clip_by_hand():
    # non-zero values 1..1000 plus zeros: 0.5th percentile (linear interpolation) = 1 + 0.005 * 999 = 5.995,
    # 99.5th = 1 + 0.995 * 999 = 995.005
    values = np.concatenate([np.zeros(500), np.arange(1, 1001)]).astype(np.float32)
    out = percentile_clip(values)
    lo, hi = 5.995, 995.005
    for v in (1, 5, 6, 500, 995, 1000):
        expected = int((min(max(v, lo), hi) - lo) * 255 / (hi - lo))
        assert out[500 + v - 1] == expected, v
    assert (out[:500] == 0).all()
    assert apply_preset(values, modality="MR").tolist() == out.tolist()
    assert apply_preset(values, modality="PET").tolist() == out.tolist()


def test_2d_uint8_left_alone_other_2d_clipped():
    photo = np.arange(256, dtype=np.uint8).reshape(16, 16)
    assert apply_preset(photo, is_2d=True) is photo
    assert not np.array_equal(apply_preset(photo, is_2d=False), photo)  # an 8-bit volume is clipped like MR
    deep = photo.astype(np.uint16) * 200
    assert apply_preset(deep, is_2d=True).max() == 255
    with pytest.raises(ValueError, match="not uint8"):
        apply_preset(deep, preset="none")


@pytest.mark.parametrize("preset, components, rgb, uint8, expected", [
    (None, 1, False, False, "display"),  # a CT: through its display window
    (None, 1, False, True, "none"),  # 8-bit data as stored
    (None, 3, True, True, "none"), (None, 4, True, True, "none"),  # RGB, RGBA
    ("brain", 3, True, True, "none"),  # an RGB image is never windowed
    ("brain", 1, False, False, "brain"), ("none", 1, False, True, "none"),
])
def test_the_preset_a_slicer_volume_gets(preset, components, rgb, uint8, expected):
    assert volume_preset(preset, components, rgb, uint8) == expected


@pytest.mark.parametrize("preset, components, rgb, uint8, message", [
    (None, 2, True, True, "2 components per voxel"), (None, 3, False, False, "3 components per voxel"),
    ("none", 1, False, False, "needs 8-bit data"), (None, 3, True, False, "needs 8-bit data"),
])
def test_volumes_the_models_cannot_take_are_one_line(preset, components, rgb, uint8, message):
    with pytest.raises(ValueError, match=message):
        volume_preset(preset, components, rgb, uint8)


def test_boxes_one_per_label_with_source_values():
    labels = np.zeros((6, 10, 12), dtype=np.int16)
    labels[1:3, 2:5, 3:7] = 7  # z 1..2, y 2..4, x 3..6
    labels[4, 6:9, 0:2] = 3  # z 4, y 6..8, x 0..1
    labels[0, 0, 11] = 7  # a second, separate piece of label 7
    gts, boxes, values = boxes_from_labels(labels)
    assert values.tolist() == [3, 7]
    assert boxes.tolist() == [[0, 6, 4, 1, 8, 4], [3, 0, 0, 11, 4, 2]]
    np.testing.assert_array_equal(gts, np.select([labels == 3, labels == 7], [1, 2], 0))
    assert gts.dtype == np.uint16


def test_boxes_per_connected_component_with_min_size():
    labels = np.zeros((8, 8), dtype=np.uint8)
    labels[0:2, 0:2] = 1  # 4 pixels
    labels[2, 2] = 1  # touches the first block at a corner only: same component
    labels[5:8, 5:8] = 1  # 9 pixels
    labels[0, 7] = 1  # 1 pixel: dropped by min_size
    labels[6, 0:3] = 2  # 3 pixels of another label
    gts, boxes, values = boxes_from_labels(labels, instances=True, min_size=3)
    assert values.tolist() == [1, 1, 2]
    assert boxes.tolist() == [[0, 0, 2, 2], [5, 5, 7, 7], [0, 6, 2, 6]]  # x_min, y_min, x_max, y_max
    assert gts[0, 7] == 0 and gts[2, 2] == 1 and gts[6, 6] == 2 and gts[6, 1] == 3
    gts_all, boxes_all, _ = boxes_from_labels(labels, instances=True)
    assert len(boxes_all) == 4


def test_label_maps_refused():
    with pytest.raises(LabelError, match="whole numbers"):
        boxes_from_labels(np.array([[0.0, 1.5]]))
    with pytest.raises(LabelError, match="negative"):
        boxes_from_labels(np.array([[0, -1]]))
    float_labels = np.array([[0.0, 2.0], [2.0, 0.0]], dtype=np.float32)  # NIfTI label maps are often float
    assert boxes_from_labels(float_labels)[2].tolist() == [2]


def test_typed_boxes(tmp_path):
    assert parse_box("1,2,3,4") == [1, 2, 3, 4]
    with pytest.raises(ValueError, match="5 numbers"):
        parse_box("1,2,3,4,5")
    (tmp_path / "b.csv").write_text("z_min,x_min,y_min,x_max,y_max,z_max\n0,10,20,30,40,5\n")
    assert read_boxes_csv(tmp_path / "b.csv") == [[10, 20, 0, 30, 40, 5]]
    (tmp_path / "plain.csv").write_text("1,2,3,4\n5,6,7,8\n")
    assert read_boxes_csv(tmp_path / "plain.csv") == [[1, 2, 3, 4], [5, 6, 7, 8]]
    (tmp_path / "bad.csv").write_text("1,2,3,4\n5,x,7,8\n")
    with pytest.raises(ValueError, match="line 2"):
        read_boxes_csv(tmp_path / "bad.csv")

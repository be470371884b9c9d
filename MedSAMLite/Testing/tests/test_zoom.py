"""ROI zoom: window geometry, the default path untouched, crops cached apart, the CLI flag, and a
real small-structure case where zooming clearly beats the whole-slice pipeline."""
import numpy as np
import pytest
from test_propagation import LITE, MEDFICIENT, BoxEngine

from MedSAMLiteLib.core import propagate
from MedSAMLiteLib.core.embedding_cache import EmbeddingCache
from MedSAMLiteLib.headless import cli
from MedSAMLiteLib.core.preprocess import preprocess
from MedSAMLiteLib.core.segmenter import Segmenter
from MedSAMLiteLib.core.object_propagation import segment_3d as by_object_3d
from MedSAMLiteLib.core.zoom import Window, ZoomRule

RULE = ZoomRule(margin=0.5, min_size=64, max_box_fraction=0.4)
NEVER = ZoomRule(max_box_fraction=0.0)  # every box on the whole slice (as zoom.NEVER)


@pytest.mark.parametrize(
    "box, shape, expected",
    [
        ((100, 100, 119, 109), (256, 300), Window(78, 73, 142, 137)),  # 20 px box: min_size 64, centred
        ((100, 100, 159, 109), (400, 400), Window(70, 45, 190, 165)),  # 60 px: 60 * (1 + 2 * 0.5) = 120, square
        ((0, 0, 9, 9), (200, 200), Window(0, 0, 64, 64)),  # at the top-left corner: shifted inside
        ((190, 195, 199, 199), (200, 200), Window(136, 136, 200, 200)),  # bottom-right corner
        ((50, 100, 69, 179), (512, 512), Window(0, 60, 160, 220)),  # 20 x 80 box: square window on the long side
        ((100, 5, 119, 20), (30, 400), Window(78, 0, 142, 30)),  # slice thinner than the window: all its rows
    ],
)
def test_window_geometry(box, shape, expected):
    assert RULE.window(np.array(box), *shape) == expected


def test_no_zoom_for_large_boxes_or_whole_slice_windows():
    assert RULE.window(np.array([10, 10, 120, 50]), 256, 256) is None  # 111 px > 0.4 * 256
    assert ZoomRule(margin=1.0, max_box_fraction=1.0).window(np.array([10, 10, 100, 100]), 256, 256) is None  # window >= slice
    assert ZoomRule(min_size=300).window(np.array([10, 10, 20, 20]), 256, 256) is None


def test_crop_paste_and_box_shift():
    image = np.arange(20 * 30).reshape(20, 30)
    w = Window(5, 2, 15, 12)
    np.testing.assert_array_equal(w.crop(image), image[2:12, 5:15])
    pasted = w.paste(np.ones((1, 10, 10), bool), 20, 30)[0]
    assert pasted.sum() == 100 and pasted[2:12, 5:15].all()
    np.testing.assert_array_equal(w.to_window(np.array([6, 3, 20, 11])), [[1, 1, 9, 9]])  # clipped to the window
    assert Window.whole(20, 30).covers(20, 30) and not w.covers(20, 30)


def _volume(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 255, shape, dtype=np.uint8)


@pytest.mark.parametrize("profile", [LITE, MEDFICIENT], ids=["litemedsam", "medficient"])
def test_zoom_loop_without_zooming_is_the_published_propagation(profile):
    """The zoomed 3D loop in the whole-slice frame (object by object) gives exactly the masks of the
    slice-ordered propagation, whose rules test_propagation.py checks by hand."""
    size = profile.image_size
    volume = _volume((10, size - 40, size))
    boxes = np.array([[30, 40, 1, 120, 150, 8], [100, 20, 3, 200, 90, 9]])
    expected = propagate.segment_3d(BoxEngine(profile), volume, boxes)
    engine = BoxEngine(profile)
    got = by_object_3d(engine, volume, boxes, NEVER, lambda z, w: engine.encode(preprocess(w.crop(volume[z]), profile)[0]))
    np.testing.assert_array_equal(got, expected)


def test_default_segmenter_unchanged():
    volume = _volume((6, 200, 240))
    engine = BoxEngine(LITE)
    segmenter = Segmenter(engine)
    segmenter.set_image(volume)
    boxes3 = np.array([[20, 30, 1, 60, 70, 4]])
    np.testing.assert_array_equal(segmenter.label_3d(boxes3), propagate.segment_3d(BoxEngine(LITE), volume, boxes3))
    boxes2 = np.array([[20, 30, 60, 70], [10, 10, 200, 150]])
    np.testing.assert_array_equal(segmenter.label_2d(2, boxes2), propagate.segment_2d(BoxEngine(LITE), volume[2], boxes2))
    assert segmenter.slice_steps(boxes3) == 4


def test_zoomed_masks_land_on_the_box():
    """The stand-in network returns its prompt box: pasted back it must be the box (to a pixel)."""
    image = _volume((1, 300, 400))
    segmenter = Segmenter(BoxEngine(LITE), zoom=RULE)
    segmenter.set_image(image)
    box = np.array([200, 120, 219, 131])
    mask = segmenter.segment_2d(0, box)
    ys, xs = np.nonzero(mask)
    assert abs(xs.min() - 200) <= 1 and abs(xs.max() - 219) <= 1 and abs(ys.min() - 120) <= 1 and abs(ys.max() - 131) <= 1
    segs = segmenter.label_2d(0, np.array([box, [10, 10, 180, 280]]))  # a small (zoomed) and a large box
    assert (segs == 1).sum() == mask.sum() and (segs == 2).any()


def test_zoomed_3d_follows_the_box_and_counts_steps():
    volume = _volume((9, 256, 256))
    segmenter = Segmenter(BoxEngine(LITE), zoom=RULE)
    segmenter.set_image(volume)
    boxes = np.array([[100, 100, 2, 115, 112, 7], [150, 20, 0, 250, 230, 8]])
    steps = []
    segs = segmenter.label_3d(boxes, progress=steps.append)
    assert len(steps) == segmenter.slice_steps(boxes) == 6 + 9
    touched = np.flatnonzero((segs == 1).reshape(9, -1).any(axis=1))
    np.testing.assert_array_equal(touched, np.arange(2, 8))
    ys, xs = np.nonzero(segs[4] == 1)  # middle slice: the box itself
    assert abs(xs.min() - 100) <= 1 and abs(ys.max() - 112) <= 1


def test_crops_and_whole_slices_are_cached_apart():
    image = _volume((2, 200, 200))
    cache = EmbeddingCache()
    engine = BoxEngine(LITE)  # its "embedding" is the network input, so the test can tell which
    plain, zoomed = Segmenter(engine, cache), Segmenter(engine, cache, zoom=RULE)
    for s in (plain, zoomed):
        s.set_image(image, key="img")
    box = np.array([90, 90, 105, 100])
    plain.segment_2d(1, box)
    zoomed.segment_2d(1, box)
    assert engine.stats.encoder_calls == 2 and len(cache) == 2  # the crop did not reuse the slice
    window = RULE.window(box, 200, 200)
    np.testing.assert_array_equal(cache.get(zoomed.key(1, window.bounds)), preprocess(window.crop(image[1]), LITE)[0])
    np.testing.assert_array_equal(cache.get(plain.key(1)), preprocess(image[1], LITE)[0])
    plain.segment_2d(1, box)
    zoomed.segment_2d(1, box)
    assert engine.stats.encoder_calls == 2  # both served from their own entries
    assert zoomed.key(1, Window.whole(200, 200).bounds) == plain.key(1)  # an unzoomed box shares the slice's entry


def test_cli_zoom_flag(monkeypatch, tmp_path, capsys):
    parser = cli.build_parser()
    assert parser.parse_args(["predict", "-i", "a", "-o", "b", "--zoom"]).zoom
    assert not parser.parse_args(["predict", "-i", "a", "-o", "b"]).zoom
    assert cli.main(["predict", "-i", "a", "-o", "b", "--zoom", "--official-order"]) == 2
    assert "exclude each other" in capsys.readouterr().err

    import cv2

    from MedSAMLiteLib.models import store as model_store

    made = []

    def fake_backend(*args, **kwargs):
        made.append(BoxEngine(LITE))
        return made[-1]

    monkeypatch.setattr(model_store, "load_backend", fake_backend)
    png = tmp_path / "img.png"
    cv2.imwrite(str(png), _volume((1, 120, 160))[0])
    for flag, out in (([], "plain.png"), (["--zoom"], "zoom.png")):
        assert cli.main(["segment", str(png), "--box", "40,30,55,45", *flag, "-q", "-o", str(tmp_path / out)]) == 0
    plain_prompt, zoom_prompt = made[0].prompts[0][0], made[1].prompts[0][0]
    np.testing.assert_array_equal(plain_prompt, [64, 48, 88, 72])  # 256 / 160 of the box
    assert zoom_prompt[2] - zoom_prompt[0] > 2 * (plain_prompt[2] - plain_prompt[0])  # the 64 px window, magnified 4x


def _mni_ventricle_slice():
    """Axial slice 84 of the MNI152 T1 and its ventricle pieces (dark CSF: T1 < 90 and grey + white
    matter probability < 100/255, inside the brain eroded by 4 px; pieces of at least 80 px): small
    structures of 9 x 22 px in a 197 x 233 slice, where the whole-slice pipeline finds nothing."""
    import SimpleITK as sitk
    from scipy import ndimage

    from MedSAMLiteLib.headless import samples

    case = samples.mni152_case(slice(84, 85))
    paths = samples.mni152_paths()
    gm, wm = (samples._axial(sitk.GetArrayFromImage(sitk.ReadImage(str(paths[k]))).T)[84] for k in ("gm", "wm"))
    image = case["imgs"][0]
    inside = ndimage.binary_erosion(case["gts"][0] > 0, iterations=4)
    csf = inside & (image < 90) & ((gm.astype(np.int32) + wm) < 100)
    labels, n = ndimage.label(csf)
    sizes = ndimage.sum_labels(csf, labels, range(1, n + 1))
    return image, [labels == i + 1 for i in np.flatnonzero(sizes >= 80)]


def test_real_small_ventricles_zoom_beats_default():
    from MedSAMLiteLib.headless.samples import dice_per_label
    from MedSAMLiteLib.models.store import load_backend

    image, masks = _mni_ventricle_slice()
    assert len(masks) == 3
    boxes = np.array([[xs.min(), ys.min(), xs.max(), ys.max()] for ys, xs in (np.nonzero(m) for m in masks)])
    engine = load_backend("litemedsam")
    scores = {}
    for name, rule in (("default", None), ("zoom", ZoomRule())):
        segmenter = Segmenter(engine, zoom=rule)
        segmenter.set_image(image[None])
        pred = segmenter.decode(0, boxes)
        scores[name] = np.mean([dice_per_label(p.astype(np.uint8), m.astype(np.uint8))[0] for p, m in zip(pred, masks)])
    assert scores["zoom"] >= scores["default"] + 0.4 and scores["zoom"] > 0.7, scores

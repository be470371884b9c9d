"""End to end with the genuine LiteMedSAM weights on real images: 2D, 3D, bad input, the CLI."""
import subprocess
import sys

import numpy as np
import pytest

from MedSAMLiteLib.headless.cases import atomic_savez
from MedSAMLiteLib.headless.runner import predict_folder
from MedSAMLiteLib.headless.samples import coins_case, dice_per_label, mni152_case
from MedSAMLiteLib.models.store import load_backend
from MedSAMLiteLib.core.object_propagation import segment_3d_official
from MedSAMLiteLib.core.propagate import segment_2d
from MedSAMLiteLib.core.segmenter import Segmenter


@pytest.fixture(scope="module")
def engine():
    return load_backend("litemedsam")


@pytest.fixture(scope="module")
def coins():
    return coins_case()


@pytest.fixture(scope="module")
def brain():
    """A 20-slice slab of the MNI152 brain with two boxes over different z ranges (middles 7 and 11)."""
    case = mni152_case()
    box = case["boxes"][0]
    boxes = np.array([[box[0], box[1], 0, box[3], box[4], 15], [box[0] + 30, box[1] + 30, 4, box[3] - 30, box[4] - 30, 19]])
    return {"imgs": case["imgs"][70:90], "boxes": boxes}


def test_2d_coins_segmented_well(engine, coins):
    segs = segment_2d(engine, coins["imgs"], coins["boxes"])
    assert segs.shape == coins["imgs"].shape and segs.dtype == np.uint16
    scores = dice_per_label(segs, coins["gts"])
    assert np.median(scores) > 0.85, scores


def test_2d_batched_equals_one_box_per_call(engine, coins):
    fast = segment_2d(engine, coins["imgs"], coins["boxes"], batched=True)
    official = segment_2d(engine, coins["imgs"], coins["boxes"], batched=False)
    np.testing.assert_array_equal(fast, official)


def test_3d_cached_batched_equals_official_order(engine, brain):
    engine.stats.__init__()
    segmenter = Segmenter(engine)
    segmenter.set_image(brain["imgs"])
    fast = segmenter.label_3d(brain["boxes"])
    fast_calls = engine.stats.encoder_calls
    engine.stats.__init__()
    official = segment_3d_official(engine, brain["imgs"], brain["boxes"])
    np.testing.assert_array_equal(fast, official)
    assert fast_calls == 20 and engine.stats.encoder_calls == 32  # 16 + 16 slices per object
    assert set(np.unique(fast)) == {0, 1, 2}


def _write_cases(folder, coins):
    good = {"imgs": coins["imgs"], "boxes": coins["boxes"][:3]}
    atomic_savez(folder / "2DBox_Microscopy_good.npz", **good)
    atomic_savez(folder / "2DBox_Microscopy_rgb.npz", imgs=np.repeat(coins["imgs"][:, :, None], 3, -1), boxes=coins["boxes"][:2])
    bad = {
        "2DBox_X_nokeys": {"imgs": coins["imgs"]},
        "2DBox_X_float": {"imgs": coins["imgs"].astype(np.float32), "boxes": coins["boxes"]},
        "2DBox_X_shape": {"imgs": coins["imgs"][None, None], "boxes": coins["boxes"]},
        "2DBox_X_flipped": {"imgs": coins["imgs"], "boxes": np.array([[50, 10, 20, 40]])},
        "2DBox_X_outside": {"imgs": coins["imgs"], "boxes": np.array([[10, 10, 500, 40]])},
        "2DBox_X_empty": {"imgs": coins["imgs"], "boxes": np.zeros((0, 4))},
        "3DBox_X_2dboxes": {"imgs": np.zeros((4, 32, 32), np.uint8), "boxes": np.array([[1, 1, 5, 5]])},
    }
    for name, arrays in bad.items():
        atomic_savez(folder / f"{name}.npz", **arrays)
    (folder / "2DBox_X_corrupt.npz").write_bytes(b"PK\x03\x04 this is not a zip")
    return {
        "2DBox_X_nokeys.npz": "missing key(s) boxes",
        "2DBox_X_float.npz": "dtype is float32",
        "2DBox_X_shape.npz": "2D imgs shape",
        "2DBox_X_flipped.npz": "x_min 50 > x_max 20",
        "2DBox_X_outside.npz": "outside the image",
        "2DBox_X_empty.npz": "empty box list",
        "3DBox_X_2dboxes.npz": "expected (N,6)",
        "2DBox_X_corrupt.npz": "corrupt",
    }


def test_bad_cases_reported_others_still_run(engine, coins, tmp_path):
    inp, out = tmp_path / "in", tmp_path / "out"
    expected = _write_cases(inp, coins)
    summary = predict_folder(Segmenter(engine), inp, out, quiet=True)
    assert sorted(summary.done) == ["2DBox_Microscopy_good.npz", "2DBox_Microscopy_rgb.npz"]
    assert set(summary.failed) == set(expected)
    for name, fragment in expected.items():
        assert fragment in summary.failed[name], (name, summary.failed[name])
        assert not (out / name).exists()
    assert summary.exit_code == 1
    assert sorted(p.name for p in out.iterdir()) == ["2DBox_Microscopy_good.npz", "2DBox_Microscopy_rgb.npz", "efficiency.csv"]
    lines = (out / "efficiency.csv").read_text().splitlines()
    assert lines[0] == "case,time" and len(lines) == 3


def test_cli_predict_with_overlay_and_exit_status(coins, tmp_path):
    inp, out, ov = tmp_path / "in", tmp_path / "out", tmp_path / "ov"
    atomic_savez(inp / "2DBox_Microscopy_coins.npz", imgs=coins["imgs"], boxes=coins["boxes"])
    cmd = [sys.executable, "-m", "MedSAMLiteLib.headless.cli", "predict", "-i", str(inp), "-o", str(out), "--save-overlay", str(ov), "-q"]
    run = subprocess.run(cmd, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    with np.load(out / "2DBox_Microscopy_coins.npz") as z:
        assert z["segs"].dtype == np.uint16 and z["segs"].max() == len(coins["boxes"])
    assert (ov / "2DBox_Microscopy_coins.png").stat().st_size > 1000
    (inp / "2DBox_X_corrupt.npz").write_bytes(b"garbage")
    run = subprocess.run(cmd, capture_output=True, text=True)
    assert run.returncode == 1
    assert "2DBox_X_corrupt.npz: unreadable or corrupt" in run.stderr
    assert "0 case(s) segmented, 1 skipped (finished before), 1 failed" in run.stderr  # --resume is the default

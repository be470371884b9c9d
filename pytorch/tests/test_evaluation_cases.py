"""DSC/NSD edge cases by hand, and `medsamlite-torch evaluate` on folders (CSV outputs, problems, exit status)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from medsamlite_torch.cli import main
from medsamlite_torch.evaluation.evaluate import case_modality, evaluate_case, read_efficiency
from medsamlite_torch.evaluation.metrics import (
    EMPTY_BOTH,
    FALSE_POSITIVE,
    GATED,
    MISSED,
    MetricError,
    score_case,
)
from test_evaluation_surface import brain_labels, coins_labels


def square(shape=(20, 20), at=(5, 5), size=6, label=1, out=None):
    out = np.zeros(shape, np.uint8) if out is None else out
    out[at[0]:at[0] + size, at[1]:at[1] + size] = label
    return out


# ---- hand-computed DSC and NSD ----------------------------------------------------------------

def test_dsc_by_hand():
    gt = square(size=4)  # 16 pixels
    pred = square(at=(5, 7), size=4)  # overlaps 8 of them
    score = score_case(gt, pred, "2D")
    assert score.dsc == pytest.approx(2 * 8 / 32)
    assert score.labels[0].gt_voxels == 16 and score.labels[0].pred_voxels == 16


def test_perfect_prediction_scores_one():
    gt = square(label=1, out=square(at=(12, 12), size=5, label=2))
    score = score_case(gt, gt.copy(), "2D")
    assert (score.dsc, score.nsd) == (1.0, 1.0)


def test_label_empty_in_both_is_excluded():
    gt = square(label=1, out=square(at=(12, 12), size=5, label=3))  # label 2 absent
    score = score_case(gt, gt.copy(), "2D")
    assert (score.dsc, score.nsd) == (1.0, 1.0)
    two = score.labels[1]
    assert two.label == 2 and two.note == EMPTY_BOTH and math.isnan(two.dsc) and math.isnan(two.nsd)


def test_missed_and_false_positive_labels_score_zero():
    gt = square(label=1, out=square(at=(12, 12), size=5, label=2))
    pred = gt.copy()
    pred[pred == 2] = 0  # label 2 missed
    score = score_case(gt, pred, "2D")
    assert score.labels[1].note == MISSED and (score.labels[1].dsc, score.labels[1].nsd) == (0.0, 0.0)
    assert score.dsc == pytest.approx(0.5) and score.nsd == pytest.approx(0.5)

    gt1 = square(label=1, out=square(at=(12, 12), size=5, label=3))
    pred = gt1.copy()
    pred[0:2, 0:2] = 2  # label 2 only in the prediction (inside 1..max(gts))
    score = score_case(gt1, pred, "2D")
    assert score.labels[1].note == FALSE_POSITIVE and score.labels[1].dsc == 0.0
    assert score.dsc == pytest.approx(2 / 3)


def test_prediction_labels_above_max_gt_are_ignored():
    gt = square()
    pred = gt.copy()
    pred[0:3, 0:3] = 7
    assert score_case(gt, pred, "2D").dsc == 1.0


def test_empty_prediction_scores_zero():
    gt = square(label=1, out=square(at=(12, 12), size=5, label=2))
    score = score_case(gt, np.zeros_like(gt), "2D")
    assert (score.dsc, score.nsd) == (0.0, 0.0) and score.empty_prediction


def test_nsd_is_zero_when_dsc_at_most_gate():
    gt = square(size=10)  # 100 pixels
    pred = square(at=(14, 5), size=10, shape=(30, 30))[:20, :20]  # 10 px overlap -> DSC 20/(100+60) < 0.2
    score = score_case(gt, pred, "2D")
    assert score.dsc <= 0.2 and score.nsd == 0.0 and GATED in score.labels[0].note


def test_nsd_modes_differ_in_2d_only():
    gt = coins_labels()
    pred = np.roll(gt, 3, axis=1)
    slab = score_case(gt, pred, "2D", nsd_mode="challenge").nsd
    contour = score_case(gt, pred, "2D", nsd_mode="contour").nsd
    assert contour < slab  # the slab counts every pixel as surface: more lenient
    gt3, spacing = brain_labels()
    pred3 = np.roll(gt3, 1, axis=1)
    assert score_case(gt3, pred3, "3D", spacing, "challenge").nsd == score_case(gt3, pred3, "3D", spacing, "contour").nsd


@pytest.mark.parametrize("gts,segs,kind,spacing,message", [
    (np.zeros((5, 5), np.uint8), np.zeros((5, 5), np.uint8), "2D", None, "no foreground"),
    (square(), square(shape=(20, 21)), "2D", None, "shape mismatch"),
    (np.ones((3, 3, 3), np.uint8), np.ones((3, 3, 3), np.uint8), "3D", None, "spacing"),
    (np.ones((3, 3, 3), np.uint8), np.ones((3, 3, 3), np.uint8), "3D", [1, 0, 1], "spacing"),
    (square(), square().astype(np.float32) + 0.5, "2D", None, "integer labels"),
    (np.ones((3, 3, 3), np.uint8), np.ones((3, 3, 3), np.uint8), "2D", None, "2D case needs 2D"),
])
def test_unusable_input_raises_metric_error(gts, segs, kind, spacing, message):
    with pytest.raises(MetricError, match=message):
        score_case(gts, segs, kind, spacing)


def test_bool_and_float_predictions_are_accepted():
    gt = square()
    assert score_case(gt, gt.astype(bool), "2D").dsc == 1.0
    assert score_case(gt, gt.astype(np.float32), "2D").dsc == 1.0


def test_modality_from_file_name():
    assert case_modality("3DBox_MR_0001.npz") == "MR"
    assert case_modality("2DBox_Microscopy_coins.npz") == "Microscopy"
    assert case_modality("weird.npz") == "unknown"


# ---- folders and the command --------------------------------------------------------------------

@pytest.fixture
def folders(tmp_path):
    """GT and prediction folders: two 2D cases, one 3D, with a missing, a mismatched and an empty prediction."""
    gt, pred = tmp_path / "gts", tmp_path / "segs"
    gt.mkdir()
    pred.mkdir()
    coins = coins_labels()
    brain, spacing = brain_labels()
    np.savez_compressed(gt / "2DBox_Microscopy_0001.npz", gts=coins)
    np.savez_compressed(gt / "2DBox_Microscopy_0002.npz", gts=coins)
    np.savez_compressed(gt / "3DBox_MR_0001.npz", gts=brain, spacing=np.array(spacing))
    np.savez_compressed(gt / "3DBox_MR_0002.npz", gts=brain, spacing=np.array(spacing))
    np.savez_compressed(gt / "2DBox_US_0001.npz", gts=coins)
    np.savez_compressed(pred / "2DBox_Microscopy_0001.npz", segs=coins)
    np.savez_compressed(pred / "2DBox_Microscopy_0002.npz", segs=np.roll(coins, 2, axis=0))
    np.savez_compressed(pred / "3DBox_MR_0001.npz", segs=brain)
    np.savez_compressed(pred / "2DBox_US_0001.npz", segs=coins[:-1])  # shape mismatch
    # 3DBox_MR_0002: missing
    np.savez_compressed(pred / "2DBox_Extra_0001.npz", segs=coins)  # no ground truth: ignored
    (pred / "efficiency.csv").write_text("case,time\n2DBox_Microscopy_0001.npz,1.5\n2DBox_Microscopy_0002,2.5\n"
                                         "3DBox_MR_0001.npz,9\n3DBox_MR_0001.npz,10\n")
    return gt, pred


def test_evaluate_case_rows(folders):
    gt, pred = folders
    ok = evaluate_case(gt / "2DBox_Microscopy_0001.npz", pred / "2DBox_Microscopy_0001.npz")
    assert (ok["status"], ok["dsc"], ok["nsd"], ok["dim"], ok["modality"]) == ("ok", 1.0, 1.0, "2D", "Microscopy")
    missing = evaluate_case(gt / "3DBox_MR_0002.npz", pred / "3DBox_MR_0002.npz")
    assert (missing["status"], missing["dsc"], missing["nsd"]) == ("missing_prediction", 0.0, 0.0)
    bad = evaluate_case(gt / "2DBox_US_0001.npz", pred / "2DBox_US_0001.npz")
    assert bad["status"] == "error" and "shape mismatch" in bad["message"] and math.isnan(bad["dsc"])
    (pred / "broken.npz").write_bytes(b"not a zip")
    (gt / "broken.npz").write_bytes(b"not a zip")
    broken = evaluate_case(gt / "broken.npz", pred / "broken.npz")
    assert broken["status"] == "error" and "cannot read" in broken["message"]


def test_read_efficiency_last_row_wins(folders):
    _, pred = folders
    times = read_efficiency(pred / "efficiency.csv")
    assert times == {"2DBox_Microscopy_0001": 1.5, "2DBox_Microscopy_0002": 2.5, "3DBox_MR_0001": 10.0}


@pytest.mark.parametrize("workers", [1, 2])
def test_evaluate_command(folders, tmp_path, capsys, workers):
    gt, pred = folders
    csv = tmp_path / "out" / "metrics.csv"
    rc = main(["evaluate", "--pred", str(pred), "--gt", str(gt), "--csv", str(csv), "--efficiency",
               str(pred / "efficiency.csv"), "--workers", str(workers), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1  # a missing prediction and a shape mismatch
    assert "3DBox_MR_0002.npz: missing_prediction" in err and "2DBox_US_0001.npz: error: shape mismatch" in err
    assert "1 prediction file(s) without ground truth" in err

    cases = pd.read_csv(csv)
    assert list(cases.columns) == ["case", "dsc", "nsd", "time", "status"]
    assert cases["case"].tolist() == sorted(cases["case"])
    row = cases.set_index("case")
    assert row.loc["2DBox_Microscopy_0001.npz", ["dsc", "nsd", "time"]].tolist() == [1.0, 1.0, 1.5]
    assert row.loc["3DBox_MR_0001.npz", "time"] == 10.0
    assert row.loc["3DBox_MR_0002.npz", ["dsc", "nsd", "status"]].tolist() == [0.0, 0.0, "missing_prediction"]
    assert np.isnan(row.loc["2DBox_US_0001.npz", "dsc"]) and row.loc["2DBox_US_0001.npz", "status"] == "error"
    text = csv.read_text().splitlines()
    assert text[1].startswith("2DBox_Microscopy_0001.npz,1.0000,1.0000,")  # 4 decimals, as the official CSV

    labels = pd.read_csv(tmp_path / "out" / "metrics_labels.csv")
    assert set(labels.columns) >= {"case", "label", "dsc", "nsd", "gt_voxels", "pred_voxels", "note"}
    assert len(labels[labels["case"] == "3DBox_MR_0001.npz"]) == 2

    modality = pd.read_csv(tmp_path / "out" / "metrics_modality.csv")
    mr = modality[(modality["dim"] == "3D") & (modality["modality"] == "MR")].iloc[0]
    assert mr["cases"] == 2 and mr["problems"] == 1 and mr["dsc_mean"] == pytest.approx(0.5)
    assert {"time_mean", "nsd_median"} <= set(modality.columns)
    assert not list((tmp_path / "out").glob(".*.tmp"))


def test_evaluate_command_all_good_exits_zero(tmp_path, capsys):
    gt, pred = tmp_path / "g", tmp_path / "p"
    gt.mkdir()
    pred.mkdir()
    np.savez_compressed(gt / "2DBox_X_1.npz", gts=square())
    np.savez_compressed(pred / "2DBox_X_1.npz", segs=np.zeros((20, 20), np.uint8))
    assert main(["evaluate", "--pred", str(pred), "--gt", str(gt), "--no-progress"]) == 0
    assert "note: 2DBox_X_1.npz: prediction is empty" in capsys.readouterr().err
    assert pd.read_csv(pred / "metrics.csv")["status"].tolist() == ["empty_prediction"]


def test_evaluate_command_bad_folders(tmp_path, capsys):
    assert main(["evaluate", "--pred", str(tmp_path), "--gt", str(tmp_path / "nope")]) == 2
    assert main(["evaluate", "--pred", str(tmp_path), "--gt", str(tmp_path)]) == 2
    assert "no .npz files" in capsys.readouterr().err


def test_evaluation_imports_no_torch():
    import subprocess
    import sys

    code = ("import sys, numpy as np\n"
            "import medsamlite_torch.evaluation.commands, medsamlite_torch.evaluation.evaluate, medsamlite_torch.evaluation.ranking\n"
            "import medsamlite_torch.evaluation.report\n"
            "from medsamlite_torch.evaluation import score_case\n"
            "g = np.zeros((6, 6), np.uint8); g[1:4, 1:4] = 1\n"
            "assert score_case(g, g, '2D').nsd == 1.0\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"

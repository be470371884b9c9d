"""`medsamlite-torch crosscheck`: PyTorch and the extension's torch-free conversion agree."""
import contextlib
import io

import torch
from reference import requires_reference
from torch_reference import rule_state_dict

from medsamlite_torch.cli import main
from medsamlite_torch.crosscheck import crosscheck


@requires_reference
def test_lite_medsam_rule_weights_agree_within_reference_tolerance(tmp_path):
    """A rule-weight checkpoint file, read by torch's loader and by the torch-free reader."""
    path = tmp_path / "lite_medsam_rule.pth"
    torch.save(rule_state_dict("lite_medsam"), path)
    report = crosscheck("lite_medsam", path)
    for output in ("embedding", "low_res_logits"):
        r = report[output]
        assert r["max_abs_diff"] <= 1e-4 * r["scale"] and r["mean_abs_diff"] <= 1e-5 * r["scale"], (output, r)
    assert report["iou_predictions"]["max_abs_diff"] <= 1e-5, report["iou_predictions"]
    assert all(r["ok"] for r in report.values())


def test_model_without_published_weights_needs_a_checkpoint():
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = main(["crosscheck", "--model", "medficient_l0"])
    assert rc == 2 and "--checkpoint" in err.getvalue() and "Traceback" not in err.getvalue()

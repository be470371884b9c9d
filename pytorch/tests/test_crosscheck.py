"""`medsamlite-torch crosscheck`: PyTorch and the extension's torch-free conversion agree.

The check runs in a subprocess: OpenVINO's CPU plugin starts its thread pool in the process that
infers, and the training tests' later forks in this process then crashed (SIGSEGV)."""
import contextlib
import io
import json
import subprocess
import sys

import torch
from torch_reference import rule_state_dict

from medsamlite_torch.cli import main


def test_lite_medsam_rule_weights_agree_within_reference_tolerance(tmp_path):
    """A rule-weight checkpoint file, read by torch's loader and by the torch-free reader."""
    path = tmp_path / "lite_medsam_rule.pth"
    torch.save(rule_state_dict("lite_medsam"), path)
    code = "import json, sys\nfrom medsamlite_torch.crosscheck import crosscheck\nprint(json.dumps(crosscheck('lite_medsam', sys.argv[1])))"
    run = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout.strip().splitlines()[-1])
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

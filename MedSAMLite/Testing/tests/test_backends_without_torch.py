"""Every non-default backend end to end without torch: a checkpoint file in its official layout ->
`medsamlite import-checkpoint` -> `medsamlite predict` on real 2D and 3D cases -> `medsamlite models`.

torch is used here only to write the checkpoint files (torch.save, deterministic rule weights);
everything else runs in one child process where `import torch` fails, with an empty cache.
"""
from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path

import numpy as np

from MedSAMLiteLib.headless.cases import atomic_savez
from MedSAMLiteLib.headless.samples import coins_case, mni152_case
from reference import rule_weights
from test_conversion_convert import _lightning, save  # noqa: F401 (save is a fixture)
from test_model_store import _run_without_torch

# backend -> (reference weights, checkpoint layout, also run the 3D case)
BACKENDS = {
    "medficient_l0": ("medficient_l0", lambda sd: _lightning(sd, "l0"), True),
    "medficient_l1": ("medficient_l1", lambda sd: _lightning(sd, "l1"), True),
    "medficient_l2": ("medficient_l2", lambda sd: _lightning(sd, "l2"), True),
    "repvit_medsam": ("repvit_medsam_m11", lambda sd: sd, True),
    "medsam_vit_b": ("medsam_vit_b", lambda sd: sd, False),  # ViT-B at 1024 is slow on a CPU: 2D only
}

# Child: import each checkpoint, predict its case folder, then list the models (stdout, last line JSON).
CHILD = """
import contextlib, io, json
from MedSAMLiteLib.headless.cli import main
jobs = json.loads(sys.argv[1])
for name, job in jobs.items():
    assert main(["import-checkpoint", name, job["checkpoint"]]) == 0, name
    assert main(["predict", "--backend", name, "-i", job["cases"], "-o", job["out"], "-q"]) == 0, name
listing = io.StringIO()
with contextlib.redirect_stdout(listing):
    assert main(["models"]) == 0
print(json.dumps(listing.getvalue().splitlines()))
"""


def _two_coins() -> dict[str, np.ndarray]:
    case = coins_case()
    gts = np.where(case["gts"] <= 2, case["gts"], 0)
    return {"imgs": case["imgs"], "boxes": case["boxes"][:2], "gts": gts}


def test_import_and_predict_every_backend_without_torch(save, tmp_path):  # noqa: F811 (fixture)
    cases = {"2DBox_Microscopy_coins.npz": _two_coins(), "3DBox_MR_mni152.npz": mni152_case(slice(90, 93))}
    folders = {"2d": tmp_path / "cases_2d", "all": tmp_path / "cases_all"}
    for file, case in cases.items():
        for kind, folder in folders.items():
            if kind == "all" or file.startswith("2D"):
                atomic_savez(folder / file, imgs=case["imgs"], boxes=case["boxes"])

    jobs = {}
    for name, (weights, layout, with_3d) in BACKENDS.items():
        checkpoint = save(f"{name}.pth", layout(OrderedDict(rule_weights(weights))))
        jobs[name] = {"checkpoint": str(checkpoint), "cases": str(folders["all" if with_3d else "2d"]),
                      "out": str(tmp_path / "out" / name)}

    proc = _run_without_torch(CHILD, tmp_path / "home", json.dumps(jobs))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "converting" not in proc.stderr, proc.stderr  # predict used the models import-checkpoint made

    for name, job in jobs.items():
        for file in sorted(p.name for p in Path(job["cases"]).iterdir()):
            with np.load(tmp_path / "out" / name / file) as z:
                segs = z["segs"]
            expected = cases[file]
            assert segs.shape == expected["imgs"].shape, (name, file, segs.shape)
            assert set(np.unique(segs)) <= set(range(len(expected["boxes"]) + 1)), (name, file, np.unique(segs))
            assert segs.any(), (name, file, "no object segmented")

    states = {line.split()[0]: line for line in json.loads(proc.stdout.strip().splitlines()[-1])}
    for name in BACKENDS:
        assert states[name].endswith("ready"), states[name]

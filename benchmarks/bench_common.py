"""Shared by the benchmark commands: the machine line, load checks, a private model cache, and
checkpoints of every network with the reference rule weights (speed does not depend on the values).

The rule weights are written by a child process that has torch (torch.save, the registry's key
layout); the benchmark itself imports them through the extension's torch-free `import_checkpoint`.
"""
from __future__ import annotations

import contextlib
import datetime
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable

# backend (catalogue name) -> the PyTorch registry's model name (pytorch/medsamlite_torch/models/registry.py)
REGISTRY_NAMES = {"litemedsam": "lite_medsam", "medficient_l0": "medficient_l0", "medficient_l1": "medficient_l1",
                  "medficient_l2": "medficient_l2", "repvit_medsam": "repvit_medsam_m11", "medsam_vit_b": "medsam_vit_b"}

# Child (torch): the registry model's state-dict keys and shapes, filled by the reference weight rule.
_WRITE_RULE_CHECKPOINT = """
import sys, torch
sys.path.insert(0, {tests!r})
from reference import rule_value
from medsamlite_torch.models import build_model
name, out = sys.argv[1:3]
state = build_model(name, pretrained=False).state_dict()
torch.save({{k: torch.from_numpy(rule_value(k, tuple(v.shape))) for k, v in state.items()}}, out)
"""


def cpu_model() -> str:
    for line in subprocess.run(["lscpu"], check=False, capture_output=True, text=True).stdout.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def load() -> str:
    return "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def machine_line(argv: list[str]) -> str:
    import openvino as ov

    return (f"`{' '.join(argv)}` on {datetime.date.today()}, {cpu_model()} ({os.cpu_count()} cores, "
            f"{ov.Core().get_property('CPU', 'FULL_DEVICE_NAME')}), OpenVINO {ov.__version__}, Python {sys.version.split()[0]}")


def median(values) -> float:
    return statistics.median(values)


@contextlib.contextmanager
def private_home():
    """A temporary MEDSAMLITE_HOME that shares the user cache's genuine LiteMedSAM weights and sample
    images (no download) but converts and imports everything else afresh; removed afterwards."""
    from MedSAMLiteLib.headless.samples import ct_brain_atlas_path, mni152_paths
    from MedSAMLiteLib.models.store import fetch_weights, home

    weights = fetch_weights("litemedsam").parent
    ct_brain_atlas_path(), mni152_paths()  # in the user cache before it is shadowed
    samples = home() / "samples"
    folder = Path(tempfile.mkdtemp(prefix="medsamlite-bench-"))
    (folder / "weights").mkdir()
    (folder / "weights" / "litemedsam").symlink_to(weights)
    (folder / "samples").symlink_to(samples)
    previous = os.environ.get("MEDSAMLITE_HOME")
    os.environ["MEDSAMLITE_HOME"] = str(folder)
    try:
        yield folder
    finally:
        if previous is None:
            os.environ.pop("MEDSAMLITE_HOME")
        else:
            os.environ["MEDSAMLITE_HOME"] = previous
        shutil.rmtree(folder, ignore_errors=True)


def write_rule_checkpoint(backend: str, path: Path) -> Path:
    """A torch.save file of `backend`'s network in its published key layout, with rule weights."""
    code = _WRITE_RULE_CHECKPOINT.format(tests=str(REPO / "MedSAMLite" / "Testing" / "tests"))
    proc = subprocess.run([PYTHON, "-c", code, REGISTRY_NAMES[backend], str(path)], check=False, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"writing the {backend} checkpoint failed:\n{proc.stderr[-2000:]}")
    return path


def import_rule_checkpoints(backends: list[str]) -> None:
    """Rule-weight checkpoints of `backends`, imported (converted once) into the current MEDSAMLITE_HOME."""
    from MedSAMLiteLib.models.store import import_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        for backend in backends:
            import_checkpoint(backend, write_rule_checkpoint(backend, Path(tmp) / f"{backend}.pth"))

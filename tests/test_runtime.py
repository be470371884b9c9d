"""Fast CPU runtime: exported graphs against the golden outputs, backends against torch, the
torch-free start-up, and the export cache's corruption/staleness checks."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from medficient.inference.cases import Case, atomic_savez
from medficient.inference.engine import TorchEngine, open_engine
from medficient.inference.runner import segment_case
from medficient.runtime.cache import ExportKey, check_export, checkpoint_sha256, ensure_export
from medficient.runtime.engines import open_graphs
from medficient.samples import coins_case, dice_per_label, mni152_case
from medficient.weights import LITE_MEDSAM_SHA256, default_weights_path
from reference import NAMES, assert_close_big, golden, reference_input, requires_reference, write_rule_checkpoints

pytest.importorskip("openvino")
pytest.importorskip("onnxruntime")

# Exported f32 graphs vs the golden outputs: the reference README's tolerance for embeddings and
# logits (max <= 1e-4 s, mean <= 1e-5 s, s = max(1, max |golden|)), and 1e-4 for the IoU.
IOU_TOL = 1e-4


@pytest.fixture(scope="module")
def rule_home(tmp_path_factory):
    """A private cache (MEDFICIENT_HOME) and rule-weight checkpoints for the round trips."""
    home = tmp_path_factory.mktemp("home")
    return home, write_rule_checkpoints(home)


@requires_reference
@pytest.mark.parametrize("name", NAMES)
def test_export_round_trip_matches_golden(name, rule_home, monkeypatch):
    home, checkpoints = rule_home
    monkeypatch.setenv("MEDFICIENT_HOME", str(home))
    g = golden(name)
    size = int(g["image_size"])
    key = ExportKey(name, checkpoint_sha256(name, checkpoints[name]), "openvino", "f32")
    ensure_export(key, checkpoints[name], log=lambda m: None)
    assert check_export(key) is None
    graphs = open_graphs(key, cache=False)
    emb = graphs.encode(reference_input(size).numpy())
    logits, iou = graphs.decode_full(emb, g["box"].reshape(1, 4))
    assert_close_big(emb, g["embedding"], f"{name} exported embedding")
    assert_close_big(logits, g["low_res_logits"], f"{name} exported logits")
    assert np.abs(iou - g["iou_pred"]).max() <= IOU_TOL, f"{name} exported iou"


# ---- real weights, real cases: every backend gives the torch path's masks ----------------------


def mni152_three_objects() -> dict[str, np.ndarray]:
    """A 16-slice MNI152 slab with three boxes of different z ranges (so middles differ)."""
    case = mni152_case(slice(66, 82))
    x0, y0, _, x1, y1, _ = case["boxes"][0]
    xm = (x0 + x1) // 2
    boxes = [[x0, y0, 0, x1, y1, 15], [x0, y0, 2, xm, y1, 12], [xm, y0, 5, x1, (y0 + y1) // 2, 14]]
    return {"imgs": case["imgs"], "boxes": np.asarray(boxes, np.int64), "spacing": np.ones(3)}


@pytest.fixture(scope="module")
def real_cases():
    return {"coins_2d": coins_case(), "mni152_3d": mni152_three_objects()}


def as_case(name: str, arrays: dict) -> Case:
    return Case(name, "2D" if arrays["boxes"].shape[1] == 4 else "3D", arrays["imgs"], arrays["boxes"], arrays.get("spacing"))


@pytest.fixture(scope="module")
def lite_exports():
    """The genuine LiteMedSAM exports in the user's cache (built once per machine, then reused)."""
    default_weights_path()
    for fmt in ("openvino", "onnx"):
        ensure_export(ExportKey("lite_medsam", LITE_MEDSAM_SHA256, fmt, "f32"), log=lambda m: None)


@pytest.fixture(scope="module")
def torch_segs(real_cases):
    engine = TorchEngine.load("lite_medsam")
    return {name: segment_case(engine, as_case(name, case)) for name, case in real_cases.items()}


@pytest.mark.parametrize("backend", ["openvino", "onnxruntime"])
def test_backend_f32_gives_torch_masks(backend, lite_exports, real_cases, torch_segs):
    engine = open_engine(backend, "lite_medsam")
    for name, case in real_cases.items():
        segs = segment_case(engine, as_case(name, case))
        want = torch_segs[name]
        assert segs.dtype == want.dtype and segs.shape == want.shape
        assert len(np.unique(want)) == len(case["boxes"]) + 1, f"{name}: torch lost an object"
        differ = int((segs != want).sum())
        assert differ == 0, f"{backend} {name}: {differ} voxels differ from torch"


def test_openvino_bf16_is_close(lite_exports, real_cases, torch_segs):
    """bf16 is an option, not exact: every object still overlaps its f32 mask (DSC >= 0.9)."""
    pytest.importorskip("openvino")
    engine = open_engine("openvino", "lite_medsam", precision="bf16")
    segs = segment_case(engine, as_case("coins", real_cases["coins_2d"]))
    assert min(dice_per_label(segs, torch_segs["coins_2d"])) >= 0.9


# ---- start-up: the OpenVINO path with a cached export never imports torch -----------------------

TORCH_FREE = """
import sys
from medficient.cli import main
rc = main(sys.argv[1:])
loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
print("TORCH_MODULES", len(loaded), loaded[:3])
sys.exit(rc if not loaded else 99)
"""


def test_predict_with_cached_export_does_not_import_torch(lite_exports, real_cases, tmp_path):
    cases = tmp_path / "in"
    atomic_savez(cases / "2DBox_Microscopy_coins.npz", **real_cases["coins_2d"])
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-c", TORCH_FREE, "predict", "-i", str(cases), "-o", str(out), "-q"],  # default backend
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "TORCH_MODULES 0" in proc.stdout
    with np.load(out / "2DBox_Microscopy_coins.npz") as z:
        assert z["segs"].max() == len(real_cases["coins_2d"]["boxes"])


# ---- the export cache: corrupt and stale exports are detected and rebuilt ------------------------


@pytest.fixture
def private_home(tmp_path, monkeypatch, lite_exports):
    """A private cache holding the genuine weights and a copy of the cached ONNX export."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "lite_medsam.pth").symlink_to(default_weights_path())
    key = ExportKey("lite_medsam", LITE_MEDSAM_SHA256, "onnx", "f32")
    source = key.directory
    monkeypatch.setenv("MEDFICIENT_HOME", str(home))
    shutil.copytree(source, key.directory)
    assert check_export(key) is None
    return key


def test_corrupt_export_is_detected_and_rebuilt(private_home, real_cases, torch_segs, capsys):
    key = private_home
    graph = key.graph_path("decoder")
    data = bytearray(graph.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte: same size, wrong hash
    graph.write_bytes(bytes(data))
    assert "does not match its SHA-256" in check_export(key)

    engine = open_engine("onnxruntime", "lite_medsam")
    assert "rebuilding it" in capsys.readouterr().err
    assert check_export(key) is None
    assert np.array_equal(segment_case(engine, as_case("coins", real_cases["coins_2d"])), torch_segs["coins_2d"])


def test_corruption_behind_an_unchanged_mtime_is_found_by_a_recheck(private_home):
    """Start-up trusts files whose size and mtime were verified before; `export` rehashes all."""
    key = private_home
    graph = key.graph_path("encoder")
    before = graph.stat()
    data = bytearray(graph.read_bytes())
    data[100] ^= 0x01
    graph.write_bytes(bytes(data))
    os.utime(graph, ns=(before.st_atime_ns, before.st_mtime_ns))  # as if the disk rotted
    assert check_export(key) is None
    assert "does not match its SHA-256" in check_export(key, recheck=True)


def test_stale_or_incomplete_exports_are_detected(private_home):
    key = private_home
    manifest_path = key.directory / "manifest.json"
    manifest = json.loads(manifest_path.read_text())

    manifest_path.write_text(json.dumps({**manifest, "library": "onnx opset 11"}))
    assert check_export(key).startswith("stale: library")
    manifest_path.write_text(json.dumps({**manifest, "schema": -1}))
    assert check_export(key).startswith("stale: schema")
    manifest_path.write_text("{not json")
    assert check_export(key).startswith("corrupt: manifest")
    manifest_path.write_text(json.dumps(manifest))
    assert check_export(key) is None
    key.graph_path("encoder").unlink()
    assert check_export(key) == "corrupt: encoder.onnx is missing"


def test_other_weights_get_their_own_export(tmp_path):
    """The cache key includes the checkpoint's hash: fine-tuned weights never reuse another export."""
    ckpt = tmp_path / "tuned.pth"
    ckpt.write_bytes(b"not really weights")
    other = ExportKey("lite_medsam", checkpoint_sha256("lite_medsam", ckpt))
    assert other.directory != ExportKey("lite_medsam", LITE_MEDSAM_SHA256).directory
    with pytest.raises(RuntimeError, match="no weights ship"):
        checkpoint_sha256("medficient_l0", None)

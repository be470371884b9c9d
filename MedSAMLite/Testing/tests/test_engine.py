"""The engine process seen from the Logic: killed mid-run (reported in one line, segments restored, the
next Segment starts a new engine), Cancel during a model load (over at once, the engine stopped; a
prefetch's load kept), and Slicer's process never importing openvino, with non-ASCII paths and names."""
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import harness  # noqa: E402

MODULE = harness.load_module()
import slicer  # noqa: E402
from MedSAMLiteLib.engine import client as engine_client  # noqa: E402

TESTDATA = harness.MODULE_DIR / "Resources" / "TestData"


@pytest.fixture
def data():
    harness.new_scene()
    volume = slicer.modules.volumes.logic().AddArchetypeVolume(str(TESTDATA / "MedSAMLiteTestVolume.nrrd"), "CT", 0, None)
    reference = slicer.modules.volumes.logic().AddArchetypeVolume(str(TESTDATA / "MedSAMLiteTestReference.nrrd"), "ref", 1, None)
    reference = slicer.util.arrayFromVolume(reference) > 0
    reference[:4] = reference[9:] = False  # 5 slices: enough to kill or cancel mid-run
    roi = MODULE.MedSAMLiteTest.roiAroundMask(reference, volume)
    segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    target = segmentation.GetSegmentation().AddEmptySegment("", "target")
    before = np.zeros(slicer.util.arrayFromVolume(volume).shape, np.uint8)
    before[0, 5:15, 5:15] = 1
    slicer.util.updateSegmentBinaryLabelmapFromArray(before, segmentation, target, volume)
    return {"volume": volume, "roi": roi, "segmentation": segmentation, "target": target, "before": before}


def _segment(data):
    return slicer.util.arrayFromSegmentBinaryLabelmap(data["segmentation"], data["target"], data["volume"])


def _start(logic, data):
    return logic.startSegment(data["volume"], data["roi"], data["segmentation"], preset="brain", segmentId=data["target"],
                              emptySliceLimit=0, mode="3d")


def test_a_killed_engine_is_one_line_the_segment_is_restored_and_the_next_segment_works(data):
    logic = MODULE.MedSAMLiteLogic()
    run = _start(logic, data)
    while not run.writer.written:  # the middle slice is in the segment: a partial write to undo
        assert not logic.poll(run), "finished before the engine could be killed"
        run.task.wait(0.02)
    engine = run.task.engine
    engine.process.kill()
    engine.process.wait(10)
    t0 = time.perf_counter()
    with pytest.raises(MODULE.InputError, match=r"^segmentation failed: the MedSAMLite engine stopped unexpectedly[^\n]*$"):
        while not logic.poll(run):
            run.task.wait(0.01)
    assert time.perf_counter() - t0 < 1.0
    np.testing.assert_array_equal(_segment(data), data["before"])
    segment_id = logic.segment(data["volume"], data["roi"], data["segmentation"], preset="brain", segmentId=data["target"])
    assert segment_id == data["target"] and _segment(data)[4:9].any(axis=(1, 2)).all()
    assert logic.engine() is not engine and logic.engine().process.pid != engine.process.pid


def test_cancel_during_the_model_load_is_over_at_once_and_stops_the_engine_unless_prefetching(data):
    engine_client.shared().stop()  # a fresh engine has to load the model first
    logic = MODULE.MedSAMLiteLogic()
    run = _start(logic, data)
    engine = run.task.engine
    deadline = time.perf_counter() + 60
    while not run.task.stage.startswith("loading"):
        assert run.task.running and time.perf_counter() < deadline
        engine.pump(0.005)
    t0 = time.perf_counter()
    run.cancel()
    assert logic.poll(run) is True
    assert time.perf_counter() - t0 < 0.2
    assert "cancelled" in logic.lastStatus
    np.testing.assert_array_equal(_segment(data), data["before"])
    assert engine.process.wait(5) is not None, "the engine was not stopped"
    # a prefetch cancelled while it loads the model lets the load finish for the Segment that follows
    prefetch = logic.startPrefetch(data["volume"], data["roi"], preset="brain")
    while not prefetch.stage.startswith("loading"):
        assert prefetch.running
        prefetch.engine.pump(0.005)
    prefetch.cancel()
    logic.segment(data["volume"], data["roi"], data["segmentation"], preset="brain", segmentId=data["target"])
    assert _segment(data)[4:9].any(axis=(1, 2)).all()
    assert logic.engine() is prefetch.engine and prefetch.engine.alive


_IN_SLICER = """
import json, sys
sys.path.insert(0, sys.argv[1])
import harness
module = harness.load_module()
import numpy as np, slicer
data = harness.MODULE_DIR / "Resources" / "TestData"
volume = slicer.modules.volumes.logic().AddArchetypeVolume(str(data / "MedSAMLiteTestVolume.nrrd"), "Schädel CT ü 1", 0, None)
reference = slicer.modules.volumes.logic().AddArchetypeVolume(str(data / "MedSAMLiteTestReference.nrrd"), "ref", 1, None)
reference = slicer.util.arrayFromVolume(reference) > 0
reference[:5] = reference[8:] = False
roi = module.MedSAMLiteTest.roiAroundMask(reference, volume, "ROI é")
segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Segmente ß")
logic = module.MedSAMLiteLogic()
states = logic.backendStates()
segment = logic.segment(volume, roi, segmentation, preset="brain")
result = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, segment, volume) > 0
print(json.dumps({"slices": np.flatnonzero(result.any(axis=(1, 2))).tolist(), "state": states["litemedsam"][1],
                  "after": logic.backendStates()["litemedsam"][1], "home": str(logic.cacheFolder()),
                  "loaded": sorted({m.split(".")[0] for m in sys.modules} & {"openvino", "cv2"})}))
"""


def test_slicers_process_imports_no_openvino_and_non_ascii_paths_work(tmp_path):
    """The module copied under a folder with spaces and umlauts, the cache in another: a Segment
    through the Logic in a fresh process; the Slicer side never loads openvino or opencv."""
    from MedSAMLiteLib.models.store import fetch_weights

    module_dir = tmp_path / "Slicer Erweiterungen ü" / "MedSAMLite"
    shutil.copytree(harness.MODULE_DIR, module_dir, ignore=shutil.ignore_patterns("__pycache__"))
    home = tmp_path / "Cache Ordner é"
    (home / "weights").mkdir(parents=True)
    (home / "weights" / "litemedsam").symlink_to(fetch_weights("litemedsam").parent)
    env = {**os.environ, "MEDSAMLITE_HOME": str(home), "PYTHONPATH": str(module_dir), "PYTHONIOENCODING": "utf-8"}
    proc = subprocess.run([sys.executable, "-c", _IN_SLICER, str(module_dir / "Testing")], capture_output=True, text=True,
                          encoding="utf-8", env=env, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["loaded"] == []
    assert out["home"] == str(home)
    assert out["state"] == "will convert on first use" and out["after"] == "ready"  # converted by the engine, into `home`
    assert out["slices"] == [5, 6, 7]
    assert any((home / "models" / "litemedsam").iterdir())

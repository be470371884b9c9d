"""The engine process seen from the Logic: killed mid-run (reported in one line, segments restored, the
next Segment starts a new engine), Cancel during a model load (over at once, the engine stopped; a
prefetch's load kept), and Slicer's process never importing openvino, with non-ASCII paths and names.
Then the faults of users' machines, each injected: a /dev/shm smaller than the volume (or a simulated
ENOSPC), a launcher between Slicer and the engine with stdout/stderr a dead pipe, Slicer's process gone
while the connection stays open, a garbled message and a SIGKILLed caller, a blocking call during a
prefetch, stale scratch in the cache, and the size of masks on the way back."""
import errno
import json
import os
import re
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
from MedSAMLiteLib import pid_alive  # noqa: E402
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


# -- faults of users' machines (issue 27) ---------------------------------------------------------------------
def _run_in_slicer(script, *args, env=None, timeout=300, prefix=()):
    """`script` in a fresh Python on the harness (argv[1]: the Testing folder), behind `prefix` (e.g.
    unshare); its CompletedProcess."""
    return subprocess.run([*prefix, sys.executable, "-c", script, str(harness.MODULE_DIR / "Testing"), *args],
                          capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=timeout)


_BIG_VOLUME = """
import json, os, sys
sys.path.insert(0, sys.argv[1])
import harness
module = harness.load_module()
import numpy as np, slicer
from MedSAMLiteLib.engine import client
array = np.zeros((64, 512, 512), np.int16)
array[28:36, 200:300, 220:320] = 60  # a bright block in 'brain' window
volume = slicer.util.addVolumeFromArray(array, name="big")
roi = module.MedSAMLiteTest.roiAroundMask(array > 0, volume)
segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
logic = module.MedSAMLiteLogic()
out = {}
segment = logic.segment(volume, roi, segmentation, preset="brain", mode="2d")
out["voxels"] = int((slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, segment, volume) > 0).sum())
out["file"] = [u.file is not None for u in logic.engine()._uploads.values()]
os.environ["MEDSAMLITE_HOME"] = sys.argv[2]  # a cache folder without room either
array[0, 0, 0] = 1
slicer.util.updateVolumeFromArray(volume, array)  # a new volume state: a new upload
try:
    logic.segment(volume, roi, segmentation, preset="brain", mode="2d")
except module.InputError as e:
    out["error"] = str(e)
print(json.dumps(out))
"""


def test_a_volume_larger_than_dev_shm_goes_through_a_file_and_no_room_anywhere_is_one_line(tmp_path):
    """/dev/shm of 16 MB (a mount namespace of its own) and a 64 x 512 x 512 int16 volume (32 MiB): the
    upload goes to a file in the cache and the Segment works; with the cache folder full too (a 1 MB
    tmpfs), one line; the caller never dies (before: SIGBUS in the caller, exit 135)."""
    if subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode != 0:
        pytest.skip("cannot make a mount namespace here (unshare -m needs root): see the simulated ENOSPC test")
    full = tmp_path / "full"
    full.mkdir()
    mount = f"mount -t tmpfs -o size=16m tmpfs /dev/shm && mount -t tmpfs -o size=1m tmpfs {full} && exec \"$0\" \"$@\""
    proc = _run_in_slicer(_BIG_VOLUME, str(full), prefix=("unshare", "-m", "sh", "-c", mount))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["file"] == [True] and out["voxels"] > 0
    assert re.fullmatch(r"segmentation failed: no room for the volume \(32 MiB\): shared memory \(/dev/shm\) is too small and the cache "
                        r"folder \S+ could not take it \(No space left on device\); enlarge /dev/shm .*", out["error"])


def test_no_room_in_shared_memory_uses_a_file_that_is_removed_after(data, monkeypatch, tmp_path):
    """Simulated ENOSPC (where no /dev/shm can be mounted): shared memory refused, the volume goes to a
    file in the cache (mode 0600), the Segment is right, the file goes with the engine; with the file
    refused too, the Segment ends with one line."""
    def no_room(*_):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(engine_client.Upload, "_shared", staticmethod(no_room))
    engine_client.shared().stop()
    logic = MODULE.MedSAMLiteLogic()
    logic.segment(data["volume"], data["roi"], data["segmentation"], preset="brain", segmentId=data["target"])
    assert _segment(data)[4:9].any(axis=(1, 2)).all()
    (upload,) = logic.engine()._uploads.values()
    assert upload.file is not None and os.stat(upload.file).st_mode & 0o777 == 0o600
    logic.engine().stop()
    assert not os.path.exists(upload.file)
    monkeypatch.setattr(engine_client, "_reserve", no_room)
    run = _start(logic, data)
    with pytest.raises(MODULE.InputError, match=r"^segmentation failed: no room for the volume \(0 MiB\): [^\n]*free disk space there$"):
        logic.wait(run, 10)


_LAUNCHER = """import os, subprocess, sys
r, w = os.pipe()
os.close(r)  # stdout and stderr: a pipe nobody reads (Windows Slicer without a console)
sys.exit(subprocess.Popen([sys.executable, *sys.argv[1:]], stdout=w, stderr=w).wait())
"""


def _launcher(tmp_path):
    """An executable that, like Slicer's PythonSlicer, starts the real Python as its child (no exec),
    here with stdout and stderr a dead pipe."""
    (tmp_path / "launcher.py").write_text(_LAUNCHER)
    launcher = tmp_path / "PythonSlicer"
    launcher.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{tmp_path / "launcher.py"}" "$@"\n')
    launcher.chmod(0o755)
    return str(launcher)


def _gone(pid, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.05)
    return False


def test_behind_a_launcher_with_a_dead_stderr_a_failure_is_its_own_line_and_stop_reaches_the_engine(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDSAMLITE_HOME", str(tmp_path / "cache"))
    engine = engine_client.Engine(python=_launcher(tmp_path))
    try:
        missing = tmp_path / "missing.pth"
        with pytest.raises(engine_client.EngineError, match=rf"^{re.escape(str(missing))}: no such file$"):
            engine.call("import", name="medficient_l0", path=str(missing))
        assert engine.pid != engine.process.pid  # the engine is the launcher's child
        assert engine.call("stats", backend="litemedsam")["pid"] == engine.pid  # the same engine serves on
        log = (tmp_path / "cache" / "engine.log").read_text()
        assert "Traceback" in log and "no such file" in log
        engine.process.kill()  # the launcher alone dies: the engine it started serves on
        engine.process.wait(5)
        assert engine.call("stats", backend="litemedsam")["pid"] == engine.pid
    finally:
        engine.stop()
    assert _gone(engine.pid, 5), "stopping did not reach the engine behind the launcher"


def test_the_engine_ends_when_slicers_process_is_gone_even_with_its_connection_open(tmp_path, monkeypatch):
    """The parent watch does not depend on reading messages: the engine watches a stand-in for Slicer's
    process while this process keeps the connection open."""
    monkeypatch.setenv("MEDSAMLITE_HOME", str(tmp_path / "cache"))
    stand_in = subprocess.Popen(["sleep", "60"])

    class Watching(engine_client.Engine):
        def _hello(self, authkey):
            return {**super()._hello(authkey), "parent": stand_in.pid}

    engine = Watching()
    try:
        assert engine.call("stats", backend="litemedsam")["pid"] == engine.pid
        stand_in.kill()
        stand_in.wait()
        assert _gone(engine.pid, 5), "the engine outlived the process it watches"
        assert "is gone" in (tmp_path / "cache" / "engine.log").read_text()
    finally:
        engine.stop()


_CALLER = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
import harness
module = harness.load_module()
import numpy as np, slicer
data = harness.MODULE_DIR / "Resources" / "TestData"
volume = slicer.modules.volumes.logic().AddArchetypeVolume(str(data / "MedSAMLiteTestVolume.nrrd"), "CT", 0, None)
reference = slicer.util.arrayFromVolume(slicer.modules.volumes.logic().AddArchetypeVolume(str(data / "MedSAMLiteTestReference.nrrd"), "ref", 1, None)) > 0
reference[:6] = reference[7:] = False
roi = module.MedSAMLiteTest.roiAroundMask(reference, volume)
segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
logic = module.MedSAMLiteLogic()
logic.segment(volume, roi, segmentation, preset="brain")
first = logic.engine()
first._conn.send_bytes(b"garbled")  # no pickle: the engine must end, not just its reader
deadline = time.monotonic() + 10
while first.alive and time.monotonic() < deadline:
    first.pump(0.05)
second = logic.engine()  # a new engine
print(json.dumps({"first": first.pid, "dead": first.dead, "second": second.call("stats", backend="litemedsam")["pid"]}), flush=True)
time.sleep(120)
"""


def test_a_killed_caller_leaves_no_engine_even_after_a_garbled_message(tmp_path):
    caller = subprocess.Popen([sys.executable, "-c", _CALLER, str(harness.MODULE_DIR / "Testing")], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        line = caller.stdout.readline()
        assert line, caller.stderr.read()[-3000:]
        out = json.loads(line)
        assert out["dead"].startswith("the MedSAMLite engine stopped unexpectedly") and out["second"] != out["first"]
        assert _gone(out["first"], 5), "a garbled message did not end the engine"
    finally:
        caller.kill()
        caller.wait()
    assert _gone(out["second"], 5), "the engine outlived its SIGKILLed caller"
    assert "unreadable message from Slicer" in engine_client.log_path().read_text(errors="replace")


def test_clear_cache_during_a_prefetch_returns_at_once_and_clears(data, monkeypatch, tmp_path):
    logic = MODULE.MedSAMLiteLogic()
    logic.engine().call("embeddings", clear=True)
    whole = MODULE.MedSAMLiteTest.roiAroundMask(np.ones(slicer.util.arrayFromVolume(data["volume"]).shape, bool), data["volume"])
    prefetch = logic.startPrefetch(data["volume"], whole, preset="brain")
    deadline = time.monotonic() + 60
    while prefetch.stage != "prefetching" or prefetch.progress.done < 1:
        assert prefetch.running and time.monotonic() < deadline
        prefetch.engine.pump(0.005)
    models = tmp_path / "cache" / "models" / "some model"
    models.mkdir(parents=True)
    monkeypatch.setenv("MEDSAMLITE_HOME", str(tmp_path / "cache"))  # the engine reads it per request
    t0 = time.perf_counter()
    task = logic.clearCache()
    assert time.perf_counter() - t0 <= 0.5
    assert prefetch.state == prefetch.CANCELLED
    assert task.wait(10) and task.state == task.DONE and not models.exists()


def test_the_engine_sweeps_what_gone_processes_left_in_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDSAMLITE_HOME", str(tmp_path / "cache"))
    folder = tmp_path / "cache" / "models" / "litemedsam"
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = [folder / f".build-{dead.pid}-abc.x1", tmp_path / "cache" / f".volume-{dead.pid}-raw.y2"]
    kept = [folder / f".build-{os.getpid()}-abc.x3", folder / "abc"]
    for path in stale[:1] + kept:
        path.mkdir(parents=True)
    stale[1].write_bytes(b"voxels")
    engine = engine_client.Engine()
    try:
        engine.call("stats", backend="litemedsam")
        assert [p.exists() for p in stale + kept] == [False, False, True, True]
    finally:
        engine.stop()


def test_masks_travel_bit_packed_and_a_few_slices_unpack_quickly():
    """A 400 x 512 x 512 crop (105 MB as bool) pickles to an eighth; receiving it and unpacking one write
    step's slices stays under 0.05 s (the main thread's budget)."""
    import pickle

    from MedSAMLiteLib.engine import protocol

    mask = np.zeros((400, 512, 509), bool)  # a width that is no multiple of 8
    mask[::3, 100:400, 50:450] = True
    data = pickle.dumps(protocol.PackedMask(mask), protocol=pickle.HIGHEST_PROTOCOL)
    assert len(data) < mask.nbytes / 7
    t0 = time.perf_counter()
    received = pickle.loads(data)
    step = received[120:124]
    assert time.perf_counter() - t0 < 0.05
    np.testing.assert_array_equal(step, mask[120:124])
    assert received.shape == mask.shape and step.dtype == bool
    np.testing.assert_array_equal(received[:], mask)


def test_the_engine_log_is_rotated_at_its_cap_and_writing_never_raises(tmp_path):
    from MedSAMLiteLib.engine.server import _Log

    path = tmp_path / "engine.log"
    log = _Log(str(path), max_bytes=100, fds=())  # fds: leave this process's stdout and stderr alone
    for n in range(30):
        log.write(f"line {n}\n")
    assert path.stat().st_size <= 100 + 8 and (tmp_path / "engine.log.1").stat().st_size > 100
    assert path.read_text().splitlines()[-1] == "line 29"
    log.file.close()  # the file is gone from under it (a dead handle, a full disk): still no exception
    assert log.write("after\n") == 6
    assert _Log(str(tmp_path / "no folder" / "engine.log"), fds=()).write("x") == 1

"""Key-slice corrections through the Logic on real MRML (slicer-core) and the real engine: only the slices a
key slice governs are rewritten, as one undo step that Undo takes back exactly; not on this slice; removing a
key slice; Cancel; and a changed volume, backend or an edited segment refused in one line."""
import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import harness  # noqa: E402

MODULE = harness.load_module()
import slicer  # noqa: E402

TESTDATA = harness.MODULE_DIR / "Resources" / "TestData"


@pytest.fixture(scope="module")
def volume():
    """One scene for the module: the volume state stays the same, so the engine encodes its slices once."""
    harness.new_scene()
    volumes = slicer.modules.volumes.logic()
    volume = volumes.AddArchetypeVolume(str(TESTDATA / "MedSAMLiteTestVolume.nrrd"), "CT", 0, None)
    reference = volumes.AddArchetypeVolume(str(TESTDATA / "MedSAMLiteTestReference.nrrd"), "reference", 1, None)
    reference = slicer.util.arrayFromVolume(reference).copy() > 0
    reference[:4] = reference[9:] = False  # slices 4..8, middle 6
    return {"volume": volume, "roi": MODULE.MedSAMLiteTest.roiAroundMask(reference, volume)}


@pytest.fixture
def data(volume):
    segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume["volume"])
    logic = MODULE.MedSAMLiteLogic()
    segment_id = logic.segment(volume["volume"], volume["roi"], segmentation, preset="brain", emptySliceLimit=0, mode="3d")
    data = dict(volume, segmentation=segmentation, segment=segment_id, logic=logic)
    data["first"] = _array(data)
    assert data["first"][4:9].any(axis=(1, 2)).all() and not data["first"][9:].any()
    return data


def _array(data):
    """The segment on the volume's whole grid (k, j, i); the test volume's k is its canonical slice."""
    array = slicer.util.arrayFromSegmentBinaryLabelmap(data["segmentation"], data["segment"], data["volume"])
    full = np.zeros(slicer.util.arrayFromVolume(data["volume"]).shape, np.uint8)
    return full if array is None else np.asarray(array, np.uint8)


def _ijk_to_ras(volume):
    import vtk

    matrix = vtk.vtkMatrix4x4()
    volume.GetIJKToRASMatrix(matrix)
    return matrix


def _polled(logic, run):
    """Poll the run to its end; the longest single poll (main-thread time) in seconds."""
    longest = 0.0
    while True:
        t0 = time.perf_counter()
        over = logic.poll(run)
        longest = max(longest, time.perf_counter() - t0)
        if over:
            return longest
        run.task.wait(0.02)


def test_a_box_on_a_key_slice_rewrites_only_what_it_governs_and_undo_takes_it_back(data):
    logic = data["logic"]
    assert logic.keySlices(data["segmentation"], data["segment"])[0][0] == 6
    run = logic.startCorrection(data["segmentation"], data["segment"], 8, (20, 20, 30, 30))
    assert _polled(logic, run) < 0.1
    after = _array(data)
    keys = logic.keySlices(data["segmentation"], data["segment"])
    assert [k[0] for k in keys] == [6, 8] and keys[1][1] == (20.0, 20.0, 30.0, 30.0)
    np.testing.assert_array_equal(after[:7], data["first"][:7])  # slices 7 (between) and 8 (the key) only
    assert not np.array_equal(after[8], data["first"][8]) and not after[9:].any()
    assert logic.lastStatus.startswith("litemedsam correction:")
    assert logic.lastStatus.endswith(", 0 encoded")  # the Segment's embeddings served the correction
    assert logic.undo()
    np.testing.assert_array_equal(_array(data), data["first"])
    assert [k[0] for k in logic.keySlices(data["segmentation"], data["segment"])] == [6]


def test_beyond_the_users_key_slice_its_box_is_carried_to_the_rois_end(data):
    """Key slice 7 (the ROI's slices are 4..8, middle 6): slice 8 is prompted with slice 7's box, so it gets
    the mask a key slice on 8 with that box gives (the published rule would follow slice 7's mask)."""
    logic, box = data["logic"], (20, 20, 30, 30)
    _polled(logic, logic.startCorrection(data["segmentation"], data["segment"], 7, box))
    carried = _array(data)
    assert logic.undo()
    _polled(logic, logic.startCorrection(data["segmentation"], data["segment"], 8, box))
    keyed = _array(data)
    assert logic.undo()
    assert carried[8].any() and not np.array_equal(carried[8], data["first"][8])
    np.testing.assert_array_equal(carried[8], keyed[8])


def test_not_on_this_slice_ends_the_object_there_and_removing_it_gives_the_first_result_back(data):
    logic = data["logic"]
    point = logic.keySlicePoint(data["segmentation"], data["segment"], 7)  # a world point on slice 7
    ijk = np.linalg.inv(slicer.util.arrayFromVTKMatrix(_ijk_to_ras(data["volume"]))) @ [*point, 1]
    assert round(ijk[2], 6) == 7  # the test volume's k axis is its slice axis
    logic.correctSlice(data["segmentation"], data["segment"], point, None)
    after = _array(data)
    np.testing.assert_array_equal(after[:7], data["first"][:7])
    assert not after[7:].any()
    logic.removeKeySlice(data["segmentation"], data["segment"], 7)
    np.testing.assert_array_equal(_array(data), data["first"])  # one key slice: the published result again


def test_cancel_leaves_the_segment_and_its_key_slices_as_they_were(data):
    logic = data["logic"]
    run = logic.startCorrection(data["segmentation"], data["segment"], 5, (10, 10, 50, 50))
    run.cancel()
    _polled(logic, run)
    np.testing.assert_array_equal(_array(data), data["first"])
    assert [k[0] for k in logic.keySlices(data["segmentation"], data["segment"])] == [6]
    assert logic.lastStatus == "cancelled: the segment is unchanged"


def test_an_edit_a_changed_volume_or_another_backend_is_refused_in_one_line(data):
    logic, segmentation, segment = data["logic"], data["segmentation"], data["segment"]
    with pytest.raises(MODULE.InputError, match=r"^the segment was made with litemedsam: Segment again to use medficient_l0$"):
        logic.startCorrection(segmentation, segment, 8, None, backend="medficient_l0")
    with pytest.raises(MODULE.InputError, match=r"^segment 'nope' of '.*' has no 3D MedSAMLite result to correct"):
        logic.startCorrection(segmentation, "nope", 8, None)
    with pytest.raises(MODULE.InputError, match="must be on one key slice at least"):
        logic.startCorrection(segmentation, segment, 6, None)
    edited = data["first"].copy()
    edited[8, 30:33, 30:33] = 1
    slicer.util.updateSegmentBinaryLabelmapFromArray(edited, segmentation, segment, data["volume"])
    with pytest.raises(MODULE.InputError, match=r"^segment '.*' was edited since its MedSAMLite result: Segment again to correct it$"):
        logic.startCorrection(segmentation, segment, 8, None)
    np.testing.assert_array_equal(_array(data), edited)  # refused: nothing written


def test_a_changed_volume_is_refused(volume):
    segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume["volume"])
    logic = MODULE.MedSAMLiteLogic()
    segment = logic.segment(volume["volume"], volume["roi"], segmentation, preset="brain", emptySliceLimit=0, mode="3d")
    volume["volume"].GetImageData().Modified()  # a new volume state (as any edit of the voxels makes)
    with pytest.raises(MODULE.InputError, match=r"^volume 'CT' changed since the segment was made: Segment again$"):
        logic.startCorrection(segmentation, segment, 8, None)

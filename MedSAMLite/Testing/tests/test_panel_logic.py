"""What the panel relies on, without Qt: runs in the engine with partial results, cancel, errors, one
undo step, a second Segment refused, prefetch without stale embeddings, 2D mode on the current
slice, and the Segment Editor's masking settings (stopping after empty slices: test_propagation.py;
the engine process itself: test_engine.py)."""
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import harness  # noqa: E402

MODULE = harness.load_module()
import slicer  # noqa: E402
from MedSAMLiteLib.mrml.inputs import ijk_to_ras  # noqa: E402

TESTDATA = harness.MODULE_DIR / "Resources" / "TestData"


@pytest.fixture
def scene():
    return harness.new_scene()


@pytest.fixture
def data(scene):
    volumes = slicer.modules.volumes.logic()
    volume = volumes.AddArchetypeVolume(str(TESTDATA / "MedSAMLiteTestVolume.nrrd"), "CT", 0, None)
    reference = volumes.AddArchetypeVolume(str(TESTDATA / "MedSAMLiteTestReference.nrrd"), "reference", 1, None)
    reference = slicer.util.arrayFromVolume(reference).copy() > 0
    roi_mask = reference.copy()
    roi_mask[:3] = roi_mask[10:] = False  # slices 3..9: middle 6
    roi = MODULE.MedSAMLiteTest.roiAroundMask(roi_mask, volume)
    segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    target = segmentation.GetSegmentation().AddEmptySegment("", "target")
    before = np.zeros(reference.shape, np.uint8)
    before[0, 5:15, 5:15] = 1
    slicer.util.updateSegmentBinaryLabelmapFromArray(before, segmentation, target, volume)
    return {"volume": volume, "reference": reference, "roi": roi, "segmentation": segmentation, "target": target, "before": before}


def _segment_array(data, segment_id=None):
    return slicer.util.arrayFromSegmentBinaryLabelmap(data["segmentation"], segment_id or data["target"], data["volume"])


def _start(logic, data, **kwargs):
    args = dict(preset="brain", segmentId=data["target"], emptySliceLimit=0)
    args.update(kwargs)
    return logic.startSegment(data["volume"], data["roi"], data["segmentation"], **args)


def _first_write(logic, run):
    """Poll until the run wrote something (3D: the middle slice, always before the rest)."""
    for _ in range(1200):
        if logic.poll(run) or run.writer.written:
            return
        run.task.wait(0.05)
    raise AssertionError("nothing written in 60 s")


def test_middle_slice_first_then_cancel_restores_the_segment(data):
    logic = MODULE.MedSAMLiteLogic()
    run = _start(logic, data)
    _first_write(logic, run)
    partial = _segment_array(data)
    # the middle slice so far; slice 0 holds the segment's earlier content, outside the ROI's slices: kept
    assert np.flatnonzero(partial.any(axis=(1, 2))).tolist() == [0, 6]
    with pytest.raises(MODULE.InputError, match="already running"):
        _start(logic, data)
    run.cancel()
    assert logic.poll(run) is True  # over at once: the engine drops the rest
    np.testing.assert_array_equal(_segment_array(data), data["before"])
    assert "cancelled" in logic.lastStatus


def test_cancel_of_a_new_segment_removes_it(data):
    logic = MODULE.MedSAMLiteLogic()
    run = _start(logic, data, segmentId=None)
    _first_write(logic, run)
    assert data["segmentation"].GetSegmentation().GetNumberOfSegments() == 2
    run.cancel()
    assert logic.poll(run) is True
    assert data["segmentation"].GetSegmentation().GetNumberOfSegments() == 1


def test_a_final_result_is_written_a_few_slices_per_poll_and_cancel_then_restores(data):
    logic = MODULE.MedSAMLiteLogic()
    logic.WRITE_SLICES, logic.WRITE_BUDGET_S = 2, 0.0  # one 2-slice write per poll
    run = _start(logic, data)
    assert run.task.wait(120)
    while run.pending is None or len(run.pending) > 2:  # the ROI's 7 slices: 4 writes; stop after 2
        assert logic.poll(run) is False
    written = np.flatnonzero(_segment_array(data).any(axis=(1, 2))).tolist()
    assert written[0] == 0 and 3 in written and 9 not in written, written  # slice 0: the earlier content
    run.cancel()
    assert logic.poll(run) is True
    np.testing.assert_array_equal(_segment_array(data), data["before"])
    run = _start(logic, data)
    while not logic.poll(run):
        run.task.wait(0.01)
    assert _segment_array(data)[3:10].any(axis=(1, 2)).all()


def test_an_error_in_the_engine_is_one_line_and_the_segment_is_unchanged(data):
    logic = MODULE.MedSAMLiteLogic()
    run = _start(logic, data, backend="no_such_model")
    assert run.task.wait(60)
    with pytest.raises(MODULE.InputError, match=r"^segmentation failed: unknown backend 'no_such_model'; choose one of [^\n]*$"):
        logic.poll(run)
    np.testing.assert_array_equal(_segment_array(data), data["before"])
    run = _start(logic, data, mode="2d")  # the Logic is free for the next Segment
    assert run.task.wait(60) and logic.poll(run)


def test_one_segment_is_one_undo_step(data, scene):
    scene.SetUndoOn()
    logic = MODULE.MedSAMLiteLogic()
    logic.segment(data["volume"], data["roi"], data["segmentation"], preset="brain", segmentId=data["target"], emptySliceLimit=0)
    after = _segment_array(data)
    assert after[3:10].any(axis=(1, 2)).all()
    scene.Undo()
    np.testing.assert_array_equal(_segment_array(data), data["before"])
    assert scene.GetNumberOfUndoLevels() == 0


def test_undo_hook_is_called_once_per_segment(data):
    logic = MODULE.MedSAMLiteLogic()
    calls = []
    logic.undoHook = lambda: calls.append(1)
    logic.segment(data["volume"], data["roi"], data["segmentation"], preset="brain", segmentId=data["target"])
    assert calls == [1]


def _encoder_calls(logic):
    return logic.engine().call("stats", backend="litemedsam")["backend"]["encoder_calls"]


def test_prefetch_then_segment_encodes_nothing_and_a_changed_volume_is_never_stale(data):
    logic = MODULE.MedSAMLiteLogic()
    logic.engine().call("embeddings", clear=True)
    task = logic.startPrefetch(data["volume"], data["roi"], preset="brain")
    assert task.wait(120) and task.state == task.DONE and task.progress.done == 7
    calls = _encoder_calls(logic)
    logic.segment(data["volume"], data["roi"], data["segmentation"], preset="brain", segmentId=data["target"], emptySliceLimit=0)
    assert _encoder_calls(logic) == calls
    first = _segment_array(data)
    # change the voxels (a filter ran): the engine must not use the old embeddings
    array = slicer.util.arrayFromVolume(data["volume"])
    array[:] = np.where(array > 0, array // 2, array)
    slicer.util.arrayFromVolumeModified(data["volume"])
    logic.segment(data["volume"], data["roi"], data["segmentation"], preset="brain", segmentId=data["target"], emptySliceLimit=0)
    assert _encoder_calls(logic) == calls + 7
    changed = _segment_array(data)
    logic.engine().call("embeddings", clear=True)
    fresh_segment = MODULE.MedSAMLiteLogic().segment(data["volume"], data["roi"], data["segmentation"], preset="brain", emptySliceLimit=0)
    # the target keeps its earlier content outside the ROI's slices (slice 0); the new segment has none
    np.testing.assert_array_equal(changed, _segment_array(data, fresh_segment) | data["before"])
    assert not np.array_equal(first, changed)


def test_2d_mode_segments_the_current_slice_inside_the_roi(data):
    logic = MODULE.MedSAMLiteLogic()
    point = (ijk_to_ras(data["volume"]) @ np.array([30, 30, 8, 1.0]))[:3]
    logic.segment(data["volume"], data["roi"], data["segmentation"], preset="brain", segmentId=data["target"], mode="2d", slicePoint=point)
    result = _segment_array(data)
    assert np.flatnonzero(result.any(axis=(1, 2))).tolist() == [0, 8]  # slice 0: the earlier content, kept
    assert "2D" in logic.lastStatus


def test_flatten_roi_to_the_current_slice_makes_auto_mode_2d(data):
    logic = MODULE.MedSAMLiteLogic()
    point = (ijk_to_ras(data["volume"]) @ np.array([30, 30, 5, 1.0]))[:3]
    logic.flattenRoiToSlice(data["roi"], data["volume"], point)
    job = logic.prepare(data["volume"], data["roi"], data["segmentation"], preset="brain")
    assert job.is2d and job.box.z0 == 5


def test_segment_editor_masking_and_overwrite(data):
    segmentation, volume = data["segmentation"], data["volume"]
    other = segmentation.GetSegmentation().AddEmptySegment("", "other")
    other_mask = np.zeros(data["reference"].shape, np.uint8)
    other_mask[3:10, :, :33] = 1  # the left half of the ROI's slices
    slicer.util.updateSegmentBinaryLabelmapFromArray(other_mask, segmentation, other, volume)
    editor = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentEditorNode")
    logic = MODULE.MedSAMLiteLogic()
    logic.editorNode = editor
    editor.SetMaskMode(slicer.vtkMRMLSegmentationNode.EditAllowedOutsideAllSegments)
    editor.SetOverwriteMode(editor.OverwriteNone)
    logic.segment(volume, data["roi"], segmentation, preset="brain", segmentId=data["target"], emptySliceLimit=0)
    result = _segment_array(data)
    assert result[3:10].any() and not (result & other_mask).any()
    np.testing.assert_array_equal(_segment_array(data, other), other_mask)
    editor.SetMaskMode(slicer.vtkMRMLSegmentationNode.EditAllowedEverywhere)
    editor.SetOverwriteMode(editor.OverwriteAllSegments)
    logic.segment(volume, data["roi"], segmentation, preset="brain", segmentId=data["target"], emptySliceLimit=0)
    result = _segment_array(data)
    assert (result & other_mask).any()
    assert not (_segment_array(data, other) & result).any(), "overwrite: the other segment gives way"


def test_cancel_in_overwrite_mode_restores_the_segments_a_partial_result_erased(data):
    segmentation, volume = data["segmentation"], data["volume"]
    other = segmentation.GetSegmentation().AddEmptySegment("", "other")
    other_mask = np.zeros(data["reference"].shape, np.uint8)
    other_mask[:, 10:50, 10:50] = 1  # overlaps the brain on every slice
    slicer.util.updateSegmentBinaryLabelmapFromArray(other_mask, segmentation, other, volume)
    editor = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentEditorNode")
    editor.SetOverwriteMode(editor.OverwriteAllSegments)
    logic = MODULE.MedSAMLiteLogic()
    logic.editorNode = editor
    run = _start(logic, data)
    _first_write(logic, run)
    erased = other_mask.astype(bool) & ~_segment_array(data, other).astype(bool)
    assert np.flatnonzero(erased.any(axis=(1, 2))).tolist() == [6], "the middle slice took voxels of the other segment"
    run.cancel()
    assert logic.poll(run) is True
    np.testing.assert_array_equal(_segment_array(data, other), other_mask)
    np.testing.assert_array_equal(_segment_array(data), data["before"])


def test_undo_takes_back_the_last_segment_with_scene_undo_off_and_no_editor(data, scene):
    assert not scene.GetUndoFlag()
    logic = MODULE.MedSAMLiteLogic()
    assert logic.undo() is False  # nothing yet
    logic.segment(data["volume"], data["roi"], data["segmentation"], preset="brain", segmentId=data["target"], emptySliceLimit=0)
    created = logic.segment(data["volume"], data["roi"], data["segmentation"], preset="brain", mode="2d", emptySliceLimit=0)
    assert data["segmentation"].GetSegmentation().GetNumberOfSegments() == 2
    assert logic.undo() is True  # the 2D Segment into a new segment: removed
    assert data["segmentation"].GetSegmentation().GetSegment(created) is None
    assert _segment_array(data)[3:10].any()
    assert logic.undo() is True  # the 3D Segment: the target as it was before
    np.testing.assert_array_equal(_segment_array(data), data["before"])
    assert logic.undo() is False

"""MedSAMLiteLogic.segment on a real MRML scene (slicer-core): geometry in every orientation and
under transforms, RGB images, what it must never touch, and clear errors for bad input."""
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import harness  # noqa: E402

MODULE = harness.load_module()
import slicer  # noqa: E402  (after the harness: slicer.mrmlScene, slicer.modules)
import vtk  # noqa: E402

TESTDATA = harness.MODULE_DIR / "Resources" / "TestData"


@pytest.fixture(scope="module")
def logic():
    return MODULE.MedSAMLiteLogic()  # one Logic: backends and embeddings shared across tests


@pytest.fixture
def scene():
    return harness.new_scene()


def _load(name, labelmap=False):
    node = slicer.modules.volumes.logic().AddArchetypeVolume(str(TESTDATA / f"MedSAMLite{name}.nrrd"), name, int(labelmap), None)
    assert node is not None
    return node


def _ijk_to_ras(node):
    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    return slicer.util.arrayFromVTKMatrix(m)


def _set_ijk_to_ras(node, matrix):
    node.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(matrix))


def _roi(center, size, name="ROI", rotation=None):
    roi = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsROINode", name)
    roi.SetSize(*size)
    m = np.eye(4)
    m[:3, :3] = np.eye(3) if rotation is None else rotation
    m[:3, 3] = center
    roi.SetAndObserveObjectToNodeMatrix(slicer.util.vtkMatrixFromArray(m))
    return roi


def _segmentation():
    return slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")


def _result(segmentation, segment_id, volume):
    return slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, segment_id, volume) > 0


def _dice(a, b):
    return 2 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def _brain_roi(volume, reference, slices=None):
    """ROI around the reference brain (optionally only some slices) in the volume's RAS."""
    ref = reference.copy()
    if slices is not None:
        keep = np.zeros(ref.shape[0], bool)
        keep[slices] = True
        ref[~keep] = 0
    return MODULE.MedSAMLiteTest.roiAroundMask(ref, volume)


@pytest.fixture
def base(scene, logic):
    """The axial test volume, its reference, an ROI over 5 slices, and the 3D result."""
    volume, reference = _load("TestVolume"), slicer.util.arrayFromVolume(_load("TestReference", True)).copy() > 0
    roi = _brain_roi(volume, reference, slice(4, 9))
    segmentation = _segmentation()
    segment_id = logic.segment(volume, roi, segmentation, preset="brain")
    result = _result(segmentation, segment_id, volume)
    return {"volume": volume, "reference": reference, "roi": roi, "result": result}


def test_3d_result_is_good_and_only_inside_the_roi_slices(base, logic):
    result, reference = base["result"], base["reference"]
    assert result[4:9].any(axis=(1, 2)).all() and not result[:4].any() and not result[9:].any()
    assert _dice(result[4:9], reference[4:9]) > 0.85  # 3 mm pixels: the rim costs
    assert "3D: 5 slices" in logic.lastStatus


@pytest.mark.parametrize("layout", ["lps_flipped", "permuted_kji", "sagittal_stack"])
def test_same_voxels_in_another_index_order_give_the_same_mask(base, logic, layout):
    """The same image stored flipped / with permuted axes: the physical result must be identical."""
    volume = base["volume"]
    array = slicer.util.arrayFromVolume(volume)
    m = _ijk_to_ras(volume)
    k, j, i = array.shape
    if layout == "lps_flipped":  # i and j reversed (as DICOM LPS data arrive)
        new, back = array[:, ::-1, ::-1], lambda a: a[:, ::-1, ::-1]
        flip = np.eye(4)
        flip[0, 0], flip[0, 3], flip[1, 1], flip[1, 3] = -1, i - 1, -1, j - 1
        matrix = m @ flip
    elif layout == "permuted_kji":  # new (k', j', i') = (j, i, k)
        new, back = np.transpose(array, (1, 2, 0)), lambda a: np.transpose(a, (2, 0, 1))
        perm = np.zeros((4, 4))
        perm[0, 1] = perm[1, 2] = perm[2, 0] = perm[3, 3] = 1  # old (i, j, k) = (j', k', i')
        matrix = m @ perm
    else:  # slices stacked along i: new (k', j', i') = (i, j, k)
        new, back = np.transpose(array, (2, 1, 0)), lambda a: np.transpose(a, (2, 1, 0))
        perm = np.zeros((4, 4))
        perm[0, 2] = perm[1, 1] = perm[2, 0] = perm[3, 3] = 1
        matrix = m @ perm
    other = slicer.util.addVolumeFromArray(np.ascontiguousarray(new))
    _set_ijk_to_ras(other, matrix)
    segmentation = _segmentation()
    segment_id = logic.segment(other, base["roi"], segmentation, preset="brain")
    np.testing.assert_array_equal(back(_result(segmentation, segment_id, other)), base["result"])


def _rotation(degrees, axis):
    a = np.radians(degrees)
    c, s = np.cos(a), np.sin(a)
    r = {"S": [[c, -s, 0], [s, c, 0], [0, 0, 1]], "R": [[1, 0, 0], [0, c, -s], [0, s, c]]}[axis]
    return np.array(r)


def _transform(rotation, shift):
    node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    m = np.eye(4)
    m[:3, :3], m[:3, 3] = rotation, shift
    node.SetMatrixTransformToParent(slicer.util.vtkMatrixFromArray(m))
    return node


@pytest.mark.parametrize("segmentation_too", [True, False], ids=["all_transformed", "segmentation_in_world"])
def test_volume_and_roi_under_the_same_transform_give_the_same_mask(base, logic, segmentation_too):
    transform = _transform(_rotation(20, "R"), [15.0, -30.0, 7.0])
    volume = base["volume"]
    volume.SetAndObserveTransformNodeID(transform.GetID())
    base["roi"].SetAndObserveTransformNodeID(transform.GetID())
    segmentation = _segmentation()
    if segmentation_too:
        segmentation.SetAndObserveTransformNodeID(transform.GetID())
    segment_id = logic.segment(volume, base["roi"], segmentation, preset="brain")
    if segmentation_too:
        result = _result(segmentation, segment_id, volume)
    else:  # the mask lies in world space: bring it back onto the transformed volume's grid (Slicer's exporter)
        labelmap = slicer.modules.volumes.logic().CreateAndAddLabelVolume(slicer.mrmlScene, volume, "check")
        labelmap.SetAndObserveTransformNodeID(transform.GetID())
        ids = vtk.vtkStringArray()
        ids.InsertNextValue(segment_id)
        assert slicer.modules.segmentations.logic().ExportSegmentsToLabelmapNode(segmentation, ids, labelmap, volume)
        result = slicer.util.arrayFromVolume(labelmap) > 0
    np.testing.assert_array_equal(result, base["result"])


def test_roi_alone_under_a_transform_is_placed_in_world(base, logic):
    """ROI coordinates are local to its transform: moved back by the inverse, it is the same box."""
    shift = np.array([40.0, 25.0, -12.0])
    transform = _transform(np.eye(3), shift)
    roi = base["roi"]
    center = np.array(roi.GetCenter())
    roi.SetCenter(*(center - shift))
    roi.SetAndObserveTransformNodeID(transform.GetID())
    segmentation = _segmentation()
    segment_id = logic.segment(base["volume"], roi, segmentation, preset="brain")
    np.testing.assert_array_equal(_result(segmentation, segment_id, base["volume"]), base["result"])


def test_oblique_volume_with_a_rotated_roi(base, logic):
    """A volume acquired 12 degrees off axial, the ROI drawn along its axes: same voxels segmented."""
    volume, roi = base["volume"], base["roi"]
    rotation = np.eye(4)
    rotation[:3, :3] = _rotation(12, "S")
    _set_ijk_to_ras(volume, rotation @ _ijk_to_ras(volume))
    center = (rotation @ np.r_[roi.GetCenter(), 1.0])[:3]
    size = np.array(roi.GetSize())
    rotated = _roi(center, size, "rotated", rotation=rotation[:3, :3])
    segmentation = _segmentation()
    segment_id = logic.segment(volume, rotated, segmentation, preset="brain")
    np.testing.assert_array_equal(_result(segmentation, segment_id, volume), base["result"])


def test_2d_roi_replaces_only_its_slice_and_other_segments_are_untouched(base, logic):
    volume, reference = base["volume"], base["reference"]
    before = slicer.util.arrayFromVolume(volume).copy()
    segmentation = _segmentation()
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    other = segmentation.GetSegmentation().AddEmptySegment("", "other")
    other_mask = np.zeros(before.shape, np.uint8)
    other_mask[6, 20:40, 20:40] = 1  # overlaps the brain: must survive
    slicer.util.updateSegmentBinaryLabelmapFromArray(other_mask, segmentation, other, volume)
    target = segmentation.GetSegmentation().AddEmptySegment("", "target")
    earlier = np.zeros(before.shape, np.uint8)
    earlier[2, 10:20, 10:20] = earlier[6, 0:5, 0:5] = 1
    slicer.util.updateSegmentBinaryLabelmapFromArray(earlier, segmentation, target, volume)
    roi = _brain_roi(volume, reference, slice(6, 7))
    roi.SetSize(roi.GetSize()[0], roi.GetSize()[1], 0.0)  # one slice thick -> 2D
    assert logic.segment(volume, roi, segmentation, preset="brain", segmentId=target) == target
    result = _result(segmentation, target, volume)
    np.testing.assert_array_equal(result[2], earlier[2] > 0)  # another slice of the segment: kept
    assert not result[6, 0:5, 0:5].any()  # the segmented slice: replaced
    assert _dice(result[6], reference[6]) > 0.75
    assert "2D" in logic.lastStatus
    np.testing.assert_array_equal(_result(segmentation, other, volume), other_mask > 0)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(volume), before)
    assert segmentation.GetSegmentation().GetNumberOfSegments() == 2


def test_rgb_and_rgba_2d_images(scene, logic):
    """RGB images are used as they are; RGBA ones lose their alpha (a varying alpha must not matter)."""
    from MedSAMLiteLib.headless.samples import coins_case

    case = coins_case()
    rgb = np.repeat(case["imgs"][None, :, :, None], 3, axis=-1)  # (1, H, W, 3)
    alpha = np.random.default_rng(0).integers(0, 256, rgb.shape[:3] + (1,), dtype=np.uint8)
    label = 5
    x0, y0, x1, y1 = case["boxes"][label - 1]
    results = []
    for pixels in (rgb, np.concatenate([rgb, alpha], axis=-1)):
        volume = slicer.util.addVolumeFromArray(pixels, nodeClassName="vtkMRMLVectorVolumeNode")
        ijk_to_ras = _ijk_to_ras(volume)
        corners = (ijk_to_ras @ np.array([[x0, y0, 0, 1.0], [x1, y1, 0, 1.0]]).T).T[:, :3]
        roi = _roi(corners.mean(axis=0), np.abs(corners[1] - corners[0]) + [0, 0, 0])
        segmentation = _segmentation()
        segment_id = logic.segment(volume, roi, segmentation)
        results.append(_result(segmentation, segment_id, volume)[0])
    assert _dice(results[0], case["gts"] == label) > 0.85
    np.testing.assert_array_equal(results[1], results[0])
    assert "MedSAMLite litemedsam" == segmentation.GetSegmentation().GetSegment(segment_id).GetName()


def test_a_constant_volume_with_a_zero_window_is_no_error(scene, logic):
    volume = slicer.util.addVolumeFromArray(np.full((4, 40, 40), 70, np.int16))
    volume.CreateDefaultDisplayNodes()
    display = volume.GetDisplayNode()
    display.AutoWindowLevelOff()
    display.SetWindowLevel(0.0, 70.0)
    assert display.GetWindow() == 0.0
    roi = _roi([20.0, 20.0, 1.0], [20.0, 20.0, 0.0])
    segmentation = _segmentation()
    segment_id = logic.segment(volume, roi, segmentation)  # auto preset: the display window
    assert segmentation.GetSegmentation().GetSegment(segment_id) is not None
    assert "2D" in logic.lastStatus


def test_bad_inputs_give_one_line_errors_and_change_nothing(base, logic):
    volume, roi = base["volume"], base["roi"]
    segmentation = _segmentation()
    errors = MODULE.InputError

    def fails(match, *args, **kwargs):
        with pytest.raises(errors, match=match) as info:
            logic.segment(*args, **kwargs)
        assert "\n" not in str(info.value)

    fails("scalar volume", None, roi, segmentation)
    fails("labelmap", _load("TestReference", True), roi, segmentation)
    fails("ROI box", volume, None, segmentation)
    fails("ROI box", volume, volume, segmentation)
    fails("segmentation", volume, roi, None)
    fails("not in segmentation", volume, roi, segmentation, segmentId="nope")
    fails("unknown preset", volume, roi, segmentation, preset="bright")
    fails("outside the volume", volume, _roi([9000.0, 0, 0], [10, 10, 10]), segmentation)
    fails("empty", volume, _roi(roi.GetCenter(), [0, 0, 0]), segmentation)
    two = slicer.util.addVolumeFromArray(np.zeros((3, 10, 10, 2), np.uint8), nodeClassName="vtkMRMLVectorVolumeNode")
    fails("4D or multi-channel", two, roi, segmentation)
    series = vtk.vtkImageData()  # a 4D series loaded as a multi-component scalar volume
    series.SetDimensions(10, 10, 3)
    series.AllocateScalars(vtk.VTK_SHORT, 6)
    frames = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "series")
    frames.SetAndObserveImageData(series)
    fails("4D or multi-channel", frames, roi, segmentation)
    assert segmentation.GetSegmentation().GetNumberOfSegments() == 0


def test_only_a_box_on_a_view_counts_specks_as_vanished(scene, monkeypatch):
    """An ROI bounds its object: its 3D run stops on empty masks only (a tapering structure's small last
    slices are kept going); a box dragged on a view is bounded by nothing, so a speck counts as vanished."""
    volume, reference = _load("TestVolume"), slicer.util.arrayFromVolume(_load("TestReference", True)).copy() > 0
    logic = MODULE.MedSAMLiteLogic()
    sent = []

    class Recorder:
        def submit(self, op, **kwargs):
            sent.append((op, kwargs))

    monkeypatch.setattr(MODULE.MedSAMLiteLogic, "engine", staticmethod(lambda: Recorder()))
    monkeypatch.setattr(MODULE.MedSAMLiteLogic, "_upload", lambda self, job: None)
    logic.run(logic.prepare(volume, _brain_roi(volume, reference, slice(4, 9)), _segmentation(), mode="3d"))
    slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(slicer.mrmlScene)
    view = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSliceNode")
    view.SetDimensions(256, 256, 1)
    assert view.SetOrientation("Axial")
    bounds = [0.0] * 6
    volume.GetRASBounds(bounds)
    centre = [(bounds[2 * i] + bounds[2 * i + 1]) / 2 for i in range(3)]
    view.SetSliceOffset(centre[2])
    view.UpdateMatrices()
    corner1, corner2 = [centre[0] - 20, centre[1] - 20, centre[2]], [centre[0] + 20, centre[1] + 20, centre[2]]
    logic.run(logic.prepareBoxOnSlice(volume, view, corner1, corner2, mode="3d", needSegmentation=False))
    assert [(op, kwargs["vanishing"]) for op, kwargs in sent] == [("segment", False), ("segment", True)]

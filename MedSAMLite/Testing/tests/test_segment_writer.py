"""SegmentWriter on real MRML (slicer-core): writes change only the extent given, other segments and
voxels outside stay exactly as they were, transforms and other segmentation grids map voxel for voxel,
restore/undo put back every touched segment, the Segment Editor's masking applies inside the extent.
Expected values are numpy arrays built by hand and read back through Slicer's own exporter."""
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import harness  # noqa: E402

harness.install()
import slicer  # noqa: E402
import vtk  # noqa: E402
from MedSAMLiteLib.mrml.segments import SegmentWriteError, SegmentWriter  # noqa: E402

SHAPE = (12, 30, 40)  # k, j, i


@pytest.fixture
def scene():
    return harness.new_scene()


def _volume(values=None, ijk_to_ras=None):
    volume = slicer.util.addVolumeFromArray(np.zeros(SHAPE, np.int16) if values is None else values)
    if ijk_to_ras is not None:
        volume.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(ijk_to_ras))
    return volume


def _segmentation(volume, **masks):
    """A segmentation on the volume's grid whose segments (name -> (k, j, i) mask) share one layer."""
    segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    labels = np.zeros(SHAPE, np.uint8)
    for value, mask in enumerate(masks.values(), start=1):
        labels[(mask > 0) & (labels == 0)] = value
    if masks:
        labelmap = slicer.modules.volumes.logic().CreateAndAddLabelVolume(slicer.mrmlScene, volume, "labels")
        slicer.util.updateVolumeFromArray(labelmap, labels)
        assert slicer.modules.segmentations.logic().ImportLabelmapToSegmentationNode(labelmap, segmentation)
        slicer.mrmlScene.RemoveNode(labelmap)
    ids = segmentation.GetSegmentation().GetSegmentIDs()
    return segmentation, dict(zip(masks, ids))


def _read(segmentation, segment_id, volume):
    return slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, segment_id, volume) > 0


def _box(k, j, i):
    mask = np.zeros(SHAPE, bool)
    mask[k, j, i] = True
    return mask


def _write(writer, mask, k0, k1):
    """Write the slices k0..k1 of a whole-volume mask, as the Logic does (a crop of whole slices)."""
    writer.write((0, SHAPE[2] - 1, 0, SHAPE[1] - 1, k0, k1), mask[k0:k1 + 1].astype(np.uint8))


def test_an_extent_write_changes_only_that_extent(scene):
    volume = _volume()
    target = _box(slice(2, 10), slice(5, 20), slice(5, 30))
    other = _box(slice(0, 12), slice(22, 25), slice(0, 40))  # the same layer, next to the target
    segmentation, ids = _segmentation(volume, target=target, other=other)
    assert segmentation.GetSegmentation().GetNumberOfLayers() == 1
    new = _box(slice(0, 12), slice(10, 14), slice(10, 14))
    writer = SegmentWriter(segmentation, ids["target"], volume)
    _write(writer, new, 4, 6)
    expected = target.copy()
    expected[4:7] = new[4:7]
    np.testing.assert_array_equal(_read(segmentation, ids["target"], volume), expected)
    np.testing.assert_array_equal(_read(segmentation, ids["other"], volume), other)
    writer.restore()
    np.testing.assert_array_equal(_read(segmentation, ids["target"], volume), target)
    np.testing.assert_array_equal(_read(segmentation, ids["other"], volume), other)


def test_a_new_segment_is_created_once_and_removed_by_restore(scene):
    volume = _volume()
    segmentation, _ = _segmentation(volume)
    writer = SegmentWriter(segmentation, None, volume, name="MedSAMLite test")
    new = _box(slice(3, 5), slice(2, 9), slice(4, 7))
    _write(writer, new, 3, 3)
    _write(writer, new, 3, 4)
    assert segmentation.GetSegmentation().GetNumberOfSegments() == 1
    assert segmentation.GetSegmentation().GetSegment(writer.segmentId).GetName() == "MedSAMLite test"
    np.testing.assert_array_equal(_read(segmentation, writer.segmentId, volume), new)
    writer.restore()
    assert segmentation.GetSegmentation().GetNumberOfSegments() == 0


def _transform(matrix):
    node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    node.SetMatrixTransformToParent(slicer.util.vtkMatrixFromArray(matrix))
    return node


def _exported(segmentation, segment_id, volume):
    """The segment on the volume's grid, through Slicer's exporter (transforms applied)."""
    labelmap = slicer.modules.volumes.logic().CreateAndAddLabelVolume(slicer.mrmlScene, volume, "check")
    labelmap.SetAndObserveTransformNodeID(volume.GetTransformNodeID())
    ids = vtk.vtkStringArray()
    ids.InsertNextValue(segment_id)
    assert slicer.modules.segmentations.logic().ExportSegmentsToLabelmapNode(segmentation, ids, labelmap, volume)
    return slicer.util.arrayFromVolume(labelmap) > 0


ROTATE_90 = np.array([[0, -1, 0, 12.0], [1, 0, 0, -7.0], [0, 0, 1, 3.0], [0, 0, 0, 1]])


@pytest.mark.parametrize("where", ["both_transformed", "volume_transformed", "segmentation_transformed"])
def test_voxels_land_on_the_volume_under_linear_transforms(scene, where):
    volume = _volume()
    segmentation, _ = _segmentation(volume)
    if where != "segmentation_transformed":
        volume.SetAndObserveTransformNodeID(_transform(ROTATE_90).GetID())
    if where != "volume_transformed":
        segmentation.SetAndObserveTransformNodeID(_transform(ROTATE_90 if where == "both_transformed" else np.linalg.inv(ROTATE_90)).GetID())
    writer = SegmentWriter(segmentation, None, volume)
    assert (writer.grid.offset is not None) == (where == "both_transformed")  # otherwise it resamples
    new = _box(slice(2, 9), slice(3, 11), slice(6, 15))
    _write(writer, new, 0, SHAPE[0] - 1)
    np.testing.assert_array_equal(_exported(segmentation, writer.segmentId, volume), new)
    assert writer.read(writer.segmentId, writer.grid.fromVolume((0, 39, 0, 29, 0, 11), new)[0]).sum() == new.sum()


def test_a_segmentation_on_another_grid_is_written_voxel_for_voxel(scene):
    """Its reference geometry is the volume's, 3 voxels off and half as long in i: no resampling needed."""
    volume = _volume()
    segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    ijk_to_ras = vtk.vtkMatrix4x4()
    volume.GetIJKToRASMatrix(ijk_to_ras)
    shifted = slicer.util.arrayFromVTKMatrix(ijk_to_ras) @ np.array([[1, 0, 0, 3.0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    geometry = slicer.vtkSegmentationConverter.SerializeImageGeometry(slicer.util.vtkMatrixFromArray(shifted), [0, 19, 0, 29, 0, 11])
    segmentation.GetSegmentation().SetConversionParameter(slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName(), geometry)
    writer = SegmentWriter(segmentation, None, volume)
    assert tuple(writer.grid.offset) == (-3, 0, 0)
    new = _box(slice(1, 4), slice(2, 6), slice(30, 38))  # outside the segmentation's extent: it grows
    _write(writer, new, 1, 3)
    np.testing.assert_array_equal(_exported(segmentation, writer.segmentId, volume), new)


def _warp():
    """A transform node holding a thin-plate spline (non-linear) transform."""
    warp = vtk.vtkThinPlateSplineTransform()
    source, target = vtk.vtkPoints(), vtk.vtkPoints()
    for p, q in (((0, 0, 0), (0, 0, 0)), ((50, 0, 0), (52, 1, 0)), ((0, 50, 0), (0, 50, 2)), ((0, 0, 50), (1, 0, 50))):
        source.InsertNextPoint(*p)
        target.InsertNextPoint(*q)
    warp.SetSourceLandmarks(source)
    warp.SetTargetLandmarks(target)
    node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLTransformNode")
    node.SetAndObserveTransformToParent(warp)
    return node


def test_a_non_linear_transform_is_refused_in_one_line(scene):
    volume = _volume()
    segmentation, _ = _segmentation(volume)
    volume.SetAndObserveTransformNodeID(_warp().GetID())
    with pytest.raises(SegmentWriteError, match="non-linear transform") as info:
        SegmentWriter(segmentation, None, volume)
    assert "\n" not in str(info.value)


def _editor(**settings):
    editor = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentEditorNode")
    editor.SetOverwriteMode(settings.get("overwrite", editor.OverwriteNone))
    editor.SetMaskMode(settings.get("mask", slicer.vtkMRMLSegmentationNode.EditAllowedEverywhere))
    if "range" in settings:
        editor.SetSourceVolumeIntensityMask(True)
        editor.SetSourceVolumeIntensityMaskRange(*settings["range"])
    return editor


@pytest.mark.parametrize("shared", [True, False], ids=["one_layer", "own_layers"])
def test_overwrite_mode_erases_others_and_restore_brings_them_back(scene, shared):
    volume = _volume()
    target = _box(slice(0, 2), slice(0, 5), slice(14, 18))
    left = _box(slice(0, 12), slice(0, 30), slice(0, 12))
    right = _box(slice(0, 12), slice(0, 30), slice(28, 40))
    segmentation, ids = _segmentation(volume, target=target, left=left, right=right)
    if not shared:
        segmentation.GetSegmentation().SeparateSegmentLabelmap(ids["left"])
    editor = _editor(overwrite=slicer.vtkMRMLSegmentEditorNode.OverwriteAllSegments)
    writer = SegmentWriter(segmentation, ids["target"], volume, editorNode=editor)
    new = _box(slice(0, 12), slice(10, 20), slice(5, 35))
    _write(writer, new, 4, 8)
    written = new.copy()
    written[:4] = written[9:] = False
    np.testing.assert_array_equal(_read(segmentation, ids["left"], volume), left & ~written)
    np.testing.assert_array_equal(_read(segmentation, ids["right"], volume), right & ~written)
    writer.restore()
    for name, mask in (("target", target), ("left", left), ("right", right)):
        np.testing.assert_array_equal(_read(segmentation, ids[name], volume), mask, err_msg=name)


def test_masking_applies_inside_the_written_slice_only(scene):
    values = np.zeros(SHAPE, np.int16)
    values[:, :, 20:] = 100  # the right half is in the intensity range, the left half not
    volume = _volume(values)
    target = _box(slice(0, 12), slice(0, 30), slice(0, 40))  # the whole volume: other slices must keep it
    blocker = _box(slice(0, 12), slice(0, 10), slice(0, 40))
    segmentation, ids = _segmentation(volume, blocker=blocker)
    t = segmentation.GetSegmentation().AddEmptySegment("", "target")
    slicer.util.updateSegmentBinaryLabelmapFromArray(target.astype(np.uint8), segmentation, t, volume)
    editor = _editor(range=(50, 150), mask=slicer.vtkMRMLSegmentationNode.EditAllowedOutsideAllSegments)
    writer = SegmentWriter(segmentation, t, volume, editorNode=editor)
    new = np.zeros(SHAPE, bool)  # the 2D result on slice 6: empty (the segment there would be cleared)
    _write(writer, new, 6, 6)
    result = _read(segmentation, t, volume)
    kept = ~((values[6] >= 50) & ~blocker[6])  # voxels the editor does not let the run change
    np.testing.assert_array_equal(result[6], kept)
    np.testing.assert_array_equal(np.delete(result, 6, axis=0), np.delete(target, 6, axis=0))
    np.testing.assert_array_equal(_read(segmentation, ids["blocker"], volume), blocker)


def test_undo_without_editor_or_scene_undo_and_refused_after_an_edit(scene):
    volume = _volume()
    target = _box(slice(1, 3), slice(1, 3), slice(1, 3))
    segmentation, ids = _segmentation(volume, target=target)
    assert not scene.GetUndoFlag()
    writer = SegmentWriter(segmentation, ids["target"], volume)
    _write(writer, _box(slice(0, 12), slice(5, 9), slice(5, 9)), 0, 11)
    writer.finish()
    assert scene.GetNumberOfUndoLevels() == 0
    assert writer.undo()
    np.testing.assert_array_equal(_read(segmentation, ids["target"], volume), target)
    assert not writer.undo(), "nothing left to undo"

    again = SegmentWriter(segmentation, ids["target"], volume)
    _write(again, _box(slice(0, 12), slice(5, 9), slice(5, 9)), 0, 11)
    again.finish()
    edited = _read(segmentation, ids["target"], volume)
    edited[7, 6, 6] = False  # the user erases a voxel the run wrote
    slicer.util.updateSegmentBinaryLabelmapFromArray(edited.astype(np.uint8), segmentation, ids["target"], volume)
    assert not again.undo()
    np.testing.assert_array_equal(_read(segmentation, ids["target"], volume), edited)


def test_undo_keeps_a_later_edit_elsewhere(scene):
    volume = _volume()
    segmentation, ids = _segmentation(volume, target=_box(1, 1, 1))
    writer = SegmentWriter(segmentation, ids["target"], volume)
    _write(writer, _box(slice(0, 12), slice(5, 9), slice(5, 9)), 0, 11)
    writer.finish()
    edited = _read(segmentation, ids["target"], volume)
    edited[7, 20:25, 20:25] = True  # painted after the run, away from what it changed
    slicer.util.updateSegmentBinaryLabelmapFromArray(edited.astype(np.uint8), segmentation, ids["target"], volume)
    assert writer.undo()
    np.testing.assert_array_equal(_read(segmentation, ids["target"], volume), _box(1, 1, 1) | _box(7, slice(20, 25), slice(20, 25)))


def test_the_undo_hook_is_called_once_per_run_before_the_first_change(scene):
    volume = _volume()
    segmentation, ids = _segmentation(volume, target=_box(1, 1, 1))
    seen = []
    writer = SegmentWriter(segmentation, ids["target"], volume, editorNode=_editor(),
                           undoHook=lambda: seen.append(_read(segmentation, ids["target"], volume).sum()))
    for k in range(3):
        _write(writer, _box(k, slice(2, 6), slice(2, 6)), k, k)
    assert seen == [1]


def test_scene_undo_when_the_user_turned_it_on_also_for_writes_in_place(scene):
    """The target's layer covers the written extent, so the write changes it in place: the scene's
    undo state must still hold the voxels from before."""
    volume = _volume()
    target = _box(slice(0, 12), slice(0, 30), slice(0, 40)) & ~_box(slice(0, 12), slice(10, 20), slice(10, 20))
    segmentation, ids = _segmentation(volume, target=target)
    scene.SetUndoOn()
    try:
        writer = SegmentWriter(segmentation, ids["target"], volume)
        assert writer._setInPlace(ids["target"], (0, 0, 0, 0, 0, 0), np.ones((1, 1, 1), bool))  # the path under test
        writer.write((0, 39, 0, 29, 5, 5), np.zeros((1, 30, 40), np.uint8))
        assert not _read(segmentation, ids["target"], volume)[5].any()
        scene.Undo()
        np.testing.assert_array_equal(_read(segmentation, ids["target"], volume), target)
        assert scene.GetNumberOfUndoLevels() == 0
    finally:
        scene.SetUndoOff()


def test_a_segment_stored_on_a_coarser_grid_is_read_and_written_through_resampling(scene):
    """The target was made on a volume with twice the spacing: its layer is on that grid, not on the
    segmentation's reference grid. Outside the written slices it must read as before; inside, the new voxels."""
    volume = _volume()
    coarse = slicer.util.addVolumeFromArray(np.zeros((6, 15, 20), np.int16))
    coarse.SetSpacing(2.0, 2.0, 2.0)
    coarse.SetOrigin(0.5, 0.5, 0.5)  # voxel centres of the coarse grid between fine voxels' edges
    segmentation, _ = _segmentation(volume)
    target = segmentation.GetSegmentation().AddEmptySegment("", "coarse")
    old = np.zeros((6, 15, 20), np.uint8)
    old[1:5, 2:12, 3:15] = 1
    slicer.util.updateSegmentBinaryLabelmapFromArray(old, segmentation, target, coarse)
    writer = SegmentWriter(segmentation, target, volume)
    layer = segmentation.GetSegmentation().GetSegment(target).GetRepresentation("Binary labelmap")
    assert not writer.grid.sameGeometry(layer)
    before = _read(segmentation, target, volume)
    assert before.any()
    np.testing.assert_array_equal(writer.read(target, (0, 39, 0, 29, 0, 11)), before)
    new = _box(slice(0, 12), slice(3, 7), slice(20, 30))
    _write(writer, new, 5, 6)
    expected = before.copy()
    expected[5:7] = new[5:7]
    np.testing.assert_array_equal(_read(segmentation, target, volume), expected)
    writer.restore()
    np.testing.assert_array_equal(_read(segmentation, target, volume), before)


def test_an_in_place_write_rebuilds_only_the_written_segments_3d_surface_and_marks_it_unsaved(scene, tmp_path):
    volume = _volume()
    target, other = _box(slice(2, 10), slice(2, 10), slice(2, 10)), _box(slice(2, 10), slice(15, 25), slice(20, 35))
    segmentation, ids = _segmentation(volume, target=target, other=other)
    assert segmentation.CreateClosedSurfaceRepresentation()
    surface = slicer.vtkSegmentationConverter.GetSegmentationClosedSurfaceRepresentationName()
    segments = segmentation.GetSegmentation()
    before_target, before_other = (segments.GetSegment(ids[n]).GetRepresentation(surface) for n in ("target", "other"))
    storage = segmentation.CreateDefaultStorageNode()
    scene.AddNode(storage)
    segmentation.SetAndObserveStorageNodeID(storage.GetID())
    storage.SetFileName(str(tmp_path / "saved.seg.nrrd"))
    assert storage.WriteData(segmentation) and not segmentation.GetModifiedSinceRead()
    writer = SegmentWriter(segmentation, ids["target"], volume)
    assert writer._setInPlace(ids["target"], (2, 2, 2, 2, 2, 2), np.ones((1, 1, 1), bool))  # the path under test
    _write(writer, _box(slice(0, 12), slice(4, 6), slice(4, 6)), 5, 5)  # slice 5 of the cube becomes a 2 x 2 square
    after_target = segments.GetSegment(ids["target"]).GetRepresentation(surface)
    assert after_target is not None and after_target is not before_target
    assert after_target.GetNumberOfPoints() != before_target.GetNumberOfPoints()
    assert segments.GetSegment(ids["other"]).GetRepresentation(surface) is before_other  # untouched, not rebuilt
    assert segmentation.GetModifiedSinceRead()  # Slicer will offer to save it


def test_the_logic_refuses_a_non_linear_transform_before_anything_runs(scene):
    module = harness.load_module()
    volume = _volume()
    roi = module.MedSAMLiteTest.roiAroundMask(_box(slice(3, 8), slice(5, 20), slice(5, 30)), volume)
    segmentation, _ = _segmentation(volume)
    segmentation.SetAndObserveTransformNodeID(_warp().GetID())
    logic = module.MedSAMLiteLogic()
    with pytest.raises(module.InputError, match="non-linear transform; harden it first$") as info:
        logic.startSegment(volume, roi, segmentation, preset="abdomen")
    assert "\n" not in str(info.value)
    assert segmentation.GetSegmentation().GetNumberOfSegments() == 0 and logic._running is None


def _paint(segmentation, segment_id, volume, where):
    """The user's later edit: `where` (k, j, i mask) added to the segment, as a brush would."""
    edited = _read(segmentation, segment_id, volume) | where
    slicer.util.updateSegmentBinaryLabelmapFromArray(edited.astype(np.uint8), segmentation, segment_id, volume)


@pytest.mark.parametrize("after", ["undo", "cancel"])
def test_a_created_segment_keeps_paint_added_outside_what_the_run_wrote(scene, after):
    """Paint added to the run's new segment after the run (then Undo) or during it (then Cancel)
    stays, in that segment; the run's voxels go."""
    volume = _volume()
    segmentation, _ = _segmentation(volume)
    writer = SegmentWriter(segmentation, None, volume)
    _write(writer, _box(slice(2, 5), slice(2, 8), slice(2, 8)), 0, 11)
    if after == "undo":
        writer.finish()
    paint = _box(9, slice(20, 25), slice(30, 35))  # far from the run's voxels
    _paint(segmentation, writer.segmentId, volume, paint)
    if after == "undo":
        assert writer.undo()
    else:
        writer.restore()
    assert segmentation.GetSegmentation().GetSegment(writer.segmentId) is not None, "the paint went with the segment"
    np.testing.assert_array_equal(_read(segmentation, writer.segmentId, volume), paint)


def test_undo_of_a_created_segment_left_empty_keeps_later_paint(scene):
    volume = _volume()
    segmentation, _ = _segmentation(volume)
    writer = SegmentWriter(segmentation, None, volume)
    _write(writer, np.zeros(SHAPE, bool), 0, 11)  # nothing found: the segment is created, empty
    writer.finish()
    paint = _box(3, slice(4, 9), slice(4, 9))
    _paint(segmentation, writer.segmentId, volume, paint)
    assert writer.undo()
    np.testing.assert_array_equal(_read(segmentation, writer.segmentId, volume), paint)


def test_undo_of_a_created_segment_nobody_edited_removes_it(scene):
    volume = _volume()
    segmentation, _ = _segmentation(volume)
    writer = SegmentWriter(segmentation, None, volume)
    _write(writer, _box(slice(2, 5), slice(2, 8), slice(2, 8)), 0, 11)
    writer.finish()
    assert writer.undo()
    assert segmentation.GetSegmentation().GetNumberOfSegments() == 0


def test_undo_keeps_an_edit_between_the_voxels_the_run_wrote(scene):
    """The run wrote two far-apart boxes (one extent spans both): an edit between them, on voxels the
    run left alone, is kept and the run's voxels are taken back."""
    volume = _volume()
    segmentation, ids = _segmentation(volume, target=_box(0, 0, 0))
    writer = SegmentWriter(segmentation, ids["target"], volume)
    run = _box(slice(1, 3), slice(1, 4), slice(1, 4)) | _box(slice(9, 11), slice(25, 28), slice(35, 38))
    _write(writer, run, 0, 11)
    writer.finish()
    paint = _box(6, slice(12, 16), slice(15, 20))
    _paint(segmentation, ids["target"], volume, paint)
    assert writer.undo()
    np.testing.assert_array_equal(_read(segmentation, ids["target"], volume), _box(0, 0, 0) | paint)

"""Screenshots/MedSAMLite-SegmentEditor.png: the Segment Editor effect's options after a box dragged on a
sagittal slice of the MNI152 T1, next to that slice with the box and the preview.

Not a Slicer screenshot: the options are the effect's own widgets built by the test harness (PySide6
offscreen, Testing/segment_editor.py), driven as in test_effect.py (the drag goes through the Yellow
view's slice node); the right half is the slice drawn from the volume's voxels with the preview written
by that run. Run: `python MedSAMLite/Testing/make_effect_screenshot.py`.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
import pythonqt  # noqa: E402
import segment_editor  # noqa: E402
import slicer_app  # noqa: E402
from make_screenshot import side_by_side  # noqa: E402

OUT = harness.MODULE_DIR.parent / "Screenshots" / "MedSAMLite-SegmentEditor.png"
SCALE = 3
SLICE, BOX = 98, (134, 108, 185, 165)  # sagittal x = 0 mm; the cerebellum (column, row)


def main() -> None:
    slicer_app.install()
    import slicer
    from MedSAMLiteLib.headless.samples import mni152_paths

    panel = slicer_app.open_module()
    panel.self().logic.getParameterNode().SetParameter("Preset", "mr")
    volume = slicer.modules.volumes.logic().AddArchetypeVolume(str(mni152_paths()["t1"]), "MNI152 T1", 0, None)
    segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Segmentation")
    segmentation.CreateDefaultDisplayNodes()
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    segmentation.GetSegmentation().AddEmptySegment("cerebellum", "cerebellum", (0.9, 0.55, 0.1))
    editor = segment_editor.qMRMLSegmentEditorWidget()
    editor.setMRMLScene(slicer.mrmlScene)
    editor.setMRMLSegmentEditorNode(slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentEditorNode"))
    editor.setSegmentationNode(segmentation)
    editor.setSourceVolumeNode(volume)
    editor.setCurrentSegmentID("cerebellum")
    editor.setActiveEffectByName("MedSAMLite")
    effect = editor.activeEffect().self()

    view = slicer.app.layoutManager().sliceWidget("Yellow").mrmlSliceNode()
    slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(slicer.mrmlScene)
    presets = slicer.mrmlScene.CreateNodeByClass("vtkMRMLSliceNode")  # Slicer's presets, as a new view gets them
    view.AddSliceOrientationPreset("Sagittal", presets.GetSliceOrientationPreset("Sagittal"))
    view.SetOrientation("Sagittal")
    view.SetDimensions(700, 570, 1)
    view.SetFieldOfView(233.0, 190.0, 1.0)
    ijk_to_ras = slicer.util.arrayFromVTKMatrix(_matrix(volume))
    shape = slicer.util.arrayFromVolume(volume).shape[::-1]  # (i, j, k)
    corners = [(ijk_to_ras @ [SLICE, shape[1] - 1 - x, shape[2] - 1 - y, 1.0])[:3] for x, y in (BOX[:2], BOX[2:])]
    view.JumpSliceByCentering(*((corners[0] + corners[1]) / 2))
    view.UpdateMatrices()
    xy_to_ras = slicer.util.arrayFromVTKMatrix(view.GetXYToRAS())
    xys = [np.linalg.solve(xy_to_ras, [*c, 1.0])[:2].round().astype(int) for c in corners]
    segment_editor.drag(editor, "Yellow", tuple(xys[0]), tuple(xys[1]))
    pythonqt.run_until(lambda: effect.run is None, 300)
    assert effect.preview is not None and not pythonqt.take_errors(), effect.statusLabel.text
    shown = slicer.util.arrayFromSegmentBinaryLabelmap(effect.previewNode, "preview", volume) > 0
    frame = editor.activeEffect().optionsFrame()
    frame.resize(420, 300)
    pythonqt.run_for(0.2)
    left = frame.grab().toImage()

    # the sagittal slice as the Yellow view shows it: rows superior -> inferior, columns anterior -> posterior
    t1 = slicer.util.arrayFromVolume(volume)[:, :, SLICE].astype(float)[::-1, ::-1]  # (k, j) flipped
    grey = np.clip(t1 / np.percentile(t1[t1 > 0], 99.5) * 255, 0, 255).astype(np.uint8)
    side_by_side(left, grey, shown[:, :, SLICE][::-1, ::-1], BOX,
                 "MNI152 T1, sagittal x = 0 mm: the dragged box (yellow), the preview (orange)", SCALE, OUT, f": {effect.statusLabel.text}")


def _matrix(volume):
    import vtk

    m = vtk.vtkMatrix4x4()
    volume.GetIJKToRASMatrix(m)
    return m


if __name__ == "__main__":
    main()

"""Screenshots/MedSAMLite-1.png: the real panel after a real Segment, next to the result on the CT.

Not a Slicer screenshot: the panel is MedSAMLite's own widget and .ui built by the test harness
(PySide6 offscreen; the qMRML/ctk widgets are the harness's stand-ins, so they look plainer than in
Slicer), driven as in test_panel.py; the right half is the middle slice of the test CT with the ROI box
and the LiteMedSAM segment written by that run. Run: `python MedSAMLite/Testing/make_screenshot.py`.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
import pythonqt  # noqa: E402
import slicer_app  # noqa: E402

OUT = harness.MODULE_DIR.parent / "Screenshots" / "MedSAMLite-1.png"
SCALE = 6


def main() -> None:
    slicer_app.install()
    import slicer
    panel = slicer_app.open_module()
    gui = panel.self()
    data = harness.MODULE_DIR / "Resources" / "TestData"
    volume = slicer.modules.volumes.logic().AddArchetypeVolume(str(data / "MedSAMLiteTestVolume.nrrd"), "CT", 0, None)
    reference = slicer.modules.volumes.logic().AddArchetypeVolume(str(data / "MedSAMLiteTestReference.nrrd"), "ref", 1, None)
    mask = slicer.util.arrayFromVolume(reference) > 0
    slicer.mrmlScene.RemoveNode(reference)
    roi = sys.modules["MedSAMLite"].MedSAMLiteTest.roiAroundMask(mask, volume, "brain box")
    segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Segmentation")
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    pythonqt.process_events()
    gui.ui.volumeSelector._user_select(volume)
    gui.ui.roiSelector._user_select(roi)
    gui.ui.segmentationSelector._user_select(segmentation)
    gui.ui.presetComboBox.setCurrentIndex(gui.ui.presetComboBox.findData("brain"))
    gui.ui.segmentButton.click()
    pythonqt.run_until(lambda: gui.run is None, 300)
    assert not pythonqt.take_errors()
    segment = segmentation.GetSegmentation().GetNthSegmentID(0)
    result = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, segment, volume) > 0
    gui.parent.resize(400, 640)
    pythonqt.run_for(0.2)
    left = gui.parent.grab().toImage()

    # the middle slice (k) of the CT at W80/L40, the segment in orange, the ROI box in yellow
    k = int(np.flatnonzero(result.any(axis=(1, 2))).mean().round())
    ct = slicer.util.arrayFromVolume(volume)[k].astype(float)
    grey = np.clip((ct - (40 - 40)) / 80 * 255, 0, 255).astype(np.uint8)
    j, i = np.flatnonzero(mask[k].any(axis=1)), np.flatnonzero(mask[k].any(axis=0))
    side_by_side(left, grey, result[k], (i[0], j[0], i[-1], j[-1]), f"test CT, slice {k}: ROI (yellow), segment (orange)", SCALE)


def side_by_side(left, grey, mask, box, caption, scale, out=OUT, note=""):
    """Save `out`: the widget image `left` beside a slice (`grey`, uint8 rows x columns) with `mask` in
    orange, `box` (x0, y0, x1, y1, inclusive pixels) in yellow and a caption."""
    QtCore, QtGui = pythonqt.QtCore, pythonqt.QtGui

    rgb = np.repeat(grey[..., None], 3, axis=2)
    rgb[mask] = (0.5 * rgb[mask] + 0.5 * np.array([255, 140, 0])).astype(np.uint8)
    rgb = np.ascontiguousarray(np.kron(rgb, np.ones((scale, scale, 1), np.uint8)))
    image = QtGui.QImage(rgb.data, rgb.shape[1], rgb.shape[0], rgb.shape[1] * 3, QtGui.QImage.Format_RGB888).copy()
    canvas = QtGui.QImage(left.width() + image.width() + 10, max(left.height(), image.height()), QtGui.QImage.Format_RGB888)
    canvas.fill(QtGui.QColor(40, 40, 40))
    painter = QtGui.QPainter(canvas)
    painter.drawImage(0, 0, left)
    painter.drawImage(left.width() + 10, 0, image)
    painter.setPen(QtGui.QPen(QtGui.QColor(255, 230, 0), 2))
    x0, y0, x1, y1 = (int(v) for v in box)
    painter.drawRect(QtCore.QRect(left.width() + 10 + x0 * scale, y0 * scale, (x1 - x0 + 1) * scale, (y1 - y0 + 1) * scale))
    painter.setPen(QtGui.QColor(255, 255, 255))
    painter.drawText(left.width() + 16, image.height() - 8, caption)
    painter.end()
    out.parent.mkdir(exist_ok=True)
    tmp = out.with_suffix(".tmp.png")
    assert canvas.save(str(tmp))
    tmp.replace(out)
    print(f"{out} ({out.stat().st_size} bytes, {time.strftime('%Y-%m-%d')}){note}")


if __name__ == "__main__":
    main()

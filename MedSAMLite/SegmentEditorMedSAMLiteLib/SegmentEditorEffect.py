"""MedSAMLite in the Segment Editor: drag a box on a slice view, see the result, Apply it through the editor.

The MedSAMLite module registers this effect at start-up (Slicer's effect template does the same). Left-drag
a box in any slice view (axial, sagittal, coronal, or oblique within 20 degrees of a voxel axis): the
engine segments the slice the view shows (MedSAMLiteLogic.startBoxOnSlice) and the result appears as a
preview; Propagate runs 3D from that box along the view's normal; a box on another slice of that view
(same segment) is then a key slice of the propagated object, as the module's Corrections; Esc cancels;
Apply writes the preview into the selected segment with the editor's own `modifySelectedSegmentByLabelmap`, so its masking
(editable area, intensity range, overwrite other segments) and its undo apply as for Slicer's effects:
one Apply is one undo step. The options are the module's (its parameter node): backend, preset, zoom,
mode, and Apply automatically. Slicer's main thread never waits for the engine: a timer polls it.
"""
import os

import MedSAMLite
import numpy as np
import qt
import slicer
import vtk
from MedSAMLiteLib import one_line
from MedSAMLiteLib.mrml.inputs import InputError
from SegmentEditorEffects import AbstractScriptedSegmentEditorEffect

MIN_DRAG_PIXELS = 4  # a shorter drag is a click, not a box
MODE_LABELS = {"2d": "2D: the slice in the view", "3d": "3D: propagate along the view's normal"}


class SegmentEditorEffect(AbstractScriptedSegmentEditorEffect):
    """Box -> preview -> Apply. State: `drag` (view, start xy) while the button is down, `run` while the
    engine works, `preview` ((extent, voxels) in the source volume's IJK, its box) until Apply or Esc, and
    `object`: the finished 3D run the preview shows (its key slices), to which the next box on its view adds
    a key slice while the segment selected when it began (`objectSegmentId`) is still selected."""

    POLL_MS = 100

    def __init__(self, scriptedEffect):
        scriptedEffect.name = "MedSAMLite"  # no translation: modules find effects by name
        scriptedEffect.perSegment = True
        scriptedEffect.requireSegments = True
        AbstractScriptedSegmentEditorEffect.__init__(self, scriptedEffect)
        self.logic = MedSAMLite.MedSAMLiteLogic()
        self.drag = None
        self.run = None
        self.box = None  # (slice node, RAS corner 1, RAS corner 2, volume node) of the last box
        self.preview = None
        self.object = None
        self.objectSegmentId = None
        self.previewNode = None
        self.rubberBands = {}  # view widget -> (points, actor)
        self.pollTimer = qt.QTimer()
        self.pollTimer.setInterval(self.POLL_MS)
        self.pollTimer.connect("timeout()", self.onPoll)
        self._parameterObserver = None

    def clone(self):
        import qSlicerSegmentationsEditorEffectsPythonQt as effects

        clonedEffect = effects.qSlicerSegmentEditorScriptedEffect(None)
        clonedEffect.setPythonSource(__file__.replace("\\", "/"))
        return clonedEffect

    def icon(self):
        path = os.path.join(os.path.dirname(__file__), "..", "Resources", "Icons", "MedSAMLite.png")
        return qt.QIcon(path) if os.path.exists(path) else qt.QIcon()

    def helpText(self):
        return ("<html>Promptable segmentation (LiteMedSAM and others, on the CPU).<p><ul style='margin: 0'>"
                "<li><b>Left-drag</b> a box around a structure in a slice view (axial, sagittal or coronal): the "
                "result on that slice appears as a preview.<li><b>Propagate</b>: 3D from that box along the view's "
                "normal, each way until <i>Stop after empty slices</i> masks in a row have vanished (under 20 % of the "
                "largest, or 10 pixels; they keep their masks).<li>Then a <b>box on another slice</b> of that view adds a key slice to the 3D result (a box on a key "
                "slice replaces it); the slices it governs are segmented again. A box in a view along another axis, for "
                "another segment, with other options, or after Apply or Esc starts a new structure.<li><b>Apply</b>: into the selected segment, with the editor's masking and overwrite "
                "settings; Undo takes it back.<li><b>Esc</b>: cancel the preview.</ul></html>")

    # -- the options panel -------------------------------------------------------------------------------
    def setupOptionsFrame(self):
        self.backendComboBox = qt.QComboBox()
        self.presetComboBox = qt.QComboBox()
        for name, label in MedSAMLite.PRESET_LABELS.items():
            self.presetComboBox.addItem(label, name)
        self.modeComboBox = qt.QComboBox()
        for name, label in MODE_LABELS.items():
            self.modeComboBox.addItem(label, name)
        self.zoomCheckBox = qt.QCheckBox("Zoom into small boxes")
        self.applyAutomaticallyCheckBox = qt.QCheckBox("Apply automatically")
        self.applyAutomaticallyCheckBox.toolTip = "Write each result into the segment at once (no preview)"
        self.scriptedEffect.addLabeledOptionsWidget("Backend:", self.backendComboBox)
        self.scriptedEffect.addLabeledOptionsWidget("Preset:", self.presetComboBox)
        self.scriptedEffect.addLabeledOptionsWidget("Mode:", self.modeComboBox)
        self.scriptedEffect.addOptionsWidget(self.zoomCheckBox)
        self.scriptedEffect.addOptionsWidget(self.applyAutomaticallyCheckBox)
        buttons = qt.QHBoxLayout()
        self.propagateButton = qt.QPushButton("Propagate")
        self.propagateButton.toolTip = "Segment in 3D from the last box, slice to slice along the view's normal"
        self.applyButton = qt.QPushButton("Apply")
        self.applyButton.toolTip = "Write the preview into the selected segment (one undo step)"
        self.cancelButton = qt.QPushButton("Cancel")
        self.cancelButton.toolTip = "Drop the preview or stop the running segmentation (Esc)"
        for button in (self.propagateButton, self.applyButton, self.cancelButton):
            buttons.addWidget(button)
        self.scriptedEffect.addOptionsWidget(buttons)
        self.statusLabel = qt.QLabel("Drag a box around a structure in a slice view.")
        self.statusLabel.wordWrap = True
        self.scriptedEffect.addOptionsWidget(self.statusLabel)

        for combo in (self.backendComboBox, self.presetComboBox, self.modeComboBox):
            combo.connect("currentIndexChanged(int)", self.updateMRMLFromGUI)
        for box in (self.zoomCheckBox, self.applyAutomaticallyCheckBox):
            box.connect("toggled(bool)", self.updateMRMLFromGUI)
        self.propagateButton.connect("clicked(bool)", self.onPropagate)
        self.applyButton.connect("clicked(bool)", self.onApply)
        self.cancelButton.connect("clicked(bool)", self.cancel)

    def parameterNode(self):
        """The MedSAMLite module's parameter node: the module panel and this effect share its options."""
        node = self.logic.getParameterNode()
        self.logic.setDefaultParameters(node)
        return node

    def refreshBackends(self):
        """The backends with their states (ready, will download, needs a checkpoint), as in the module panel."""
        wasBlocked = self.backendComboBox.blockSignals(True)
        self.backendComboBox.clear()
        for name, (title, status) in self.logic.backendStates().items():
            self.backendComboBox.addItem(f"{title} ({status})", name)
        self.backendComboBox.blockSignals(wasBlocked)

    def activate(self):
        self.refreshBackends()
        node = self.parameterNode()
        self._parameterObserver = (node, node.AddObserver(vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified))
        self.updateGUIFromMRML()

    def deactivate(self):
        self.cancel()
        if self._parameterObserver is not None:
            node, tag = self._parameterObserver
            node.RemoveObserver(tag)
            self._parameterObserver = None
        for view in list(self.rubberBands):
            self.scriptedEffect.removeActor2D(view, self.rubberBands.pop(view)[1])

    def onParameterNodeModified(self, caller=None, event=None):
        self.updateGUIFromMRML()

    _updatingGUI = False

    def updateGUIFromMRML(self):
        node = self.parameterNode()
        self._updatingGUI = True
        try:
            for combo, key in ((self.backendComboBox, "Backend"), (self.presetComboBox, "Preset"), (self.modeComboBox, "Mode")):
                index = combo.findData(node.GetParameter(key))
                wasBlocked = combo.blockSignals(True)
                combo.currentIndex = index if index >= 0 else 0
                combo.blockSignals(wasBlocked)
            for box, key in ((self.zoomCheckBox, "Zoom"), (self.applyAutomaticallyCheckBox, "ApplyAutomatically")):
                wasBlocked = box.blockSignals(True)
                box.checked = node.GetParameter(key) == "true"
                box.blockSignals(wasBlocked)
        finally:
            self._updatingGUI = False
        self.updateButtons()

    def updateMRMLFromGUI(self, *args):
        if self._updatingGUI:
            return
        node = self.parameterNode()
        wasModifying = node.StartModify()
        try:
            node.SetParameter("Backend", self.backendComboBox.currentData or MedSAMLite.DEFAULT_BACKEND)
            node.SetParameter("Preset", self.presetComboBox.currentData or "auto")
            # the module's Mode is auto/2d/3d (by ROI thickness, current slice, through the ROI): a box is one
            # slice, so anything but "3d" is 2D here, and choosing 2D keeps the module's auto or 2d
            if self.modeComboBox.currentData == "3d":
                node.SetParameter("Mode", "3d")
            elif node.GetParameter("Mode") == "3d":
                node.SetParameter("Mode", "auto")
            node.SetParameter("Zoom", "true" if self.zoomCheckBox.checked else "false")
            node.SetParameter("ApplyAutomatically", "true" if self.applyAutomaticallyCheckBox.checked else "false")
        finally:
            node.EndModify(wasModifying)

    def updateButtons(self):
        self.propagateButton.enabled = self.box is not None and self.run is None and self.object is None
        self.applyButton.enabled = self.preview is not None and self.run is None
        self.cancelButton.enabled = self.preview is not None or self.run is not None

    # -- mouse and keys in the views ---------------------------------------------------------------------
    def processInteractionEvents(self, callerInteractor, eventId, viewWidget):
        """Left-drag draws the box (the view neither pans nor changes window/level meanwhile); Esc cancels."""
        if viewWidget.className() != "qMRMLSliceWidget":
            return False
        if eventId == vtk.vtkCommand.KeyPressEvent:
            if callerInteractor.GetKeySym() == "Escape" and (self.drag or self.run or self.preview):
                self.cancel()
                return True
            return False
        modified = callerInteractor.GetShiftKey() or callerInteractor.GetControlKey() or callerInteractor.GetAltKey()
        xy = tuple(callerInteractor.GetEventPosition())
        if eventId == vtk.vtkCommand.LeftButtonPressEvent and not modified:
            self.drag = (viewWidget, xy)
            self.showRubberBand(viewWidget, xy, xy)
            return True
        if self.drag is None or self.drag[0] is not viewWidget:
            return False
        if eventId == vtk.vtkCommand.MouseMoveEvent:
            self.showRubberBand(viewWidget, self.drag[1], xy)
            return True
        if eventId == vtk.vtkCommand.LeftButtonReleaseEvent:
            start = self.drag[1]
            self.drag = None
            self.hideRubberBand(viewWidget)
            if max(abs(xy[0] - start[0]), abs(xy[1] - start[1])) >= MIN_DRAG_PIXELS:
                self.startBox(viewWidget.mrmlSliceNode(), self.xyToRas(start, viewWidget), self.xyToRas(xy, viewWidget))
            return True
        return False

    def showRubberBand(self, viewWidget, xy1, xy2):
        if viewWidget not in self.rubberBands:
            points = vtk.vtkPoints()
            points.SetNumberOfPoints(5)
            lines = vtk.vtkCellArray()
            lines.InsertNextCell(5)
            for i in range(5):
                lines.InsertCellPoint(i)
            polyData = vtk.vtkPolyData()
            polyData.SetPoints(points)
            polyData.SetLines(lines)
            mapper = vtk.vtkPolyDataMapper2D()
            mapper.SetInputData(polyData)
            actor = vtk.vtkActor2D()
            actor.SetMapper(mapper)
            actor.GetProperty().SetColor(1.0, 1.0, 0.0)
            self.scriptedEffect.addActor2D(viewWidget, actor)
            self.rubberBands[viewWidget] = (points, actor)
        points, actor = self.rubberBands[viewWidget]
        for i, (x, y) in enumerate(((xy1[0], xy1[1]), (xy2[0], xy1[1]), (xy2[0], xy2[1]), (xy1[0], xy2[1]), (xy1[0], xy1[1]))):
            points.SetPoint(i, x, y, 0.0)
        points.Modified()
        actor.VisibilityOn()
        self.scriptedEffect.scheduleRender(viewWidget)

    def hideRubberBand(self, viewWidget):
        if viewWidget in self.rubberBands:
            self.rubberBands[viewWidget][1].VisibilityOff()
            self.scriptedEffect.scheduleRender(viewWidget)

    # -- computing (the engine, polled) ------------------------------------------------------------------
    def startBox(self, sliceNode, rasCorner1, rasCorner2, mode=None):
        """Segment the box on the view's slice (or propagate from it: `mode` "3d"). While a propagated preview
        of the selected segment is shown, the Logic makes a box on its view a key slice of it and the preview
        stays until the corrected object replaces it; any other box starts a new object and the previous
        preview goes (Apply keeps a result). A refused box changes nothing; its reason is the status line."""
        node, editorNode = self.parameterNode(), self.scriptedEffect.parameterSetNode()
        mode = mode or ("3d" if node.GetParameter("Mode") == "3d" else "2d")
        volume, segmentId = editorNode.GetSourceVolumeNode(), editorNode.GetSelectedSegmentID()
        self.stopRun()
        try:
            preset = node.GetParameter("Preset")
            run = self.logic.startBoxOnSlice(
                volume, sliceNode, rasCorner1, rasCorner2, mode=mode, backend=node.GetParameter("Backend") or MedSAMLite.DEFAULT_BACKEND,
                preset=None if preset in ("", "auto") else preset, zoom=node.GetParameter("Zoom") == "true",
                emptySliceLimit=int(node.GetParameter("EmptySliceLimit") or MedSAMLite.DEFAULT_EMPTY_SLICE_LIMIT),
                previous=self.object if segmentId == self.objectSegmentId else None)
        except InputError as e:
            self.setStatus(f"Not segmented: {one_line(e)}")
            return
        if not run.keySlice:
            self.cancel()
            self.objectSegmentId = segmentId
        self.run = run
        self.box = (sliceNode, tuple(rasCorner1), tuple(rasCorner2), volume)
        self.setStatus("Adding a key slice..." if run.keySlice else "Segmenting the 3D object..." if mode == "3d" else "Segmenting the slice...")
        self.pollTimer.start()

    def onPropagate(self):
        """3D from the last box, along the normal of the view it was drawn in."""
        if self.box is not None:
            sliceNode, corner1, corner2, _ = self.box
            self.startBox(sliceNode, corner1, corner2, mode="3d")

    def onPoll(self):
        if self.run is None:
            self.pollTimer.stop()
            return
        try:
            result = self.logic.boxResult(self.run)
        except InputError as e:
            self.pollTimer.stop()
            self.run = None
            self.setStatus(f"Not segmented: {one_line(e)}")
            return
        if result is None:
            self.setStatus(f"Segmenting: {self.run.task.status()}")
            return
        self.pollTimer.stop()
        status = self.run.task.result["status"]
        self.object = self.run if "keys" in self.run.task.result else None
        self.run = None
        self.preview = result
        self.showPreview()
        more = f" ({len(self.keySlices())} key slices; a box on another slice adds one)" if self.object is not None else ""
        self.setStatus(f"{status}{more}. Apply writes it into the segment; Esc drops it.")
        if self.parameterNode().GetParameter("ApplyAutomatically") == "true":
            self.onApply()

    def keySlices(self):
        """The previewed object's key slices ((slice, box), ...) along its view's normal; () for a 2D preview."""
        return tuple(self.object.task.result["keys"]) if self.object is not None else ()

    def stopRun(self):
        """Stop the engine's run (a new box replaces it); the preview stays."""
        self.drag = None
        if self.run is not None:
            self.run.task.cancel()
            self.run = None
        self.pollTimer.stop()

    def cancel(self):
        """Esc and Cancel: stop the engine's run and drop the preview and its object; the segmentation is untouched."""
        self.stopRun()
        self.preview = None
        self.object = None
        self.removePreviewNode()
        self.setStatus("Drag a box around a structure in a slice view.")

    def setStatus(self, text):
        self.statusLabel.text = text
        self.updateButtons()

    # -- the preview and Apply -------------------------------------------------------------------------
    def showPreview(self):
        """The result in a segmentation of its own, drawn over the views in the selected segment's colour."""
        from MedSAMLiteLib.mrml.segments import LabelmapGrid

        extent, voxels = self.preview
        volume = self.box[3]
        if self.previewNode is None:
            self.previewNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "MedSAMLite preview")
            self.previewNode.SetHideFromEditors(True)
            self.previewNode.CreateDefaultDisplayNodes()
            self.previewNode.SetAndObserveTransformNodeID(volume.GetTransformNodeID())
            self.previewNode.GetSegmentation().AddEmptySegment("preview", "preview")
            self.previewNode.GetDisplayNode().SetOpacity(0.6)
        segmentationNode = self.scriptedEffect.parameterSetNode().GetSegmentationNode()
        segmentId = self.scriptedEffect.parameterSetNode().GetSelectedSegmentID()
        segment = segmentationNode.GetSegmentation().GetSegment(segmentId) if segmentationNode and segmentId else None
        if segment is not None:
            self.previewNode.GetSegmentation().GetSegment("preview").SetColor(segment.GetColor())
        grid = LabelmapGrid(self.previewNode, volume)
        gridExtent, onGrid, _ = grid.fromVolume(extent, voxels)
        slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(
            grid.image(gridExtent, onGrid.astype(np.uint8)), self.previewNode, "preview",
            slicer.vtkSlicerSegmentationsModuleLogic.MODE_REPLACE)

    def removePreviewNode(self):
        if self.previewNode is not None:
            if self.previewNode.GetScene() is not None:
                slicer.mrmlScene.RemoveNode(self.previewNode)
            self.previewNode = None

    def onApply(self):
        """The preview into the selected segment through the editor (its masking, overwrite and intensity
        range apply; voxels outside the preview stay), as one undo step."""
        from MedSAMLiteLib.mrml.segments import LabelmapGrid, SegmentWriteError

        if self.preview is None or self.run is not None:
            return
        editorNode = self.scriptedEffect.parameterSetNode()
        segmentationNode = editorNode.GetSegmentationNode()
        if segmentationNode is None or not editorNode.GetSelectedSegmentID():
            self.setStatus("Not applied: select a segment first.")
            return
        if not self.scriptedEffect.confirmCurrentSegmentVisible():  # as Slicer's effects: the user sees what changes
            return
        extent, voxels = self.preview
        try:
            grid = LabelmapGrid(segmentationNode, self.box[3])
            gridExtent, onGrid, _ = grid.fromVolume(extent, voxels)
        except SegmentWriteError as e:
            self.setStatus(f"Not applied: {one_line(e)}")
            return
        modifier = grid.image(gridExtent, onGrid.astype(np.uint8))
        self.scriptedEffect.saveStateForUndo()
        self.scriptedEffect.modifySelectedSegmentByLabelmap(modifier, slicer.qSlicerSegmentEditorAbstractEffect.ModificationModeAdd)
        self.preview = None
        self.object = None  # the next box is a new structure
        self.removePreviewNode()
        self.setStatus("Applied. Drag another box, or Undo in the Segment Editor.")

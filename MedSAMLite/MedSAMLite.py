"""MedSAMLite: draw an ROI box, pick a backend and a preset, click Segment (3D Slicer scripted module).

Slicer glue only: the widget reads controls and calls the Logic; the Logic turns MRML nodes into
arrays and matrices, calls the core (`MedSAMLiteLib`, imported lazily so the module always loads,
even before openvino and opencv are installed), and writes the mask into the chosen segment.
"""
import logging
import os
import time

import numpy as np
import slicer
import vtk
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)

PRESETS = ("auto", "display", "abdomen", "lung", "brain", "mediastinum", "bone", "mr", "none")


class MedSAMLite(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "MedSAMLite"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = []
        self.parent.contributors = ["MedSAMLite developers"]
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


class MedSAMLiteWidget(ScriptedLoadableModuleWidget):
    """Thin panel: reads the controls and calls MedSAMLiteLogic.segment."""

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MedSAMLite.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = MedSAMLiteLogic()
        for name in self.logic.backendNames():
            self.ui.backendComboBox.addItem(name)
        for name in PRESETS:
            self.ui.presetComboBox.addItem(name)
        self.ui.segmentButton.connect("clicked(bool)", self.onSegment)

    def onSegment(self):
        preset = self.ui.presetComboBox.currentText
        with slicer.util.tryWithErrorDisplay("MedSAMLite: segmentation failed.", waitCursor=True):
            segmentId = self.logic.segment(
                self.ui.volumeSelector.currentNode(),
                self.ui.roiSelector.currentNode(),
                self.ui.segmentationSelector.currentNode(),
                backend=self.ui.backendComboBox.currentText,
                preset=None if preset == "auto" else preset,
                segmentId=self.ui.segmentSelector.currentSegmentID() or None,
            )
            self.ui.segmentSelector.setCurrentSegmentID(segmentId)
            self.ui.statusLabel.text = self.logic.lastStatus


class InputError(ValueError):
    """Bad input from the user (node types, ROI placement, data shape): shown as one line."""


class SegmentJob:
    """Everything a segmentation needs, read from MRML on the main thread; `run` needs no MRML."""

    def __init__(self, **fields):
        self.__dict__.update(fields)


class MedSAMLiteLogic(ScriptedLoadableModuleLogic):
    """Volume + ROI + segmentation nodes -> a segment, through the core's segmenter.

    Data flow: volume node -> array (k, j, i) and IJK-to-RAS -> canonical axial slices (D, H, W)
    -> preset (uint8 copy) -> ROI corners -> voxel box -> segmenter (cached embeddings) -> mask ->
    back to (k, j, i) -> the segment. Runs without Slicer's Qt, so it is testable on slicer-core.
    """

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        self._backends = {}
        self._prepared = None  # (image key, slices, geometry) of the last volume + preset
        self._cache = None
        self.lastStatus = ""

    # -- backends ------------------------------------------------------------------------------
    @staticmethod
    def backendNames():
        from MedSAMLiteLib.model_store import catalogue

        return list(catalogue())

    def segmenter(self, backend="litemedsam", precision="f32"):
        """The core's Segmenter on `backend` (converted and compiled once per Logic)."""
        from MedSAMLiteLib.embedding_cache import EmbeddingCache
        from MedSAMLiteLib.model_store import load_backend
        from MedSAMLiteLib.segmenter import Segmenter

        if self._cache is None:
            self._cache = EmbeddingCache()
        key = (backend, precision)
        if key not in self._backends:
            self._backends[key] = load_backend(backend, precision, log=logging.info)
        return Segmenter(self._backends[key], self._cache)

    # -- reading MRML (main thread) -------------------------------------------------------------
    def _slices(self, volumeNode, preset):
        """Canonical uint8 slices of the volume under `preset`, prepared once per volume state."""
        from MedSAMLiteLib.geometry import Geometry
        from MedSAMLiteLib.presets import apply_preset

        imageData = volumeNode.GetImageData()
        if imageData is None or imageData.GetNumberOfPoints() == 0:
            raise InputError(f"volume '{volumeNode.GetName()}' has no voxels")
        components = imageData.GetNumberOfScalarComponents()
        isVector = volumeNode.IsA("vtkMRMLVectorVolumeNode")
        if (isVector and components != 3) or (not isVector and components != 1):
            raise InputError(
                f"volume '{volumeNode.GetName()}' has {components} components per voxel: "
                "only scalar volumes and RGB images are supported (not 4D or multi-channel data)"
            )
        ijkToRas = vtk.vtkMatrix4x4()
        volumeNode.GetIJKToRASMatrix(ijkToRas)
        matrix = slicer.util.arrayFromVTKMatrix(ijkToRas)
        size = imageData.GetDimensions()
        window = None
        if preset is None:
            preset = "none" if isVector or imageData.GetScalarType() == vtk.VTK_UNSIGNED_CHAR else "display"
        if preset == "display":
            display = volumeNode.GetDisplayNode()
            if display is None or not hasattr(display, "GetWindow"):
                raise InputError(f"volume '{volumeNode.GetName()}' has no display window/level; choose a preset")
            window = (float(display.GetWindow()), float(display.GetLevel()))
        key = (volumeNode.GetID(), imageData.GetMTime(), tuple(matrix.ravel()), preset, window)
        if self._prepared is not None and self._prepared[0] == key:
            return self._prepared
        try:
            geometry = Geometry.from_ijk_to_ras(size, matrix)
        except ValueError as e:
            raise InputError(f"volume '{volumeNode.GetName()}': {e}") from None
        source = slicer.util.arrayFromVolume(volumeNode)  # a view: read only, never written
        if isVector and preset not in ("none", None) and source.dtype == np.uint8:
            preset = "none"
        if preset == "display":
            slices = apply_preset(geometry.from_source_array(source), window_wl=window)
        elif preset == "none":
            if source.dtype != np.uint8:
                raise InputError(f"preset 'none' needs 8-bit data; volume '{volumeNode.GetName()}' is {source.dtype}")
            slices = geometry.from_source_array(source)
        else:
            try:
                slices = apply_preset(geometry.from_source_array(source), preset=preset)
            except ValueError as e:
                raise InputError(str(e)) from None
        self._prepared = (key, np.ascontiguousarray(slices), geometry)
        return self._prepared

    @staticmethod
    def _roiCornersInVolumeRas(roiNode, volumeNode):
        """The ROI's 8 corners, through the ROI's and the volume's parent transforms, in the volume's RAS."""
        from MedSAMLiteLib.roi import roi_corners

        center = [0.0, 0.0, 0.0]
        roiNode.GetCenter(center)
        objectToWorld = slicer.util.arrayFromVTKMatrix(roiNode.GetObjectToWorldMatrix())
        # GetCenter is in the ROI node's local (parent) frame: make it object-frame relative
        objectToNode = slicer.util.arrayFromVTKMatrix(roiNode.GetObjectToNodeMatrix())
        centerInObject = np.linalg.solve(objectToNode, np.r_[center, 1.0])[:3]
        corners = roi_corners(centerInObject, roiNode.GetSize(), objectToWorld)
        worldToVolume = vtk.vtkGeneralTransform()
        slicer.vtkMRMLTransformNode.GetTransformBetweenNodes(None, volumeNode.GetParentTransformNode(), worldToVolume)
        return np.array([worldToVolume.TransformPoint(*p) for p in corners])

    def prepare(self, volumeNode, roiNode, segmentationNode, backend="litemedsam", preset=None, segmentId=None):
        """Check the inputs and read what the computation needs from MRML (main thread)."""
        from MedSAMLiteLib.roi import RoiError, box_from_points

        if volumeNode is None or not volumeNode.IsA("vtkMRMLScalarVolumeNode"):
            raise InputError("choose a scalar volume or an RGB image as input volume")
        if volumeNode.IsA("vtkMRMLLabelMapVolumeNode"):
            raise InputError("the input is a labelmap; choose the image volume")
        if roiNode is None or not roiNode.IsA("vtkMRMLMarkupsROINode"):
            raise InputError("place an ROI box (a Markups ROI) around the structure")
        if segmentationNode is None or not segmentationNode.IsA("vtkMRMLSegmentationNode"):
            raise InputError("choose or create a segmentation for the result")
        if segmentId and segmentationNode.GetSegmentation().GetSegment(segmentId) is None:
            raise InputError(f"segment '{segmentId}' is not in segmentation '{segmentationNode.GetName()}'")
        if preset is not None and preset not in PRESETS[1:]:
            raise InputError(f"unknown preset '{preset}'; choose one of {', '.join(PRESETS[1:])}")
        imageKey, slices, geometry = self._slices(volumeNode, preset)
        try:
            box = box_from_points(self._roiCornersInVolumeRas(roiNode, volumeNode), geometry)
        except RoiError as e:
            raise InputError(f"ROI '{roiNode.GetName()}': {e}") from None
        return SegmentJob(volumeNode=volumeNode, segmentationNode=segmentationNode, segmentId=segmentId,
                          backend=backend, imageKey=imageKey, slices=slices, geometry=geometry, box=box)

    # -- computing (any thread, no MRML) ----------------------------------------------------------
    def run(self, job, progress=None):
        """The mask (D, H, W) bool in the canonical layout; `progress(n)` is called per slice and may
        raise to stop (the segment is not touched until `apply`)."""
        segmenter = self.segmenter(job.backend)
        segmenter.set_image(job.slices, key=job.imageKey)
        t0 = time.perf_counter()
        mask = np.zeros(job.slices.shape[:3], dtype=bool)
        if job.box.is_2d:
            mask[job.box.z0] = segmenter.segment_2d(job.box.z0, job.box.xy)
            self.lastStatus = f"{job.backend} 2D: {time.perf_counter() - t0:.2f} s"
        else:
            mask = segmenter.segment_3d(job.box.xyz, progress=progress)
            slices = job.box.z1 - job.box.z0 + 1
            self.lastStatus = f"{job.backend} 3D: {slices} slices in {time.perf_counter() - t0:.1f} s"
        return mask

    # -- writing MRML (main thread) ---------------------------------------------------------------
    def apply(self, job, mask):
        """Replace the content of the target segment (a new one if none) by `mask`; 2D results
        replace only their slice. Other segments and the volume are not touched."""
        segmentation = job.segmentationNode.GetSegmentation()
        segmentId = job.segmentId
        if not segmentId:
            segmentId = segmentation.AddEmptySegment("", f"MedSAMLite {job.backend}")
        if job.box.is_2d:
            existing = self._segmentArray(job, segmentId)
            if existing is not None:
                keep = job.geometry.from_source_array(existing) > 0
                keep[job.box.z0] = mask[job.box.z0]
                mask = keep
        self._writeSegment(job, segmentId, job.geometry.to_source_array(mask.astype(np.uint8)))
        return segmentId

    @staticmethod
    def _tempLabelmap(job):
        """A labelmap on the volume's voxel grid, expressed in the segmentation's coordinate frame
        (through the transforms between them), so that import and export need no resampling."""
        volumeToSegmentation = vtk.vtkGeneralTransform()
        slicer.vtkMRMLTransformNode.GetTransformBetweenNodes(
            job.volumeNode.GetParentTransformNode(), job.segmentationNode.GetParentTransformNode(), volumeToSegmentation)
        linear = vtk.vtkTransform()
        if not slicer.vtkMRMLTransformNode.IsGeneralTransformLinear(volumeToSegmentation, linear):
            raise InputError("the volume and the segmentation are related by a non-linear transform; harden it first")
        ijkToRas = vtk.vtkMatrix4x4()
        job.volumeNode.GetIJKToRASMatrix(ijkToRas)
        vtk.vtkMatrix4x4.Multiply4x4(linear.GetMatrix(), ijkToRas, ijkToRas)
        labelmap = slicer.modules.volumes.logic().CreateAndAddLabelVolume(slicer.mrmlScene, job.volumeNode, "__MedSAMLite_tmp__")
        labelmap.SetAndObserveTransformNodeID(job.segmentationNode.GetTransformNodeID())
        labelmap.SetIJKToRASMatrix(ijkToRas)
        return labelmap

    def _segmentArray(self, job, segmentId):
        """The segment's current voxels on the volume's grid (k, j, i), or None if empty."""
        segment = job.segmentationNode.GetSegmentation().GetSegment(segmentId)
        if segment is None:
            return None
        labelmap = self._tempLabelmap(job)
        try:
            ids = vtk.vtkStringArray()
            ids.InsertNextValue(segmentId)
            slicer.modules.segmentations.logic().ExportSegmentsToLabelmapNode(job.segmentationNode, ids, labelmap, labelmap)
            return slicer.util.arrayFromVolume(labelmap).copy()
        finally:
            slicer.mrmlScene.RemoveNode(labelmap)

    def _writeSegment(self, job, segmentId, array):
        labelmap = self._tempLabelmap(job)
        try:
            slicer.util.updateVolumeFromArray(labelmap, array)
            ids = vtk.vtkStringArray()
            ids.InsertNextValue(segmentId)
            if not array.any():
                slicer.vtkSlicerSegmentationsModuleLogic.ClearSegment(job.segmentationNode, segmentId)
            elif not slicer.modules.segmentations.logic().ImportLabelmapToSegmentationNode(labelmap, job.segmentationNode, ids):
                raise RuntimeError("writing the mask into the segment failed")
        finally:
            slicer.mrmlScene.RemoveNode(labelmap)

    # -- the contract ------------------------------------------------------------------------------
    def segment(self, volumeNode, roiNode, segmentationNode, backend="litemedsam", preset=None, segmentId=None, progress=None):
        """Segment the structure in `roiNode` on `volumeNode` into `segmentId` of `segmentationNode`
        (a new segment named after the backend when None); returns the segment ID.

        The ROI may be rotated; volume and ROI may sit under transforms. One slice thick -> 2D on that
        slice; thicker -> 3D through the ROI. `preset` None = automatic (RGB and 8-bit data as they
        are, anything else with the volume's current window/level); or one of PRESETS.
        """
        job = self.prepare(volumeNode, roiNode, segmentationNode, backend, preset, segmentId)
        return self.apply(job, self.run(job, progress))


class MedSAMLiteTest(ScriptedLoadableModuleTest):
    """Self-test on a small real image shipped with the module (no network, no SampleData)."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_segment_3d_brain()
        self.test_bad_inputs()

    def _loadTestVolume(self):
        path = os.path.join(os.path.dirname(__file__), "Resources", "TestData", "MedSAMLiteTestVolume.nrrd")
        volumesLogic = slicer.modules.volumes.logic()
        volume = volumesLogic.AddArchetypeVolume(path, "MedSAMLiteTestVolume", 0, None)
        self.assertIsNotNone(volume, f"could not load {path}")
        reference = volumesLogic.AddArchetypeVolume(path.replace("Volume.nrrd", "Reference.nrrd"), "reference", 1, None)
        return volume, slicer.util.arrayFromVolume(reference).copy()

    @staticmethod
    def roiAroundMask(mask, volumeNode, name="ROI"):
        """A Markups ROI around the non-zero voxels of `mask` (k, j, i) of the volume."""
        k, j, i = (np.flatnonzero(mask.any(axis=a)) for a in ((1, 2), (0, 2), (0, 1)))
        ijkToRas = vtk.vtkMatrix4x4()
        volumeNode.GetIJKToRASMatrix(ijkToRas)
        m = slicer.util.arrayFromVTKMatrix(ijkToRas)
        corners = np.array([[i[0], j[0], k[0], 1.0], [i[-1], j[-1], k[-1], 1.0]]) @ m.T
        lo, hi = corners[:, :3].min(axis=0), corners[:, :3].max(axis=0)
        roi = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsROINode", name)
        roi.SetCenter(*((lo + hi) / 2))
        roi.SetSize(*(hi - lo))
        return roi

    def test_segment_3d_brain(self):
        self.delayDisplay("MedSAMLite: 3D segmentation of a real MR slab")
        volume, reference = self._loadTestVolume()
        before = slicer.util.arrayFromVolume(volume).copy()
        roi = self.roiAroundMask(reference, volume)
        segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
        segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
        other = segmentation.GetSegmentation().AddEmptySegment("", "other")
        otherMask = np.zeros(before.shape, np.uint8)
        otherMask[0, :5, :5] = 1
        slicer.util.updateSegmentBinaryLabelmapFromArray(otherMask, segmentation, other, volume)
        logic = MedSAMLiteLogic()
        segmentId = logic.segment(volume, roi, segmentation)
        result = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, segmentId, volume)
        self.assertEqual(result.shape, reference.shape)
        dice = 2.0 * np.logical_and(result > 0, reference > 0).sum() / ((result > 0).sum() + (reference > 0).sum())
        self.delayDisplay(f"DSC {dice:.3f} ({logic.lastStatus})")
        self.assertGreater(dice, 0.80)
        np.testing.assert_array_equal(slicer.util.arrayFromVolume(volume), before)
        np.testing.assert_array_equal(slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, other, volume), otherMask)

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

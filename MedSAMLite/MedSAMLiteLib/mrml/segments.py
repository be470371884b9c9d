"""Read and write a segment over the extent that changes (main thread, Slicer side).

Part of `MedSAMLiteLib.mrml`, the one part of MedSAMLiteLib that imports slicer and vtk: the Logic
imports it, the headless core never does. Work here is sized by the written extent, never by the
volume: segments are read as numpy views of their labelmap layer (or resampled over the extent when the grids differ), and written
in place in that layer where it covers the extent (then the layer is marked modified, as Slicer's
`arrayFromSegmentInternalBinaryLabelmap` documents), otherwise with extent-limited labelmaps through
`vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment` (MIN to clear, MASK to fill), the calls
the Segment Editor's effects use. No temporary labelmap node, no whole-volume array. One cost is
Slicer's and sized by a layer: a result that must overlap another segment of the target's shared
layer makes Slicer move the target into a layer of its own (once per segment). `SegmentRun` feeds one
Segment click's results from the engine to its `SegmentWriter`, a few slices per call.

Coordinates: extents and arrays are in the volume's IJK grid, (i0, i1, j0, j1, k0, k1) inclusive and
arrays in (k, j, i) order like `slicer.util.arrayFromVolume`. They are mapped into the segmentation's
labelmap grid (its reference geometry, or the volume's grid when it has none) through the nodes'
parent transforms; a non-linear transform between them is refused.
"""
from __future__ import annotations

import time

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

BINARY = slicer.vtkSegmentationConverter.GetSegmentationBinaryLabelmapRepresentationName()
_LOGIC = slicer.vtkSlicerSegmentationsModuleLogic


class SegmentWriteError(ValueError):
    """The segment cannot be written (transforms, representation): one line for the user."""


def _matrix(vtk_matrix) -> np.ndarray:
    return np.array([[vtk_matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def _valid(extent) -> bool:
    return all(extent[2 * a] <= extent[2 * a + 1] for a in range(3))


def _intersect(a, b):
    return tuple(max(a[i], b[i]) if i % 2 == 0 else min(a[i], b[i]) for i in range(6))


def _union(a, b):
    return tuple(min(a[i], b[i]) if i % 2 == 0 else max(a[i], b[i]) for i in range(6))


def _slices(extent, within):
    """numpy (k, j, i) slices of `extent` inside an array that covers `within`."""
    return tuple(slice(extent[2 * a] - within[2 * a], extent[2 * a + 1] - within[2 * a] + 1) for a in (2, 1, 0))


def _shape(extent):
    return tuple(extent[2 * a + 1] - extent[2 * a] + 1 for a in (2, 1, 0))


def _bbox(mask, extent):
    """Extent of the non-zero voxels of `mask` (laid over `extent`), or None when it is empty."""
    if not mask.any():
        return None
    k, j, i = (np.flatnonzero(mask.any(axis=axes)) for axes in ((1, 2), (0, 2), (0, 1)))
    return (extent[0] + i[0], extent[0] + i[-1], extent[2] + j[0], extent[2] + j[-1], extent[4] + k[0], extent[4] + k[-1])


class LabelmapGrid:
    """The segmentation's labelmap grid and how the volume's voxel grid maps into it."""

    def __init__(self, segmentationNode, volumeNode):
        between = vtk.vtkGeneralTransform()
        slicer.vtkMRMLTransformNode.GetTransformBetweenNodes(
            volumeNode.GetParentTransformNode(), segmentationNode.GetParentTransformNode(), between)
        linear = vtk.vtkTransform()
        if not slicer.vtkMRMLTransformNode.IsGeneralTransformLinear(between, linear):
            raise SegmentWriteError("the volume and the segmentation are related by a non-linear transform; harden it first")
        ijkToRas = vtk.vtkMatrix4x4()
        volumeNode.GetIJKToRASMatrix(ijkToRas)
        volumeToSegmentation = _matrix(linear.GetMatrix()) @ _matrix(ijkToRas)
        self.matrix = volumeToSegmentation  # the volume's grid, used when the segmentation has no geometry of its own
        geometry = segmentationNode.GetSegmentation().GetConversionParameter(
            slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName())
        if geometry:
            reference = slicer.vtkOrientedImageData()
            if slicer.vtkSegmentationConverter.DeserializeImageGeometry(geometry, reference, False):
                m = vtk.vtkMatrix4x4()
                reference.GetImageToWorldMatrix(m)
                self.matrix = _matrix(m)
        self.volumeToGrid = np.linalg.inv(self.matrix) @ volumeToSegmentation
        rounded = np.round(self.volumeToGrid[:3, 3])
        self.offset = None  # integer shift volume IJK -> grid IJK when the grids coincide (no resampling)
        if np.allclose(self.volumeToGrid[:3, :3], np.eye(3), atol=1e-4) and np.allclose(self.volumeToGrid[:3, 3], rounded, atol=1e-3):
            self.offset = rounded.astype(int)

    def image(self, extent, array=None, matrix=None):
        """A vtkOrientedImageData on this grid (or `matrix`) over `extent`, holding `array` (k, j, i)."""
        image = slicer.vtkOrientedImageData()
        image.SetGeometryFromImageToWorldMatrix(slicer.util.vtkMatrixFromArray(self.matrix if matrix is None else matrix))
        image.SetExtent(*extent)
        if array is not None:
            image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
            numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(_shape(extent))[:] = array
        return image

    def sameGeometry(self, image) -> bool:
        """True when `image` lies on this grid (its voxels are this grid's voxels, within 1e-4 voxel)."""
        m = vtk.vtkMatrix4x4()
        image.GetImageToWorldMatrix(m)
        return np.allclose(np.linalg.solve(self.matrix, _matrix(m)), np.eye(4), atol=1e-4)

    def fromVolume(self, extent, array):
        """(grid extent, array on the grid, covered) for `array` over the volume's `extent`: the voxels
        of the grid whose centre lies in the volume's voxels (nearest neighbour), nothing resampled
        when the grids coincide."""
        if self.offset is not None:
            o = self.offset
            shifted = tuple(int(extent[i] + o[i // 2]) for i in range(6))
            return shifted, array, np.ones(array.shape, bool)
        corners = np.array([[x, y, z, 1.0] for x in (extent[0] - 0.5, extent[1] + 0.5)
                            for y in (extent[2] - 0.5, extent[3] + 0.5) for z in (extent[4] - 0.5, extent[5] + 0.5)])
        inGrid = (self.volumeToGrid @ corners.T).T[:, :3]
        lo, hi = np.ceil(inGrid.min(axis=0) - 1e-6).astype(int), np.floor(inGrid.max(axis=0) + 1e-6).astype(int)
        target = (lo[0], hi[0], lo[1], hi[1], lo[2], hi[2])
        source = self.image(extent, 2 + (array > 0), matrix=self.matrix @ self.volumeToGrid)  # 0 = not covered
        out = slicer.vtkOrientedImageData()
        if not slicer.vtkOrientedImageDataResample.ResampleOrientedImageToReferenceOrientedImage(source, self.image(target), out, False, False):
            raise SegmentWriteError("could not map the result onto the segmentation's grid")
        values = numpy_support.vtk_to_numpy(out.GetPointData().GetScalars()).reshape(_shape(out.GetExtent()))
        values = values[_slices(target, out.GetExtent())]
        return target, values == 3, values > 0

    def toVolume(self, extent):
        """The volume's extent under grid `extent` (only when the grids coincide)."""
        return tuple(int(extent[i] - self.offset[i // 2]) for i in range(6))


class SegmentWriter:
    """Writes one run's results into a segment, and can put back every segment it touched.

    `write(extent, voxels)`: inside the volume-IJK `extent` the segment becomes `voxels` (k, j, i)
    where the Segment Editor's masking allows it (editable area, intensity range; `editorNode` None:
    everywhere) and stays as it was elsewhere; outside the extent nothing changes. The editor's
    overwrite mode removes the written voxels from the other segments it names. The first write
    creates the segment when `segmentId` is None and saves one undo state (`undoHook`, e.g. the
    Segment Editor's saveStateForUndo, else the scene's when the scene's undo is on): one run is one
    undo step. `restore()` (Cancel, failures) puts every touched segment back as it was before the run.
    After the run, `undo()` takes back exactly the voxels the run changed and keeps every later edit
    elsewhere, as a user who painted beside a result and then undoes the result expects; it refuses
    when a later edit changed one of those voxels (taking it back would lose that edit). A segment the
    run created is removed only when nothing else is left in it: paint added to it survives.
    """

    def __init__(self, segmentationNode, segmentId, volumeNode, editorNode=None, undoHook=None, name="MedSAMLite"):
        if segmentId is not None and segmentationNode.GetSegmentation().GetSegment(segmentId) is None:
            raise SegmentWriteError(f"segment '{segmentId}' is not in segmentation '{segmentationNode.GetName()}'")
        source = segmentationNode.GetSegmentation().GetSourceRepresentationName()
        if segmentationNode.GetSegmentation().GetNumberOfSegments() and source != BINARY:
            raise SegmentWriteError(f"segmentation '{segmentationNode.GetName()}' is edited as {source.lower()}: "
                                    "make binary labelmap its source representation first (Segmentations module)")
        self.segmentationNode, self.segmentId, self.volumeNode = segmentationNode, segmentId, volumeNode
        self.editorNode, self.undoHook, self.name = editorNode, undoHook, name
        self.grid = LabelmapGrid(segmentationNode, volumeNode)
        self.created = False
        self.written = False
        self._before = {}  # segment ID -> (grid extent, uint8 voxels before the run's first write there)
        self._after = None  # the same extents after the run (set by finish), to check before undo

    @property
    def segmentation(self):
        return self.segmentationNode.GetSegmentation()

    # -- reading ----------------------------------------------------------------------------------------
    def read(self, segmentId, extent):
        """The segment's voxels (bool, k, j, i) over the grid `extent`; zeros where it has none."""
        segment = self.segmentation.GetSegment(segmentId)
        layer = segment.GetRepresentation(BINARY) if segment is not None else None
        out = np.zeros(_shape(extent), bool)
        if layer is None or not _valid(layer.GetExtent()):
            return out
        label = segment.GetLabelValue()
        if self.grid.sameGeometry(layer):
            have = layer.GetExtent()
            common = _intersect(extent, have)
            if _valid(common):
                values = numpy_support.vtk_to_numpy(layer.GetPointData().GetScalars()).reshape(_shape(have))
                out[_slices(common, extent)] = values[_slices(common, have)] == label
            return out
        resampled = slicer.vtkOrientedImageData()
        slicer.vtkOrientedImageDataResample.ResampleOrientedImageToReferenceOrientedImage(layer, self.grid.image(extent), resampled, False, False)
        have = resampled.GetExtent()
        common = _intersect(extent, have)
        if _valid(common) and resampled.GetPointData().GetScalars() is not None:
            values = numpy_support.vtk_to_numpy(resampled.GetPointData().GetScalars()).reshape(_shape(have))
            out[_slices(common, extent)] = values[_slices(common, have)] == label
        return out

    def _set(self, segmentId, extent, voxels):
        """The segment becomes `voxels` inside the grid `extent`; unchanged outside. In place in its
        labelmap layer when that layer covers the extent (Slicer's documented way for scripts: change
        the internal labelmap, then signal it modified); otherwise, or where it would cover another
        segment of a shared layer, through SetBinaryLabelmapToSegment (MIN clears the segment's own
        label where voxels are 0, MASK writes it where they are 1; Slicer separates layers as needed)."""
        if self._setInPlace(segmentId, extent, voxels):
            return
        labelmap = self.grid.image(extent, voxels.astype(np.uint8))
        ok = _LOGIC.SetBinaryLabelmapToSegment(labelmap, self.segmentationNode, segmentId, _LOGIC.MODE_MERGE_MIN, extent)
        if ok and voxels.any():
            ok = _LOGIC.SetBinaryLabelmapToSegment(labelmap, self.segmentationNode, segmentId, _LOGIC.MODE_MERGE_MASK, extent)
        if not ok:
            raise SegmentWriteError(f"writing segment '{segmentId}' failed")

    def _setInPlace(self, segmentId, extent, voxels):
        segment = self.segmentation.GetSegment(segmentId)
        layer = segment.GetRepresentation(BINARY) if segment is not None else None
        if layer is None or not _valid(layer.GetExtent()) or not self.grid.sameGeometry(layer):
            return False
        have = layer.GetExtent()
        if _intersect(extent, have) != tuple(extent):
            return False
        scalars = layer.GetPointData().GetScalars()
        values = numpy_support.vtk_to_numpy(scalars)
        label = segment.GetLabelValue()
        if values.dtype.kind not in "iu" or label > np.iinfo(values.dtype).max:
            return False
        view = values.reshape(_shape(have))[_slices(extent, have)]  # VTK's memory: written in place
        voxels = np.asarray(voxels) > 0
        mine = view == label
        add = voxels & ~mine
        if (add & (view != 0)).any():
            return False
        remove = mine & ~voxels
        if add.any() or remove.any():
            view[remove] = 0
            view[add] = label
            self._changedInPlace(segment, scalars)
        return True

    def _changedInPlace(self, segment, scalars):
        """After an in-place change, as SetBinaryLabelmapToSegment ends: the segment's derived
        representations (its 3D surface) are converted again for this segment alone, and the segment
        is marked modified (the step `slicer.util.arrayFromSegmentInternalBinaryLabelmap` documents).
        The layer's own Modified would make Slicer drop every segment's surfaces."""
        scalars.Modified()  # pipelines reading the layer see a newer image
        names = []
        segment.GetContainedRepresentationNames(names)
        derived = [name for name in names if name != BINARY]
        for name in derived:
            segment.RemoveRepresentation(name)
        for name in derived:
            self.segmentation.CreateRepresentation(name)  # converts the segments that lack it: this one
        segment.Modified()

    def _remember(self, segmentId, extent):
        """Keep the segment's voxels over `extent` as they were before this run (once per voxel)."""
        known = self._before.get(segmentId)
        if known is None:
            self._before[segmentId] = (extent, self.read(segmentId, extent).astype(np.uint8))
            return
        have, voxels = known
        grown = _union(have, extent)
        if grown == have:
            return
        before = self.read(segmentId, grown).astype(np.uint8)
        before[_slices(have, grown)] = voxels  # inside `have` the run has written: the kept voxels are the truth
        self._before[segmentId] = (grown, before)

    # -- Segment Editor masking -------------------------------------------------------------------------
    def _others(self):
        return [s for s in self.segmentation.GetSegmentIDs() if s != self.segmentId]

    def _visible(self, ids):
        display = self.segmentationNode.GetDisplayNode()
        return [s for s in ids if display is None or display.GetSegmentVisibility(s)]

    def _editable(self, extent, inRange):
        """Where the editor lets the segment change inside grid `extent` (bool), None = everywhere;
        `inRange` (or None) says where the volume's intensity is in the editor's range."""
        editor = self.editorNode
        if editor is None:
            return None
        seg = slicer.vtkMRMLSegmentationNode
        mode = editor.GetMaskMode()
        others = self._others()
        area = {
            seg.EditAllowedInsideAllSegments: others, seg.EditAllowedOutsideAllSegments: others,
            seg.EditAllowedInsideVisibleSegments: self._visible(others), seg.EditAllowedOutsideVisibleSegments: self._visible(others),
            seg.EditAllowedInsideSingleSegment: [editor.GetMaskSegmentID()],
        }.get(mode)
        allowed = np.ones(_shape(extent), bool) if inRange is None else inRange
        if area is not None:
            union = np.zeros(_shape(extent), bool)
            for segmentId in area:
                if segmentId:
                    union |= self.read(segmentId, extent)
            inside = mode in (seg.EditAllowedInsideAllSegments, seg.EditAllowedInsideVisibleSegments, seg.EditAllowedInsideSingleSegment)
            allowed = allowed & (union if inside else ~union)
        return allowed

    def _inRange(self, volumeExtent, box, gridExtent):
        """Where the volume's intensity is inside the editor's range, over grid `box` (None: no range)."""
        editor = self.editorNode
        if editor is None or not editor.GetSourceVolumeIntensityMask() or self.volumeNode.IsA("vtkMRMLVectorVolumeNode"):
            return None
        lo, hi = editor.GetSourceVolumeIntensityMaskRange()
        if self.grid.offset is not None:
            volumeExtent = self.grid.toVolume(box)
        values = slicer.util.arrayFromVolume(self.volumeNode)[_slices(volumeExtent, (0, 0, 0, 0, 0, 0))]
        inRange = (values >= lo) & (values <= hi)
        if self.grid.offset is None:  # the grids differ: the range goes through the result's mapping
            _, inRange, covered = self.grid.fromVolume(volumeExtent, inRange)
            inRange = (inRange & covered)[_slices(box, gridExtent)]
        return inRange

    def _overwritten(self):
        editor = self.editorNode
        if editor is None:
            return []
        others = self._others()
        return {editor.OverwriteAllSegments: others, editor.OverwriteVisibleSegments: self._visible(others)}.get(editor.GetOverwriteMode(), [])

    # -- writing ----------------------------------------------------------------------------------------
    def _begin(self):
        if self.undoHook is not None:
            self.undoHook()
        else:
            scene = self.segmentationNode.GetScene()
            if scene is not None and scene.GetUndoFlag():  # the user turned scene undo on
                self.segmentationNode.UndoEnabledOn()
                scene.SaveStateForUndo()
        if self.segmentId is None:  # in a layer of its own (AddEmptySegment would share the first
            segment = slicer.vtkSegment()  # layer, and the first write over another segment would copy it)
            segment.SetName(self.name)
            segmentId = self.segmentation.GenerateUniqueSegmentID("")
            if not self.segmentation.AddSegment(segment, segmentId):
                raise SegmentWriteError(f"could not add a segment to '{self.segmentationNode.GetName()}'")
            self.segmentId = segmentId
            self.created = True
        self.written = True

    def write(self, extent, voxels):
        """Inside the volume-IJK `extent` the segment becomes `voxels` (k, j, i; 0/1), as masking allows."""
        dims = self.volumeNode.GetImageData().GetDimensions()
        clipped = _intersect(extent, (0, dims[0] - 1, 0, dims[1] - 1, 0, dims[2] - 1))
        if not _valid(clipped):
            return
        voxels = np.asarray(voxels)[_slices(clipped, extent)] > 0
        if not self.written:
            self._begin()
        gridExtent, new, covered = self.grid.fromVolume(clipped, voxels)
        # only where the new voxels or the old segment are can anything change: work there
        old = self.read(self.segmentId, gridExtent)
        box = _bbox(new | old, gridExtent)
        if box is None:
            return
        inBox = _slices(box, gridExtent)
        new, old, covered = new[inBox], old[inBox], covered[inBox]
        allowed = covered
        editable = self._editable(box, self._inRange(clipped, box, gridExtent))
        if editable is not None:
            allowed = allowed & editable
        final = np.where(allowed, new, old)
        changed = _bbox(final != old, box)
        if changed is not None:
            self._remember(self.segmentId, changed)
            self._set(self.segmentId, changed, final[_slices(changed, box)])
        added = new & allowed
        for other in self._overwritten():
            current = self.read(other, box)
            if (current & added).any():
                where = _bbox(current & added, box)
                self._remember(other, where)
                part = _slices(where, box)
                self._set(other, where, current[part] & ~added[part])

    # -- putting back -----------------------------------------------------------------------------------
    def _putBack(self, keepLater):
        """Every touched segment's remembered voxels back; `keepLater`: only those the run changed
        (a later edit elsewhere stays). A created segment left holding nothing is removed."""
        # the target first: its voxels leave before overwritten segments get theirs back (in place)
        for segmentId in sorted(self._before, key=lambda s: s != self.segmentId):
            extent, before = self._before[segmentId]
            if self.segmentation.GetSegment(segmentId) is None:
                continue
            if keepLater:
                ranChanged = before.astype(bool) != self._after[segmentId]
                before = np.where(ranChanged, before, self.read(segmentId, extent))
            self._set(segmentId, extent, before)
        if self.created and self.segmentation.GetSegment(self.segmentId) is not None and self._empty(self.segmentId):
            self.segmentation.RemoveSegment(self.segmentId)
        self._before = {}

    def _empty(self, segmentId) -> bool:
        """True when the segment holds no voxel (read in its own layer, whatever its grid)."""
        segment = self.segmentation.GetSegment(segmentId)
        layer = segment.GetRepresentation(BINARY)
        scalars = layer.GetPointData().GetScalars() if layer is not None and _valid(layer.GetExtent()) else None
        return scalars is None or not (numpy_support.vtk_to_numpy(scalars) == segment.GetLabelValue()).any()

    def restore(self):
        """Every segment this run touched back as it was before it (Cancel, failures); a segment it
        created is removed unless something else was painted into it meanwhile."""
        self._putBack(keepLater=False)

    def finish(self):
        """The run is over: remember what it left, so that `undo` can tell a later edit."""
        self._after = {s: self.read(s, extent) for s, (extent, _) in self._before.items()}

    def undoable(self) -> bool:
        """True when no voxel the run changed was edited since (and the segments are still there)."""
        if self._after is None or self.segmentationNode.GetScene() is None:
            return False
        if self.created and self.segmentation.GetSegment(self.segmentId) is None:
            return False
        for segmentId, after in self._after.items():
            if self.segmentation.GetSegment(segmentId) is None:
                return False
            extent, before = self._before[segmentId]
            ranChanged = before.astype(bool) != after
            if (ranChanged & (self.read(segmentId, extent) != after)).any():
                return False
        return True

    def undo(self):
        """Take the finished run back: the voxels it changed, in every touched segment; later edits
        elsewhere stay. False when one of those voxels was edited since."""
        if not self.undoable():
            return False
        self._putBack(keepLater=True)
        self._after = None
        return True


class SegmentRun:
    """One Segment click in progress (main thread): the job read from MRML, its engine task, and the
    SegmentWriter that puts the engine's mask crops (canonical (d, h, w) at `origin` (z, y, x)) into
    the segment over the slices they replace, never the volume, and can take them back."""

    def __init__(self, job, task, writer):
        self.job, self.task, self.writer = job, task, writer
        self.segmentId = job.segmentId
        self.pending = None  # the final result's slice ranges still to write (None: not started)
        self.cancelled = False

    def cancel(self):
        self.cancelled = True
        self.task.cancel()

    def replaced(self, crop, origin, final):
        """The slices (z0, z1) a result replaces: a 2D result its slice, a final 3D result the ROI's
        slices and any the mask reaches (the segment elsewhere is kept), a partial result the slices
        it has (None when it has none)."""
        box, z, depth = self.job.box, origin[0], crop.shape[0]
        if self.job.is2d:
            return box.z0, box.z0
        if final:
            return (min(box.z0, z), max(box.z1, z + depth - 1)) if depth else (box.z0, box.z1)
        return (z, z + depth - 1) if depth else None

    def write(self, crop, origin, slices):
        """Slices `slices` (z0, z1) of the segment become the mask crop there (None: nothing to write)."""
        if slices is None:
            return
        (z0, z1), (z, y, x) = slices, origin
        slab = np.zeros((z1 - z0 + 1, *self.job.geometry.shape[1:]), dtype=np.uint8)
        a, b = max(z, z0), min(z + crop.shape[0], z1 + 1)
        if a < b:
            slab[a - z0 : b - z0, y : y + crop.shape[1], x : x + crop.shape[2]] = crop[a - z : b - z]
        self.writer.write(*self.job.geometry.crop_to_source(slab, (z0, 0, 0)))
        self.segmentId = self.writer.segmentId

    def advance(self, step, seconds):
        """Write what the engine sent: a new partial result, then the final one `step` slices at a time
        for about `seconds` per call; True once nothing is left to write (the task over, or cancelled)."""
        task = self.task
        if self.pending is None and not self.cancelled:
            partial = task.partial()
            if partial is not None:
                self.write(*partial, self.replaced(*partial, final=False))
                return False
            if task.running:
                return False
            if task.state == task.DONE:
                self.plan(step)
        return not (self.pending and not self.cancelled and not self.writePending(seconds))

    def plan(self, step):
        """The final result's slices to write, `step` slices at a time (`writePending`)."""
        z0, z1 = self.replaced(*self.task.result["mask"], final=True)
        self.pending = [(z, min(z + step, z1 + 1) - 1) for z in range(z0, z1 + 1, step)]

    def writePending(self, seconds):
        """Write planned slices for about `seconds` (one step at least); True when none are left."""
        t0 = time.perf_counter()
        self.write(*self.task.result["mask"], self.pending.pop(0))
        while self.pending and time.perf_counter() - t0 < seconds:
            self.write(*self.task.result["mask"], self.pending.pop(0))
        return not self.pending

    def restore(self):
        """Every segment the run touched back as before (a segment it created is removed)."""
        self.writer.restore()
        self.segmentId = self.job.segmentId


class CorrectionRun(SegmentRun):
    """A key-slice correction in progress (`MedSAMLiteLogic.startCorrection`): a Segment run that writes only
    the slices whose mask changed (the engine's result `slices`, None: none), with no partial result."""

    def replaced(self, crop, origin, final):
        return self.task.result["slices"] if final else None

    def plan(self, step):
        if self.task.result["slices"] is None:
            self.pending = []
        else:
            super().plan(step)

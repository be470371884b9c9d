"""Read the Logic's inputs from MRML (main thread): the volume node's voxel grid and display window,
the ROI node's corners, a slice view's plane, all as numpy arrays and matrices in the volume's RAS
frame (through the nodes' parent transforms), and the one MRML edit of an input: flattening the ROI
to a slice. Bad input raises `InputError` (one line for the user). Nothing here copies the voxels.
"""
from __future__ import annotations

import numpy as np
import slicer
import vtk

MIN_WINDOW = 1e-6  # a zero display window (a constant volume) is used as a step at the level
MAX_VIEW_TILT_DEG = 45.0  # a slice view further than this from the volume's slicing axis shows no slice the models segment
MAX_BOX_VIEW_TILT_DEG = 20.0  # a box dragged on a view further than this from every voxel axis is refused (no voxel slice there)


class InputError(ValueError):
    """Bad input from the user (node types, ROI placement, data shape): shown as one line."""


def check_nodes(volume_node, roi_node, segmentation_node=None, segment_id=None, need_segmentation=True, need_roi=True):
    """The node types the Logic takes, or InputError naming what to choose (`need_roi` False: a box
    dragged on a view stands for the ROI)."""
    if volume_node is None or not volume_node.IsA("vtkMRMLScalarVolumeNode"):
        raise InputError("choose a scalar volume or an RGB image as input volume")
    if volume_node.IsA("vtkMRMLLabelMapVolumeNode"):
        raise InputError("the input is a labelmap; choose the image volume")
    if need_roi and (roi_node is None or not roi_node.IsA("vtkMRMLMarkupsROINode")):
        raise InputError("place an ROI box (a Markups ROI) around the structure")
    if need_segmentation:
        if segmentation_node is None or not segmentation_node.IsA("vtkMRMLSegmentationNode"):
            raise InputError("choose or create a segmentation for the result")
        if segment_id and segmentation_node.GetSegmentation().GetSegment(segment_id) is None:
            raise InputError(f"segment '{segment_id}' is not in segmentation '{segmentation_node.GetName()}'")


def ijk_to_ras(volume_node) -> np.ndarray:
    """The IJK-to-RAS matrix (4x4) of a volume that has voxels."""
    image_data = volume_node.GetImageData()
    if image_data is None or image_data.GetNumberOfPoints() == 0:
        raise InputError(f"volume '{volume_node.GetName()}' has no voxels")
    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    return slicer.util.arrayFromVTKMatrix(matrix)


def geometry(volume_node):
    """Where the volume's canonical slices lie (MedSAMLiteLib/core/geometry.py)."""
    from ..core.geometry import Geometry

    try:
        return Geometry.from_ijk_to_ras(volume_node.GetImageData().GetDimensions(), ijk_to_ras(volume_node))
    except ValueError as e:
        raise InputError(f"volume '{volume_node.GetName()}': {e}") from None


def volume_image(volume_node, preset, axes=None):
    """(key, image) of the volume under `preset`: the key names the volume state, frame, preset and
    window (a later change never reuses a stale result); the image is what the engine needs to make
    the slices from the raw voxels (which travel separately, see the Logic's `_upload`). `axes`: the
    slice layout of a view (core/roi.py `view_axes`; None: the canonical axial slices), in the key too."""
    from ..core.presets import volume_preset

    matrix = ijk_to_ras(volume_node)
    image_data = volume_node.GetImageData()
    uint8 = image_data.GetScalarType() == vtk.VTK_UNSIGNED_CHAR
    try:
        preset = volume_preset(preset, image_data.GetNumberOfScalarComponents(), volume_node.IsA("vtkMRMLVectorVolumeNode"), uint8)
    except ValueError as e:
        raise InputError(f"volume '{volume_node.GetName()}': {e}") from None
    window = None
    if preset == "display":
        display = volume_node.GetDisplayNode()
        if display is None or not hasattr(display, "GetWindow"):
            raise InputError(f"volume '{volume_node.GetName()}' has no display window/level; choose a preset")
        # a constant volume has a zero window: show it as a step at the level (no error)
        window = (max(float(display.GetWindow()), MIN_WINDOW), float(display.GetLevel()))
    volume_key = (volume_node.GetID(), image_data.GetMTime())
    axes = None if axes is None else tuple(int(a) for a in axes)
    key = (volume_key, tuple(matrix.ravel()), preset, window) + ((axes,) if axes not in (None, (1, 2, 3)) else ())
    return key, dict(volume=volume_key, size=tuple(image_data.GetDimensions()), ijk_to_ras=matrix.tolist(), preset=preset,
                     window=window, image_key=key, axes=axes)


def world_to_volume(points, volume_node, inverse=False) -> np.ndarray:
    """World points -> the volume's own RAS frame (through its parent transforms, linear or not);
    `inverse`: the volume's RAS -> world."""
    frames = (None, volume_node.GetParentTransformNode())
    transform = vtk.vtkGeneralTransform()
    slicer.vtkMRMLTransformNode.GetTransformBetweenNodes(*(frames[::-1] if inverse else frames), transform)
    return np.array([transform.TransformPoint(*p) for p in points])


def roi_corners_in_volume_ras(roi_node, volume_node) -> np.ndarray:
    """The ROI's 8 corners (its object frame is centred on it), in the volume's RAS."""
    from ..core.roi import roi_corners

    corners = roi_corners((0.0, 0.0, 0.0), roi_node.GetSize(), slicer.util.arrayFromVTKMatrix(roi_node.GetObjectToWorldMatrix()))
    return world_to_volume(corners, volume_node)


def roi_box(roi_node, volume_node, geometry, slice_point=None):
    """The ROI as a voxel box of the volume's canonical slices; with `slice_point` (world RAS), only
    the slice through it, within the ROI's in-plane box."""
    from ..core.roi import RoiError, SliceBox, box_from_points, slice_index

    try:
        box = box_from_points(roi_corners_in_volume_ras(roi_node, volume_node), geometry)
        if slice_point is not None:
            z = slice_index(world_to_volume([slice_point], volume_node)[0], geometry)
            box = SliceBox(box.x0, box.y0, z, box.x1, box.y1, z)
    except RoiError as e:
        raise InputError(f"ROI '{roi_node.GetName()}': {e}") from None
    return box


def _slice_geometry(roi_node, volume_node):
    if roi_node is None or volume_node is None:
        raise InputError("choose a volume and an ROI first")
    return geometry(volume_node)


def slice_point_in_roi(slice_to_ras, roi_node, volume_node) -> np.ndarray:
    """The world point where a slice view's plane (its full SliceToRAS, 4x4) crosses the line through
    the ROI's centre along the volume's slicing axis. The models segment the volume's axial slices
    (the voxel axis closest to S-I, see MedSAMLiteLib/core/geometry.py): an oblique view picks the slice it
    crosses at the ROI, and a view more than MAX_VIEW_TILT_DEG from them (sagittal, coronal) is refused."""
    from ..core.roi import plane_crossing

    slices = _slice_geometry(roi_node, volume_node)
    m = np.asarray(slice_to_ras, dtype=float).reshape(4, 4)
    origin, tip = world_to_volume([m[:3, 3], m[:3, 3] + m[:3, 2]], volume_node)
    centre = world_to_volume([roi_node.GetCenterWorld()], volume_node)[0]
    point = plane_crossing(origin, (tip - origin) / np.linalg.norm(tip - origin), centre, slices, MAX_VIEW_TILT_DEG)
    if point is None:
        raise InputError("the Red view shows a sagittal or coronal plane of this volume; MedSAMLite segments its "
                         "axial slices: show an axial slice in the Red view")
    return world_to_volume([point], volume_node, inverse=True)[0]


def flatten_roi_to_slice(roi_node, volume_node, slice_point):
    """Make the ROI one slice of the volume thick at `slice_point` (world RAS), keeping its in-plane
    extent: the new box is aligned with the volume's slices and covers the rows and columns the old
    one covered (a rotated ROI becomes its bounding box in the slice)."""
    from ..core.roi import flat_roi, slice_index

    slices = _slice_geometry(roi_node, volume_node)
    z = slice_index(world_to_volume([slice_point], volume_node)[0], slices)
    object_to_volume, size = flat_roi(roi_corners_in_volume_ras(roi_node, volume_node), z, slices)
    volume_to_roi_parent = vtk.vtkMatrix4x4()
    if not slicer.vtkMRMLTransformNode.GetMatrixTransformBetweenNodes(
            volume_node.GetParentTransformNode(), roi_node.GetParentTransformNode(), volume_to_roi_parent):
        raise InputError("the volume and the ROI are related by a non-linear transform; harden it first")
    object_to_node = slicer.util.arrayFromVTKMatrix(volume_to_roi_parent) @ object_to_volume
    object_to_node[:3, :3] /= np.linalg.norm(object_to_node[:3, :3], axis=0)
    was_modifying = roi_node.StartModify()
    try:
        roi_node.SetCenter(*object_to_node[:3, 3])
        roi_node.SetAndObserveObjectToNodeMatrix(slicer.util.vtkMatrixFromArray(object_to_node))
        roi_node.SetSize(*size)
    finally:
        roi_node.EndModify(was_modifying)


def view_box(volume_node, slice_node, corner1, corner2, geometry):
    """A box dragged on a slice view from `corner1` to `corner2` (world RAS, on the view's plane) ->
    (the view's slice layout, the volume's geometry in it, the voxel box on the slice it shows). The
    models segment the voxel slice closest to the view's plane; a view more than MAX_BOX_VIEW_TILT_DEG
    from every voxel axis is refused with one line."""
    from ..core.roi import RoiError, box_on_slice, drawn_box_corners, view_axes

    m = slicer.util.arrayFromVTKMatrix(slice_node.GetSliceToRAS())
    origin = m[:3, 3]
    frame = world_to_volume([origin, origin + m[:3, 0], origin + m[:3, 1], origin + m[:3, 2]], volume_node)
    in_volume = np.eye(4)
    in_volume[:3, :3] = (frame[1:] - frame[0]).T
    axes = view_axes(in_volume, geometry, MAX_BOX_VIEW_TILT_DEG)
    if axes is None:
        raise InputError(f"the {slice_node.GetName()} view is oblique to the volume's voxels (more than "
                         f"{MAX_BOX_VIEW_TILT_DEG:g} degrees): show an axial, sagittal or coronal slice")
    corners = world_to_volume(drawn_box_corners(corner1, corner2, m), volume_node)
    layout = geometry.resliced(axes)
    try:
        box = box_on_slice(corners, layout)
    except RoiError as e:
        raise InputError(str(e).replace("the ROI", "the box")) from None
    return axes, layout, box

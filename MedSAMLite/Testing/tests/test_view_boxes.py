"""A box dragged on a slice view of any orientation: the slice layout a view shows (core/roi.py view_axes,
Geometry.resliced) and, on the real MNI152 T1 in the engine, a box on a sagittal and a coronal slice gives
the mask that segmenting that 2D image directly with the same box gives."""
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import harness  # noqa: E402

MODULE = harness.load_module()
import slicer  # noqa: E402
from MedSAMLiteLib.core.geometry import Geometry  # noqa: E402
from MedSAMLiteLib.core.roi import view_axes  # noqa: E402

# Slicer's views (their SliceToRAS from the real presets) on a volume stored R->L, A->P, I->S... any
# storage: the canonical layout is D = inferior->superior, H = anterior->posterior, W = right->left.
# Axial: the canonical layout. Sagittal: slices along W, rows down the screen = superior->inferior
# (D reversed), columns = anterior->posterior (H). Coronal: slices along H (normal anterior: reversed),
# rows = D reversed, columns = right->left (W).
EXPECTED_AXES = {"Axial": (1, 2, 3), "Sagittal": (3, -1, 2), "Coronal": (-2, -1, 3)}


def slice_node(orientation, offset=0.0):
    scene = slicer.mrmlScene
    slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(scene)
    node = scene.AddNewNodeByClass("vtkMRMLSliceNode")
    node.SetDimensions(256, 256, 1)
    node.SetFieldOfView(250.0, 250.0, 1.0)
    assert node.SetOrientation(orientation)
    node.SetSliceOffset(offset)
    node.UpdateMatrices()
    return node


@pytest.fixture
def scene():
    return harness.new_scene()


@pytest.mark.parametrize("orientation", sorted(EXPECTED_AXES))
@pytest.mark.parametrize("ijk_to_ras", [np.diag([1.0, 1.0, 2.0, 1.0]),  # RAS storage
                                        np.diag([-1.0, -1.0, 2.0, 1.0]),  # LPS storage
                                        np.array([[0, 0, 1.0, 0], [0, -1.0, 0, 0], [2.0, 0, 0, 0], [0, 0, 0, 1]])])  # i = S
def test_each_view_slices_along_its_normal(scene, orientation, ijk_to_ras):
    node = slice_node(orientation)
    geometry = Geometry.from_ijk_to_ras((4, 5, 6), ijk_to_ras)
    assert view_axes(slicer.util.arrayFromVTKMatrix(node.GetSliceToRAS()), geometry, 20.0) == EXPECTED_AXES[orientation]


def test_oblique_views_within_the_tolerance_only(scene):
    node = slice_node("Sagittal")
    geometry = Geometry.from_ijk_to_ras((4, 5, 6), np.eye(4))
    m = slicer.util.arrayFromVTKMatrix(node.GetSliceToRAS())
    for degrees, expected in ((15, (3, -1, 2)), (30, None)):
        a = np.radians(degrees)
        rotation = np.eye(4)
        rotation[:2, :2] = [[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]  # about S: the normal turns towards A
        assert view_axes(rotation @ m, geometry, 20.0) == expected


def test_resliced_geometry_is_the_same_voxels_in_the_views_layout():
    """A sagittal layout (3, -1, 2) of a volume whose i runs to the patient's left, j posterior, k superior
    (so its canonical layout is the stored one), worked out by hand: slice z is i = z, rows are k reversed
    (superior first), columns are j."""
    source = np.arange(4 * 5 * 6).reshape(4, 5, 6)  # (k, j, i)
    geometry = Geometry.from_ijk_to_ras((6, 5, 4), np.diag([-1.0, -1.0, 1.0, 1.0]))  # i to the left, j posterior
    sagittal = geometry.resliced((3, -1, 2))
    view = sagittal.canonical_view(source)
    assert view.shape == (6, 4, 5) == sagittal.shape
    for z in range(6):
        # i runs to the patient's left = W's direction: slice z is i = z; rows k reversed; columns j (j is posterior)
        np.testing.assert_array_equal(view[z], source[::-1, :, z])
    extent, voxels = sagittal.crop_to_source(np.ones((1, 2, 3), bool), (4, 1, 2))
    assert extent == (4, 4, 2, 4, 1, 2)  # i = 4; j = columns 2..4; k = 4 - rows 1..2
    assert voxels.shape == (2, 3, 1)
    np.testing.assert_allclose(sagittal.index_to_world([[4, 1, 2]])[0], [-4, -2, 2])  # voxel (4, 2, 2): 4 mm left, 2 posterior


# -- the real MR -------------------------------------------------------------------------------------------

def _mni152():
    from MedSAMLiteLib.headless.samples import mni152_paths
    from MedSAMLiteLib.models.store import model_status

    if model_status("litemedsam") != "ready":
        pytest.skip("LiteMedSAM is not converted in this cache")
    import nibabel as nib

    path = mni152_paths()["t1"]
    image = nib.load(path)
    return path, np.asarray(image.dataobj), image.affine


# Boxes drawn by hand on the 2D images as a radiologist's viewer shows them (x = column, y = row):
# sagittal at i = 98 (x = 0 mm): rows superior->inferior, columns anterior->posterior; the corpus callosum.
# coronal at j = 120 (y = -14 mm): rows superior->inferior, columns right->left; the lateral ventricles.
CASES = {
    "Sagittal": (98, (62, 84, 145, 122), lambda data, n: data[n].T[::-1, ::-1],
                 lambda n, x, y, shape: (n, shape[1] - 1 - x, shape[2] - 1 - y)),
    "Coronal": (120, (78, 83, 120, 102), lambda data, n: data[:, n, :].T[::-1, ::-1],
                lambda n, x, y, shape: (shape[0] - 1 - x, n, shape[2] - 1 - y)),
}


@pytest.mark.parametrize("orientation", sorted(CASES))
def test_a_box_on_a_sagittal_or_coronal_slice_of_mni152_is_that_2d_image_segmented(scene, orientation):
    from MedSAMLiteLib.core import presets
    from MedSAMLiteLib.core.segmenter import Segmenter
    from MedSAMLiteLib.models.store import load_backend

    path, data, affine = _mni152()
    index, (x0, y0, x1, y1), image_of, voxel_of = CASES[orientation]
    picture = presets.clip_range(image_of(data, index), presets.percentile_range(data))
    segmenter = Segmenter(load_backend("litemedsam"))
    segmenter.set_image(picture[None])
    direct = segmenter.segment_2d(0, np.array([x0, y0, x1, y1], float))
    assert 100 < direct.sum() < (x1 - x0 + 1) * (y1 - y0 + 1)  # a structure, not the box

    volume = slicer.modules.volumes.logic().AddArchetypeVolume(str(path), "MNI152", 0, None)
    segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    # the box's corners: the centres of its corner pixels, in RAS through the file's own affine
    corners = [(affine @ [*voxel_of(index, x, y, data.shape), 1.0])[:3] for x, y in ((x0, y0), (x1, y1))]
    # the view's plane through the box (a sagittal view's normal points left, a coronal one's anterior)
    view = slice_node(orientation, offset=float(-corners[0][0] if orientation == "Sagittal" else corners[0][1]))
    logic = MODULE.MedSAMLiteLogic()
    segmentId = logic.segmentBoxOnSlice(volume, view, corners[0], corners[1], segmentation, mode="2d", preset="mr")
    result = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, segmentId, volume)  # (k, j, i)
    written = np.transpose(result, (2, 1, 0))  # (i, j, k) as nibabel's array
    assert written.sum() == direct.sum()
    np.testing.assert_array_equal(image_of(written, index) > 0, direct)

    run = logic.startBoxOnSlice(volume, view, corners[1], corners[0], preset="mr")  # dragged the other way
    run.task.wait(120)
    extent, voxels = logic.boxResult(run)
    assert extent[0:2] == (index, index) if orientation == "Sagittal" else extent[2:4] == (index, index)
    assert voxels.sum() == direct.sum()

"""The ROI geometry the Logic hands matrices to (pure numpy): the slice nearest a point, where a view's
plane crosses the ROI's slicing line, an ROI flattened onto one slice. Expected values worked out by
hand on a volume whose voxel axes are RAS (i -> R, j -> A, k -> S; spacing 1, 1, 2 mm)."""
import numpy as np
import pytest

from MedSAMLiteLib.core.geometry import Geometry
from MedSAMLiteLib.core.roi import flat_roi, plane_crossing, slice_index

GEOMETRY = Geometry.from_ijk_to_ras((20, 10, 5), np.diag([1.0, 1.0, 2.0, 1.0]))  # slices are k: z = 2k mm


@pytest.mark.parametrize("z, expected", [(4.1, 2), (4.9, 2), (5.1, 3), (100.0, 4), (-100.0, 0)])
def test_slice_index_is_the_nearest_slice_clipped_to_the_volume(z, expected):
    assert slice_index((3.0, 4.0, z), GEOMETRY) == expected


def test_an_axial_plane_crosses_at_its_height():
    np.testing.assert_allclose(plane_crossing((0, 0, 5.0), (0, 0, 1.0), (3, 4, 1.0), GEOMETRY, 45), (3, 4, 5.0))


def test_a_tilted_plane_crosses_where_its_equation_says():
    normal = (0.0, np.sin(np.radians(30)), np.cos(np.radians(30)))  # 0.5 y + 0.866 (z - 5) = 0
    point = plane_crossing((0, 0, 5.0), normal, (3, 4, 1.0), GEOMETRY, 45)
    np.testing.assert_allclose(point, (3, 4, 5 - 0.5 * 4 / np.cos(np.radians(30))))


def test_a_sagittal_plane_crosses_no_slice_and_a_single_slice_is_its_own():
    assert plane_crossing((0, 0, 5.0), (1.0, 0, 0), (3, 4, 1.0), GEOMETRY, 45) is None
    single = Geometry.from_ijk_to_ras((20, 10, 1), np.eye(4))
    np.testing.assert_allclose(plane_crossing((0, 0, 9.0), (1.0, 0, 0), (3, 4, 0.0), single, 45), (3, 4, 0.0))


def test_a_flattened_roi_is_one_slice_thick_on_the_voxels_the_corners_cover():
    corners = np.array([[x, y, z] for x in (2.0, 6.0) for y in (3.0, 8.0) for z in (1.0, 7.0)])
    object_to_volume, size = flat_roi(corners, 2, GEOMETRY)
    # x runs along the columns (right -> left: -R), y along the rows (anterior -> posterior: -A), z up
    expected = np.array([[-1.0, 0, 0, 4.0], [0, -1.0, 0, 5.5], [0, 0, 1.0, 4.0], [0, 0, 0, 1]])
    np.testing.assert_allclose(object_to_volume, expected, atol=1e-12)
    np.testing.assert_allclose(size, (4.0, 5.0, 1.0))

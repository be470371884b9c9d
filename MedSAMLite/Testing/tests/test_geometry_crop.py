"""Geometry.crop_to_source: a crop of the canonical array lands on the same voxels of the source array
in every storage order (the expected voxels are the source array itself, sliced by hand)."""
import itertools

import numpy as np
import pytest

from MedSAMLiteLib.core.geometry import Geometry


def _directions():
    """Every axis permutation with flips of an LPS direction matrix, and a slightly oblique one."""
    out = []
    for perm in itertools.permutations(range(3)):
        for signs in ((1, 1, 1), (-1, 1, -1), (1, -1, 1)):
            d = np.zeros((3, 3))
            for a, (w, s) in enumerate(zip(perm, signs)):
                d[w, a] = s
            out.append(d)
    c, s = np.cos(0.2), np.sin(0.2)
    out.append(np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]]))
    return out


@pytest.mark.parametrize("direction", _directions())
def test_crop_lands_on_the_same_source_voxels(direction):
    rng = np.random.default_rng(0)
    size = (7, 9, 11)  # i, j, k
    source = rng.integers(0, 255, size[::-1]).astype(np.uint8)  # (k, j, i)
    geometry = Geometry.from_source(size, (1.0, 1.5, 2.0), (0.0, 0.0, 0.0), direction)
    canonical = geometry.from_source_array(source)
    d, h, w = canonical.shape
    origin = (1, 2, 3)
    crop = canonical[1:d - 1, 2:h - 1, 3:w - 2]
    extent, voxels = geometry.crop_to_source(crop, origin)
    i0, i1, j0, j1, k0, k1 = extent
    np.testing.assert_array_equal(voxels, source[k0:k1 + 1, j0:j1 + 1, i0:i1 + 1])
    assert voxels.size == crop.size


def test_a_single_canonical_slice_is_one_source_plane():
    size = (5, 6, 4)  # slices stacked along i (sagittal): canonical z runs along source i
    direction = np.array([[0, 0, -1], [1, 0, 0], [0, -1, 0.0]]).T
    geometry = Geometry.from_source(size, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), direction)
    canonical = np.zeros(geometry.shape, np.uint8)
    extent, voxels = geometry.crop_to_source(canonical[2:3], (2, 0, 0))
    assert sum(extent[2 * a] == extent[2 * a + 1] for a in range(3)) == 1
    assert voxels.shape == tuple(extent[2 * a + 1] - extent[2 * a] + 1 for a in (2, 1, 0))

"""NSD at 2 mm (headless/surface.py) against values worked out by hand for cubes.

A cube of n^3 voxels has its surface points on the boundary of the (n+1)^3 corner grid: face points
(4 of their 8 voxels inside: two half-squares, area of one voxel face), edge points (2 voxels: two
triangles of area vector (2, 2, 0)/8) and corner points (1 voxel: (1, 1, 1)/8), each vector's
components scaled by the areas of the voxel faces (s1*s2, s0*s2, s0*s1). A point is within tolerance
when the other surface has a point within 2 mm. (pytorch/tests compares the same code with DeepMind's
surface-distance on real masks.)"""
import math

import numpy as np
import pytest

pytest.importorskip("scipy")
from MedSAMLiteLib.headless.surface import surface_dice  # noqa: E402

N = 10


def _cubes(shift: int, axis: int = 0):
    a = np.zeros((N + 8, N + 8, N + 8), bool)
    a[2 : 2 + N, 2 : 2 + N, 2 : 2 + N] = True
    return a, np.roll(a, shift, axis=axis)


def _shifted_by_three(s0: float) -> float:
    """Cube B = cube A moved 3 voxels of s0 mm (> 2 mm) along axis 0, 1 mm voxels across.

    By symmetry both cubes count the same. Of A: its bottom face (corner plane 0) is at least 3 voxels
    from B: out. The rings of side points on corner planes 1 and 2 are 2 or fewer voxels below B's bottom
    face, and from plane 3 up they lie on B's sides: in. On the top face the edges and corners lie on B's
    sides; an inner point is in when it is at most 2 points from the edge (B's side points on the same
    plane), i.e. all but the inner (N - 5)^2; B's top face is 3 voxels up."""
    inner, edge = (N - 1) ** 2, N - 1
    top = 1.0  # a face point of a face across axis 0: s1 * s2
    side = s0  # across axis 1 or 2: s0 * s2 or s0 * s1
    upright = 2 * math.hypot(2 * s0, 2 * s0) / 8  # an edge along axis 0
    flat = 2 * math.hypot(2.0, 2 * s0) / 8  # an edge along axis 1 or 2
    corner = math.sqrt(1 + 2 * s0 * s0) / 8
    total = 2 * inner * top + 4 * inner * side + 4 * edge * upright + 8 * edge * flat + 8 * corner
    ring = 4 * edge * side + 4 * upright  # one corner plane of A's sides
    near = (N - 1) * ring + 4 * edge * flat + 4 * corner + (inner - (N - 5) ** 2) * top
    return near / total


def test_identical_masks_score_one():
    a, _ = _cubes(0)
    assert surface_dice(a, a, (1.0, 1.0, 1.0)) == 1.0
    assert surface_dice(a, a, (3.0, 0.7, 0.7)) == 1.0


@pytest.mark.parametrize("shift", [1, 2])
def test_a_shift_within_two_mm_scores_one(shift):
    a, b = _cubes(shift)
    assert surface_dice(a, b, (1.0, 1.0, 1.0), 2.0) == pytest.approx(1.0)  # 2 voxels: exactly at the tolerance


def test_a_shift_of_three_voxels_by_hand():
    a, b = _cubes(3)
    expected = (380 + 36 * math.sqrt(2) + math.sqrt(3) / 2) / (486 + 54 * math.sqrt(2) + math.sqrt(3))
    assert _shifted_by_three(1.0) == pytest.approx(expected)  # the formula, checked at 1 mm by counting
    assert surface_dice(a, b, (1.0, 1.0, 1.0), 2.0) == pytest.approx(expected, abs=1e-12)
    assert surface_dice(b, a, (1.0, 1.0, 1.0), 2.0) == pytest.approx(expected, abs=1e-12)


def test_anisotropic_spacing_by_hand():
    a, b = _cubes(3)
    # 3 voxels of 0.8 mm are 2.4 mm: the same points out as at 1 mm, with other areas
    assert surface_dice(a, b, (0.8, 1.0, 1.0), 2.0) == pytest.approx(_shifted_by_three(0.8), abs=1e-12)
    # the spacing goes with its axis: the same cubes moved along the last axis
    a, b = _cubes(3, axis=2)
    assert surface_dice(a, b, (1.0, 1.0, 0.8), 2.0) == pytest.approx(_shifted_by_three(0.8), abs=1e-12)
    # 3 voxels of 0.5 mm are 1.5 mm: every point within tolerance
    assert surface_dice(*_cubes(3), (0.5, 1.0, 1.0), 2.0) == pytest.approx(1.0)


def test_far_apart_and_empty():
    a = np.zeros((2 * N + 9, N + 4, N + 4), bool)
    b = a.copy()
    a[2 : 2 + N, 2 : 2 + N, 2 : 2 + N] = True
    b[N + 5 : 2 * N + 5, 2 : 2 + N, 2 : 2 + N] = True  # 3 voxels apart
    assert surface_dice(a, b, (1.0, 1.0, 1.0)) == 0.0
    assert surface_dice(a, np.zeros_like(a), (1.0, 1.0, 1.0)) == 0.0
    assert math.isnan(surface_dice(np.zeros_like(a), np.zeros_like(a), (1.0, 1.0, 1.0)))

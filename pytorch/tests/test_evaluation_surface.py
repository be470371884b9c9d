"""NSD / surface distances against DeepMind's `surface-distance` (the challenge's reference) on real
masks, 2D and 3D, anisotropic spacing included; hand-computed surfel cases; the lookup tables."""
from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from MedSAMLiteLib.headless import surface as S
from medsamlite_torch.evaluation.metrics import score_case
from MedSAMLiteLib.headless.surface import surface, surface_dice
from MedSAMLiteLib.headless.surface_tables import contour_lengths, surfel_areas

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def reference():
    sd = pytest.importorskip(
        "surface_distance", reason="the reference package is not installed: pip install surface-distance==0.1")
    from scipy import ndimage as ndi

    # surface-distance 0.1 calls scipy.ndimage.filters/morphology, deprecated aliases that SciPy may drop
    if not (hasattr(getattr(ndi, "filters", None), "correlate") and hasattr(getattr(ndi, "morphology", None), "distance_transform_edt")):
        pytest.skip("this SciPy no longer has scipy.ndimage.filters/morphology, which surface-distance 0.1 calls")
    return sd


# ---- real masks ---------------------------------------------------------------------------------

@lru_cache(maxsize=None)
def coins_labels() -> np.ndarray:
    """scikit-image's coins photo: one label per coin (Otsu, holes filled)."""
    from skimage import data, filters

    image = data.coins()
    fg = ndimage.binary_fill_holes(ndimage.binary_opening(image > filters.threshold_otsu(image), iterations=2))
    labels, _ = ndimage.label(fg)
    return labels.astype(np.uint16)


@lru_cache(maxsize=None)
def brain_labels() -> tuple[np.ndarray, tuple[float, float, float]]:
    """nibabel's example4d MR volume (first frame), array axes (z, y, x) with its voxel size:
    label 1 the head/brain tissue, label 2 its core (eroded)."""
    import nibabel as nib

    img = nib.load(Path(nib.__file__).parent / "tests" / "data" / "example4d.nii.gz")
    vol = np.asanyarray(img.dataobj)[..., 0].astype(np.float32)
    mask = ndimage.binary_opening(vol > np.percentile(vol, 60))
    labels = np.zeros(vol.shape, np.uint8)
    labels[mask] = 1
    labels[ndimage.binary_erosion(mask, iterations=3)] = 2
    zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    return np.ascontiguousarray(labels.transpose(2, 1, 0)), zooms[::-1]


def perturb(labels: np.ndarray, kind: str) -> np.ndarray:
    if kind == "dilate":
        return ndimage.grey_dilation(labels, size=(3,) * labels.ndim)
    if kind == "shift":
        return np.roll(labels, (2, -1) + (1,) * (labels.ndim - 2), axis=tuple(range(labels.ndim)))
    if kind == "erode":
        return np.where(ndimage.grey_erosion(labels, size=(3,) * labels.ndim) == labels, labels, 0).astype(labels.dtype)
    if kind == "noise":
        rng = np.random.default_rng(0)
        flip = rng.random(labels.shape) < 0.02
        return np.where(flip, 0, ndimage.grey_dilation(labels, size=(2,) * labels.ndim)).astype(labels.dtype)
    raise ValueError(kind)


def ref_nsd(sd, a, b, spacing, tol=2.0):
    return sd.compute_surface_dice_at_tolerance(sd.compute_surface_distances(a, b, spacing), tol)


# ---- tables ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (2.5, 0.7, 0.9), (0.3, 3.0, 1.1)])
def test_surfel_area_table_equals_reference(spacing):
    sd = reference()
    np.testing.assert_allclose(surfel_areas(spacing), sd.lookup_tables.create_table_neighbour_code_to_surface_area(spacing),
                               rtol=0, atol=1e-12)


@pytest.mark.parametrize("spacing", [(1.0, 1.0), (0.7, 2.3)])
def test_contour_table_equals_reference(spacing):
    sd = reference()
    np.testing.assert_allclose(contour_lengths(spacing), sd.lookup_tables.create_table_neighbour_code_to_contour_length(spacing),
                               rtol=0, atol=1e-12)


# ---- hand-computed --------------------------------------------------------------------------------

def test_single_voxel_surface_by_hand():
    # a lone voxel: its 8 corners each carry a corner triangle of area sqrt(3)/8 (unit spacing)
    surf = surface(np.ones((1, 1, 1), bool), (1.0, 1.0, 1.0))
    assert surf.index.size == 8
    assert surf.area.sum() == pytest.approx(math.sqrt(3))
    # a lone pixel's contour is a diamond of four half-diagonals
    assert surface(np.ones((1, 1), bool), (1.0, 1.0)).area.sum() == pytest.approx(2 * math.sqrt(2))


@pytest.mark.parametrize("gap,spacing,expected", [
    (0, 1.0, 1.0),   # same voxel
    (2, 1.0, 1.0),   # corner planes 1 and 2 apart: all within 2
    (3, 1.0, 0.5),   # corner distances 2 (in) and 3 (out): half the surfels
    (4, 1.0, 0.0),   # 3 and 4: none
    (3, 0.5, 1.0),   # 3 voxels of 0.5: 1.0 and 1.5
    (5, 0.5, 0.5),   # 2.0 (in, exactly at the tolerance) and 2.5 (out)
])
def test_two_voxels_nsd_by_hand(gap, spacing, expected):
    a = np.zeros((8, 3, 3), bool)
    b = np.zeros_like(a)
    a[1, 1, 1] = True
    b[1 + gap, 1, 1] = True
    assert surface_dice(a, b, (spacing, 1.0, 1.0), 2.0) == pytest.approx(expected)


def test_empty_masks_by_hand():
    a = np.zeros((4, 4, 4), bool)
    b = a.copy()
    b[1, 1, 1] = True
    assert math.isnan(surface_dice(a, a, (1, 1, 1)))  # nothing to compare: excluded by the callers
    assert surface_dice(a, b, (1, 1, 1)) == 0.0
    assert surface_dice(b, a, (1, 1, 1)) == 0.0


def test_crop_does_not_change_border_surface():
    # an object filling the whole volume has a surface at the volume border (the reference pads)
    full = np.ones((5, 6, 7), bool)
    inner = np.zeros_like(full)
    inner[1:-1, 1:-1, 1:-1] = True
    assert surface_dice(full, full, (1, 1, 1)) == 1.0
    sd = reference()
    assert surface_dice(full, inner, (1, 1, 1), 0.5) == pytest.approx(ref_nsd(sd, full, inner, (1, 1, 1), 0.5), abs=1e-12)


# ---- against the reference on real masks -----------------------------------------------------------

@pytest.mark.parametrize("kind", ["dilate", "shift", "erode", "noise"])
def test_2d_challenge_slab_equals_reference(kind):
    sd = reference()
    gt = coins_labels()
    pred = perturb(gt, kind)
    for label in (5, int(gt.max())):
        a, b = gt == label, pred == label
        if not a.any() or not b.any():
            continue
        ours = surface_dice(a[..., None], b[..., None], (1.0, 1.0, 1.0))
        assert ours == pytest.approx(ref_nsd(sd, a[..., None], b[..., None], [1.0, 1.0, 1.0]), abs=1e-6)


@pytest.mark.parametrize("kind", ["dilate", "shift"])
def test_2d_contour_equals_reference(kind):
    sd = reference()
    gt = coins_labels()
    pred = perturb(gt, kind)
    for label in (2, 9, int(gt.max())):
        a, b = gt == label, pred == label
        assert surface_dice(a, b, (1.0, 1.0)) == pytest.approx(ref_nsd(sd, a, b, (1.0, 1.0)), abs=1e-6)


@pytest.mark.parametrize("kind,spacing", [
    ("dilate", None), ("shift", (3.0, 0.8, 0.8)), ("erode", (0.6, 1.7, 1.0)), ("noise", None)])
def test_3d_equals_reference(kind, spacing):
    sd = reference()
    gt, native = brain_labels()
    spacing = native if spacing is None else spacing
    pred = perturb(gt, kind)
    for label in (1, 2):
        a, b = gt == label, pred == label
        assert surface_dice(a, b, spacing) == pytest.approx(ref_nsd(sd, a, b, spacing), abs=1e-6)


@pytest.mark.parametrize("cost", [0.0, 1e9])  # force the distance transform / the offset search
def test_both_search_paths_equal_reference(monkeypatch, cost):
    sd = reference()
    monkeypatch.setattr(S, "_EDT_COST_PER_VOXEL", cost)
    gt, _ = brain_labels()
    pred = perturb(gt, "shift")
    for spacing in [(0.4, 0.45, 0.5), (5.0, 1.0, 1.0)]:
        a, b = gt == 2, pred == 2
        assert surface_dice(a, b, spacing) == pytest.approx(ref_nsd(sd, a, b, spacing), abs=1e-6)


def test_random_shapes_equal_reference():
    sd = reference()
    rng = np.random.default_rng(7)
    for _ in range(60):
        nd = int(rng.integers(2, 4))
        shape = tuple(int(n) for n in rng.integers(2, 14, size=nd))
        a = rng.random(shape) < rng.uniform(0.1, 0.7)
        b = np.roll(a ^ (rng.random(shape) < 0.1), int(rng.integers(-2, 3)), axis=0)
        if not a.any() or not b.any():
            continue
        spacing = tuple(float(s) for s in rng.choice([0.5, 0.7, 1.0, 1.3, 2.5], size=nd))
        tol = float(rng.choice([0.5, 1.0, 2.0, 3.7]))
        assert surface_dice(a, b, spacing, tol) == pytest.approx(ref_nsd(sd, a, b, spacing, tol), abs=1e-9)


def _official(sd, gts, segs, kind, spacing=None):
    """evaluation/compute_metrics.py of the challenge (labels 1..max, DSC gate 0.2)."""
    labels = range(1, int(gts.max()) + 1)
    dsc = np.mean([sd.compute_dice_coefficient(gts == i, segs == i) for i in labels])
    if not dsc > 0.2:
        return dsc, 0.0
    if kind == "2D":
        gts, segs, spacing = gts[..., None], segs[..., None], [1.0, 1.0, 1.0]
    nsd = np.mean([ref_nsd(sd, gts == i, segs == i, spacing) for i in labels])
    return dsc, nsd


@pytest.mark.parametrize("kind", ["noise"])
def test_case_scores_equal_official_formula(kind):
    sd = reference()
    gt2 = coins_labels()
    score = score_case(gt2, perturb(gt2, kind), "2D")
    dsc, nsd = _official(sd, gt2, perturb(gt2, kind), "2D")
    assert score.dsc == pytest.approx(dsc, abs=1e-6) and score.nsd == pytest.approx(nsd, abs=1e-6)
    gt3, spacing = brain_labels()
    score = score_case(gt3, perturb(gt3, kind), "3D", np.asarray(spacing, np.float32))
    dsc, nsd = _official(sd, gt3, perturb(gt3, kind), "3D", np.asarray(spacing, np.float32))
    assert score.dsc == pytest.approx(dsc, abs=1e-6) and score.nsd == pytest.approx(nsd, abs=1e-6)

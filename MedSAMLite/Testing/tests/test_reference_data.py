"""The compact reference set in the repository holds exactly the whole set's values where it keeps any."""
import numpy as np
import pytest

from reference import COMPACT, FULL, GOLDENS, KEPT, KEY_LISTS, compact_golden, compact_image, requires_full_reference

pytestmark = requires_full_reference


@pytest.mark.parametrize("name", GOLDENS)
def test_goldens_equal_the_whole_set_where_kept(name):
    compact = compact_golden(name)
    with np.load(FULL / f"{name}.golden.npz") as whole:
        assert set(compact) == set(whole.files)
        for key in whole.files:
            expected = whole[key]
            assert compact[key].shape == expected.shape and compact[key].dtype == expected.dtype, key
            kept = ~np.isnan(compact[key]) if key in KEPT else np.ones(expected.shape, bool)
            assert np.array_equal(compact[key][kept], expected[kept]), key
            if key in KEPT:
                assert np.array_equal(kept, _mask(expected.shape, KEPT[key])), key


def _mask(shape, index) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[index] = True
    return mask


@pytest.mark.parametrize("size", [256, 512, 1024])
def test_images_equal_the_whole_set(size):
    assert np.array_equal(compact_image(size), np.load(FULL / f"image_{size}.npy"))


@pytest.mark.parametrize("name", KEY_LISTS)
def test_key_lists_equal_the_whole_set(name):
    assert (COMPACT / f"{name}.keys.tsv").read_bytes() == (FULL / f"{name}.keys.tsv").read_bytes()

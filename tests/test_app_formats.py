"""The app on medical files: NIfTI and DICOM in, intensity presets, masks saved in the source geometry.

References: nibabel and SimpleITK read the files independently; intensities are checked against
medficient.formats' window/percentile functions (tested by hand-computed values there).
"""
from __future__ import annotations

import shutil

import nibabel as nib
import numpy as np
import pytest
from app_fixtures import client, decode_png, engine, error, opened, overlay_mask, pool, ref2d  # noqa: F401  (fixtures)

from medficient.formats import geometry_of, read_image, window, write_mask
from medficient.samples import mni152_paths

BOX = [40, 40, 150, 190]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    import pydicom.data

    root = tmp_path_factory.mktemp("data")
    t1 = nib.load(mni152_paths()["t1"])
    slab = t1.slicer[:, :, 70:84]  # 14 axial slices, affine kept by nibabel
    nib.save(nib.Nifti1Image(np.asarray(slab.dataobj), slab.affine), root / "mni_slab.nii.gz")
    (root / "ct").mkdir()
    shutil.copy(pydicom.data.get_testdata_file("CT_small.dcm"), root / "ct" / "slice1.dcm")
    (root / "garbage.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    np.savez(root / "3DBox_plain.npz", imgs=np.asarray(read_image(root / "mni_slab.nii.gz").to_uint8()), spacing=np.array([1.0, 1.0, 2.0]))
    return root


def test_open_nifti_in_the_formats_layout(client, data_dir):
    sid = opened(client, "mni_slab.nii.gz")
    scan = client.get(f"/api/s/{sid}").json()["scan"]
    image = read_image(data_dir / "mni_slab.nii.gz")
    u8 = image.to_uint8()  # MR, modality unknown: percentile clipping
    assert scan["shape"] == list(image.array.shape) and scan["spacing"] == [1.0, 1.0, 1.0]
    assert scan["preset"] == "auto" and "percentile" in scan["intensity"]
    assert {"auto", "brain", "lung", "percentile", "custom window"} <= set(scan["presets"])
    assert {"nifti", "nrrd", "npz"} == set(scan["formats"])
    np.testing.assert_array_equal(decode_png(client.get(f"/api/s/{sid}/slice/0/7.png").content), u8[7])
    np.testing.assert_array_equal(decode_png(client.get(f"/api/s/{sid}/slice/1/100.png").content), u8[:, 100])
    # the layout is (D,H,W) = inferior->superior, anterior->posterior, right->left, checked with nibabel
    source = np.asarray(nib.load(data_dir / "mni_slab.nii.gz").dataobj)  # (i,j,k) RAS+
    assert nib.aff2axcodes(nib.load(data_dir / "mni_slab.nii.gz").affine) == ("R", "A", "S")
    np.testing.assert_array_equal(image.array, source.transpose(2, 1, 0)[:, ::-1, ::-1])


def test_presets_change_what_is_shown_and_segmented(client, data_dir, ref2d):
    sid = opened(client, "mni_slab.nii.gz")
    raw = read_image(data_dir / "mni_slab.nii.gz").array
    r = client.post(f"/api/s/{sid}/preset", json={"preset": "brain"})
    assert r.status_code == 200 and r.json()["scan"]["intensity"] == "CT window W80/L40"
    brain = window(raw, 80, 40)
    np.testing.assert_array_equal(decode_png(client.get(f"/api/s/{sid}/slice/0/7.png").content), brain[7])
    client.post(f"/api/s/{sid}/objects", json={"axis": 0, "index": 7, "box": BOX})
    np.testing.assert_array_equal(overlay_mask(client, sid, 0, 7)[..., 3] == 255, ref2d(brain[7], BOX))
    r = client.post(f"/api/s/{sid}/preset", json={"preset": "custom window", "window": [300, 60]})
    assert r.json()["scan"]["window"] == [300, 60]
    np.testing.assert_array_equal(decode_png(client.get(f"/api/s/{sid}/slice/2/90.png").content), window(raw, 300, 60)[:, :, 90])
    assert "positive" in error(client.post(f"/api/s/{sid}/preset", json={"preset": "custom window", "window": [0, 40]}), 400)
    assert "width and level" in error(client.post(f"/api/s/{sid}/preset", json={"preset": "custom window"}), 400)
    assert "width and level" in error(client.post(f"/api/s/{sid}/preset", json={"preset": "lung", "window": [1, 2]}), 400)
    assert "does not apply" in error(client.post(f"/api/s/{sid}/preset", json={"preset": "none"}), 400)
    error(client.post(f"/api/s/{sid}/preset", json={"preset": "custom window", "window": [1]}), 422)
    assert len(client.get(f"/api/s/{sid}").json()["objects"]) == 1  # masks stay


def test_save_nifti_and_nrrd_in_the_source_geometry(client, data_dir, ref2d):
    import SimpleITK as sitk

    sid = opened(client, "mni_slab.nii.gz")
    client.post(f"/api/s/{sid}/objects", json={"axis": 0, "index": 7, "box": BOX})
    r = client.post(f"/api/s/{sid}/save", json={"format": "nifti"})
    assert r.status_code == 200, r.text
    assert r.json()["path"] == "segmentations/mni_slab_labels.nii.gz"
    saved, source = nib.load(data_dir / r.json()["path"]), nib.load(data_dir / "mni_slab.nii.gz")
    np.testing.assert_allclose(saved.affine, source.affine)
    mask = np.asarray(saved.dataobj)
    assert mask.shape == source.shape and set(np.unique(mask)) == {0, 1}
    assert set(np.nonzero(mask)[2]) == {7}  # axial slice 7 of the array is source k = 7 (RAS: k runs inferior->superior)
    # and it is the mask of the box on what the page showed, flipped back by hand
    expected = ref2d(read_image(data_dir / "mni_slab.nii.gz").to_uint8()[7], BOX)
    np.testing.assert_array_equal(mask[:, :, 7], expected[::-1, ::-1].T)

    r = client.post(f"/api/s/{sid}/save", json={"format": "nrrd", "path": "out/mask.nrrd"})
    nrrd, src = sitk.ReadImage(str(data_dir / "out/mask.nrrd")), sitk.ReadImage(str(data_dir / "mni_slab.nii.gz"))
    np.testing.assert_allclose(nrrd.GetOrigin(), src.GetOrigin())
    np.testing.assert_allclose(nrrd.GetDirection(), src.GetDirection())
    np.testing.assert_array_equal(sitk.GetArrayFromImage(nrrd), mask.T)
    assert "ends with .nii.gz" in error(client.post(f"/api/s/{sid}/save", json={"format": "nifti", "path": "x.png"}), 400)


def test_saved_case_carries_the_geometry(client, data_dir, tmp_path):
    sid = opened(client, "mni_slab.nii.gz")
    client.post(f"/api/s/{sid}/objects", json={"axis": 0, "index": 7, "box": BOX})
    client.post(f"/api/s/{sid}/save", json={"format": "nifti", "path": "a.nii.gz"})
    client.post(f"/api/s/{sid}/save", json={"format": "npz", "path": "a.npz"})
    case = np.load(data_dir / "a.npz")
    assert geometry_of(data_dir / "a.npz").same_grid(read_image(data_dir / "mni_slab.nii.gz").geometry)
    write_mask(case["gts"], data_dir / "a.npz", tmp_path / "b.nii.gz")  # what `medficient to-image --like` does
    np.testing.assert_array_equal(np.asarray(nib.load(tmp_path / "b.nii.gz").dataobj), np.asarray(nib.load(data_dir / "a.nii.gz").dataobj))
    assert str(case["intensity"]).startswith("clipped")


def test_case_without_geometry_saves_with_its_spacing(client, data_dir):
    sid = opened(client, "3DBox_plain.npz")
    assert client.get(f"/api/s/{sid}").json()["scan"]["spacing"] == [1.0, 1.0, 2.0]
    obj = client.post(f"/api/s/{sid}/objects", json={"axis": 0, "index": 7, "box": BOX}).json()["object"]
    client.post(f"/api/s/{sid}/save", json={"format": "nifti", "path": "plain.nii.gz"})
    saved = nib.load(data_dir / "plain.nii.gz")
    np.testing.assert_allclose(saved.affine, np.diag([-2.0, -1.0, 1.0, 1.0]))  # LPS axes -> RAS affine, dx = 2
    labels = np.asarray(saved.dataobj).transpose(2, 1, 0)  # nibabel (i,j,k) = (W,H,D)
    assert labels.sum() == obj["voxels"] and set(np.nonzero(labels)[0]) == {7}


def test_dicom_ct_gets_a_ct_window(client, data_dir):
    raw = read_image(data_dir / "ct").array
    for path in ("ct", "ct/slice1.dcm"):
        sid = opened(client, path)
        scan = client.get(f"/api/s/{sid}").json()["scan"]
        assert scan["is_2d"] and scan["modality"] == "CT" and scan["intensity"] == "CT window W400/L40"
        np.testing.assert_array_equal(decode_png(client.get(f"/api/s/{sid}/slice/0/0.png").content), window(raw, 400, 40))


def test_unreadable_medical_files(client):
    sid = opened(client, "mni_slab.nii.gz")
    assert "garbage.nii.gz" in error(client.post(f"/api/s/{sid}/open", json={"path": "garbage.nii.gz"}), 400)
    assert client.get(f"/api/s/{sid}").json()["scan"]["name"] == "mni_slab.nii.gz"  # the open image stays

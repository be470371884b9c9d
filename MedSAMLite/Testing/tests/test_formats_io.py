"""Reading and writing real files with correct geometry: MNI152 NIfTI (and reoriented copies), pydicom's
CT/MR files, PNG/JPEG. Expected values come from nibabel, pydicom, OpenCV and SimpleITK's own DICOMOrient."""
import os
import shutil
from pathlib import Path

import cv2
import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.data import get_testdata_file

from MedSAMLiteLib.headless.image_io import FormatError, read_image, read_labels, write_mask
from MedSAMLiteLib.headless.samples import mni152_paths

DICOM_TESTS = Path(pydicom.data.__file__).parent / "test_files"
CT5N = DICOM_TESTS / "dicomdirtests/98892001/CT5N"  # 5 axial CT slices, 16x16, stored superior first


@pytest.fixture(scope="module")
def mni(tmp_path_factory) -> Path:
    """A 36x40x12 crop of the MNI152 T1 (RAS storage), saved with nibabel (affine adjusted by nibabel)."""
    img = nib.load(mni152_paths()["t1"]).slicer[80:116, 100:140, 60:72]
    path = tmp_path_factory.mktemp("mni") / "t1.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), img.affine), path)
    return path


def _reoriented(src: Path, codes: tuple[str, str, str], out: Path) -> Path:
    """The same image stored with other axis codes (nibabel computes data and affine)."""
    img = nib.load(src)
    transform = nib.orientations.ornt_transform(nib.orientations.io_orientation(img.affine), nib.orientations.axcodes2ornt(codes))
    nib.save(img.as_reoriented(transform), out)
    assert nib.aff2axcodes(nib.load(out).affine) == codes
    return out


def test_mni_layout_and_affine_by_hand(mni):
    src = nib.load(mni)
    data = np.asarray(src.dataobj)
    ni, nj, nk = data.shape
    img = read_image(mni)
    assert img.kind == "3D" and img.array.shape == (nk, nj, ni)
    assert img.geometry.source_orientation == "RAS"
    # RAS storage -> (D,H,W) = (k, flipped j, flipped i): inferior->superior, anterior->posterior, right->left
    np.testing.assert_array_equal(img.array, data[::-1, ::-1, :].transpose(2, 1, 0))
    np.testing.assert_allclose(img.spacing, np.abs(np.diag(src.affine))[[2, 1, 0]])
    d, h, w = 3, 5, 7
    expected = src.affine @ [ni - 1 - w, nj - 1 - h, d, 1]
    np.testing.assert_allclose(img.geometry.index_to_world([[d, h, w]])[0], expected[:3])
    np.testing.assert_allclose(img.geometry.world_to_index(expected[None, :3])[0], [d, h, w], atol=1e-9)


def test_mni_mask_round_trip_same_affine_same_voxels(mni, tmp_path):
    src = nib.load(mni)
    img = read_image(mni)
    out = write_mask((img.array > 100).astype(np.uint8) * 3, img, tmp_path / "mask.nii.gz")
    mask = nib.load(out)
    np.testing.assert_allclose(mask.affine, src.affine, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(mask.dataobj), (np.asarray(src.dataobj) > 100) * 3)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left behind


@pytest.mark.parametrize("codes", [("L", "P", "S"), ("P", "S", "L"), ("I", "L", "A")])
def test_reoriented_copies_give_the_same_array_and_masks_land_on_them(mni, tmp_path, codes):
    original = read_image(mni)
    path = _reoriented(mni, codes, tmp_path / "re.nii.gz")
    img = read_image(path)
    np.testing.assert_array_equal(img.array, original.array)  # the same physical voxels, the same layout
    np.testing.assert_allclose(img.geometry.affine, original.geometry.affine, atol=1e-4)
    out = write_mask((img.array > 100).astype(np.uint8), img, tmp_path / "mask.nii.gz")
    stored = nib.load(path)
    np.testing.assert_allclose(nib.load(out).affine, stored.affine, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(nib.load(out).dataobj), np.asarray(stored.dataobj) > 100)


def test_layout_equals_simpleitk_dicomorient(mni, tmp_path):
    """Our axis permutation/flips agree with SimpleITK's DICOMOrient to LPS, also for an oblique scan."""
    path = _reoriented(mni, ("A", "I", "R"), tmp_path / "air.nii.gz")
    oblique = sitk.ReadImage(str(path))
    angle = np.deg2rad(20)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    oblique.SetDirection((rotation @ np.reshape(oblique.GetDirection(), (3, 3))).ravel().tolist())
    sitk.WriteImage(oblique, str(tmp_path / "oblique.nrrd"))
    for p in (path, tmp_path / "oblique.nrrd"):
        reference = sitk.DICOMOrient(sitk.ReadImage(str(p)), "LPS")
        img = read_image(p)
        np.testing.assert_array_equal(img.array, sitk.GetArrayFromImage(reference))
        np.testing.assert_allclose(img.spacing, reference.GetSpacing()[::-1])


def test_nrrd_and_mha_masks_keep_the_geometry(mni, tmp_path):
    src = nib.load(mni)
    img = read_image(mni)
    flip = np.diag([-1, -1, 1])  # RAS <-> LPS
    for name in ("mask.nrrd", "mask.mha"):
        written = sitk.ReadImage(str(write_mask(img.array > 90, img, tmp_path / name)))
        assert written.GetSize() == src.shape
        direction = np.reshape(written.GetDirection(), (3, 3)) * written.GetSpacing()
        np.testing.assert_allclose(flip @ direction, src.affine[:3, :3], atol=1e-6)
        np.testing.assert_allclose(flip @ written.GetOrigin(), src.affine[:3, 3], atol=1e-5)
        np.testing.assert_array_equal(sitk.GetArrayFromImage(written).transpose(2, 1, 0), np.asarray(src.dataobj) > 90)


def test_like_accepts_the_original_file(mni, tmp_path):
    img = read_image(mni)
    out = write_mask(img.array > 100, str(mni), tmp_path / "m.nii.gz")
    np.testing.assert_array_equal(np.asarray(nib.load(out).dataobj), np.asarray(nib.load(mni).dataobj) > 100)


def _hu(ds) -> np.ndarray:
    return ds.pixel_array * float(getattr(ds, "RescaleSlope", 1)) + float(getattr(ds, "RescaleIntercept", 0))


@pytest.mark.parametrize("name,modality", [("CT_small.dcm", "CT"), ("MR_small.dcm", "MR")])
def test_dicom_single_slice_values_spacing_and_world(tmp_path, name, modality):
    path = get_testdata_file(name)
    ds = pydicom.dcmread(path)
    img = read_image(path)
    assert img.kind == "2D" and img.modality == modality
    np.testing.assert_array_equal(img.array, _hu(ds))
    np.testing.assert_allclose(img.spacing, [float(v) for v in ds.PixelSpacing])
    out = write_mask(img.array > np.median(img.array), img, tmp_path / "mask.nii.gz")
    mask = nib.load(out)
    np.testing.assert_array_equal(np.asarray(mask.dataobj)[:, :, 0].T, img.array > np.median(img.array))
    # DICOM: LPS(c, r) = IPP + c * dc * row direction + r * dr * column direction
    row_dir, col_dir = np.array(ds.ImageOrientationPatient[:3], float), np.array(ds.ImageOrientationPatient[3:], float)
    dr, dc = (float(v) for v in ds.PixelSpacing)
    r, c = 10, 20
    lps = np.array(ds.ImagePositionPatient, float) + c * dc * row_dir + r * dr * col_dir
    np.testing.assert_allclose((mask.affine @ [c, r, 0, 1])[:3], lps * [-1, -1, 1], atol=1e-3)


def test_dicom_series_sorted_by_position_with_slice_spacing():
    slices = sorted((pydicom.dcmread(p) for p in CT5N.iterdir()), key=lambda ds: float(ds.ImagePositionPatient[2]))
    img = read_image(CT5N)
    assert img.kind == "3D" and img.modality == "CT" and img.notes == []
    np.testing.assert_array_equal(img.array, np.stack([_hu(ds) for ds in slices]))
    gap = float(slices[1].ImagePositionPatient[2]) - float(slices[0].ImagePositionPatient[2])
    np.testing.assert_allclose(img.spacing, [gap, *(float(v) for v in slices[0].PixelSpacing)], rtol=1e-5)


def test_dicom_folder_with_two_series_takes_the_largest_and_says_so(tmp_path):
    for p in CT5N.iterdir():
        shutil.copy(p, tmp_path / p.name)
    shutil.copy(get_testdata_file("MR_small.dcm"), tmp_path / "mr.dcm")
    img = read_image(tmp_path)
    assert img.array.shape == (5, 16, 16)
    assert len(img.notes) == 1 and "2 series" in img.notes[0] and "largest" in img.notes[0]
    mr_uid = pydicom.dcmread(tmp_path / "mr.dcm").SeriesInstanceUID
    assert read_image(tmp_path, series=mr_uid).modality == "MR"


@pytest.mark.parametrize(
    "folder,message",
    [
        ("dicomdirtests/77654033/CT2", "uneven slice gaps"),  # a 4-slice series with a 202 mm jump
        ("dicomdirtests/98892003/MR700", "orientations"),  # radial slices in one series
    ],
)
def test_dicom_series_with_bad_geometry_refused(folder, message):
    with pytest.raises(FormatError, match=message):
        read_image(DICOM_TESTS / folder)


def test_dicom_series_mixing_sizes_refused(tmp_path):
    for p in CT5N.iterdir():
        shutil.copy(p, tmp_path / p.name)
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.SeriesInstanceUID = pydicom.dcmread(next(CT5N.iterdir())).SeriesInstanceUID
    ds.save_as(tmp_path / "big.dcm")
    with pytest.raises(FormatError, match="mixes slice sizes.*16x16.*128x128"):
        read_image(tmp_path)


def test_png_grayscale_and_jpeg_rgb(tmp_path):
    from skimage import data

    coins = data.coins()
    cv2.imwrite(str(tmp_path / "coins.png"), coins)
    img = read_image(tmp_path / "coins.png")
    assert img.kind == "2D" and img.modality is None
    np.testing.assert_array_equal(img.array, coins)
    assert img.to_uint8() is img.array  # 8-bit 2D is left alone
    labels = (coins > 120).astype(np.uint8)
    out = write_mask(labels, img, tmp_path / "mask.png")
    np.testing.assert_array_equal(cv2.imread(str(out), cv2.IMREAD_UNCHANGED), labels)
    astronaut = data.astronaut()
    cv2.imwrite(str(tmp_path / "a.png"), astronaut[:, :, ::-1])  # cv2 writes BGR
    np.testing.assert_array_equal(read_image(tmp_path / "a.png").array, astronaut)  # RGB order
    cv2.imwrite(str(tmp_path / "a.jpg"), astronaut[:, :, ::-1])
    jpeg = read_image(tmp_path / "a.jpg").array  # JPEG decoders differ slightly: compare loosely
    assert jpeg.shape == astronaut.shape and np.abs(jpeg.astype(int) - astronaut).mean() < 4


def test_labels_on_the_image_grid_and_refused_on_another(mni, tmp_path):
    img = read_image(mni)
    src = nib.load(mni)
    labels = (np.asarray(src.dataobj) > 100).astype(np.uint8)
    nib.save(nib.Nifti1Image(labels, src.affine), tmp_path / "labels.nii.gz")
    np.testing.assert_array_equal(read_labels(tmp_path / "labels.nii.gz", img), img.array > 100)
    shifted = src.affine.copy()
    shifted[0, 3] += 2.0
    nib.save(nib.Nifti1Image(labels, shifted), tmp_path / "shifted.nii.gz")
    with pytest.raises(FormatError, match="shifted.nii.gz: label grid .* does not match the image grid"):
        read_labels(tmp_path / "shifted.nii.gz", img)


def test_bad_inputs_one_line_errors(mni, tmp_path):
    (tmp_path / "notes.nii.gz").write_text("not an image")
    cases = {}
    nib.save(nib.Nifti1Image(np.zeros((4, 5, 6, 3), np.float32), np.eye(4)), tmp_path / "fmri.nii.gz")
    cases["fmri.nii.gz"] = "4D image with 3 volumes of 4x5x6; choose one with --volume"
    cases["notes.nii.gz"] = "notes.nii.gz: not a readable image"
    rgb = sitk.GetImageFromArray(np.zeros((4, 5, 6, 3), np.uint8), isVector=True)
    sitk.WriteImage(rgb, str(tmp_path / "rgb.nrrd"))
    cases["rgb.nrrd"] = "RGB/multi-channel volume"
    raw = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    (tmp_path / "nospacing.nrrd").write_bytes(
        b"NRRD0004\ntype: short\ndimension: 3\nsizes: 4 3 2\nencoding: raw\nendian: little\n\n" + raw.tobytes()
    )
    cases["nospacing.nrrd"] = "no voxel spacing recorded"
    nib.save(nib.Nifti1Image(raw, None), tmp_path / "nospacing.nii")
    with open(tmp_path / "nospacing.nii", "r+b") as f:  # pixdim[1..3] = 0 (nibabel would repair it on save)
        f.seek(80)
        f.write(np.zeros(3, "<f4").tobytes())
    cases["nospacing.nii"] = "no voxel spacing recorded"
    (tmp_path / "nospacing.mha").write_bytes(
        b"ObjectType = Image\nNDims = 3\nDimSize = 4 3 2\nElementType = MET_SHORT\nElementDataFile = LOCAL\n" + raw.tobytes()
    )
    cases["nospacing.mha"] = "no voxel spacing recorded"
    cases["missing.nii.gz"] = "no such file"
    for name, message in cases.items():
        with pytest.raises(FormatError, match=message) as info:
            read_image(tmp_path / name)
        assert "\n" not in str(info.value) and name in str(info.value)
    np.testing.assert_array_equal(read_image(tmp_path / "fmri.nii.gz", volume=2).array, np.zeros((6, 5, 4)))


def test_failed_write_leaves_the_old_file_untouched(mni, tmp_path):
    img = read_image(mni)
    target = tmp_path / "mask.nii.gz"
    target.write_bytes(b"old")
    for bad, message in [(np.zeros((2, 2, 2)), "does not match"), (np.full(img.array.shape, 0.5), "whole numbers")]:
        with pytest.raises(FormatError, match=message):
            write_mask(bad, img, target)
    with pytest.raises(FormatError, match="cannot be written as .png"):
        write_mask(img.array > 0, img, tmp_path / "mask.png")
    with pytest.raises(FormatError, match="lossy"):
        write_mask(img.array > 0, img, tmp_path / "mask.jpg")
    assert target.read_bytes() == b"old" and sorted(os.listdir(tmp_path)) == ["mask.nii.gz"]

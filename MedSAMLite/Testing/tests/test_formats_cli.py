"""`medsamlite convert | to-image | segment` end to end on real files (segment with the genuine LiteMedSAM weights)."""
import cv2
import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from pydicom.data import get_testdata_file

from MedSAMLiteLib.headless.cli import main
from MedSAMLiteLib.headless.cases import load_case
from MedSAMLiteLib.headless.samples import coins_case, dice_per_label, mni152_paths


def _crop(kind: str, region, path):
    img = nib.load(mni152_paths()[kind]).slicer[region]
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), img.affine), path)
    return path


@pytest.fixture
def brain(tmp_path):
    """A 3-slice MNI152 T1 slab (100x120x3, RAS) with a grey-matter label map (GM > 50 %)."""
    region = (slice(40, 140), slice(50, 170), slice(75, 78))
    t1 = _crop("t1", region, tmp_path / "t1.nii.gz")
    gm = nib.load(_crop("gm", region, tmp_path / "gm_prob.nii.gz"))
    labels = (np.asarray(gm.dataobj) > 127).astype(np.uint8) * 4
    nib.save(nib.Nifti1Image(labels, gm.affine), tmp_path / "gm.nii.gz")
    return tmp_path


def test_convert_then_to_image_round_trip(brain, capsys):
    case_path = brain / "3DBox_MR_brain.npz"
    assert main(["convert", str(brain / "t1.nii.gz"), "--labels", str(brain / "gm.nii.gz"), "--modality", "MR", "-o", str(case_path)]) == 0
    case = load_case(case_path)  # the inference pipeline accepts it
    assert case.kind == "3D" and case.imgs.shape == (3, 120, 100) and case.imgs.dtype == np.uint8
    with np.load(case_path) as data:
        gts, values, spacing = data["gts"], data["label_values"], data["spacing"]
        assert str(data["geom_source_orientation"]) == "RAS"
    assert values.tolist() == [4] and spacing.tolist() == [1.0, 1.0, 1.0]
    # the box is the label's extent in (x, y, z) of the (D,H,W) array
    z, y, x = np.nonzero(gts)
    assert case.boxes.tolist() == [[x.min(), y.min(), z.min(), x.max(), y.max(), z.max()]]
    # gts written back with the geometry stored in the case lands on the source label map's voxels
    for like in ([], ["--like", str(brain / "t1.nii.gz")]):
        out = brain / "back.nii.gz"
        assert main(["to-image", str(case_path), "--key", "gts", *like, "-o", str(out)]) == 0
        back, source = nib.load(out), nib.load(brain / "gm.nii.gz")
        np.testing.assert_allclose(back.affine, source.affine, atol=1e-5)
        np.testing.assert_array_equal(np.asarray(back.dataobj) > 0, np.asarray(source.dataobj) > 0)
    # what `predict` writes (segs only) goes back with --like CASE.npz
    np.savez_compressed(brain / "segs.npz", segs=gts)
    assert main(["to-image", str(brain / "segs.npz"), "--like", str(case_path), "-o", str(brain / "segs.nrrd")]) == 0
    written = sitk.ReadImage(str(brain / "segs.nrrd"))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(written).transpose(2, 1, 0) > 0, np.asarray(source.dataobj) > 0)
    np.testing.assert_allclose(np.array(written.GetOrigin()) * [-1, -1, 1], source.affine[:3, 3], atol=1e-5)
    capsys.readouterr()
    assert main(["to-image", str(brain / "segs.npz"), "-o", str(brain / "x.nii.gz")]) == 1
    assert "no geometry stored; give --like" in capsys.readouterr().err
    np.savez_compressed(brain / "small.npz", segs=gts[:, :10])
    assert main(["to-image", str(brain / "small.npz"), "--like", str(case_path), "-o", str(brain / "x.nii.gz")]) == 1
    assert "mask shape (3, 10, 100) does not match the image's array shape (3, 120, 100)" in capsys.readouterr().err
    assert not (brain / "x.nii.gz").exists()


def test_convert_ct_dicom_applies_the_window(tmp_path):
    out = tmp_path / "2DBox_CT_small.npz"
    assert main(["convert", get_testdata_file("CT_small.dcm"), "--preset", "lung", "-o", str(out)]) == 0
    import pydicom

    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    expected = ((np.clip(hu, -1350, 150) + 1350) / 1500 * 255).astype(np.uint8)
    with np.load(out) as data:
        np.testing.assert_array_equal(data["imgs"], expected)
        assert str(data["intensity"]) == "CT window W1500/L-600" and str(data["modality"]) == "CT"


def test_convert_bad_inputs_fail_cleanly(brain, capsys):
    shifted = nib.load(brain / "gm.nii.gz")
    affine = shifted.affine.copy()
    affine[2, 3] += 5
    nib.save(nib.Nifti1Image(np.asarray(shifted.dataobj), affine), brain / "shifted.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((100, 120, 3), np.uint8), shifted.affine), brain / "empty.nii.gz")
    out = brain / "case.npz"
    for args, message in [
        (["--labels", str(brain / "shifted.nii.gz")], "shifted.nii.gz: label grid"),
        (["--labels", str(brain / "empty.nii.gz")], "empty.nii.gz: the label map holds no object"),
        (["--window", "400"], "--window wants WIDTH,LEVEL"),
    ]:
        assert main(["convert", str(brain / "t1.nii.gz"), *args, "-o", str(out)]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert message in err[-1], err
    assert not out.exists()


def _world_box(path, box):
    """Voxel box (x,y,z of the (D,H,W) array) of a RAS-stored file -> RAS mm corners, by hand with nibabel."""
    img = nib.load(path)
    ni, nj, _ = img.shape
    x0, y0, z0, x1, y1, z1 = box
    corners = [img.affine @ [ni - 1 - x, nj - 1 - y, z, 1] for x, y, z in ((x0, y0, z0), (x1, y1, z1))]
    return ",".join(f"{v:g}" for c in corners for v in c[:3])


def test_segment_world_boxes_hit_the_same_voxels_as_voxel_boxes(brain, capsys):
    """Voxel box on the RAS file; the same box in RAS mm on a copy stored P,S,L: the masks coincide in space."""
    src = nib.load(brain / "t1.nii.gz")
    transform = nib.orientations.ornt_transform(nib.orientations.io_orientation(src.affine), nib.orientations.axcodes2ornt("PSL"))
    nib.save(src.as_reoriented(transform), brain / "t1_psl.nii.gz")
    box = [25, 20, 0, 75, 95, 2]
    voxel, world = brain / "vox.nii.gz", brain / "world.nii.gz"
    assert main(["segment", str(brain / "t1.nii.gz"), "--box", ",".join(map(str, box)), "-q", "-o", str(voxel)]) == 0
    world_box = _world_box(brain / "t1.nii.gz", box)
    assert main(["segment", str(brain / "t1_psl.nii.gz"), "--world", f"--box={world_box}", "-q", "-o", str(world)]) == 0
    a, b = nib.load(voxel), nib.load(world)
    back = nib.orientations.ornt_transform(nib.orientations.io_orientation(b.affine), nib.orientations.io_orientation(a.affine))
    b_ras = b.as_reoriented(back)
    np.testing.assert_allclose(b_ras.affine, a.affine, atol=1e-4)
    mask = np.asarray(a.dataobj)
    assert 500 < (mask == 1).sum() < 0.8 * 50 * 75 * 3  # something inside the box, not the whole box
    np.testing.assert_array_equal(np.asarray(b_ras.dataobj), mask)


def test_segment_png_and_bad_boxes(tmp_path, capsys):
    coins = coins_case()  # scikit-image's coins.png, objects from an Otsu segmentation
    cv2.imwrite(str(tmp_path / "coins.png"), coins["imgs"])
    out = tmp_path / "mask.png"
    boxes = [",".join(map(str, b)) for b in coins["boxes"][[1, 5]]]
    assert main(["segment", str(tmp_path / "coins.png"), "--box", boxes[0], "--box", boxes[1], "-o", str(out)]) == 0
    mask = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
    assert mask.shape == coins["imgs"].shape and set(np.unique(mask)) == {0, 1, 2}
    reference = np.select([coins["gts"] == 2, coins["gts"] == 6], [1, 2], 0)
    assert min(dice_per_label(mask, reference)) > 0.9
    capsys.readouterr()
    for args, message in [
        (["--box", "1,2,3,4,5,6"], "this 2D image needs x0,y0,x1,y1"),
        (["--box", "10,10,500,20"], "x range 10..500 outside the image"),
        (["--box", "10,10,20,20", "--world"], "--world boxes need a volume"),
        ([], "no boxes given"),
    ]:
        assert main(["segment", str(tmp_path / "coins.png"), *args, "-o", str(tmp_path / "bad.png")]) == 1
        assert message in capsys.readouterr().err, args
    assert not (tmp_path / "bad.png").exists()


def test_segment_takes_a_box_with_negative_numbers_as_a_separate_argument(tmp_path, capsys):
    """`--box -59,-91,-59,2,-22,2 --world` (space-separated, first number negative) on the whole MNI152
    T1: argparse alone would take the value for an option; the mask lies inside that RAS box."""
    from MedSAMLiteLib.headless.samples import mni152_paths

    t1 = mni152_paths()["t1"]
    out = tmp_path / "mask.nii.gz"
    assert main(["segment", str(t1), "--world", "--box", "-59,-91,-59,2,-22,2", "--preset", "mr", "-q", "-o", str(out)]) == 0
    img = nib.load(out)
    ijk = np.argwhere(np.asarray(img.dataobj) == 1)
    assert len(ijk) > 1000
    ras = nib.affines.apply_affine(img.affine, ijk)
    assert (ras.min(axis=0) >= np.array([-59, -91, -59]) - 1).all() and (ras.max(axis=0) <= np.array([2, -22, 2]) + 1).all()

"""`medsamlite evaluate-corrections`: the simulated users and the challenge's DSC_AUC."""
import numpy as np
import pytest

from MedSAMLiteLib.core.objects import KeySlices
from MedSAMLiteLib.core.profiles import PROFILES
from MedSAMLiteLib.core.segmenter import Segmenter
from MedSAMLiteLib.headless.corrections import box_correction, click_correction, dice, dsc_auc, simulate
from test_propagation import BoxEngine


def _square(shape, z, x0, y0, x1, y1, thick=1):
    m = np.zeros(shape, bool)
    m[z - thick // 2 : z + thick // 2 + 1, y0 : y1 + 1, x0 : x1 + 1] = True
    return m


def test_the_box_user_draws_the_true_box_on_the_worst_slice():
    shape = (6, 40, 40)
    gt = _square(shape, 2, 10, 10, 19, 19) | _square(shape, 3, 5, 5, 9, 9)
    pred = _square(shape, 3, 5, 5, 9, 9) | _square(shape, 4, 0, 0, 3, 3)  # slice 2 missed (100), 4 wrong (16)
    obj = KeySlices.from_roi([0, 0, 0, 30, 30, 5], 6, "litemedsam")
    assert box_correction(obj, pred, gt) == (2, (10.0, 10.0, 19.0, 19.0))
    told = obj.with_key(2, (10.0, 10.0, 19.0, 19.0))
    assert box_correction(told, pred, gt) == (4, None)  # slice 2 already told: next, structure absent there
    assert box_correction(obj, gt, gt) is None


def test_a_click_on_missed_structure_grows_the_box_and_on_a_false_positive_cuts_it():
    shape = (13, 40, 40)  # error regions 10 x 10 x 9: their centre is x 24/25 (34/35), y 14/15, slice 6
    gt = _square(shape, 6, 10, 10, 29, 19, thick=9)
    pred = _square(shape, 6, 10, 10, 19, 19, thick=9)  # the right half (x 20..29) missed
    obj = KeySlices.from_roi([0, 0, 0, 30, 30, 12], 13, "litemedsam")
    z, box = click_correction(obj, pred, gt)
    assert z == 6 and box[:2] == (10, 10) and box[3] == 19 and 24 <= box[2] <= 25
    z, box = click_correction(obj, gt | _square(shape, 6, 30, 10, 39, 19, thick=9), gt)  # extra x 30..39 on the right
    assert z == 6 and box[:2] == (10.0, 10.0) and box[3] == 19.0 and 33 <= box[2] <= 35  # cut left of the click


def test_dsc_auc_is_the_trapezoid_after_the_first_result():
    assert dsc_auc([0.1, 0.2, 0.4, 0.6]) == pytest.approx(0.3 + 0.5)
    assert dsc_auc([0.5, 0.5, 0.5, 0.5, 0.5, 0.5]) == pytest.approx(2.0)  # 5 corrections: at most 4


def test_box_corrections_reach_the_truth_with_a_network_that_segments_its_box():
    depth = 7
    gt = np.zeros((depth, 256, 256), bool)  # 256 px: the stand-in's mask is exactly its box
    for z, (x0, x1) in enumerate([(80, 120), (72, 136), (64, 152), (56, 168), (64, 152), (72, 136), (80, 120)]):
        gt[z, 80:160, x0 : x1 + 1] = True
    segmenter = Segmenter(BoxEngine(PROFILES["litemedsam"]))
    segmenter.set_image(np.full((depth, 256, 256), 7, np.uint8))
    rows = simulate(segmenter, [56, 80, 0, 168, 159, 6], gt, 7, "box", (1, 1, 1), None)
    dscs = [r[1] for r in rows]
    assert dscs[0] < 0.9 and dscs[-1] == 1.0 and dice(gt, gt) == 1.0
    assert [r[0] for r in rows] == list(range(8))


def test_nsd_comes_from_the_extension_and_is_gated_by_dsc_as_in_the_challenge():
    pytest.importorskip("scipy")
    from MedSAMLiteLib.headless.corrections import _nsd_function, nsd

    surface_dice = _nsd_function()
    gt = _square((9, 40, 40), 4, 10, 10, 29, 29, thick=5)
    assert nsd(gt, gt, (1.0, 1.0, 1.0), surface_dice, 1.0) == 1.0
    far = _square((9, 40, 40), 4, 33, 33, 39, 39, thick=5)  # 3 voxels beyond gt's corner: DSC 0
    assert nsd(gt, far, (1.0, 1.0, 1.0), surface_dice, dice(gt, far)) == 0.0  # DSC <= 0.2: NSD not computed


def _ar(members):
    """An ar archive written by hand from the format's description (global header, 60-byte member headers)."""
    out = b"!<arch>\n"
    for name, data in members:
        out += f"{name + '/':<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n".encode() + data
        out += b"\n" if len(data) % 2 else b""
    return out


def test_a_debian_package_member_is_found_past_odd_sized_members():
    from MedSAMLiteLib.headless.samples import _ar_member

    deb = _ar([("debian-binary", b"2.0\n"), ("control.tar.xz", b"abc"), ("data.tar.xz", b"payload")])
    assert _ar_member(deb, "data.tar.xz") == b"payload"
    assert _ar_member(deb, "control.tar.xz") == b"abc"
    with pytest.raises(OSError, match="not in the Debian package"):
        _ar_member(deb, "data.tar.gz")
    with pytest.raises(OSError, match="not a Debian package"):
        _ar_member(b"PK\x03\x04", "data.tar.xz")


def test_a_download_with_the_wrong_checksum_writes_nothing(monkeypatch, tmp_path):
    import io
    import urllib.request

    from MedSAMLiteLib.headless import samples

    monkeypatch.setenv("MEDSAMLITE_HOME", str(tmp_path))
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout=None: io.BytesIO(_ar([("data.tar.xz", b"x")])))
    with pytest.raises(OSError, match="SHA-256"):
        samples.colin27_aal_paths()
    assert not any(tmp_path.rglob("*.nii.gz"))

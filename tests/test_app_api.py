"""API tests of `medficient serve`: every endpoint with good and bad input, on real sample images.

Expected masks come from medficient.inference run directly on the same arrays (segment_2d /
segment_3d, which test_inference checks against the official pipeline), never from the app.
"""
from __future__ import annotations

import threading
import time

import cv2
import numpy as np
import pytest
from app_fixtures import (  # noqa: F401  (fixtures)
    BACKEND, UPLOAD_LIMIT, TestClient, client, decode_png, engine, error, new_session, opened, overlay_mask, pool, ref2d, wait_job,
)

from medficient.app.segment import EnginePool
from medficient.app.server import AppConfig, create_app
from medficient.inference.propagate import count_slice_steps, segment_3d
from medficient.samples import coins_case, mni152_case


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    mni = mni152_case(slice(70, 84))  # 14 axial slices of the real MNI152 T1
    np.savez(root / "3DBox_MR_mni.npz", imgs=mni["imgs"], boxes=mni["boxes"], spacing=np.ones(3))
    coins = coins_case()
    np.savez(root / "2DBox_Microscopy_coins.npz", imgs=coins["imgs"], boxes=coins["boxes"])
    cv2.imwrite(str(root / "coins.png"), coins["imgs"])
    (root / "broken.npz").write_bytes(b"PK\x03\x04 this is not a zip archive")
    (root / "notes.png").write_text("not an image")
    (root / "readme.txt").write_text("hello")
    (root / "sub").mkdir()
    (root / "folder.npz").mkdir()
    outside = tmp_path_factory.mktemp("outside")
    (outside / "secret.npz").write_bytes((root / "2DBox_Microscopy_coins.npz").read_bytes())
    (root / "escape").symlink_to(outside, target_is_directory=True)
    (root / "dangling.npz").symlink_to(outside / "new.npz")  # a link to a file that does not exist yet
    (root / "loop.npz").symlink_to(root / "loop.npz")
    return root


# -- page, config, sessions --------------------------------------------------------------------------
def test_page_and_static_files(client):
    r = client.get("/")
    assert r.status_code == 200 and "<canvas" in r.text and "/static/app.js" in r.text
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/static/style.css").status_code == 200
    assert client.get("/static/../server.py").status_code == 404


def test_config_lists_models_and_limit(client):
    cfg = client.get("/api/config").json()
    assert cfg["models"] == ["lite_medsam"] and cfg["default_model"] == "lite_medsam"
    assert cfg["backend"] == BACKEND and cfg["precision"] == "f32"
    assert cfg["max_upload_mb"] == round(UPLOAD_LIMIT / 1024**2, 1)


def test_tabs_have_separate_state(client):
    a = opened(client, "3DBox_MR_mni.npz")
    b = new_session(client)
    assert a != b
    assert client.get(f"/api/s/{b}").json()["scan"] is None
    assert client.get(f"/api/s/{a}").json()["scan"]["shape"] == [14, 233, 197]
    client.post(f"/api/s/{a}/objects", json={"axis": 0, "index": 7, "box": [40, 40, 150, 190]})
    assert len(client.get(f"/api/s/{a}").json()["objects"]) == 1
    assert error(client.post(f"/api/s/{b}/objects", json={"axis": 0, "index": 7, "box": [40, 40, 150, 190]}), 400) == "no image is open"


def test_unknown_and_dropped_sessions(client):
    assert "expired" in error(client.get("/api/s/nope"), 404)
    sid = new_session(client)
    assert client.delete(f"/api/s/{sid}").status_code == 200
    error(client.get(f"/api/s/{sid}"), 404)
    error(client.post(f"/api/s/{sid}/open", json={"path": "coins.png"}), 404)


# -- files -------------------------------------------------------------------------------------------
def test_file_listing_stays_in_data_folder(client):
    listing = client.get("/api/files").json()
    names = [e["name"] for e in listing["entries"]]
    assert "3DBox_MR_mni.npz" in names and "sub" in names
    assert "escape" not in names  # a link out of the data folder is not offered
    assert "dangling.npz" not in names and "loop.npz" not in names
    assert listing["parent"] is None
    assert client.get("/api/files", params={"dir": "sub"}).json()["parent"] == ""
    assert "outside" in error(client.get("/api/files", params={"dir": ".."}), 400)
    assert "relative" in error(client.get("/api/files", params={"dir": "/etc"}), 400)
    assert "outside" in error(client.get("/api/files", params={"dir": "escape"}), 400)
    error(client.get("/api/files", params={"dir": "missing"}), 404)


@pytest.mark.parametrize(
    "path, status, words",
    [
        ("missing.npz", 400, "no such file"),
        ("broken.npz", 400, "broken.npz: unreadable .npz"),
        ("notes.png", 400, "notes.png: not a readable image"),
        ("readme.txt", 400, "readme.txt: not a readable image"),
        ("sub", 400, "sub"),
        ("../outside/secret.npz", 400, "outside the data folder"),
        ("escape/secret.npz", 400, "outside the data folder"),
        ("dangling.npz", 400, "outside the data folder"),
        ("loop.npz", 400, "loop.npz"),
        ("/etc/passwd", 400, "relative"),
    ],
)
def test_open_bad_inputs(client, path, status, words):
    sid = new_session(client)
    assert words in error(client.post(f"/api/s/{sid}/open", json={"path": path}), status)
    assert client.get(f"/api/s/{sid}").json()["scan"] is None


def test_open_2d_case_and_png(client, data_dir):
    for path in ("2DBox_Microscopy_coins.npz", "coins.png"):
        sid = opened(client, path)
        scan = client.get(f"/api/s/{sid}").json()["scan"]
        assert scan["is_2d"] and scan["shape"] == [1, 303, 384]
        assert "png" in scan["formats"] and "npz" in scan["formats"]
        img = decode_png(client.get(f"/api/s/{sid}/slice/0/0.png").content)
        np.testing.assert_array_equal(img, cv2.imread(str(data_dir / "coins.png"), cv2.IMREAD_UNCHANGED))
        error(client.get(f"/api/s/{sid}/slice/1/0.png"), 400)


def test_slices_of_every_view(client, data_dir):
    sid = opened(client, "3DBox_MR_mni.npz")
    vol = np.load(data_dir / "3DBox_MR_mni.npz")["imgs"]
    np.testing.assert_array_equal(decode_png(client.get(f"/api/s/{sid}/slice/0/5.png").content), vol[5])
    np.testing.assert_array_equal(decode_png(client.get(f"/api/s/{sid}/slice/1/100.png").content), vol[:, 100, :])
    np.testing.assert_array_equal(decode_png(client.get(f"/api/s/{sid}/slice/2/90.png").content), vol[:, :, 90])
    assert "outside 0..13" in error(client.get(f"/api/s/{sid}/slice/0/14.png"), 400)
    error(client.get(f"/api/s/{sid}/slice/3/0.png"), 400)
    error(client.get(f"/api/s/{sid}/slice/0/-1.png"), 400)
    error(client.get(f"/api/s/{sid}/slice/0/x.png"), 422)
    error(client.get(f"/api/s/{sid}/overlay/0/99.png"), 400)


# -- boxes ---------------------------------------------------------------------------------------------
def test_box_gives_the_pipeline_mask_on_the_shown_slice(client, ref2d, data_dir):
    sid = opened(client, "3DBox_MR_mni.npz")
    vol = np.load(data_dir / "3DBox_MR_mni.npz")["imgs"]
    r = client.post(f"/api/s/{sid}/embed", json={"axis": 0, "index": 7})
    assert r.json()["cached"] is False
    assert client.post(f"/api/s/{sid}/embed", json={"axis": 0, "index": 7}).json()["cached"] is True
    box = [40, 40, 150, 190]
    r = client.post(f"/api/s/{sid}/objects", json={"axis": 0, "index": 7, "box": box})
    assert r.status_code == 200, r.text
    assert r.json()["timing"]["embedding_cached"] is True
    expected = ref2d(vol[7], box)
    assert expected.sum() > 500
    assert r.json()["object"]["voxels"] == expected.sum()
    ov = overlay_mask(client, sid, 0, 7)
    np.testing.assert_array_equal(ov[..., 3] == 255, expected)
    np.testing.assert_array_equal(ov[expected][0], [0x4B, 0x19, 0xE6, 255])  # label 1 colour #e6194b in BGRA
    assert not overlay_mask(client, sid, 0, 6)[..., 3].any()
    # the coronal view shows the same voxels: row 7 of coronal plane y is axial slice 7's row y
    y = int(np.flatnonzero(expected.any(axis=1))[0])
    np.testing.assert_array_equal(overlay_mask(client, sid, 1, y)[7, :, 3] == 255, expected[y])


def test_embed_requests_overtaken_while_waiting_are_skipped(client):
    """Scrolling asks for many slices; only the latest one waiting is encoded."""
    sid = opened(client, "3DBox_MR_mni.npz")
    session = client.app.state.store.get(sid)
    answers: dict[int, dict] = {}

    def ask(index: int) -> None:
        answers[index] = client.post(f"/api/s/{sid}/embed", json={"axis": 0, "index": index}).json()

    threads = []
    with session.embed_lock:  # as if a slice were being encoded: the requests queue up
        for index in (1, 2, 3):
            threads.append(threading.Thread(target=ask, args=(index,)))
            threads[-1].start()
            deadline = time.monotonic() + 30
            while session.embed_requests < index and time.monotonic() < deadline:
                time.sleep(0.01)
    for t in threads:
        t.join(timeout=120)
    assert answers[1]["skipped"] and answers[2]["skipped"]
    assert answers[3]["skipped"] is False and answers[3]["cached"] is False
    assert client.post(f"/api/s/{sid}/embed", json={"axis": 0, "index": 3}).json()["cached"] is True
    r = client.post(f"/api/s/{sid}/objects", json={"axis": 0, "index": 1, "box": [40, 40, 150, 190]})
    assert r.json()["timing"]["embedding_cached"] is False  # slice 1 was skipped, never encoded


def test_box_on_a_coronal_slice(client, ref2d, data_dir):
    sid = opened(client, "3DBox_MR_mni.npz")
    vol = np.load(data_dir / "3DBox_MR_mni.npz")["imgs"]
    box = [30, 1, 160, 12]  # columns x, rows z of the coronal plane y=120
    r = client.post(f"/api/s/{sid}/objects", json={"axis": 1, "index": 120, "box": box})
    assert r.status_code == 200, r.text
    expected = ref2d(np.ascontiguousarray(vol[:, 120, :]), box)
    np.testing.assert_array_equal(overlay_mask(client, sid, 1, 120)[..., 3] == 255, expected)


def test_2d_image_box(client, ref2d, data_dir):
    sid = opened(client, "coins.png")
    image = cv2.imread(str(data_dir / "coins.png"), cv2.IMREAD_GRAYSCALE)
    box = [38, 38, 100, 102]
    r = client.post(f"/api/s/{sid}/objects", json={"axis": 0, "index": 0, "box": box})
    expected = ref2d(image, box)
    assert 1000 < expected.sum() < 62 * 64
    np.testing.assert_array_equal(overlay_mask(client, sid, 0, 0)[..., 3] == 255, expected)
    assert "propagation needs a volume" in error(client.post(f"/api/s/{sid}/objects/{r.json()['object']['id']}/propagate", json={"first": 0, "last": 0}), 400)


@pytest.mark.parametrize(
    "body, status, words",
    [
        ({"axis": 0, "index": 7, "box": [150, 40, 40, 190]}, 400, "min is larger than max"),
        ({"axis": 0, "index": 7, "box": [40, 40, 150, 400]}, 400, "outside the 197x233 slice"),
        ({"axis": 0, "index": 7, "box": [-5, 40, 150, 190]}, 400, "outside"),
        ({"axis": 0, "index": 20, "box": [40, 40, 150, 190]}, 400, "slice 20 is outside 0..13"),
        ({"axis": 0, "index": 7, "box": [40, 40, 150]}, 422, "box"),
        ({"axis": 5, "index": 7, "box": [40, 40, 150, 190]}, 422, "axis"),
        ({"axis": 0, "index": 7, "box": [40, 40, 150, 190], "label": 9}, 400, "no label 9"),
        ({"axis": 0, "index": 7, "box": [40, 40, 150, 190], "model": "medsam_vit_b"}, 400, "not served"),
        ({"axis": 0, "index": 7, "box": ["a", 40, 150, 190]}, 422, "box"),
    ],
)
def test_bad_boxes(client, body, status, words):
    sid = opened(client, "3DBox_MR_mni.npz")
    assert words in error(client.post(f"/api/s/{sid}/objects", json=body), status)
    assert client.get(f"/api/s/{sid}").json()["objects"] == []


def test_bad_json_body(client):
    sid = opened(client, "3DBox_MR_mni.npz")
    r = client.post(f"/api/s/{sid}/objects", content=b"{not json", headers={"content-type": "application/json"})
    error(r, 422)


def test_adjust_delete_undo(client, ref2d, data_dir):
    sid = opened(client, "3DBox_MR_mni.npz")
    vol = np.load(data_dir / "3DBox_MR_mni.npz")["imgs"]
    oid = client.post(f"/api/s/{sid}/objects", json={"axis": 0, "index": 7, "box": [40, 40, 150, 190]}).json()["object"]["id"]
    first = overlay_mask(client, sid, 0, 7)[..., 3] == 255
    new_box = [60, 30, 180, 200]
    r = client.put(f"/api/s/{sid}/objects/{oid}", json={"box": new_box})
    assert r.status_code == 200 and r.json()["object"]["box"] == new_box
    np.testing.assert_array_equal(overlay_mask(client, sid, 0, 7)[..., 3] == 255, ref2d(vol[7], new_box))
    assert "outside" in error(client.put(f"/api/s/{sid}/objects/{oid}", json={"box": [0, 0, 500, 10]}), 400)
    error(client.put(f"/api/s/{sid}/objects/999", json={"box": new_box}), 400)
    assert "propagate it first" in error(client.put(f"/api/s/{sid}/objects/{oid}", json={"box": new_box, "index": 8}), 400)
    assert client.post(f"/api/s/{sid}/undo").status_code == 200  # back to the first box
    np.testing.assert_array_equal(overlay_mask(client, sid, 0, 7)[..., 3] == 255, first)
    assert client.delete(f"/api/s/{sid}/objects/{oid}").json()["objects"] == []
    assert not overlay_mask(client, sid, 0, 7)[..., 3].any()
    error(client.delete(f"/api/s/{sid}/objects/{oid}"), 400)
    assert len(client.post(f"/api/s/{sid}/undo").json()["objects"]) == 1
    client.post(f"/api/s/{sid}/undo")
    assert "nothing to undo" in error(client.post(f"/api/s/{sid}/undo"), 400)


def test_labels(client):
    sid = opened(client, "3DBox_MR_mni.npz")
    label = client.post(f"/api/s/{sid}/labels", json={"name": "tumour", "color": "#00ff00"}).json()["label"]
    assert label == {"value": 2, "name": "tumour", "color": "#00ff00"}
    assert client.post(f"/api/s/{sid}/labels").json()["label"]["value"] == 3  # no body: defaults
    client.post(f"/api/s/{sid}/objects", json={"axis": 0, "index": 7, "box": [40, 40, 150, 190], "label": 2})
    ov = overlay_mask(client, sid, 0, 7)
    assert (ov[ov[..., 3] == 255][:, :3] == [0, 255, 0]).all()
    client.patch(f"/api/s/{sid}/labels/2", json={"color": "#0000ff", "name": "lesion"})
    ov = overlay_mask(client, sid, 0, 7)
    assert (ov[ov[..., 3] == 255][:, :3] == [255, 0, 0]).all()  # BGR of #0000ff
    assert [lab["name"] for lab in client.get(f"/api/s/{sid}").json()["labels"]] == ["label 1", "lesion", "label 3"]
    assert "color" in error(client.patch(f"/api/s/{sid}/labels/2", json={"color": "red"}), 422)
    assert "name" in error(client.patch(f"/api/s/{sid}/labels/2", json={"name": "x" * 65}), 422)
    error(client.patch(f"/api/s/{sid}/labels/9", json={"name": "x"}), 400)
    assert client.delete(f"/api/s/{sid}/labels/2").json()["objects"] == []  # its objects go with it
    client.delete(f"/api/s/{sid}/labels/3")
    assert "last label" in error(client.delete(f"/api/s/{sid}/labels/1"), 400)
    error(client.delete(f"/api/s/{sid}/labels/7"), 400)


def test_presets(client):
    sid = opened(client, "3DBox_MR_mni.npz")
    scan = client.get(f"/api/s/{sid}").json()["scan"]
    r = client.post(f"/api/s/{sid}/preset", json={"preset": scan["preset"]})
    assert r.status_code == 200 and r.json()["scan_version"] == 2
    assert "does not apply" in error(client.post(f"/api/s/{sid}/preset", json={"preset": "no such preset"}), 400)


# -- propagation -----------------------------------------------------------------------------------
def test_propagation_matches_segment_3d(client, engine, ref2d, data_dir):
    sid = opened(client, "3DBox_MR_mni.npz")
    vol = np.load(data_dir / "3DBox_MR_mni.npz")["imgs"]
    box = [40, 40, 150, 190]
    oid = client.post(f"/api/s/{sid}/objects", json={"axis": 0, "index": 7, "box": box}).json()["object"]["id"]
    r = client.post(f"/api/s/{sid}/objects/{oid}/propagate", json={"first": 5, "last": 9})
    assert r.status_code == 200, r.text
    job = wait_job(client, sid)
    boxes3d = np.array([[40, 40, 5, 150, 190, 9]])
    assert job["state"] == "done" and job["done"] == job["total"] == count_slice_steps(vol.shape, boxes3d, engine.profile)
    expected = segment_3d(engine, vol, boxes3d) == 1
    assert expected[5:10].any(axis=(1, 2)).all() and not expected[10:].any() and not expected[:5].any()
    for z in range(vol.shape[0]):
        np.testing.assert_array_equal(overlay_mask(client, sid, 0, z)[..., 3] == 255, expected[z], err_msg=f"slice {z}")
    obj = client.get(f"/api/s/{sid}").json()["objects"][0]
    assert obj["span"] == [5, 9] and obj["voxels"] == expected.sum()
    # a correction box on slice 8 replaces the object's mask on that slice only
    fix = [60, 50, 130, 170]
    r = client.put(f"/api/s/{sid}/objects/{oid}", json={"box": fix, "index": 8})
    assert r.status_code == 200, r.text
    assert r.json()["object"]["span"] == [5, 9] and r.json()["object"]["box"] == box
    corrected = expected.copy()
    corrected[8] = ref2d(vol[8], fix)
    assert (corrected[8] != expected[8]).sum() > 100
    for z in range(vol.shape[0]):
        np.testing.assert_array_equal(overlay_mask(client, sid, 0, z)[..., 3] == 255, corrected[z], err_msg=f"slice {z}")
    assert "not a propagated slice" in error(client.put(f"/api/s/{sid}/objects/{oid}", json={"box": fix, "index": 11}), 400)
    assert "outside" in error(client.put(f"/api/s/{sid}/objects/{oid}", json={"box": [0, 0, 500, 9], "index": 8}), 400)
    error(client.put(f"/api/s/{sid}/objects/{oid}", json={"box": fix, "index": -1}), 422)
    client.post(f"/api/s/{sid}/undo")  # the correction goes
    np.testing.assert_array_equal(overlay_mask(client, sid, 0, 8)[..., 3] == 255, expected[8])
    # undo brings back the single-slice mask
    client.post(f"/api/s/{sid}/undo")
    assert client.get(f"/api/s/{sid}").json()["objects"][0]["span"] is None
    assert not overlay_mask(client, sid, 0, 6)[..., 3].any()


def test_propagation_along_the_sagittal_axis(client, engine, data_dir):
    sid = opened(client, "3DBox_MR_mni.npz")
    vol = np.load(data_dir / "3DBox_MR_mni.npz")["imgs"]
    box = [40, 1, 190, 12]  # sagittal plane x=98: columns y, rows z
    oid = client.post(f"/api/s/{sid}/objects", json={"axis": 2, "index": 98, "box": box}).json()["object"]["id"]
    client.post(f"/api/s/{sid}/objects/{oid}/propagate", json={"first": 97, "last": 99})
    assert wait_job(client, sid)["state"] == "done"
    moved = np.ascontiguousarray(np.transpose(vol, (2, 0, 1)))  # (W, D, H): sagittal planes first
    expected = segment_3d(engine, moved, np.array([[40, 1, 97, 190, 12, 99]])) == 1
    assert expected[97:100].any(axis=(1, 2)).all()
    for x in (96, 97, 98, 99, 100):
        np.testing.assert_array_equal(overlay_mask(client, sid, 2, x)[..., 3] == 255, expected[x])


def test_propagation_bad_inputs_busy_and_cancel(client, data_dir):
    sid = opened(client, "3DBox_MR_mni.npz")
    oid = client.post(f"/api/s/{sid}/objects", json={"axis": 0, "index": 7, "box": [40, 40, 150, 190]}).json()["object"]["id"]
    assert "first is after last" in error(client.post(f"/api/s/{sid}/objects/{oid}/propagate", json={"first": 9, "last": 3}), 400)
    assert "outside the volume" in error(client.post(f"/api/s/{sid}/objects/{oid}/propagate", json={"first": 20, "last": 30}), 400)
    error(client.post(f"/api/s/{sid}/objects/77/propagate", json={"first": 0, "last": 3}), 400)
    error(client.post(f"/api/s/{sid}/objects/{oid}/propagate", json={"first": "a", "last": 3}), 422)
    assert "no propagation" in error(client.get(f"/api/s/{sid}/job"), 404)
    assert "no propagation is running" in error(client.post(f"/api/s/{sid}/job/cancel"), 400)
    before = overlay_mask(client, sid, 0, 7)
    r = client.post(f"/api/s/{sid}/objects/{oid}/propagate", json={"first": 0, "last": 13})
    assert r.status_code == 200
    assert "already running" in error(client.post(f"/api/s/{sid}/objects/{oid}/propagate", json={"first": 0, "last": 13}), 409)
    assert "being propagated" in error(client.put(f"/api/s/{sid}/objects/{oid}", json={"box": [50, 50, 140, 180]}), 409)
    assert client.post(f"/api/s/{sid}/job/cancel").status_code == 200
    job = wait_job(client, sid)
    assert job["state"] == "cancelled" and job["done"] < job["total"]
    np.testing.assert_array_equal(overlay_mask(client, sid, 0, 7), before)  # nothing changed
    assert client.get(f"/api/s/{sid}").json()["objects"][0]["span"] is None


def test_object_deleted_during_propagation_is_not_resurrected(client):
    sid = opened(client, "3DBox_MR_mni.npz")
    oid = client.post(f"/api/s/{sid}/objects", json={"axis": 0, "index": 7, "box": [40, 40, 150, 190]}).json()["object"]["id"]
    client.post(f"/api/s/{sid}/objects/{oid}/propagate", json={"first": 6, "last": 8})
    client.delete(f"/api/s/{sid}/objects/{oid}")
    job = wait_job(client, sid)
    assert job["state"] in ("cancelled", "done") and client.get(f"/api/s/{sid}").json()["objects"] == []


# -- saving and downloading ------------------------------------------------------------------------
def test_save_case_and_download(client, ref2d, data_dir):
    sid = opened(client, "3DBox_MR_mni.npz")
    vol = np.load(data_dir / "3DBox_MR_mni.npz")["imgs"]
    client.post(f"/api/s/{sid}/labels", json={"name": "second"})
    client.post(f"/api/s/{sid}/objects", json={"axis": 0, "index": 7, "box": [40, 40, 150, 190]})
    client.post(f"/api/s/{sid}/objects", json={"axis": 0, "index": 3, "box": [60, 60, 120, 120], "label": 2})
    r = client.post(f"/api/s/{sid}/save", json={"format": "npz"})
    assert r.status_code == 200, r.text
    assert r.json()["path"] == "segmentations/3DBox_MR_mni_labels.npz"
    saved = np.load(data_dir / r.json()["path"])
    np.testing.assert_array_equal(saved["imgs"], vol)
    np.testing.assert_array_equal(saved["boxes"], [[40, 40, 7, 150, 190, 7], [60, 60, 3, 120, 120, 3]])
    gts = np.zeros(vol.shape, np.uint16)
    gts[7][ref2d(vol[7], [40, 40, 150, 190])] = 1
    gts[3][ref2d(vol[3], [60, 60, 120, 120])] = 2
    np.testing.assert_array_equal(saved["gts"], gts)
    d = client.get("/api/download", params={"path": r.json()["path"]})
    assert d.status_code == 200 and d.content == (data_dir / r.json()["path"]).read_bytes()
    assert "PNG holds 2D" in error(client.post(f"/api/s/{sid}/save", json={"format": "png"}), 400)


def test_save_png_of_a_2d_image(client, ref2d, data_dir):
    sid = opened(client, "coins.png")
    client.post(f"/api/s/{sid}/objects", json={"axis": 0, "index": 0, "box": [38, 38, 100, 102]})
    r = client.post(f"/api/s/{sid}/save", json={"format": "png", "path": "sub/coins_mask.png"})
    assert r.status_code == 200, r.text
    saved = cv2.imread(str(data_dir / "sub/coins_mask.png"), cv2.IMREAD_UNCHANGED)
    image = cv2.imread(str(data_dir / "coins.png"), cv2.IMREAD_GRAYSCALE)
    np.testing.assert_array_equal(saved, (ref2d(image, [38, 38, 100, 102])).astype(np.uint8))


@pytest.mark.parametrize(
    "body, status, words",
    [
        ({"format": "npz", "path": "../escaped.npz"}, 400, "outside the data folder"),
        ({"format": "npz", "path": "/tmp/escaped.npz"}, 400, "relative"),
        ({"format": "npz", "path": "escape/escaped.npz"}, 400, "outside the data folder"),
        ({"format": "npz", "path": "dangling.npz"}, 400, "outside the data folder"),
        ({"format": "npz", "path": "loop.npz"}, 400, "cannot be resolved"),
        ({"format": "npz", "path": "sub/../../escaped.npz"}, 400, "outside the data folder"),
        ({"format": "npz", "path": "3DBox_MR_mni.npz"}, 400, "opened image"),
        ({"format": "npz", "path": "folder.npz"}, 400, "folder"),
        ({"format": "tiff"}, 422, "format"),
    ],
)
def test_save_bad_inputs(client, data_dir, body, status, words):
    sid = opened(client, "3DBox_MR_mni.npz")
    before = (data_dir / "3DBox_MR_mni.npz").read_bytes()
    assert words in error(client.post(f"/api/s/{sid}/save", json=body), status)
    outside = data_dir.resolve().parent
    assert not list(outside.rglob("escaped.npz")) and not list(outside.rglob("new.npz"))
    assert (data_dir / "3DBox_MR_mni.npz").read_bytes() == before


def test_save_without_scan(client):
    sid = new_session(client)
    assert "no image" in error(client.post(f"/api/s/{sid}/save", json={"format": "npz"}), 400)


def test_download_bad_paths(client):
    assert "outside" in error(client.get("/api/download", params={"path": "../outside/secret.npz"}), 400)
    assert "outside" in error(client.get("/api/download", params={"path": "escape/secret.npz"}), 400)
    error(client.get("/api/download", params={"path": "nothing.npz"}), 404)
    error(client.get("/api/download", params={"path": "sub"}), 404)


# -- uploads -----------------------------------------------------------------------------------------
def test_upload_then_open(client, data_dir):
    sid = new_session(client)
    content = (data_dir / "coins.png").read_bytes()
    assert len(content) < UPLOAD_LIMIT
    r = client.post(f"/api/s/{sid}/upload", params={"name": "my coins.png"}, content=content)
    assert r.status_code == 200, r.text
    up = r.json()
    assert (data_dir / up["path"]).read_bytes() == content and up["path"].startswith("uploads/")
    assert client.post(f"/api/s/{sid}/open", json={"path": up["path"]}).json()["scan"]["shape"] == [1, 303, 384]
    # a second file of the same batch lands in the same folder
    r2 = client.post(f"/api/s/{sid}/upload", params={"name": "b.png", "batch": up["batch"]}, content=content)
    assert r2.json()["folder"] == up["folder"]


@pytest.mark.parametrize(
    "params, content, status, words",
    [
        ({"name": "big.nii"}, b"x" * (UPLOAD_LIMIT + 1), 413, "upload limit"),
        ({"name": "../evil.png"}, b"x", 400, "file name"),
        ({"name": ".hidden"}, b"x", 400, "file name"),
        ({"name": "a/b.png"}, b"x", 400, "file name"),
        ({"name": "ok.png", "batch": "../../x"}, b"x", 400, "batch"),
        ({"name": "empty.png"}, b"", 400, "empty"),
        ({}, b"x", 422, "name"),
    ],
)
def test_upload_bad_inputs(client, data_dir, params, content, status, words):
    sid = new_session(client)
    before = sorted(p.relative_to(data_dir) for p in data_dir.rglob("*"))
    assert words in error(client.post(f"/api/s/{sid}/upload", params=params, content=content), status)
    after = sorted(p.relative_to(data_dir) for p in data_dir.rglob("*"))
    assert [p for p in after if p not in before and p.suffix] == []  # no file (or .part leftover) stays


def test_upload_into_a_linked_uploads_folder_is_refused(tmp_path, pool):
    """`uploads` itself a link out of the data folder: nothing is written through it."""
    data, outside = tmp_path / "data", tmp_path / "outside"
    data.mkdir()
    outside.mkdir()
    (data / "uploads").symlink_to(outside, target_is_directory=True)
    with TestClient(create_app(AppConfig(data, pool=pool))) as c:
        sid = new_session(c)
        assert "outside the data folder" in error(c.post(f"/api/s/{sid}/upload", params={"name": "a.png"}, content=b"x"), 400)
    assert list(outside.rglob("*")) == []


def test_upload_streamed_without_length_is_still_limited(client, data_dir):
    sid = new_session(client)

    def chunks():
        for _ in range(UPLOAD_LIMIT // 1024 + 2):
            yield b"y" * 1024

    assert "upload limit" in error(client.post(f"/api/s/{sid}/upload", params={"name": "stream.bin"}, content=chunks()), 413)
    assert not list(data_dir.rglob("stream.bin*")) and not list(data_dir.rglob(".stream.bin*"))


def test_uploaded_unreadable_file_gives_a_message(client):
    sid = new_session(client)
    up = client.post(f"/api/s/{sid}/upload", params={"name": "scan.nii.gz"}, content=b"\x00garbage" * 10).json()
    detail = error(client.post(f"/api/s/{sid}/open", json={"path": up["path"]}), 400)
    assert "scan.nii.gz" in detail


# -- sessions beyond the limit, model and command-line errors ---------------------------------------
def test_oldest_idle_session_goes_beyond_the_limit(data_dir, pool):
    app = create_app(AppConfig(data_dir, pool=pool))
    with TestClient(app) as c:
        sids = [new_session(c) for _ in range(app.state.store.limit)]
        c.get(f"/api/s/{sids[0]}")  # used recently: stays
        new_session(c)
        assert c.get(f"/api/s/{sids[0]}").status_code == 200
        assert "expired" in error(c.get(f"/api/s/{sids[1]}"), 404)


@pytest.mark.parametrize("backend", ["torch", "openvino"])
def test_unloadable_model_gives_a_message(data_dir, tmp_path, backend):
    if backend != "torch":
        pytest.importorskip(backend)
    bad = tmp_path / "broken.pth"
    bad.write_bytes(b"not a checkpoint")
    with TestClient(create_app(AppConfig(data_dir, pool=EnginePool({"lite_medsam": str(bad)}, backend=backend)))) as c:
        sid = opened(c, "coins.png")
        assert "could not be loaded" in error(c.post(f"/api/s/{sid}/objects", json={"axis": 0, "index": 0, "box": [38, 38, 100, 102]}), 503)


def test_serve_command_line_errors(tmp_path, capsys):
    from medficient.cli import main

    assert main(["serve", "--data", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="expected MODEL=FILE"):
        main(["serve", "--data", str(tmp_path), "--checkpoint", "medsam_vit_b"])
    with pytest.raises(SystemExit, match="unknown model"):
        main(["serve", "--data", str(tmp_path), "--checkpoint", f"nope={tmp_path}"])
    assert main(["serve", "--data", str(tmp_path), "--model", "medsam_vit_b"]) == 2
    assert "needs --checkpoint" in capsys.readouterr().err
    bad = tmp_path / "broken.pth"
    bad.write_bytes(b"not a checkpoint")
    assert main(["serve", "--data", str(tmp_path), "--checkpoint", f"lite_medsam={bad}", "--backend", "torch"]) == 1
    assert "model lite_medsam" in capsys.readouterr().err
    assert main(["serve", "--data", str(tmp_path), "--checkpoint", f"medficient_l0={bad}", "--backend", "torch"]) == 1
    assert "model medficient_l0" in capsys.readouterr().err  # every served model is loaded at start
    assert main(["serve", "--data", str(tmp_path), "--backend", "torch", "--precision", "int8"]) == 1
    assert "f32 only" in capsys.readouterr().err
    assert main(["serve", "--data", str(tmp_path), "--backend", "onnxruntime", "--device", "cuda"]) == 2
    assert "needs --backend torch" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["serve", "--data", str(tmp_path), "--backend", "tensorrt"])

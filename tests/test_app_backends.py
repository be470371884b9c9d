"""`medficient serve` on the fast runtime (OpenVINO) and with a model chosen per request.

Expected masks come from medficient.inference (segment_2d / segment_3d) run directly on an
engine of the same backend, never from the app. The OpenVINO export is built once if it is
not cached yet (about a minute), then reused.
"""
from __future__ import annotations

import importlib.util
import threading

import cv2
import numpy as np
import pytest
from app_fixtures import TestClient, opened, overlay_mask, torch_engine, wait_job  # noqa: F401  (fixtures)

from medficient.app.segment import EnginePool, SerialEngine
from medficient.app.server import AppConfig, create_app
from medficient.inference.engine import TorchEngine, open_engine
from medficient.inference.propagate import segment_2d, segment_3d
from medficient.samples import coins_case, mni152_case

BOX_2D = [38, 38, 100, 102]
BOX_3D = [40, 40, 150, 190]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    cv2.imwrite(str(root / "coins.png"), coins_case()["imgs"])
    mni = mni152_case(slice(70, 84))
    np.savez(root / "3DBox_MR_mni.npz", imgs=mni["imgs"], spacing=np.ones(3))
    return root


@pytest.fixture(scope="module")
def ov_engine():
    pytest.importorskip("openvino")
    return open_engine("openvino", "lite_medsam")


@pytest.fixture(scope="module")
def ov_client(data_dir, ov_engine):
    ov_pool = EnginePool({"lite_medsam": None}, backend="openvino")
    with TestClient(create_app(AppConfig(data_dir, pool=ov_pool))) as c:
        yield c


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * float((a & b).sum()) / float(a.sum() + b.sum())


def test_openvino_box_is_its_pipeline_mask(ov_client, ov_engine, torch_engine, data_dir):
    assert ov_client.get("/api/config").json()["backend"] == "openvino"
    image = cv2.imread(str(data_dir / "coins.png"), cv2.IMREAD_GRAYSCALE)
    sid = opened(ov_client, "coins.png")
    assert ov_client.post(f"/api/s/{sid}/embed", json={"axis": 0, "index": 0}).json()["cached"] is False
    r = ov_client.post(f"/api/s/{sid}/objects", json={"axis": 0, "index": 0, "box": BOX_2D})
    assert r.status_code == 200, r.text
    assert r.json()["timing"]["embedding_cached"] is True
    shown = overlay_mask(ov_client, sid, 0, 0)[..., 3] == 255
    expected = segment_2d(ov_engine, image, np.array([BOX_2D])) == 1
    assert expected.sum() > 1000
    np.testing.assert_array_equal(shown, expected)
    # and close to the torch model (the export is f32: only edge pixels may differ)
    assert dice(shown, segment_2d(torch_engine, image, np.array([BOX_2D])) == 1) > 0.98


def test_tabs_share_one_openvino_engine_safely(ov_client, ov_engine, data_dir):
    """A propagation in one tab while another tab draws boxes: the engine's single infer request
    per graph is used by one thread at a time, and every mask is still the pipeline's."""
    vol = np.load(data_dir / "3DBox_MR_mni.npz")["imgs"]
    image = cv2.imread(str(data_dir / "coins.png"), cv2.IMREAD_GRAYSCALE)
    a, b = opened(ov_client, "3DBox_MR_mni.npz"), opened(ov_client, "coins.png")
    oid = ov_client.post(f"/api/s/{a}/objects", json={"axis": 0, "index": 7, "box": BOX_3D}).json()["object"]["id"]
    assert ov_client.post(f"/api/s/{a}/objects/{oid}/propagate", json={"first": 5, "last": 9}).status_code == 200
    boxes = [[30 + 4 * i, 30 + 3 * i, 110 + 2 * i, 100 + 3 * i] for i in range(3)]
    answers: list = []

    def other_tab() -> None:
        for box in boxes:
            answers.append(ov_client.post(f"/api/s/{b}/objects", json={"axis": 0, "index": 0, "box": box}))

    worker = threading.Thread(target=other_tab)
    worker.start()
    worker.join(timeout=300)
    assert not worker.is_alive()
    job = wait_job(ov_client, a)
    assert job["state"] == "done", job
    assert all(r.status_code == 200 for r in answers), [r.text for r in answers]
    objects = ov_client.get(f"/api/s/{b}").json()["objects"]
    for obj, box in zip(objects, boxes):
        assert obj["voxels"] == (segment_2d(ov_engine, image, np.array([box])) == 1).sum()
    expected = segment_3d(ov_engine, vol, np.array([[40, 40, 5, 150, 190, 9]])) == 1
    for z in range(4, 11):
        np.testing.assert_array_equal(overlay_mask(ov_client, a, 0, z)[..., 3] == 255, expected[z], err_msg=f"slice {z}")


@pytest.fixture(scope="module")
def second_model(tmp_path_factory):
    """medficient_l0 with random weights saved as a checkpoint: a second model to choose."""
    import torch

    from medficient.models import build_model

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "medficient_l0_random.pth"
    torch.save(build_model("medficient_l0", pretrained=False).state_dict(), path)
    return str(path)


def test_the_page_can_choose_a_model(data_dir, torch_engine, second_model):
    two = EnginePool({"lite_medsam": None, "medficient_l0": second_model}, backend="torch")
    two.engines["lite_medsam"] = SerialEngine(torch_engine)
    with TestClient(create_app(AppConfig(data_dir, pool=two))) as c:
        assert c.get("/api/config").json()["models"] == ["lite_medsam", "medficient_l0"]
        image = cv2.imread(str(data_dir / "coins.png"), cv2.IMREAD_GRAYSCALE)
        sid = opened(c, "coins.png")
        lite = c.post(f"/api/s/{sid}/objects", json={"axis": 0, "index": 0, "box": BOX_2D, "model": "lite_medsam"}).json()["object"]
        other = c.post(f"/api/s/{sid}/objects", json={"axis": 0, "index": 0, "box": BOX_2D, "model": "medficient_l0"}).json()["object"]
        assert (lite["model"], other["model"]) == ("lite_medsam", "medficient_l0")
        want_lite = segment_2d(torch_engine, image, np.array([BOX_2D])) == 1
        want_other = segment_2d(TorchEngine.load("medficient_l0", second_model), image, np.array([BOX_2D])) == 1
        assert (want_lite != want_other).any()  # the two models disagree, so the check below can tell them apart
        shown = overlay_mask(c, sid, 0, 0)[..., 3] == 255  # the later object (medficient_l0) wins where both are
        np.testing.assert_array_equal(shown, want_lite | want_other)
        assert other["voxels"] == want_other.sum() and lite["voxels"] == want_lite.sum()
        # re-running a box with the other model replaces its mask
        r = c.put(f"/api/s/{sid}/objects/{other['id']}", json={"box": BOX_2D, "model": "lite_medsam"})
        assert r.json()["object"]["model"] == "lite_medsam" and r.json()["object"]["voxels"] == want_lite.sum()


@pytest.mark.parametrize("argv", [["--backend", "torch"], []])
def test_serve_starts_on_the_chosen_backend_on_localhost(tmp_path, monkeypatch, argv):
    import uvicorn

    from medficient.cli import main

    default = "openvino" if importlib.util.find_spec("openvino") else "torch"
    backend = argv[1] if argv else default
    seen: dict = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(app=app, **kw))
    assert main(["serve", "--data", str(tmp_path), *argv]) == 0
    assert seen["host"] == "127.0.0.1" and seen["port"] == 8765
    pool = seen["app"].state.config.pool
    assert pool.backend == backend and pool.engines["lite_medsam"].engine.backend == backend
    assert seen["app"].state.config.data_dir == tmp_path.resolve()

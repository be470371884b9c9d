"""Where exported graphs live, and whether a cached export can be trusted (torch-free).

One export = two graphs of one model: the image encoder (preprocessed image -> embedding) and
the prompt encoder + mask decoder (embedding + N boxes -> low-res logits and IoU, N dynamic).
They are cached under

    cache_dir()/exports/<model>/<checkpoint sha256[:16]>/<format>-<precision>/

with a manifest.json naming the model, the checkpoint's SHA-256, format, precision, the export
schema and the converting library's version, and the SHA-256 of every file. An export is used
only when all of these match; otherwise it is stale or corrupt, and it is rebuilt.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..weights import LITE_MEDSAM_SHA256, cache_dir

# Bump when the exported graphs change for the same weights (wrappers, opset, conversion flags).
EXPORT_SCHEMA = 1
ONNX_OPSET = 17
FORMATS = ("openvino", "onnx")
PRECISIONS = ("f32", "bf16", "int8")
MANIFEST = "manifest.json"
GRAPH_FILES = {
    "openvino": {"encoder": ("encoder.xml", "encoder.bin"), "decoder": ("decoder.xml", "decoder.bin")},
    "onnx": {"encoder": ("encoder.onnx",), "decoder": ("decoder.onnx",)},
}


class ExportError(RuntimeError):
    """An export that cannot be built or used (the message says why)."""


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def checkpoint_sha256(model: str, checkpoint: str | Path | None) -> str:
    """The identity of the weights: the file's SHA-256, or the embedded LiteMedSAM weights' own."""
    if checkpoint is None:
        if model == "lite_medsam":
            return LITE_MEDSAM_SHA256  # the only embedded weights; verified when they are loaded
        raise ExportError(f"{model}: no weights ship with medficient; pass --checkpoint FILE")
    path = Path(checkpoint)
    if not path.is_file():
        raise ExportError(f"{path}: no such checkpoint file")
    return sha256_file(path)


def library_version(fmt: str) -> str:
    """What the graph files depend on besides the weights: OpenVINO's IR version, or the opset."""
    if fmt == "openvino":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return f"openvino {version('openvino')}"
        except PackageNotFoundError:
            raise ExportError("OpenVINO is not installed (pip install openvino)") from None
    return f"onnx opset {ONNX_OPSET}"


@dataclass(frozen=True)
class ExportKey:
    model: str
    checkpoint_sha256: str
    fmt: str = "openvino"
    precision: str = "f32"

    def __post_init__(self) -> None:
        if self.fmt not in FORMATS:
            raise ExportError(f"unknown export format {self.fmt!r}; choose one of {', '.join(FORMATS)}")
        if self.precision not in PRECISIONS:
            raise ExportError(f"unknown precision {self.precision!r}; choose one of {', '.join(PRECISIONS)}")
        if self.fmt == "onnx" and self.precision != "f32":
            raise ExportError("ONNX exports are f32 only; bf16 and int8 need --format openvino")

    @property
    def directory(self) -> Path:
        return cache_dir() / "exports" / self.model / self.checkpoint_sha256[:16] / f"{self.fmt}-{self.precision}"

    def files(self, graph: str) -> tuple[str, ...]:
        return GRAPH_FILES[self.fmt][graph]

    def graph_path(self, graph: str) -> Path:
        return self.directory / self.files(graph)[0]

    def expected(self) -> dict:
        """The manifest fields that must match for the export to be used."""
        return {
            "schema": EXPORT_SCHEMA,
            "model": self.model,
            "checkpoint_sha256": self.checkpoint_sha256,
            "format": self.fmt,
            "precision": self.precision,
            "library": library_version(self.fmt),
        }


def read_manifest(directory: Path) -> dict | None:
    try:
        data = json.loads((directory / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def check_export(key: ExportKey, recheck: bool = False) -> str | None:
    """None when the cached export is usable; otherwise why not (missing, stale or corrupt).

    File hashes are checked once per file version: a stamp records the size and mtime of files
    that hashed correctly, and a file rewritten since (same size or not) is hashed again;
    `recheck` hashes every file regardless (what `medficient export` does).
    """
    directory = key.directory
    if not directory.is_dir():
        return "not exported yet"
    manifest = read_manifest(directory)
    if manifest is None:
        return "corrupt: manifest.json missing or unreadable"
    for field, want in key.expected().items():
        if manifest.get(field) != want:
            return f"stale: {field} is {manifest.get(field)!r}, expected {want!r}"
    files, sizes = manifest.get("files"), manifest.get("sizes")
    needed = [name for graph in ("encoder", "decoder") for name in key.files(graph)]
    if not isinstance(files, dict) or not isinstance(sizes, dict) or any(n not in files or n not in sizes for n in needed):
        return "corrupt: manifest lists no hash for some graph files"
    stats = {}
    for name in files:
        path = directory / name
        if not path.is_file():
            return f"corrupt: {name} is missing"
        st = path.stat()
        if st.st_size != sizes.get(name):
            return f"corrupt: {name} has the wrong size"
        stats[name] = [st.st_size, st.st_mtime_ns, files[name]]
    if not recheck and _read_stamp(directory) == stats:
        return None
    for name, digest in files.items():
        if sha256_file(directory / name) != digest:
            return f"corrupt: {name} does not match its SHA-256"
    _write_stamp(directory, stats)
    return None


VERIFIED = "verified.json"


def _read_stamp(directory: Path) -> dict | None:
    try:
        return json.loads((directory / VERIFIED).read_text())
    except (OSError, ValueError):
        return None


def _write_stamp(directory: Path, stats: dict) -> None:
    """Best effort (a read-only cache just hashes every time)."""
    try:
        tmp = directory / f".{VERIFIED}.{os.getpid()}"
        tmp.write_text(json.dumps(stats))
        os.replace(tmp, directory / VERIFIED)
    except OSError:
        pass


def write_manifest(staging: Path, key: ExportKey, extra: dict) -> dict:
    names = [name for graph in ("encoder", "decoder") for name in key.files(graph)]
    manifest = {
        **key.expected(),
        **extra,
        "files": {name: sha256_file(staging / name) for name in names},
        "sizes": {name: (staging / name).stat().st_size for name in names},
    }
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
    return manifest


def staging_dir(key: ExportKey) -> Path:
    """A fresh folder beside the export's, to build into before `install`."""
    parent = key.directory.parent
    parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=parent, prefix=f".{key.directory.name}.build-"))


def install(staging: Path, key: ExportKey) -> Path:
    """Replace the export's folder by the staged one (a rename: readers never see half a folder)."""
    target = key.directory
    trash = None
    if target.exists():
        trash = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.old-"))
        os.replace(target, trash / "old")
    try:
        os.replace(staging, target)
    except OSError:
        if trash is not None and not target.exists():
            os.replace(trash / "old", target)
        raise
    finally:
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)
    return target


def ensure_export(
    key: ExportKey, checkpoint=None, trust_pickle: bool = False, force: bool = False, recheck: bool = False, log=print, **build
) -> Path:
    """The cached export of `key`; built (or rebuilt, when stale or corrupt) only if needed.

    Only building imports torch (`.export`); a valid cached export costs a manifest read and hashes.
    """
    problem = "rebuild asked for" if force else check_export(key, recheck=recheck)
    if problem is None:
        return key.directory
    if problem not in ("not exported yet", "rebuild asked for"):
        log(f"medficient: cached export {key.directory} is {problem}; rebuilding it")
    from .export import build_export

    return build_export(key, checkpoint, trust_pickle, log=log, **build)

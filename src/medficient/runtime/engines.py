"""Engines over exported graphs: the TorchEngine interface (encode/decode in numpy), no torch.

`ExportedEngine.load` finds the cached export of (model, weights, format, precision), checks its
manifest and file hashes, and builds it first when it is missing, stale or corrupt (only then
is torch imported). With a valid cached export nothing here imports torch.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..inference.engine import EngineStats
from ..profiles import PROFILES, Profile
from .cache import ExportError, ExportKey, check_export, checkpoint_sha256, ensure_export, read_manifest


def _log(message: str) -> None:
    print(message, file=sys.stderr)


def open_graphs(key: ExportKey, folder: Path | None = None, threads: int | None = None, cache: bool = True):
    """Compiled encoder and decoder of an export folder, for the key's format."""
    folder = Path(folder or key.directory)
    if key.fmt == "openvino":
        from .openvino_engine import OpenVINOGraphs

        manifest = read_manifest(folder) or {}
        hint = manifest.get("inference_precision", "bf16" if key.precision == "bf16" else "f32")
        return OpenVINOGraphs(folder, hint, threads=threads, cache_dir=(folder / "ov_cache") if cache else None)
    from .onnx_engine import OnnxGraphs

    return OnnxGraphs(folder, threads=threads)


@dataclass
class ExportedEngine:
    """Runs a cached export; same interface as `TorchEngine` (profile, stats, encode, decode)."""

    graphs: object
    profile: Profile
    key: ExportKey
    stats: EngineStats = field(default_factory=EngineStats)

    fmt = "openvino"
    backend = "openvino"

    @classmethod
    def load(
        cls,
        name: str,
        checkpoint: str | None = None,
        precision: str = "f32",
        threads: int | None = None,
        trust_pickle: bool = False,
        build: bool = True,
        log=_log,
    ) -> "ExportedEngine":
        if name not in PROFILES:
            raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(PROFILES)}")
        key = ExportKey(name, checkpoint_sha256(name, checkpoint), cls.fmt, precision)
        if build:
            ensure_export(key, checkpoint, trust_pickle, log=log)
        elif (problem := check_export(key)) is not None:
            raise ExportError(f"no usable export of {name} ({problem}); run `medficient export`")
        return cls(open_graphs(key, threads=threads), PROFILES[name], key)

    def encode(self, image: np.ndarray) -> np.ndarray:
        """(1, 3, S, S) float32 -> embedding (1, 256, 64, 64) float32 (a copy the caller owns)."""
        t0 = time.perf_counter()
        emb = self.graphs.encode(np.ascontiguousarray(image, dtype=np.float32))
        self.stats.encoder_calls += 1
        self.stats.encoder_seconds += time.perf_counter() - t0
        return emb

    def decode(self, embedding: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """Boxes (N, 4) in prompt space against one embedding -> low-res logits (N, 1, 256, 256)."""
        t0 = time.perf_counter()
        boxes = np.ascontiguousarray(np.asarray(boxes, np.float32).reshape(-1, 4))
        logits, _ = self.graphs.decode_full(embedding, boxes)
        self.stats.decoder_calls += 1
        self.stats.boxes_decoded += len(boxes)
        self.stats.decoder_seconds += time.perf_counter() - t0
        return logits


class OpenVINOEngine(ExportedEngine):
    """OpenVINO (CPU plugin) on the cached IR; compiled models cached in the export's ov_cache/."""

    fmt = "openvino"
    backend = "openvino"


class OnnxEngine(ExportedEngine):
    """ONNX Runtime (CPU execution provider) on the cached ONNX graphs (f32 only)."""

    fmt = "onnx"
    backend = "onnxruntime"

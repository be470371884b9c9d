"""A backend runs one network's two halves on the CPU with OpenVINO: encode an image, decode boxes.

Every backend (LiteMedSAM, MedficientSAM L0/L1/L2, RepViT-MedSAM, MedSAM ViT-B) is the same class:
a preprocessing profile plus a compiled encoder/decoder pair from the model store. The segmenter
talks to it in numpy only.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.profiles import Profile

PRECISIONS = ("f32", "bf16")


@dataclass
class BackendStats:
    """Call counts and seconds spent in each half (benchmarks, the panel's status line)."""

    encoder_calls: int = 0
    decoder_calls: int = 0
    encoder_seconds: float = 0.0
    decoder_seconds: float = 0.0
    boxes_decoded: int = 0


def _compile_decoder(core, model, config: dict):
    """The decoder without the CPU plugin's fused "snippets" kernels: on the decoder's attention
    (56 rows against 4096 image tokens) the fused kernel is slower than the plain MatMul and Softmax
    and its speed varies from process to process (docs/benchmarks.md, "The decoder"). A plugin that
    does not know the setting compiles the decoder as it would by default."""
    try:
        return core.compile_model(model, "CPU", {**config, "SNIPPETS_MODE": "DISABLE"}).create_infer_request()
    except RuntimeError:
        return core.compile_model(model, "CPU", config).create_infer_request()


class OpenVINOBackend:
    """Compiled encoder and decoder of one converted model, one infer request each.

    The precision hint is always explicit: the CPU plugin would otherwise pick bf16 on CPUs that
    have it. `cache_dir` is OpenVINO's compiled-model cache: later start-ups load compiled blobs.
    """

    def __init__(self, name: str, profile: Profile, encoder_xml: Path, decoder_xml: Path, precision: str = "f32",
                 threads: int | None = None, cache_dir: Path | None = None, identity: str = "") -> None:
        import openvino as ov

        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
        core = ov.Core()
        if cache_dir is not None:
            core.set_property({"CACHE_DIR": str(cache_dir)})
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": precision}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        self.name, self.profile, self.precision = name, profile, precision
        self.identity = identity  # which weights (and converter): part of every cached embedding's key
        self.stats = BackendStats()
        self._encode = core.compile_model(str(encoder_xml), "CPU", config).create_infer_request()
        decoder = core.read_model(str(decoder_xml))
        self._decode = _compile_decoder(core, decoder, config)
        # One box per call is the interactive case (a click, each 3D slice): a copy compiled for a static
        # (1, 4) box input runs about 10 % faster than the dynamic-batch one (docs/benchmarks.md).
        decoder.reshape({"boxes": [1, 4]})
        self._decode_one = _compile_decoder(core, decoder, config)

    def encode(self, image: np.ndarray) -> np.ndarray:
        """(1, 3, S, S) float32 -> embedding (1, 256, 64, 64) float32, a copy the caller owns
        (the request reuses its output buffer: caching the buffer itself would alias slices)."""
        t0 = time.perf_counter()
        self._encode.infer({0: np.ascontiguousarray(image, dtype=np.float32)})
        emb = self._encode.get_output_tensor(0).data.copy()
        self.stats.encoder_calls += 1
        self.stats.encoder_seconds += time.perf_counter() - t0
        return emb

    def decode(self, embedding: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """Boxes (N, 4) in prompt space against one embedding -> low-res logits (N, 1, 256, 256)."""
        t0 = time.perf_counter()
        boxes = np.ascontiguousarray(np.asarray(boxes, np.float32).reshape(-1, 4))
        request = self._decode_one if len(boxes) == 1 else self._decode
        request.infer({0: np.ascontiguousarray(embedding, dtype=np.float32), 1: boxes})
        logits = request.get_output_tensor(0).data.copy()
        self.stats.decoder_calls += 1
        self.stats.boxes_decoded += len(boxes)
        self.stats.decoder_seconds += time.perf_counter() - t0
        return logits

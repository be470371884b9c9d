"""OpenVINO graphs: compiled encoder and decoder of an export folder (torch-free)."""
from __future__ import annotations

from pathlib import Path

import numpy as np


class OpenVINOGraphs:
    """The two compiled models and one infer request each (latency hint, one stream).

    `cache_dir` is OpenVINO's compiled-model cache: later processes load the compiled blobs
    instead of compiling again, which is most of a cold start.
    """

    def __init__(self, folder: Path, inference_precision: str = "f32", threads: int | None = None, cache_dir: Path | None = None):
        import openvino as ov

        core = ov.Core()
        if cache_dir is not None:
            core.set_property({"CACHE_DIR": str(cache_dir)})
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": inference_precision}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        folder = Path(folder)
        self.encoder = core.compile_model(str(folder / "encoder.xml"), "CPU", config)
        self.decoder = core.compile_model(str(folder / "decoder.xml"), "CPU", config)
        self._encode = self.encoder.create_infer_request()
        self._decode = self.decoder.create_infer_request()

    def encode(self, image: np.ndarray) -> np.ndarray:
        self._encode.infer({0: image})
        return self._encode.get_output_tensor(0).data.copy()  # the request reuses its output buffer

    def decode_full(self, embedding: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self._decode.infer({0: np.ascontiguousarray(embedding, dtype=np.float32), 1: boxes})
        return self._decode.get_output_tensor(0).data.copy(), self._decode.get_output_tensor(1).data.copy()

"""ONNX Runtime graphs: sessions for the encoder and decoder of an export folder (torch-free)."""
from __future__ import annotations

from pathlib import Path

import numpy as np


class OnnxGraphs:
    def __init__(self, folder: Path, threads: int | None = None):
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise RuntimeError("the onnxruntime backend needs onnxruntime: pip install onnxruntime") from e
        options = ort.SessionOptions()
        # EXTENDED, not ALL: ALL's NCHWc layout kernels round differently and flipped a boundary
        # voxel of a 3D case against torch (docs/benchmarks.md); exact masks come first here.
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = int(threads)
        folder = Path(folder)
        providers = ["CPUExecutionProvider"]
        self.encoder = ort.InferenceSession(str(folder / "encoder.onnx"), options, providers=providers)
        self.decoder = ort.InferenceSession(str(folder / "decoder.onnx"), options, providers=providers)

    def encode(self, image: np.ndarray) -> np.ndarray:
        return self.encoder.run(["embedding"], {"image": image})[0]

    def decode_full(self, embedding: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logits, iou = self.decoder.run(
            ["low_res_logits", "iou_predictions"], {"embedding": np.ascontiguousarray(embedding, dtype=np.float32), "boxes": boxes}
        )
        return logits, iou

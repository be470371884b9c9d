"""Runtimes that run the two halves of a model: encode an image, decode boxes against it.

The pipeline talks to an engine in numpy only, so the torch engine and the exported
(OpenVINO/ONNX) engines are interchangeable. `OpenVINOEngine` and `OnnxEngine` live in
`medficient.runtime.engines`; `open_engine` picks by backend.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from ..profiles import Profile


@dataclass
class EngineStats:
    """Call counts and seconds spent in each half, for `medficient bench`."""

    encoder_calls: int = 0
    decoder_calls: int = 0
    encoder_seconds: float = 0.0
    decoder_seconds: float = 0.0
    boxes_decoded: int = 0

    def as_dict(self) -> dict[str, float]:
        return dict(self.__dict__)


@dataclass
class TorchEngine:
    """Eager PyTorch execution of a registry model."""

    model: object
    profile: Profile
    device: str = "cpu"
    stats: EngineStats = field(default_factory=EngineStats)

    backend = "torch"

    @classmethod
    def load(cls, name: str, checkpoint: str | None = None, device: str = "cpu", trust_pickle: bool = False) -> "TorchEngine":
        import torch

        from ..models import build_model

        model = build_model(name, checkpoint, trust_pickle=trust_pickle).to(device)
        engine = cls(model, model.spec.profile, device)
        with torch.no_grad():
            engine._dense_pe = model.prompt_encoder.get_dense_pe()  # the same for every decode
        return engine

    def encode(self, image: np.ndarray):
        """(1, 3, S, S) float32 -> embedding (kept as a torch tensor on the device)."""
        import torch

        t0 = time.perf_counter()
        with torch.no_grad():
            emb = self.model.image_encoder(torch.from_numpy(image).to(self.device))
        self.stats.encoder_calls += 1
        self.stats.encoder_seconds += time.perf_counter() - t0
        return emb

    def decode(self, embedding, boxes: np.ndarray) -> np.ndarray:
        """Boxes (N, 4) in prompt space against one embedding -> low-res logits (N, 1, 256, 256)."""
        import torch

        t0 = time.perf_counter()
        with torch.no_grad():
            box_t = torch.as_tensor(np.asarray(boxes, np.float32).reshape(-1, 1, 4), device=self.device)
            sparse, dense = self.model.prompt_encoder(points=None, boxes=box_t, masks=None)
            logits, _ = self.model.mask_decoder(
                image_embeddings=embedding,
                image_pe=self._dense_pe,
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=False,
            )
        self.stats.decoder_calls += 1
        self.stats.boxes_decoded += len(boxes)
        self.stats.decoder_seconds += time.perf_counter() - t0
        return logits.float().cpu().numpy()


def open_engine(
    backend: str,
    name: str,
    checkpoint: str | None = None,
    precision: str = "f32",
    threads: int | None = None,
    device: str = "cpu",
    trust_pickle: bool = False,
):
    """An engine by backend name: "openvino", "onnxruntime" or "torch" (f32 only)."""
    if backend == "torch":
        if precision != "f32":
            raise ValueError(f"the torch backend runs f32 only (asked for {precision}); use --backend openvino")
        if threads:
            import torch

            torch.set_num_threads(threads)
        return TorchEngine.load(name, checkpoint, device, trust_pickle=trust_pickle)
    from ..runtime.engines import OnnxEngine, OpenVINOEngine

    classes = {"openvino": OpenVINOEngine, "onnxruntime": OnnxEngine}
    if backend not in classes:
        raise ValueError(f"unknown backend {backend!r}; choose one of openvino, onnxruntime, torch")
    return classes[backend].load(name, checkpoint, precision=precision, threads=threads, trust_pickle=trust_pickle)


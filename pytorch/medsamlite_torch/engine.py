"""Eager PyTorch execution of a model behind the core's backend interface (`profile`, `encode`,
`decode`), so MedSAMLiteLib's propagation and segmenter run torch models unchanged (training
validation, benchmarks)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from MedSAMLiteLib.models.backends import BackendStats
from MedSAMLiteLib.core.profiles import Profile


@dataclass
class TorchEngine:
    """A registry (or in-memory) model, numpy in and out like the core's backends (embeddings too, so
the segmenter's cache can hold them)."""

    model: object
    profile: Profile
    device: str = "cpu"
    stats: BackendStats = field(default_factory=BackendStats)

    backend = "torch"

    def __post_init__(self) -> None:
        import torch

        with torch.no_grad():
            self._dense_pe = self.model.prompt_encoder.get_dense_pe()  # the same for every decode

    @classmethod
    def load(cls, name: str, checkpoint: str | None = None, device: str = "cpu", trust_pickle: bool = False) -> "TorchEngine":
        from .models import build_model

        model = build_model(name, checkpoint, trust_pickle=trust_pickle).to(device)
        return cls(model, model.spec.profile, device)

    def encode(self, image: np.ndarray) -> np.ndarray:
        """(1, 3, S, S) float32 -> embedding (1, 256, 64, 64) float32."""
        import torch

        t0 = time.perf_counter()
        with torch.no_grad():
            emb = self.model.image_encoder(torch.from_numpy(image).to(self.device)).float().cpu().numpy()
        self.stats.encoder_calls += 1
        self.stats.encoder_seconds += time.perf_counter() - t0
        return emb

    def decode(self, embedding: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """Boxes (N, 4) in prompt space against one embedding -> low-res logits (N, 1, 256, 256)."""
        import torch

        t0 = time.perf_counter()
        with torch.no_grad():
            box_t = torch.as_tensor(np.asarray(boxes, np.float32).reshape(-1, 4), device=self.device)
            embedding_t = torch.tensor(embedding, dtype=torch.float32, device=self.device)  # a copy: cached arrays are read-only
            logits, _ = self.model.decode_boxes(embedding_t, box_t, self._dense_pe)
        self.stats.decoder_calls += 1
        self.stats.boxes_decoded += len(boxes)
        self.stats.decoder_seconds += time.perf_counter() - t0
        return logits.float().cpu().numpy()

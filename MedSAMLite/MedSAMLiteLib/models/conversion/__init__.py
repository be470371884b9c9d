"""Published PyTorch checkpoints -> two OpenVINO models, without torch.

`convert(architecture, weights)` builds the image encoder ((1, 3, S, S) -> (1, 256, 64, 64)) and the
prompt encoder + mask decoder (`image_embeddings` (1, 256, 64, 64), `boxes` (N, 4) in prompt space ->
`low_res_logits` (N, 1, 256, 256), `iou_predictions` (N, 1)) directly from numpy weights with
OpenVINO's opset API. `weights` is a checkpoint path (read by `checkpoint.load_weights`, which never
runs pickled code) or a mapping key -> array in the layout of the official state dicts.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .checkpoint import CheckpointError, load_weights
from .ops import ConversionError, Weights, check_all_used

# architecture -> (image size, prompt space, mask-decoder LayerNorm eps)
ARCHITECTURES: dict[str, tuple[int, int, float]] = {
    "litemedsam": (256, 256, 1e-5),
    "medficient_l0": (512, 512, 1e-6),
    "medficient_l1": (512, 512, 1e-6),
    "medficient_l2": (512, 512, 1e-6),
    "repvit_medsam": (1024, 1024, 1e-5),
    "medsam_vit_b": (1024, 1024, 1e-5),
}

__all__ = ["ARCHITECTURES", "CheckpointError", "ConversionError", "convert"]


def _build_encoder(architecture: str, weights: Weights):
    if architecture == "litemedsam":
        from .tiny_vit import build_encoder

        return build_encoder(weights)
    if architecture.startswith("medficient_"):
        from .efficientvit import build_encoder

        return build_encoder(weights, architecture.rsplit("_", 1)[1])
    if architecture == "repvit_medsam":
        from .repvit import build_encoder

        return build_encoder(weights)
    from .vit import build_encoder

    return build_encoder(weights)


def convert(architecture: str, weights: str | Path | Mapping[str, np.ndarray]):
    """(encoder, decoder) openvino.Model pair of `architecture` with these weights.

    Raises ConversionError (or CheckpointError for an unreadable file) with one line that names the
    problem: unknown architecture, missing or wrongly shaped weights, or weights left over (a file
    of another architecture or size).
    """
    if architecture not in ARCHITECTURES:
        raise ConversionError(f"unknown architecture {architecture!r}; choose one of {', '.join(ARCHITECTURES)}")
    source = f"{weights}: " if isinstance(weights, (str, Path)) else ""
    state = load_weights(weights) if isinstance(weights, (str, Path)) else weights
    if not any(k.startswith("mask_decoder.") for k in state):
        raise ConversionError(
            f"{source}no prompt encoder / mask decoder weights (an encoder-only distillation checkpoint?); "
            "use the fine-tuned checkpoint"
        )
    from .sam_decoder import build_decoder

    _, prompt_space, eps = ARCHITECTURES[architecture]
    try:
        encoder_weights = Weights(state, "image_encoder.")
        encoder = _build_encoder(architecture, encoder_weights)
        check_all_used(encoder_weights)
        decoder = build_decoder(Weights(state), prompt_space, eps)
    except ConversionError as e:
        raise ConversionError(f"{source}does not fit {architecture}: {e}") from None
    return encoder, decoder

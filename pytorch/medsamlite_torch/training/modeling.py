"""Networks for training: the student (any registry model, optionally shrunk), the frozen teacher,
and the trainable box-prompted forward pass. Saved weights load with `medsamlite_torch.build_model`
(and, registry-sized, into the Slicer extension: its converter reads the same file).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch
from MedSAMLiteLib.core.profiles import Profile
from torch import nn

from ..checkpoint import extract_state_dict, filter_state_dict, is_encoder_only, load_state_dict_checked, read_checkpoint
from ..engine import TorchEngine
from ..models.registry import build_model, get_spec
from ..models.sam import Sam, build_sam
from .config import ConfigError, ModelConfig

META_KEY = "medsamlite_torch"  # the entry of model.pth that records a trained model's architecture


def build_encoder(mc: ModelConfig) -> nn.Module:
    """The registry encoder of `mc.model`, or a resized one when `mc.encoder` overrides its architecture."""
    spec = get_spec(mc.model)
    if not mc.encoder:
        return spec.build_encoder()
    if mc.model.startswith("medficient_"):
        from ..models.efficientvit import CONFIGS, EfficientViTSamConfig, EfficientViTSamEncoder

        base = dataclasses.asdict(CONFIGS[mc.model.split("_")[1]])
        _check_keys(mc, base)
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in {**base, **mc.encoder}.items()}
        return EfficientViTSamEncoder(EfficientViTSamConfig(**values))
    if mc.model == "lite_medsam":
        import inspect

        from ..models.tiny_vit import TinyViT

        base = {k: p.default for k, p in inspect.signature(TinyViT).parameters.items()}
        _check_keys(mc, base)
        return TinyViT(**{k: tuple(v) if isinstance(v, list) else v for k, v in mc.encoder.items()})
    raise ConfigError(f"{mc.model}: encoder overrides are supported for medficient_* and lite_medsam only")


def _check_keys(mc: ModelConfig, base: dict[str, Any]) -> None:
    unknown = sorted(set(mc.encoder) - set(base))
    if unknown:
        raise ConfigError(f"encoder overrides for {mc.model}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(base))})")


def profile_of(mc: ModelConfig) -> Profile:
    """The registry profile, with the input/prompt size replaced when `image_size` is set."""
    profile = get_spec(mc.model).profile
    if mc.image_size and mc.image_size != profile.image_size:
        profile = dataclasses.replace(profile, image_size=mc.image_size, prompt_space=mc.image_size)
    return profile


def build_student(mc: ModelConfig) -> Sam:
    """Student SAM in train mode: `checkpoint` if given (whole model or encoder only; LiteMedSAM
    without one starts from its published weights); the prompt encoder and mask decoder come from
    `decoder_from` (LiteMedSAM's by default) when the checkpoint has none."""
    spec = get_spec(mc.model)
    sam = build_sam(build_encoder(mc), profile_of(mc).prompt_space, spec.order, spec.decoder_layer_norm_eps)
    has_decoder = False
    checkpoint = mc.checkpoint
    if not checkpoint and not mc.encoder and mc.model == "lite_medsam":  # the only model with fetchable weights
        from MedSAMLiteLib.models.store import fetch_weights

        checkpoint = str(fetch_weights("litemedsam"))
    if checkpoint:
        state = filter_state_dict(extract_state_dict(read_checkpoint(checkpoint, trust_pickle=mc.trust_checkpoint)), sam)
        if is_encoder_only(state):
            enc = {k[len("image_encoder.") :]: v for k, v in state.items()}
            load_state_dict_checked(sam.image_encoder, enc, source=checkpoint)
        else:
            load_state_dict_checked(sam, state, source=checkpoint)
            has_decoder = True
    if not has_decoder and mc.decoder_from:
        copy_prompt_decoder(build_model(mc.decoder_from), sam)
    return sam.train()


def copy_prompt_decoder(source: Sam, target: Sam) -> None:
    """Prompt encoder and mask decoder weights (the same shapes in every registry model)."""
    target.prompt_encoder.load_state_dict(source.prompt_encoder.state_dict())
    target.mask_decoder.load_state_dict(source.mask_decoder.state_dict())


def build_teacher(mc: ModelConfig) -> Sam:
    """Frozen model in eval mode: a registry model (LiteMedSAM's published weights without a
    checkpoint), or, with `encoder`/`image_size` overrides, a resized one built like a student
    (random encoder unless `checkpoint` is given: for tests of the machinery only)."""
    if mc.encoder or mc.image_size:
        teacher = build_student(mc)
        teacher.spec = dataclasses.replace(get_spec(mc.model), profile=profile_of(mc))  # type: ignore[attr-defined]
    else:
        teacher = build_model(mc.model, mc.checkpoint, trust_pickle=mc.trust_checkpoint)
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher.eval()


class PromptedSam(nn.Module):
    """Trainable forward: images (B,3,S,S), boxes (B,K,4) -> logits (B,K,256,256), iou (B,K)."""

    def __init__(self, sam: Sam) -> None:
        super().__init__()
        self.sam = sam

    def forward(self, images: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return prompted_forward(self.sam, self.sam.image_encoder(images), boxes)


def prompted_forward(sam: Sam, embeddings: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    b, k = boxes.shape[:2]
    logits, iou = sam.decode_boxes(embeddings.repeat_interleave(k, dim=0), boxes.reshape(b * k, 4))
    return logits.view(b, k, *logits.shape[-2:]), iou.view(b, k)


def weights_file(sam: Sam, mc: ModelConfig) -> dict[str, Any]:
    """What `model.pth` holds: the state dict under `model` (what `build_model` reads) and, under
    `medsamlite_torch`, how to rebuild a resized architecture (plain values: loads with weights_only)."""
    meta = {"model": mc.model, "image_size": profile_of(mc).image_size, "encoder": dict(mc.encoder)}
    return {"model": {k: v.detach().cpu() for k, v in sam.state_dict().items()}, META_KEY: meta}


def load_trained(path: str | Path) -> tuple[Sam, Profile]:
    """A model written by `medsamlite-torch train` (model.pth, best.pth or a training checkpoint), with
    the profile it was trained for; registry-sized ones also load with `medsamlite_torch.build_model`."""
    obj = read_checkpoint(path)
    meta = obj.get(META_KEY) if isinstance(obj, dict) else None
    if not isinstance(meta, dict):
        raise ConfigError(f"{path}: not written by `medsamlite-torch train` (no `{META_KEY}` entry)")
    mc = ModelConfig(model=meta["model"], image_size=meta.get("image_size"), encoder=meta.get("encoder") or {}, decoder_from=None)
    spec = get_spec(mc.model)
    sam = build_sam(build_encoder(mc), profile_of(mc).prompt_space, spec.order, spec.decoder_layer_norm_eps)
    load_state_dict_checked(sam, filter_state_dict(extract_state_dict(obj), sam), source=str(path))
    sam.spec = spec  # type: ignore[attr-defined]
    return sam.eval(), profile_of(mc)


def engine_for(sam: Sam, profile: Profile, device: str = "cpu") -> TorchEngine:
    """The inference pipeline's engine around an in-memory model (for validation)."""
    return TorchEngine(sam, profile, device)


def count_parameters(module: nn.Module) -> int:
    return int(np.sum([p.numel() for p in module.parameters()]))

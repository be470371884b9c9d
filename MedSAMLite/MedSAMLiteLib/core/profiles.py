"""Preprocessing profiles: how each network's authors fed it, keyed by architecture name."""
from __future__ import annotations

from dataclasses import dataclass


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


_LITE = Profile(image_size=256, resize="area", prompt_space=256, propagation="litemedsam", logits_upsample="crop")
_MEDFICIENT = Profile(image_size=512, resize="bilinear", prompt_space=512, propagation="medficient", logits_upsample="input")

PROFILES: dict[str, Profile] = {
    "litemedsam": _LITE,
    "medficient_l0": _MEDFICIENT,
    "medficient_l1": _MEDFICIENT,
    "medficient_l2": _MEDFICIENT,
    "repvit_medsam": Profile(
        image_size=1024,
        resize="area",
        prompt_space=1024,
        propagation="litemedsam",
        logits_upsample="input",
        pixel_mean=(0.2482501, 0.21106622, 0.20026337),
        pixel_std=(0.3038128, 0.27170245, 0.26680432),
    ),
    "medsam_vit_b": Profile(image_size=1024, resize="area", prompt_space=1024, propagation="litemedsam", logits_upsample="input"),
}

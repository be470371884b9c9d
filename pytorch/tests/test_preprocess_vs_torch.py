"""The core's torch-free post-processing against torch itself (torch is the oracle here only)."""
import numpy as np
import pytest

from MedSAMLiteLib.core.preprocess import Geometry, logits_to_masks, resize_bilinear
from MedSAMLiteLib.core.profiles import PROFILES

LITE = PROFILES["litemedsam"]
MEDFICIENT = PROFILES["medficient_l0"]


# ---- the torch-free hot path against torch itself --------------------------------------------


def _torch_masks(logits: np.ndarray, geom: Geometry, profile) -> np.ndarray:
    """The published post-processing, literally: F.interpolate (bilinear) then sigmoid > 0.5."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(logits)
    if profile.logits_upsample == "input":
        x = F.interpolate(x, (geom.size, geom.size), mode="bilinear", align_corners=False)
    x = x[:, :, : geom.new_height, : geom.new_width]
    x = F.interpolate(x, (geom.height, geom.width), mode="bilinear", align_corners=False)
    return (torch.sigmoid(x) > 0.5)[:, 0].numpy()


@pytest.mark.parametrize("profile", [LITE, MEDFICIENT], ids=["crop", "input"])
@pytest.mark.parametrize("shape", [(233, 197), (300, 640), (97, 61), (1024, 900)])
def test_logits_to_masks_equals_torch_on_near_zero_logits(profile, shape):
    """Smooth logits crossing 0 everywhere, plus exact ties at 0: every pixel must agree."""
    rng = np.random.default_rng(sum(shape))
    yy, xx = np.mgrid[0:256, 0:256].astype(np.float32)
    waves = np.sin(xx / 7.0 + rng.random()) * np.cos(yy / 5.0) * 3e-3  # |logit| mostly < 3e-3
    logits = np.stack([waves, waves + rng.normal(0, 1e-6, waves.shape).astype(np.float32), np.round(waves * 1e3) / 1e3])
    logits = logits[:, None].astype(np.float32)
    geom = Geometry.of(*shape, profile.image_size)
    masks = logits_to_masks(logits, geom, profile)
    want = _torch_masks(logits, geom, profile)
    assert masks.shape == want.shape
    assert 0.2 < want.mean() < 0.8
    assert int((masks != want).sum()) == 0


@pytest.mark.parametrize("size", [(256, 256, 233, 197), (128, 96, 512, 512), (512, 512, 300, 300)])
def test_resize_bilinear_is_bitwise_torch(size):
    import torch
    import torch.nn.functional as F

    in_h, in_w, out_h, out_w = size
    x = np.random.default_rng(in_h).normal(0, 10, (2, in_h, in_w)).astype(np.float32)
    want = F.interpolate(torch.from_numpy(x)[:, None], (out_h, out_w), mode="bilinear", align_corners=False)[:, 0].numpy()
    got = resize_bilinear(x, out_h, out_w)
    assert got.dtype == np.float32 and got.shape == want.shape
    assert np.array_equal(got, want), f"max diff {np.abs(got - want).max()}"

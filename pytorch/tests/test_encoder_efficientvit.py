"""MedficientSAM (EfficientViT-SAM-L0/L1/L2) image encoder against the reference keys and goldens."""
import pytest
import torch

from medsamlite_torch.models.efficientvit import efficientvit_sam_encoder
from reference import golden, read_keys
from torch_reference import assert_close_big, reference_input, rule_state_dict, warm_up

VARIANTS = ["l0", "l1", "l2"]
PREFIX = "image_encoder."
PARAMS = {"l0": 30_728_224, "l1": 43_585_568, "l2": 57_264_032}


@pytest.mark.parametrize("variant", VARIANTS)
def test_state_dict_matches_reference_keys(variant):
    expected = [(k[len(PREFIX) :], shape) for k, shape, _ in read_keys(f"medficient_{variant}") if k.startswith(PREFIX)]
    actual = [(k, tuple(t.shape)) for k, t in efficientvit_sam_encoder(variant).state_dict().items()]
    assert actual == expected


@pytest.mark.parametrize("variant", VARIANTS)
@torch.no_grad()
def test_embedding_matches_golden(variant):
    warm_up()
    name = f"medficient_{variant}"
    encoder = efficientvit_sam_encoder(variant)
    encoder.load_state_dict(rule_state_dict(name, PREFIX), strict=True)
    embedding = encoder.eval()(reference_input(512))
    assert_close_big(embedding, golden(name)["embedding"], f"{name} embedding")


@pytest.mark.parametrize("variant", VARIANTS)
def test_parameter_count(variant):
    assert sum(p.numel() for p in efficientvit_sam_encoder(variant).parameters()) == PARAMS[variant]


@torch.no_grad()
def test_small_batched_input_takes_quadratic_attention_path():
    """A 64x64 input leaves 2x2 tokens in stage 4 (the reference's quadratic branch); the neck
    still resamples to 64x64, and batch items stay independent."""
    encoder = efficientvit_sam_encoder("l0").eval()
    x = torch.rand(2, 3, 64, 64)
    out = encoder(x)
    assert out.shape == (2, 256, 64, 64) and torch.isfinite(out).all()
    torch.testing.assert_close(out[1:], encoder(x[1:]), rtol=0, atol=1e-5)


def test_unknown_variant_is_rejected():
    with pytest.raises(ValueError, match="l3"):
        efficientvit_sam_encoder("l3")

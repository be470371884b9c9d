"""SAM ViT-B image encoder (MedSAM): checkpoint layout and the golden embedding under the rule weights."""
import time

import pytest
import torch

from medsamlite_torch.models.image_encoder_vit import vit_b_sam_encoder
from reference import golden, read_keys
from torch_reference import assert_close_big, reference_input, rule_state_dict, warm_up

NAME = "medsam_vit_b"
PREFIX = "image_encoder."


def test_keys_shapes_and_parameter_count():
    enc = vit_b_sam_encoder()
    expected = [(k[len(PREFIX) :], shape) for k, shape, _ in read_keys(NAME) if k.startswith(PREFIX)]
    actual = [(k, tuple(v.shape)) for k, v in enc.state_dict().items()]
    assert actual == expected
    assert sum(p.numel() for p in enc.parameters()) == 89_670_912


@pytest.fixture(scope="module")
def embedding() -> tuple[torch.Tensor, float]:
    """One 1024x1024 forward with the rule weights (several seconds on CPU), shared by the tests below."""
    warm_up()
    enc = vit_b_sam_encoder()
    enc.load_state_dict(rule_state_dict(NAME, PREFIX), strict=True)
    enc.eval()
    x = reference_input(1024)
    with torch.no_grad():
        start = time.perf_counter()
        out = enc(x)
        seconds = time.perf_counter() - start
    return out, seconds


def test_embedding_matches_golden(embedding):
    out, seconds = embedding
    assert out.shape == (1, 256, 64, 64)
    print(f"ViT-B forward at 1024: {seconds:.2f} s")
    assert_close_big(out, golden(NAME)["embedding"], "embedding")

"""LiteMedSAM (TinyViT) image encoder against the reference keys and goldens."""
import torch

from medsamlite_torch.models.tiny_vit import tiny_vit_lite_medsam
from reference import golden, read_keys
from torch_reference import assert_close_big, reference_input, rule_state_dict, warm_up

NAME = "lite_medsam"
PREFIX = "image_encoder."


def test_state_dict_matches_reference_keys():
    expected = [(k[len(PREFIX) :], shape) for k, shape, _ in read_keys(NAME) if k.startswith(PREFIX)]
    actual = [(k, tuple(t.shape)) for k, t in tiny_vit_lite_medsam().state_dict().items()]
    assert actual == expected


@torch.no_grad()
def test_embedding_matches_golden():
    """Weights loaded before .eval(), as the reference did."""
    warm_up()
    encoder = tiny_vit_lite_medsam()
    encoder.load_state_dict(rule_state_dict(NAME, PREFIX), strict=True)
    embedding = encoder.eval()(reference_input(256))
    assert_close_big(embedding, golden(NAME)["embedding"], f"{NAME} embedding")


@torch.no_grad()
def test_embedding_does_not_depend_on_load_order():
    """Weights loaded after .eval(): no attention-bias table may be cached from the old weights."""
    warm_up()
    encoder = tiny_vit_lite_medsam().eval()
    encoder.load_state_dict(rule_state_dict(NAME, PREFIX), strict=True)
    embedding = encoder(reference_input(256))
    assert_close_big(embedding, golden(NAME)["embedding"], f"{NAME} embedding (loaded after eval)")


def test_parameter_count():
    assert sum(p.numel() for p in tiny_vit_lite_medsam().parameters()) == 5_726_740


@torch.no_grad()
def test_output_shape_and_batch_independence():
    torch.manual_seed(0)
    encoder = tiny_vit_lite_medsam().eval()
    x = torch.rand(2, 3, 256, 256)
    out = encoder(x)
    assert out.shape == (2, 256, 64, 64) and torch.isfinite(out).all()
    torch.testing.assert_close(out[1:], encoder(x[1:]), rtol=0, atol=1e-5)

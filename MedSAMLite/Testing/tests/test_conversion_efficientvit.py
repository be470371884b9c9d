"""MedficientSAM EfficientViT-SAM-L0/L1/L2 encoder built from numpy weights vs the reference goldens."""
import pytest

from MedSAMLiteLib.models.conversion import efficientvit
from MedSAMLiteLib.models.conversion.ops import ConversionError, Weights, compile_model
from reference import assert_close_big, golden, reference_input, rule_weights

VARIANTS = ["l0", "l1", "l2"]


def encoder_weights(variant: str) -> Weights:
    state = {k: v for k, v in rule_weights(f"medficient_{variant}").items() if k.startswith("image_encoder.")}
    return Weights(state, "image_encoder.")


@pytest.fixture(scope="module")
def image():
    return reference_input(512)


@pytest.mark.parametrize("variant", VARIANTS)
def test_embedding_matches_golden(variant, image):
    weights = encoder_weights(variant)
    model = efficientvit.build_encoder(weights, variant)
    assert weights.unused("") == []
    embedding = compile_model(model)({"image": image})["embedding"]
    assert_close_big(embedding, golden(f"medficient_{variant}")["embedding"], f"{variant} embedding")


def test_wrong_variant_is_refused():
    with pytest.raises(ConversionError, match="unused weights"):
        efficientvit.build_encoder(encoder_weights("l1"), "l0")
    with pytest.raises(ConversionError, match="missing weight"):
        efficientvit.build_encoder(encoder_weights("l0"), "l1")

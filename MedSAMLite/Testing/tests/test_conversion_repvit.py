"""RepViT-MedSAM encoder built from the unfused checkpoint layout (BatchNorm folded at build time) vs the goldens."""
import numpy as np
import pytest

from MedSAMLiteLib.models.conversion import ops, repvit
from reference import assert_close_big, golden, reference_input, rule_weights

NAME = "repvit_medsam_m11"
PREFIX = "image_encoder."


@pytest.fixture(scope="module")
def state():
    return rule_weights(NAME)


@pytest.fixture(scope="module")
def built(state):
    """Build once: the weights view (with its record of used keys) and the model's embedding."""
    weights = ops.Weights(state, PREFIX)
    model = repvit.build_encoder(weights)
    embedding = ops.compile_model(model)({"image": reference_input(1024)})["embedding"]
    return weights, model, embedding


def test_interface(built):
    _, model, _ = built
    assert model.input(0).get_any_name() == "image"
    assert list(model.input(0).get_partial_shape().to_shape()) == [1, 3, 1024, 1024]
    assert model.output(0).get_any_name() == "embedding"


def test_no_batchnorm_or_extra_branch_left(built):
    """Re-parameterised: one conv per Conv2d_BN and per RepVGGDW, none for a BatchNorm.

    Stem 2; 3 per block (token mixer, 2 in the channel MLP) plus 1 in the 3 width-changing blocks;
    2 in each of the 9 SE modules; 2 in the neck.
    """
    _, model, _ = built
    convs = [op for op in model.get_ops() if op.get_type_name() in ("Convolution", "GroupConvolution")]
    assert len(convs) == 2 + 24 * 3 + 3 + 9 * 2 + 2


def test_embedding_matches_unfused_golden(built):
    assert_close_big(built[2], golden(NAME)["embedding"], "embedding vs unfused golden")


def test_embedding_matches_fused_golden(built):
    assert_close_big(built[2], golden(f"{NAME}_fused")["embedding"], "embedding vs fused golden")


def test_all_encoder_keys_used(built):
    ops.check_all_used(built[0])


@pytest.mark.parametrize("key", ["features.9.token_mixer.1.fc1.weight", "features.5.token_mixer.0.bn.running_var"])
def test_wrong_shape_raises(state, key):
    bad = dict(state)
    bad[PREFIX + key] = np.zeros(bad[PREFIX + key].shape[:-1] + (bad[PREFIX + key].shape[-1] + 1,), np.float32)
    with pytest.raises(ops.ConversionError, match=key.replace(".", r"\.")):
        repvit.build_encoder(ops.Weights(bad, PREFIX))

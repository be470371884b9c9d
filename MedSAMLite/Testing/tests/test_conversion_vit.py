"""MedSAM ViT-B image encoder built from numpy weights vs the reference golden embedding (no torch).

The network is large (90 M parameters, ~490 GFLOP), so it is built and run once for the module.
"""
import numpy as np
import pytest
from reference import assert_close_big, golden, reference_input, rule_weights

from MedSAMLiteLib.models.conversion import ops, vit


@pytest.fixture(scope="module")
def state():
    return rule_weights("medsam_vit_b")


@pytest.fixture(scope="module")
def built(state):
    weights = ops.Weights(state, "image_encoder.")
    model = vit.build_encoder(weights)
    embedding = ops.compile_model(model)({"image": reference_input(1024)})["embedding"]
    return weights, embedding


def test_embedding_matches_golden(built):
    _, embedding = built
    assert_close_big(embedding, golden("medsam_vit_b")["embedding"], "embedding")


def test_all_encoder_weights_used(built):
    weights, _ = built
    assert weights.unused() == []


def test_wrong_shape_raises(state):
    # A global block's table (127, 64) in a windowed block (27, 64) must be refused by name.
    wrong = dict(state)
    wrong["image_encoder.blocks.0.attn.rel_pos_h"] = np.zeros((127, 64), np.float32)
    with pytest.raises(ops.ConversionError, match=r"image_encoder\.blocks\.0\.attn\.rel_pos_h"):
        vit.build_encoder(ops.Weights(wrong, "image_encoder."))

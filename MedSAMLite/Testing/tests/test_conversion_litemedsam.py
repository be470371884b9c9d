"""LiteMedSAM built from numpy weights (TinyViT encoder + SAM prompt encoder/mask decoder) vs the goldens."""
from __future__ import annotations

import numpy as np
import openvino as ov
import openvino.opset13 as opset
import pytest

from MedSAMLiteLib.models.conversion import ops, sam_decoder, tiny_vit
from MedSAMLiteLib.models.conversion.checkpoint import load_weights
from reference import (
    BOX_256, assert_close_big, assert_close_small, genuine_lite_medsam, golden, reference_input, requires_full_reference,
    rule_weights,
)

PROMPT_SPACE = 256
LAYER_NORM_EPS = 1e-5


def build(state: dict[str, np.ndarray]):
    """Build both graphs from one state dict; returns the Weights record and the compiled models."""
    weights = ops.Weights(state)
    encoder = tiny_vit.build_encoder(weights.sub("image_encoder."))
    decoder = sam_decoder.build_decoder(weights, PROMPT_SPACE, LAYER_NORM_EPS)
    return weights, ops.compile_model(encoder), ops.compile_model(decoder)


def decode(decoder, embedding: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    out = decoder({"image_embeddings": embedding, "boxes": boxes})
    return out["low_res_logits"], out["iou_predictions"]


@pytest.fixture(scope="module")
def state():
    return rule_weights("lite_medsam")


@pytest.fixture(scope="module")
def gold():
    return golden("lite_medsam")


@pytest.fixture(scope="module")
def built(state):
    return build(state)


@pytest.fixture(scope="module")
def embedding(built):
    return built[1](reference_input(256))["embedding"]


def test_encoder_matches_golden(embedding, gold):
    assert_close_big(embedding, gold["embedding"], "embedding")


@requires_full_reference
def test_decoder_matches_golden(built, gold):
    logits, iou = decode(built[2], gold["embedding"], BOX_256[None])
    assert_close_big(logits, gold["low_res_logits"], "low_res_logits")
    assert_close_small(iou, gold["iou_pred"], "iou_pred")


def test_full_chain_matches_golden(built, embedding, gold):
    logits, iou = decode(built[2], embedding, BOX_256[None])
    assert_close_big(logits, gold["low_res_logits"], "low_res_logits (chain)")
    assert_close_small(iou, gold["iou_pred"], "iou_pred (chain)")


def test_several_boxes_in_one_call(built, embedding):
    boxes = np.array([[60, 70, 180, 200], [0, 0, 255, 255], [100.5, 20, 130, 90]], dtype=np.float32)
    logits, iou = decode(built[2], embedding, boxes)
    assert logits.shape == (3, 1, 256, 256) and iou.shape == (3, 1)
    for i, box in enumerate(boxes):
        one_logits, one_iou = decode(built[2], embedding, box[None])
        np.testing.assert_allclose(logits[i : i + 1], one_logits, rtol=0, atol=1e-5)
        np.testing.assert_allclose(iou[i : i + 1], one_iou, rtol=0, atol=1e-6)


def test_prompt_embeddings_match_golden(state, gold):
    """The build-time dense PE and the in-graph box encoding, each against a float32 reference."""
    gaussian = state["prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"]
    centres = (np.arange(64, dtype=np.float32) + 0.5) / 64
    grid = np.stack(np.meshgrid(centres, centres), axis=-1).reshape(1, -1, 2)
    projected = np.float32(2 * np.pi) * ((2 * grid - 1) @ gaussian)
    pe32 = np.concatenate([np.sin(projected), np.cos(projected)], axis=-1)
    assert_close_small(sam_decoder.dense_pe(gaussian), pe32, "dense PE")

    boxes = opset.parameter([-1, 4], np.float32)
    sparse = sam_decoder._box_embeddings(boxes.output(0), ops.Weights(state, "prompt_encoder."), PROMPT_SPACE)
    model = ops.compile_model(ov.Model([opset.result(sparse)], [boxes]))
    assert_close_small(model(gold["box"].reshape(-1, 4))[0], gold["sparse_embeddings"], "sparse embeddings")


def test_every_key_is_used(built):
    assert built[0].unused() == []


@pytest.mark.parametrize(
    "key, builder",
    [
        ("image_encoder.layers.2.blocks.3.attn.attention_biases", "encoder"),
        ("image_encoder.layers.0.blocks.1.conv2.bn.running_var", "encoder"),
        ("mask_decoder.transformer.layers.1.norm2.bias", "decoder"),
        ("prompt_encoder.point_embeddings.3.weight", "decoder"),
    ],
)
def test_bad_weights_name_the_key(state, key, builder):
    def run(bad_state):
        weights = ops.Weights(bad_state)
        if builder == "encoder":
            tiny_vit.build_encoder(weights.sub("image_encoder."))
        else:
            sam_decoder.build_decoder(weights, PROMPT_SPACE, LAYER_NORM_EPS)

    missing = {k: v for k, v in state.items() if k != key}
    with pytest.raises(ops.ConversionError, match=f"missing weight {key}$"):
        run(missing)
    wrong_shape = dict(state)
    wrong_shape[key] = np.zeros((*state[key].shape[:-1], state[key].shape[-1] + 1), np.float32)
    with pytest.raises(ops.ConversionError, match=f"weight {key} has shape"):
        run(wrong_shape)


@pytest.fixture(scope="module")
def genuine():
    weights, encoder, decoder = build(load_weights(genuine_lite_medsam()))
    return weights, encoder, decoder, golden("lite_medsam_real")


def test_genuine_checkpoint_matches_golden(genuine):
    weights, encoder, decoder, gold = genuine
    assert weights.unused() == []
    embedding = encoder(reference_input(256))["embedding"]
    assert_close_big(embedding, gold["embedding"], "real embedding")
    logits, iou = decode(decoder, embedding, BOX_256[None])
    assert_close_big(logits, gold["low_res_logits"], "real low_res_logits (chain)")
    assert_close_small(iou, gold["iou_pred"], "real iou_pred (chain)")


@requires_full_reference
def test_genuine_decoder_matches_golden(genuine):
    _, _, decoder, gold = genuine
    logits, iou = decode(decoder, gold["embedding"], BOX_256[None])
    assert_close_big(logits, gold["low_res_logits"], "real low_res_logits")
    assert_close_small(iou, gold["iou_pred"], "real iou_pred")

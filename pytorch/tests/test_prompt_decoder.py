"""Prompt encoder and mask decoder of every model against the golden outputs (golden embedding in)."""
import numpy as np
import pytest
import torch

from medsamlite_torch.models.mask_decoder import MaskDecoder
from medsamlite_torch.models.prompt_encoder import PromptEncoder
from medsamlite_torch.models.registry import get_spec
from reference import NAMES, golden, requires_full_reference
from torch_reference import assert_close_big, assert_close_small, rule_state_dict, warm_up


def _heads(name: str) -> tuple[PromptEncoder, MaskDecoder]:
    spec = get_spec(name)
    s = spec.profile.prompt_space
    pe = PromptEncoder(256, (64, 64), (s, s), 16)
    md = MaskDecoder(256, 3, layer_norm_eps=spec.decoder_layer_norm_eps)
    pe.load_state_dict(rule_state_dict(name, "prompt_encoder."), strict=True)
    md.load_state_dict(rule_state_dict(name, "mask_decoder."), strict=True)
    return pe.eval(), md.eval()


def _prompted(name: str):
    """The golden arrays, both heads, and the prompt encoder's outputs for the golden box."""
    warm_up()
    g = golden(name)
    pe, md = _heads(name)
    sparse, dense = pe(points=None, boxes=torch.from_numpy(g["box"]), masks=None)
    return g, pe, md, sparse, dense


@pytest.mark.parametrize("name", NAMES)
@torch.no_grad()
def test_prompt_encoder_matches_golden(name):
    g, _, _, sparse, dense = _prompted(name)
    assert_close_small(sparse, g["sparse_embeddings"], "sparse")
    assert_close_small(dense, g["dense_embeddings"], "dense")


@requires_full_reference
@pytest.mark.parametrize("name", NAMES)
@torch.no_grad()
def test_decoder_matches_golden(name):
    g, pe, md, sparse, dense = _prompted(name)
    logits, iou = md(torch.from_numpy(g["embedding"]), pe.get_dense_pe(), sparse, dense, multimask_output=False)
    assert_close_big(logits, g["low_res_logits"], "low_res_logits")
    assert_close_small(iou, g["iou_pred"], "iou_pred")


@torch.no_grad()
def test_batched_decoding_equals_single_calls():
    """N boxes against one embedding in one call == N one-box calls; N boxes against N embeddings too."""
    pe, md = _heads("lite_medsam")
    emb = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 256, 64, 64)).astype(np.float32))
    boxes = torch.tensor([[60, 70, 180, 200], [10, 10, 90, 120], [100, 30, 250, 250], [0, 0, 256, 256]], dtype=torch.float32)
    sparse, dense = pe(points=None, boxes=boxes[:, None], masks=None)
    batched, iou_b = md(emb, pe.get_dense_pe(), sparse, dense, multimask_output=False)
    embs = torch.cat([emb, emb * 0.5, emb.flip(-1), emb + 0.1])
    per_emb, _ = md(embs, pe.get_dense_pe(), sparse, dense, multimask_output=False)
    for i in range(len(boxes)):
        s1, d1 = pe(points=None, boxes=boxes[i : i + 1, None], masks=None)
        single, iou_s = md(emb, pe.get_dense_pe(), s1, d1, multimask_output=False)
        torch.testing.assert_close(batched[i : i + 1], single, rtol=0, atol=1e-5)
        torch.testing.assert_close(iou_b[i : i + 1], iou_s, rtol=0, atol=1e-6)
        single_e, _ = md(embs[i : i + 1], pe.get_dense_pe(), s1, d1, multimask_output=False)
        torch.testing.assert_close(per_emb[i : i + 1], single_e, rtol=0, atol=1e-5)
    assert not torch.allclose(batched[0], batched[1])  # different boxes give different masks

"""SAM prompt encoder (boxes only) + mask decoder as one OpenVINO graph built from numpy weights.

Inputs `image_embeddings` (1, 256, 64, 64) and `boxes` (N, 4) xyxy in prompt space, N dynamic;
outputs `low_res_logits` (N, 1, 256, 256) and `iou_predictions` (N, 1): mask token 0 and IoU
column 0, SAM's multimask_output=False. The one image embedding serves all N boxes: it is
broadcast inside the first two-way block, where it meets the per-box tokens, which gives the same
numbers as SAM's explicit repeat. Shared by every model here (same keys, same sizes); only the
prompt-space size and the nn.LayerNorm eps differ.
"""
from __future__ import annotations

import math

import numpy as np
import openvino as ov
import openvino.opset13 as ops

from .ops import Weights, const, gelu, layer_norm, linear, named_input, named_output, relu, reshape, transpose

DIM = 256
GRID = 64  # image embedding size
HEADS = 8
MLP_DIM = 2048
DEPTH = 2
DOWNSAMPLE = 2  # internal dim of the cross attentions = DIM / DOWNSAMPLE
NUM_MASK_TOKENS = 4
UPSCALE_EPS = 1e-6  # SAM's LayerNorm2d in output_upscaling

# Prompt-encoder keys of the point and mask prompts, which box-only inference never reads. They
# are marked used so that `Weights.unused()` only reports keys of a foreign architecture.
UNUSED_PROMPT_KEYS = (
    "point_embeddings.0.weight",
    "point_embeddings.1.weight",
    "not_a_point_embed.weight",
    *(f"mask_downscaling.{i}.{p}" for i in (0, 1, 3, 4, 6) for p in ("weight", "bias")),
)


def dense_pe(gaussian: np.ndarray) -> np.ndarray:
    """get_dense_pe() of the 64x64 grid as (1, 4096, 256) tokens, built once in float64, then f32:
    [sin, cos] of 2π (2c - 1) G at the cell centres c = (x, y)."""
    centres = (np.arange(GRID) + 0.5) / GRID
    x, y = np.meshgrid(centres, centres)  # x varies along columns
    projected = 2 * np.pi * ((2 * np.stack([x, y], axis=-1) - 1) @ gaussian.astype(np.float64))
    features = np.concatenate([np.sin(projected), np.cos(projected)], axis=-1)
    return features.reshape(1, GRID * GRID, DIM).astype(np.float32)


def _box_embeddings(boxes, w: Weights, prompt_space: int):
    """(N, 4) boxes -> (N, 2, 256) corner embeddings, as SAM's prompt encoder computes them in f32."""
    gaussian = w.get("pe_layer.positional_encoding_gaussian_matrix", (2, DIM // 2))
    coords = reshape(ops.add(boxes, const(0.5)).output(0), (-1, 2, 2))
    coords = ops.divide(coords, const([prompt_space, prompt_space]))
    coords = ops.subtract(ops.multiply(coords, const(2.0)), const(1.0))
    coords = ops.multiply(ops.matmul(coords, const(gaussian), False, False), const(2 * np.pi))
    features = ops.concat([ops.sin(coords), ops.cos(coords)], -1)
    corners = np.concatenate([w.get(f"point_embeddings.{i}.weight", (1, DIM)) for i in (2, 3)])
    return ops.add(features, const(corners)).output(0)


def _attention(w: Weights, q, k, v, n_q: int, n_k: int, downsample: int = 1):
    """SAM's Attention: project, split heads, softmax(q kᵀ / sqrt(d)) v, merge heads, project."""
    inner = DIM // downsample
    head_dim = inner // HEADS

    def heads(x, name: str, n: int):
        x = linear(x, w.get(f"{name}.weight", (inner, DIM)), w.get(f"{name}.bias", (inner,)))
        return transpose(reshape(x, (-1, n, HEADS, head_dim)), (0, 2, 1, 3))

    q, k, v = heads(q, "q_proj", n_q), heads(k, "k_proj", n_k), heads(v, "v_proj", n_k)
    logits = ops.divide(ops.matmul(q, k, False, True), const(math.sqrt(head_dim)))
    y = ops.matmul(ops.softmax(logits, -1), v, False, False).output(0)
    y = reshape(transpose(y, (0, 2, 1, 3)), (-1, n_q, inner))
    return linear(y, w.get("out_proj.weight", (DIM, inner)), w.get("out_proj.bias", (DIM,)))


def _norm(x, w: Weights, eps: float):
    return layer_norm(x, w.get("weight", (DIM,)), w.get("bias", (DIM,)), eps)


def _add(a, b):
    return ops.add(a, b).output(0)


def _cross_attend(attn: Weights, norm: Weights, x, x_pe, other, other_pe, n_x: int, n_other: int, eps: float):
    """norm(x + attention(x + x_pe -> other + other_pe, values other)): token-to-image or image-to-token."""
    y = _attention(attn, _add(x, x_pe), _add(other, other_pe), other, n_x, n_other, DOWNSAMPLE)
    return _norm(_add(x, y), norm, eps)


def _two_way_block(w: Weights, queries, keys, query_pe, key_pe, n_tok: int, n_img: int, first: bool, eps: float):
    if first:  # the first block's self-attention skips the positional encoding and the residual
        queries = _attention(w.sub("self_attn."), queries, queries, queries, n_tok, n_tok)
    else:
        q = _add(queries, query_pe)
        queries = _add(queries, _attention(w.sub("self_attn."), q, q, queries, n_tok, n_tok))
    queries = _norm(queries, w.sub("norm1."), eps)

    attn, norm = w.sub("cross_attn_token_to_image."), w.sub("norm2.")
    queries = _cross_attend(attn, norm, queries, query_pe, keys, key_pe, n_tok, n_img, eps)

    mlp = w.sub("mlp.")
    y = relu(linear(queries, mlp.get("lin1.weight", (MLP_DIM, DIM)), mlp.get("lin1.bias", (MLP_DIM,))))
    y = linear(y, mlp.get("lin2.weight", (DIM, MLP_DIM)), mlp.get("lin2.bias", (DIM,)))
    queries = _norm(_add(queries, y), w.sub("norm3."), eps)

    attn, norm = w.sub("cross_attn_image_to_token."), w.sub("norm4.")
    keys = _cross_attend(attn, norm, keys, key_pe, queries, query_pe, n_img, n_tok, eps)
    return queries, keys


def _mlp(x, w: Weights, out_dim: int, rows: slice = slice(None)):
    """Hypernetwork / IoU-head MLP (3 Linear, ReLU between); `rows` keeps only some outputs."""
    x = relu(linear(x, w.get("layers.0.weight", (DIM, DIM)), w.get("layers.0.bias", (DIM,))))
    x = relu(linear(x, w.get("layers.1.weight", (DIM, DIM)), w.get("layers.1.bias", (DIM,))))
    return linear(x, w.get("layers.2.weight", (out_dim, DIM))[rows], w.get("layers.2.bias", (out_dim,))[rows])


def _mlp_weights_only(w: Weights) -> None:
    """Shape-check and mark used the weights of an MLP that multimask_output=False never runs."""
    for layer, out_dim in ((0, DIM), (1, DIM), (2, DIM // 8)):
        w.get(f"layers.{layer}.weight", (out_dim, DIM))
        w.get(f"layers.{layer}.bias", (out_dim,))


def _upscale(x, w: Weights):
    """output_upscaling: two ConvTranspose2d k2 s2 (torch weight layout is OpenVINO's) with
    LayerNorm2d and exact GELU: (N, 256, 64, 64) -> (N, 32, 256, 256)."""
    def conv_transpose(x, name: str, in_ch: int, out_ch: int):
        weight = w.get(f"{name}.weight", (in_ch, out_ch, 2, 2))
        y = ops.convolution_backprop_data(x, const(weight), [2, 2], None, [0, 0], [0, 0], [1, 1])
        return ops.add(y, const(w.get(f"{name}.bias", (out_ch,)).reshape(1, -1, 1, 1))).output(0)

    y = conv_transpose(x, "0", DIM, DIM // 4)
    y = layer_norm(y, w.get("1.weight", (DIM // 4,)), w.get("1.bias", (DIM // 4,)), UPSCALE_EPS, axis=1)
    return gelu(conv_transpose(gelu(y), "3", DIM // 4, DIM // 8))


def build_decoder(weights: Weights, prompt_space: int, layer_norm_eps: float) -> ov.Model:
    """`weights` is the view over the whole state dict (`prompt_encoder.*`, `mask_decoder.*`)."""
    embeddings = named_input([1, DIM, GRID, GRID], "image_embeddings")
    boxes = named_input([-1, 4], "boxes")
    pe, md = weights.sub("prompt_encoder."), weights.sub("mask_decoder.")
    for key in UNUSED_PROMPT_KEYS:
        if pe.has(key):
            pe.get(key)

    # Prompt tokens: [iou, mask 0..3, box corner 0, box corner 1], the same 5 learned ones per box.
    sparse = _box_embeddings(boxes.output(0), pe, prompt_space)
    learned = np.concatenate(
        [md.get("iou_token.weight", (1, DIM)), md.get("mask_tokens.weight", (NUM_MASK_TOKENS, DIM))]
    )
    n_boxes = ops.gather(ops.shape_of(boxes), const([0], np.int64), const(0, np.int64))
    shape = ops.concat([n_boxes, const([1 + NUM_MASK_TOKENS, DIM], np.int64)], 0)
    tokens = ops.concat([ops.broadcast(const(learned[None]), shape), sparse], 1).output(0)
    n_tok, n_img = 1 + NUM_MASK_TOKENS + 2, GRID * GRID

    # Image tokens (1, 4096, 256): embedding plus the dense no-mask prompt; their positional encoding.
    no_mask = pe.get("no_mask_embed.weight", (1, DIM)).reshape(1, DIM, 1, 1)
    keys = transpose(reshape(ops.add(embeddings, const(no_mask)).output(0), (1, DIM, n_img)), (0, 2, 1))
    key_pe = const(dense_pe(pe.get("pe_layer.positional_encoding_gaussian_matrix", (2, DIM // 2))))

    tw = md.sub("transformer.")
    queries = tokens
    for i in range(DEPTH):
        block = tw.sub(f"layers.{i}.")
        queries, keys = _two_way_block(block, queries, keys, tokens, key_pe, n_tok, n_img, i == 0, layer_norm_eps)
    attn, norm = tw.sub("final_attn_token_to_image."), tw.sub("norm_final_attn.")
    queries = _cross_attend(attn, norm, queries, tokens, keys, key_pe, n_tok, n_img, layer_norm_eps)

    # Mask of token 0: its hypernetwork output (N, 1, 32) times the upscaled map (N, 32, 256²).
    upscaled = _upscale(reshape(transpose(keys, (0, 2, 1)), (-1, DIM, GRID, GRID)), md.sub("output_upscaling."))
    side = 4 * GRID
    mask_token = ops.gather(queries, const(1, np.int64), const(1, np.int64)).output(0)
    hyper = _mlp(mask_token, md.sub("output_hypernetworks_mlps.0."), DIM // 8)
    for i in range(1, NUM_MASK_TOKENS):  # multimask outputs: shape-checked and marked used, not built
        _mlp_weights_only(md.sub(f"output_hypernetworks_mlps.{i}."))
    masks = ops.matmul(reshape(hyper, (-1, 1, DIM // 8)), reshape(upscaled, (-1, DIM // 8, side * side)), False, False)
    logits = named_output(reshape(masks.output(0), (-1, 1, side, side)), "low_res_logits")

    iou_token = ops.gather(queries, const(0, np.int64), const(1, np.int64)).output(0)
    iou = named_output(_mlp(iou_token, md.sub("iou_prediction_head."), NUM_MASK_TOKENS, slice(0, 1)), "iou_predictions")
    return ov.Model([logits, iou], [embeddings, boxes], "sam_prompt_mask_decoder")

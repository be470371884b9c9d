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


def _split_heads(x, n: int, inner: int = DIM // DOWNSAMPLE):
    """(B, n, inner) -> (B, 8, n, inner / 8)."""
    return transpose(reshape(x, (-1, n, HEADS, inner // HEADS)), (0, 2, 1, 3))


def _attention(w: Weights, q, k, v, n_q: int, n_k: int):
    """SAM's Attention (the tokens' self-attention): project, split heads, softmax(q kᵀ / sqrt(d)) v,
    merge heads, project. The cross attentions are reassociated forms of it (below)."""
    def heads(x, name: str, n: int):
        return _split_heads(linear(x, w.get(f"{name}.weight", (DIM, DIM)), w.get(f"{name}.bias", (DIM,))), n, DIM)

    q, k, v = heads(q, "q_proj", n_q), heads(k, "k_proj", n_k), heads(v, "v_proj", n_k)
    logits = ops.divide(ops.matmul(q, k, False, True), const(math.sqrt(DIM // HEADS)))
    y = ops.matmul(ops.softmax(logits, -1), v, False, False).output(0)
    y = reshape(transpose(y, (0, 2, 1, 3)), (-1, n_q, DIM))
    return linear(y, w.get("out_proj.weight", (DIM, DIM)), w.get("out_proj.bias", (DIM,)))


def _norm(x, w: Weights, eps: float):
    return layer_norm(x, w.get("weight", (DIM,)), w.get("bias", (DIM,)), eps)


def _add(a, b):
    return ops.add(a, b).output(0)


def _head_weights(w: Weights, name: str) -> tuple[np.ndarray, np.ndarray]:
    """A cross attention's projection `name` as per-head matrices (8, 16, 256) and biases (8, 16)."""
    inner = DIM // DOWNSAMPLE
    weight = w.get(f"{name}.weight", (inner, DIM)).reshape(HEADS, inner // HEADS, DIM)
    return weight, w.get(f"{name}.bias", (inner,)).reshape(HEADS, inner // HEADS)


def _token_to_image(w: Weights, q_in, k_in, v_in, n_tok: int, n_img: int):
    """Cross attention from the 7 prompt tokens to the 4096 image tokens, reassociated so that no
    projection runs over the image tokens: q kᵀ = (q W_k) xᵀ (+ a per-row constant that softmax
    drops) and softmax(·) (x W_vᵀ + b_v) = (softmax(·) x) W_vᵀ + b_v (softmax rows sum to 1). The
    same function as SAM's Attention, with 56 instead of 128 products per image token."""
    inner = DIM // DOWNSAMPLE
    head_dim = inner // HEADS
    q = _split_heads(linear(q_in, w.get("q_proj.weight", (inner, DIM)), w.get("q_proj.bias", (inner,))), n_tok)
    w_k, _ = _head_weights(w, "k_proj")  # k_proj's bias adds the same to every score of a row
    w_v, b_v = _head_weights(w, "v_proj")
    folded = ops.matmul(q, const(w_k / math.sqrt(head_dim)), False, False)  # (B, 8, 7, 256)
    logits = ops.matmul(reshape(folded, (-1, HEADS * n_tok, DIM)), k_in, False, True)  # (B, 56, 4096)
    mixed = ops.matmul(ops.softmax(logits, -1), v_in, False, False)  # (B, 56, 256)
    y = ops.matmul(reshape(mixed, (-1, HEADS, n_tok, DIM)), const(w_v), False, True)  # (B, 8, 7, 16)
    y = ops.add(y, const(b_v[:, None, :])).output(0)
    y = reshape(transpose(y, (0, 2, 1, 3)), (-1, n_tok, inner))
    return linear(y, w.get("out_proj.weight", (DIM, inner)), w.get("out_proj.bias", (DIM,)))


def _image_to_token(w: Weights, q_in, k_in, v_in, n_img: int, n_tok: int):
    """Cross attention from the 4096 image tokens to the 7 prompt tokens, reassociated as above:
    q kᵀ = x (k W_q)ᵀ + b_q kᵀ, and the values go through out_proj before the softmax mix
    (Σ_h P_h v_h W_o,hᵀ): 56 + 56 products per image token and channel instead of 128 + 128."""
    inner = DIM // DOWNSAMPLE
    head_dim = inner // HEADS
    k = _split_heads(linear(k_in, w.get("k_proj.weight", (inner, DIM)), w.get("k_proj.bias", (inner,))), n_tok)
    v = _split_heads(linear(v_in, w.get("v_proj.weight", (inner, DIM)), w.get("v_proj.bias", (inner,))), n_tok)
    w_q, b_q = _head_weights(w, "q_proj")
    scale = 1 / math.sqrt(head_dim)
    folded = reshape(ops.matmul(k, const(w_q * scale), False, False), (-1, HEADS * n_tok, DIM))  # (B, 56, 256)
    offset = reshape(ops.matmul(k, const(b_q[:, :, None] * scale), False, False), (-1, 1, HEADS * n_tok))
    logits = ops.add(ops.matmul(q_in, folded, False, True), offset)  # (B, 4096, 56)
    weights = reshape(ops.softmax(reshape(logits, (-1, n_img, HEADS, n_tok)), -1), (-1, n_img, HEADS * n_tok))
    w_out = w.get("out_proj.weight", (DIM, inner)).reshape(DIM, HEADS, head_dim).transpose(1, 2, 0)  # (8, 16, 256)
    values = reshape(ops.matmul(v, const(w_out), False, False), (-1, HEADS * n_tok, DIM))  # (B, 56, 256)
    y = ops.matmul(weights, values, False, False)
    return ops.add(y, const(w.get("out_proj.bias", (DIM,)))).output(0)


def _cross_attend(attn: Weights, norm: Weights, x, x_pe, other, other_pe, n_x: int, n_other: int, eps: float):
    """norm(x + attention(x + x_pe -> other + other_pe, values other)): token-to-image or image-to-token."""
    attend = _token_to_image if n_x < n_other else _image_to_token
    y = attend(attn, _add(x, x_pe), _add(other, other_pe), other, n_x, n_other)
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


def _upscaled_mask(keys, hyper, w: Weights):
    """output_upscaling and token 0's mask product, on the image tokens as they are (B, 4096, 256):
    a ConvTranspose2d with kernel 2 and stride 2 maps each pixel to its own 2x2 outputs, so it is a
    Linear to (2, 2, C) per pixel, and LayerNorm2d a LayerNorm over C; only the one-channel mask is
    put into image order at the end. The same function as (N, 256, 64, 64) -> (N, 32, 256, 256) ->
    hyper · map, without moving the 32-channel map."""
    def conv_transpose(x, name: str, in_ch: int, out_ch: int, pixels: int):
        weight = w.get(f"{name}.weight", (in_ch, out_ch, 2, 2)).transpose(0, 2, 3, 1)  # (in, dy, dx, out)
        y = reshape(ops.matmul(x, const(weight.reshape(in_ch, 4 * out_ch)), False, False), (-1, 4 * pixels, out_ch))
        return ops.add(y, const(w.get(f"{name}.bias", (out_ch,)))).output(0)

    n_img = GRID * GRID
    y = conv_transpose(keys, "0", DIM, DIM // 4, n_img)  # (B, 4096·4, 64): pixel (y, x), then (dy, dx)
    y = gelu(layer_norm(y, w.get("1.weight", (DIM // 4,)), w.get("1.bias", (DIM // 4,)), UPSCALE_EPS))
    y = gelu(conv_transpose(y, "3", DIM // 4, DIM // 8, 4 * n_img))  # (B, 4096·16, 32)
    mask = ops.matmul(y, reshape(hyper, (-1, DIM // 8, 1)), False, False)  # (B, 65536, 1)
    # index (y, x, dy1, dx1, dy2, dx2) -> row 4y + 2dy1 + dy2, column 4x + 2dx1 + dx2
    mask = transpose(reshape(mask, (-1, GRID, GRID, 2, 2, 2, 2)), (0, 1, 3, 5, 2, 4, 6))
    return reshape(mask, (-1, 1, 4 * GRID, 4 * GRID))


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

    # Mask of token 0: its hypernetwork output (N, 1, 32) times the upscaled map.
    mask_token = ops.gather(queries, const(1, np.int64), const(1, np.int64)).output(0)
    hyper = _mlp(mask_token, md.sub("output_hypernetworks_mlps.0."), DIM // 8)
    for i in range(1, NUM_MASK_TOKENS):  # multimask outputs: shape-checked and marked used, not built
        _mlp_weights_only(md.sub(f"output_hypernetworks_mlps.{i}."))
    logits = named_output(_upscaled_mask(keys, hyper, md.sub("output_upscaling.")), "low_res_logits")

    iou_token = ops.gather(queries, const(0, np.int64), const(1, np.int64)).output(0)
    iou = named_output(_mlp(iou_token, md.sub("iou_prediction_head."), NUM_MASK_TOKENS, slice(0, 1)), "iou_predictions")
    return ov.Model([logits, iou], [embeddings, boxes], "sam_prompt_mask_decoder")

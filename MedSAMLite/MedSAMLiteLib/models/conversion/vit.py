"""SAM's plain-ViT image encoder (ImageEncoderViT, ViT-B at 1024, as in MedSAM) as an OpenVINO graph.

Tokens stay in (B, L, C) layout so every LayerNorm is one mvn over the last axis. The input size is
fixed, so the relative-position tables are gathered in numpy at build time and window partitioning
is plain reshapes and transposes.
"""
from __future__ import annotations

import numpy as np
import openvino as ov
import openvino.opset13 as ops

from .ops import (
    Weights, const, conv2d, gelu, layer_norm, linear, named_input, named_output, reshape, sam_neck, transpose,
)

IMAGE_SIZE = 1024
PATCH = 16
GRID = IMAGE_SIZE // PATCH  # 64 tokens per side
DIM = 768
DEPTH = 12
HEADS = 12
HEAD_DIM = DIM // HEADS
MLP_DIM = 4 * DIM
WINDOW = 14
GLOBAL_BLOCKS = (2, 5, 8, 11)
LN_EPS = 1e-6


def _rel_pos_table(rel_pos: np.ndarray, size: int) -> np.ndarray:
    """get_rel_pos for equal query and key sizes: R[q, k] = rel_pos[q - k + size - 1], (size, size, C).

    The checkpoint's table already has 2*size-1 rows (checked by the caller), so no resizing is needed.
    """
    coords = np.arange(size)
    return np.ascontiguousarray(rel_pos[coords[:, None] - coords[None, :] + size - 1])


def _split_heads(x, tokens: int):
    """(N, L, DIM) -> (N, HEADS, L, HEAD_DIM)."""
    return transpose(reshape(x, (-1, tokens, HEADS, HEAD_DIM)), (0, 2, 1, 3))


def _attention(x, w: Weights, size: int):
    """Multi-head attention over (N, size*size, DIM) token maps, with decomposed relative positions."""
    tokens = size * size
    qkv_w, qkv_b = w.get("qkv.weight", (3 * DIM, DIM)), w.get("qkv.bias", (3 * DIM,))
    q, k, v = (_split_heads(linear(x, qkv_w[i * DIM:(i + 1) * DIM], qkv_b[i * DIM:(i + 1) * DIM]), tokens)
               for i in range(3))
    logits = ops.matmul(ops.multiply(q, const(HEAD_DIM**-0.5)), k, False, True)  # (N, HEADS, L, L)

    # Relative positions use the unscaled q: rel_h[.., qh, qw, kh] = q[.., qh, qw, :] . R_h[qh, kh, :].
    r_h = _rel_pos_table(w.get("rel_pos_h", (2 * size - 1, HEAD_DIM)), size)
    r_w = _rel_pos_table(w.get("rel_pos_w", (2 * size - 1, HEAD_DIM)), size)
    q_grid = reshape(q, (-1, size, size, HEAD_DIM))  # (N*HEADS, qh, qw, c)
    rel_h = ops.matmul(q_grid, const(r_h), False, True)  # batch over qh: (N*HEADS, qh, qw, kh)
    q_cols = transpose(q_grid, (0, 2, 1, 3))  # (N*HEADS, qw, qh, c)
    rel_w = transpose(ops.matmul(q_cols, const(r_w), False, True), (0, 2, 1, 3))  # (N*HEADS, qh, qw, kw)
    logits = reshape(logits, (-1, size, size, size, size))
    logits = ops.add(logits, reshape(rel_h, (-1, size, size, size, 1)))
    logits = ops.add(logits, reshape(rel_w, (-1, size, size, 1, size)))
    attn = ops.softmax(reshape(logits, (-1, HEADS, tokens, tokens)), -1)

    out = transpose(ops.matmul(attn, v, False, False), (0, 2, 1, 3))  # (N, L, HEADS, HEAD_DIM)
    return linear(reshape(out, (-1, tokens, DIM)), w.get("proj.weight", (DIM, DIM)), w.get("proj.bias", (DIM,)))


def _window_attention(x, w: Weights):
    """Zero-pad the (B, GRID*GRID, DIM) map to whole 14x14 windows (no mask), attend per window, crop."""
    windows = -(-GRID // WINDOW)
    padded = windows * WINDOW
    grid = reshape(x, (-1, GRID, GRID, DIM))
    pad = const([0, padded - GRID, padded - GRID, 0], np.int64)
    grid = ops.pad(grid, const([0, 0, 0, 0], np.int64), pad, "constant", const(0.0)).output(0)
    parts = transpose(reshape(grid, (-1, windows, WINDOW, windows, WINDOW, DIM)), (0, 1, 3, 2, 4, 5))
    y = _attention(reshape(parts, (-1, WINDOW * WINDOW, DIM)), w, WINDOW)
    y = transpose(reshape(y, (-1, windows, windows, WINDOW, WINDOW, DIM)), (0, 1, 3, 2, 4, 5))
    y = reshape(y, (-1, padded, padded, DIM))
    y = ops.slice(y, const([0, 0], np.int64), const([GRID, GRID], np.int64), const([1, 1], np.int64),
                  const([1, 2], np.int64)).output(0)
    return reshape(y, (-1, GRID * GRID, DIM))


def _block(x, w: Weights, windowed: bool):
    """Pre-norm transformer block on (B, L, DIM) tokens."""
    h = layer_norm(x, w.get("norm1.weight", (DIM,)), w.get("norm1.bias", (DIM,)), LN_EPS)
    attn = w.sub("attn.")
    h = _window_attention(h, attn) if windowed else _attention(h, attn, GRID)
    x = ops.add(x, h).output(0)
    h = layer_norm(x, w.get("norm2.weight", (DIM,)), w.get("norm2.bias", (DIM,)), LN_EPS)
    h = gelu(linear(h, w.get("mlp.lin1.weight", (MLP_DIM, DIM)), w.get("mlp.lin1.bias", (MLP_DIM,))))
    h = linear(h, w.get("mlp.lin2.weight", (DIM, MLP_DIM)), w.get("mlp.lin2.bias", (DIM,)))
    return ops.add(x, h).output(0)


def build_encoder(weights: Weights) -> ov.Model:
    """ViT-B image encoder: `image` (1, 3, 1024, 1024) f32 -> `embedding` (1, 256, 64, 64).

    `weights` is a view with the prefix `image_encoder.`; a missing key or wrong shape raises ConversionError.
    """
    image = named_input([1, 3, IMAGE_SIZE, IMAGE_SIZE], "image")
    x = conv2d(image.output(0), weights.get("patch_embed.proj.weight", (DIM, 3, PATCH, PATCH)),
               weights.get("patch_embed.proj.bias", (DIM,)), stride=PATCH)
    x = transpose(reshape(x, (-1, DIM, GRID * GRID)), (0, 2, 1))  # (B, L, DIM)
    x = ops.add(x, const(weights.get("pos_embed", (1, GRID, GRID, DIM)).reshape(1, GRID * GRID, DIM))).output(0)
    for i in range(DEPTH):
        x = _block(x, weights.sub(f"blocks.{i}."), windowed=i not in GLOBAL_BLOCKS)
    x = reshape(transpose(x, (0, 2, 1)), (-1, DIM, GRID, GRID))
    embedding = sam_neck(x, weights.sub("neck."))
    return ov.Model([named_output(embedding, "embedding")], [image], "medsam_vit_b_image_encoder")

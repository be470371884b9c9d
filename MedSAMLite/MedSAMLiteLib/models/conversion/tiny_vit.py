"""LiteMedSAM's TinyViT image encoder (+ SAM neck) as an OpenVINO graph built from numpy weights.

Input `image` (1, 3, 256, 256), values in [0, 1]; output `embedding` (1, 256, 64, 64). Every
Conv2d_BN is folded into one biased conv at build time and each attention's bias table is expanded
to its (heads, window², window²) form in numpy, so the runtime graph holds neither BatchNorm nor a
gather. Stages 1-3 keep tokens as (B, L, C) so every LayerNorm runs on the last axis (the fast path).
"""
from __future__ import annotations

import itertools

import numpy as np
import openvino as ov
import openvino.opset13 as ops

from .ops import (
    ConversionError, Weights, const, conv_bn, gelu, layer_norm, linear, named_input, named_output, reshape,
    sam_neck, transpose,
)

IMAGE_SIZE = 256
LN_EPS = 1e-5
EMBED_DIMS = (64, 128, 160, 320)
DEPTHS = (2, 2, 6, 2)
NUM_HEADS = (2, 4, 5, 10)
WINDOWS = (7, 7, 14, 7)
MLP_RATIO = 4
MBCONV_EXPAND = 4


def _mbconv(x, w: Weights, chans: int):
    hidden = chans * MBCONV_EXPAND
    y = gelu(conv_bn(x, w.sub("conv1."), chans, hidden))
    y = gelu(conv_bn(y, w.sub("conv2."), hidden, hidden, 3, groups=hidden))
    y = conv_bn(y, w.sub("conv3."), hidden, chans)
    return gelu(ops.add(y, x).output(0))


def _patch_merging(x, w: Weights, in_ch: int, out_ch: int):
    """NCHW in, NCHW out; LiteMedSAM keeps the merge into 320 channels at stride 1."""
    stride = 1 if out_ch == 320 else 2
    y = gelu(conv_bn(x, w.sub("conv1."), in_ch, out_ch))
    y = gelu(conv_bn(y, w.sub("conv2."), out_ch, out_ch, 3, stride, groups=out_ch))
    return conv_bn(y, w.sub("conv3."), out_ch, out_ch)


def bias_index(window: int) -> np.ndarray:
    """(window², window²) index into `attention_biases`: one entry per |dy|,|dx| offset, first-seen order."""
    points = list(itertools.product(range(window), range(window)))
    offsets: dict[tuple[int, int], int] = {}
    idxs = [offsets.setdefault((abs(a[0] - b[0]), abs(a[1] - b[1])), len(offsets)) for a in points for b in points]
    return np.array(idxs, dtype=np.int64).reshape(len(points), len(points))


def _attention_bias(w: Weights, heads: int, window: int) -> np.ndarray:
    """attention_biases[:, idxs] as a constant. The idxs buffer is non-persistent in TinyViT; a file
    that carries it anyway must agree with the computed one."""
    idxs = bias_index(window)
    table = w.get("attention_biases", (heads, window * window))
    if w.has("attention_bias_idxs"):
        stored = w.get("attention_bias_idxs", idxs.shape)
        if not np.array_equal(stored, idxs):
            raise ConversionError(f"weight {w.prefix}attention_bias_idxs does not match a {window}x{window} window")
    return table[:, idxs][None]


def _window_attention(x, w: Weights, dim: int, res: int, heads: int, window: int):
    """(1, res², dim) tokens -> same; zero pad bottom/right, no mask (padded tokens are keys too)."""
    pad = (window - res % window) % window
    padded, n_win = res + pad, (res + pad) // window
    tokens = window * window
    key_dim = dim // heads
    y = reshape(x, (1, res, res, dim))
    if pad:
        y = ops.pad(y, const([0] * 4, np.int64), const([0, pad, pad, 0], np.int64), "constant", const(0.0)).output(0)
    y = transpose(reshape(y, (1, n_win, window, n_win, window, dim)), (0, 1, 3, 2, 4, 5))
    y = reshape(y, (-1, tokens, dim))  # windows as a batch
    y = layer_norm(y, w.get("norm.weight", (dim,)), w.get("norm.bias", (dim,)), LN_EPS)
    qkv = linear(y, w.get("qkv.weight", (3 * dim, dim)), w.get("qkv.bias", (3 * dim,)))
    # The fused qkv output is laid out per head: [q_h, k_h, v_h] for each head h.
    qkv = transpose(reshape(qkv, (-1, tokens, heads, 3 * key_dim)), (0, 2, 1, 3))
    q, k, v = ops.split(qkv, const(3, np.int64), 3).outputs()
    logits = ops.multiply(ops.matmul(q, k, False, True), const(key_dim**-0.5))
    attn = ops.softmax(ops.add(logits, const(_attention_bias(w, heads, window))), -1)
    y = reshape(transpose(ops.matmul(attn, v, False, False).output(0), (0, 2, 1, 3)), (-1, tokens, dim))
    y = linear(y, w.get("proj.weight", (dim, dim)), w.get("proj.bias", (dim,)))
    y = transpose(reshape(y, (1, n_win, n_win, window, window, dim)), (0, 1, 3, 2, 4, 5))
    y = reshape(y, (1, padded, padded, dim))
    if pad:
        y = ops.slice(y, *(const(v, np.int64) for v in ([0, 0], [res, res], [1, 1], [1, 2]))).output(0)
    return reshape(y, (1, res * res, dim))


def _tiny_vit_block(x, w: Weights, dim: int, res: int, heads: int, window: int):
    x = ops.add(x, _window_attention(x, w.sub("attn."), dim, res, heads, window)).output(0)
    y = reshape(transpose(x, (0, 2, 1)), (1, dim, res, res))
    y = conv_bn(y, w.sub("local_conv."), dim, dim, 3, groups=dim)
    x = transpose(reshape(y, (1, dim, res * res)), (0, 2, 1))
    m = w.sub("mlp.")
    hidden = dim * MLP_RATIO
    y = layer_norm(x, m.get("norm.weight", (dim,)), m.get("norm.bias", (dim,)), LN_EPS)
    y = gelu(linear(y, m.get("fc1.weight", (hidden, dim)), m.get("fc1.bias", (hidden,))))
    y = linear(y, m.get("fc2.weight", (dim, hidden)), m.get("fc2.bias", (dim,)))
    return ops.add(x, y).output(0)


def build_encoder(weights: Weights) -> ov.Model:
    """`weights` is the view under `image_encoder.`; returns the float32 encoder model."""
    image = named_input([1, 3, IMAGE_SIZE, IMAGE_SIZE], "image")
    stem = weights.sub("patch_embed.seq.")
    x = gelu(conv_bn(image.output(0), stem.sub("0."), 3, EMBED_DIMS[0] // 2))
    x = conv_bn(x, stem.sub("2."), EMBED_DIMS[0] // 2, EMBED_DIMS[0])

    stage0 = weights.sub("layers.0.")
    for i in range(DEPTHS[0]):
        x = _mbconv(x, stage0.sub(f"blocks.{i}."), EMBED_DIMS[0])
    x = _patch_merging(x, stage0.sub("downsample."), EMBED_DIMS[0], EMBED_DIMS[1])

    res = IMAGE_SIZE // 2
    for s in range(1, len(DEPTHS)):
        dim = EMBED_DIMS[s]
        x = transpose(reshape(x, (1, dim, res * res)), (0, 2, 1))  # NCHW -> (1, L, C) tokens
        stage = weights.sub(f"layers.{s}.")
        for i in range(DEPTHS[s]):
            x = _tiny_vit_block(x, stage.sub(f"blocks.{i}."), dim, res, NUM_HEADS[s], WINDOWS[s])
        x = reshape(transpose(x, (0, 2, 1)), (1, dim, res, res))  # tokens -> NCHW
        if s + 1 < len(DEPTHS):
            x = _patch_merging(x, stage.sub("downsample."), dim, EMBED_DIMS[s + 1])
            res = res if EMBED_DIMS[s + 1] == 320 else res // 2

    embedding = named_output(sam_neck(x, weights.sub("neck.")), "embedding")
    return ov.Model([embedding], [image], "lite_medsam_tiny_vit_encoder")

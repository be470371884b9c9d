"""RepViT-MedSAM image encoder (TurboMedSAM's RepViT-M1.1 + SAM neck) as an OpenVINO graph.

The checkpoint holds the training-time (unfused) layout. The graph is re-parameterised while it is
built, as RepViT's own deployment step does: every conv + BatchNorm becomes one conv with bias and
each RepVGGDW (dw 3x3 conv-BN + dw 1x1 conv + identity, then BN) becomes one depthwise 3x3 conv,
so no BatchNorm and no extra branch reaches the runtime. Input `image` (1, 3, 1024, 1024), values in
[0, 1]; output `embedding` (1, 256, 64, 64).
"""
from __future__ import annotations

import numpy as np
import openvino as ov
import openvino.opset13 as ops

from .ops import Weights, conv2d, conv_bn, fold_batchnorm, fold_conv_bn, gelu, named_input, named_output, relu, sam_neck

BN_EPS = 1e-5
IMAGE_SIZE = 1024
KERNEL = 3  # token-mixer depthwise kernel of every block
EXPAND = 2  # channel-MLP hidden width = EXPAND * channels

# RepViT-M1.1 as TurboMedSAM configures it, one row per stage: output channels, number of blocks,
# stride of the stage's first block, and the blocks (0-based within the stage) that carry a
# squeeze-excite module. The last stage keeps stride 1 so the map stays 64x64 for the SAM neck.
STAGES: list[tuple[int, int, int, frozenset[int]]] = [
    (64, 3, 1, frozenset({0})),
    (128, 4, 2, frozenset({1})),
    (256, 14, 2, frozenset({1, 3, 5, 7, 9, 11})),
    (512, 3, 1, frozenset({1})),
]


def _blocks() -> list[tuple[int, int, bool]]:
    """The 24 blocks as (out channels, stride, squeeze-excite), in `features.1..24` order."""
    return [
        (chans, stride if i == 0 else 1, i in se_blocks)
        for chans, count, stride, se_blocks in STAGES
        for i in range(count)
    ]


def _rep_vgg_dw(x, w: Weights, chans: int):
    """BN(dw3x3-BN(x) + dw1x1(x) + x) as a single depthwise 3x3 conv with bias."""
    w3, b3 = fold_conv_bn(w.sub("conv."), chans, 1, 3, BN_EPS)
    w1 = w.get("conv1.weight", (chans, 1, 1, 1))
    b1 = w.get("conv1.bias", (chans,))
    centre = np.zeros_like(w3)
    centre[:, :, 1, 1] = w1[:, :, 0, 0].astype(np.float64) + 1.0  # 1x1 tap and identity sit at the centre
    weight, bias = fold_batchnorm(w3 + centre, b3 + b1, w.sub("bn."), BN_EPS)
    return conv2d(x, weight, bias, padding=1, groups=chans)


def _squeeze_excite(x, w: Weights, chans: int):
    """timm SEModule: gate channels by a 2-layer MLP of the spatial mean.

    Its reduced width make_divisible(chans / 4, 8) is exactly chans / 4 for RepViT's widths (multiples of 32).
    """
    reduced = chans // 4
    s = ops.reduce_mean(x, ops.constant(np.array([2, 3], np.int64)), True).output(0)
    s = relu(conv2d(s, w.get("fc1.weight", (reduced, chans, 1, 1)), w.get("fc1.bias", (reduced,))))
    s = conv2d(s, w.get("fc2.weight", (chans, reduced, 1, 1)), w.get("fc2.bias", (chans,)))
    return ops.multiply(x, ops.sigmoid(s)).output(0)


def _block(x, w: Weights, in_ch: int, out_ch: int, stride: int, use_se: bool):
    """Token mixer (depthwise, optional SE) then the residual 1x1 channel MLP with exact GELU."""
    mixer = w.sub("token_mixer.")
    if stride == 1 and in_ch == out_ch:
        x = _rep_vgg_dw(x, mixer.sub("0."), in_ch)
        if use_se:
            x = _squeeze_excite(x, mixer.sub("1."), in_ch)
    else:
        x = conv_bn(x, mixer.sub("0."), in_ch, in_ch, KERNEL, stride, groups=in_ch)
        if use_se:
            x = _squeeze_excite(x, mixer.sub("1."), in_ch)
        x = conv_bn(x, mixer.sub("2."), in_ch, out_ch)
    mlp = w.sub("channel_mixer.m.")
    h = gelu(conv_bn(x, mlp.sub("0."), out_ch, EXPAND * out_ch))
    h = conv_bn(h, mlp.sub("2."), EXPAND * out_ch, out_ch)
    return ops.add(x, h).output(0)


def build_encoder(weights: Weights) -> ov.Model:
    """The encoder from the unfused checkpoint keys under `weights` (`features.*`, `neck.*`), fused on the fly."""
    image = named_input([1, 3, IMAGE_SIZE, IMAGE_SIZE], "image")
    features = weights.sub("features.")
    chans = STAGES[0][0]
    stem = features.sub("0.")
    x = gelu(conv_bn(image.output(0), stem.sub("0."), 3, chans // 2, 3, stride=2))
    x = conv_bn(x, stem.sub("2."), chans // 2, chans, 3, stride=2)
    for index, (out_ch, stride, use_se) in enumerate(_blocks(), start=1):
        x = _block(x, features.sub(f"{index}."), chans, out_ch, stride, use_se)
        chans = out_ch
    embedding = sam_neck(x, weights.sub("neck."))
    return ov.Model([named_output(embedding, "embedding")], [image], "repvit_medsam_encoder")

"""MedficientSAM's EfficientViT-SAM-L0/L1/L2 image encoder as an OpenVINO graph, from numpy weights.

(1, 3, 512, 512) image in [0, 1] -> (1, 256, 64, 64) embedding. Backbone stages: res, fused-MBConv x2,
MBConv, linear attention; the SAM neck fuses stages 4, 3, 2 at 64x64; a channel LayerNorm ends it.
MedficientSAM sets every norm's eps to 1e-6 and its "gelu" is the tanh approximation. Every
BatchNorm follows a convolution and is folded into it at build time.
"""
from __future__ import annotations

import numpy as np
import openvino as ov
import openvino.opset13 as ops

from .ops import (
    ConversionError, Weights, check_all_used, const, conv2d, conv_bn, gelu, layer_norm, named_input, named_output,
    relu, reshape,
)

NORM_EPS = 1e-6
ATTENTION_EPS = 1e-15
IMAGE_SIZE = 512
EMBED_SIZE = 64
WIDTHS = (32, 64, 128, 256, 512)
EXPAND = (1, 4, 4, 4, 6)
QKV_DIM = 32
# Blocks per stage after the stem / downsampling block, and residual FusedMBConvs in the neck.
DEPTHS = {"l0": (1, 1, 1, 4, 4), "l1": (1, 1, 1, 6, 6), "l2": (1, 2, 2, 8, 8)}
HEAD_DEPTH = {"l0": 4, "l1": 8, "l2": 12}


def _conv(x, w: Weights, in_ch: int, out_ch: int, k: int, stride: int = 1, groups: int = 1,
          bias: bool = False, norm: bool = True, act: bool = False):
    """EfficientViT ConvLayer: conv ('same' padding) [+ bias] [+ BatchNorm, folded] [+ tanh-GELU]."""
    if norm:
        y = conv_bn(x, w, in_ch, out_ch, k, stride, groups, NORM_EPS, conv="conv", norm="norm", bias=bias)
    else:
        weight = w.get("conv.weight", (out_ch, in_ch // groups, k, k))
        y = conv2d(x, weight, w.get("conv.bias", (out_ch,)) if bias else None, stride, k // 2, groups)
    return gelu(y, "tanh") if act else y


def _res_block(x, w: Weights, ch: int):
    y = _conv(x, w.sub("conv1."), ch, ch, 3, act=True)
    return _conv(y, w.sub("conv2."), ch, ch, 3)


def _fused_mbconv(x, w: Weights, in_ch: int, out_ch: int, mid: int, stride: int = 1):
    y = _conv(x, w.sub("spatial_conv."), in_ch, mid, 3, stride, act=True)
    return _conv(y, w.sub("point_conv."), mid, out_ch, 1)


def _mbconv(x, w: Weights, in_ch: int, out_ch: int, mid: int, stride: int = 1):
    """Fewer-norm MBConv (the only kind in the L models): biased 1x1 and depthwise convs, no BN there."""
    y = _conv(x, w.sub("inverted_conv."), in_ch, mid, 1, bias=True, norm=False, act=True)
    y = _conv(y, w.sub("depth_conv."), mid, mid, 3, stride, groups=mid, bias=True, norm=False, act=True)
    return _conv(y, w.sub("point_conv."), mid, out_ch, 1)


def _lite_mla(x, w: Weights, ch: int):
    """Multi-scale ReLU linear attention: 2 * heads heads of QKV_DIM over all H*W tokens."""
    heads = ch // QKV_DIM
    _, _, h, wd = x.get_partial_shape().to_shape()
    qkv = _conv(x, w.sub("qkv."), ch, 3 * ch, 1, norm=False)
    agg = conv2d(qkv, w.get("aggreg.0.0.weight", (3 * ch, 1, 5, 5)), padding=2, groups=3 * ch)
    agg = conv2d(agg, w.get("aggreg.0.1.weight", (3 * ch, QKV_DIM, 1, 1)), groups=3 * heads)
    qkv = reshape(ops.concat([qkv, agg], 1), (1, 2 * heads, 3 * QKV_DIM, h * wd))
    q, k, v = ops.split(qkv, const(2, np.int64), 3).outputs()
    q, k = relu(q), relu(k)
    # A row of ones under v makes the last output row relu(q) . sum(relu(k)), the normaliser.
    v = ops.pad(v, const([0, 0, 0, 0], np.int64), const([0, 0, 1, 0], np.int64), "constant", const(1.0))
    out = ops.matmul(ops.matmul(v, k, False, True), q, False, False)
    num, den = ops.variadic_split(out, const(2, np.int64), const([QKV_DIM, 1], np.int64)).outputs()
    out = ops.divide(num, ops.add(den, const(ATTENTION_EPS))).output(0)
    return _conv(reshape(out, (1, 2 * ch, h, wd)), w.sub("proj."), 2 * ch, ch, 1)


def _backbone(x, w: Weights, depths: tuple[int, ...]) -> list:
    """Five stages (strides 2..32); returns every stage's output."""
    stem = w.sub("stages.0.op_list.")
    x = _conv(x, stem.sub("0."), 3, WIDTHS[0], 3, stride=2, act=True)
    for j in range(1, depths[0] + 1):
        x = ops.add(_res_block(x, stem.sub(f"{j}.main."), WIDTHS[0]), x).output(0)
    features = [x]
    for i in range(1, 5):
        blocks = w.sub(f"stages.{i}.op_list.")
        in_ch, ch, expand = WIDTHS[i - 1], WIDTHS[i], EXPAND[i]
        block = _fused_mbconv if i <= 2 else _mbconv
        x = block(x, blocks.sub("0.main."), in_ch, ch, in_ch * expand * 4, stride=2)  # no shortcut
        for j in range(1, depths[i] + 1):
            if i == 4:
                x = ops.add(_lite_mla(x, blocks.sub(f"{j}.context_module.main."), ch), x).output(0)
                x = ops.add(_mbconv(x, blocks.sub(f"{j}.local_module.main."), ch, ch, ch * expand), x).output(0)
            else:
                x = ops.add(block(x, blocks.sub(f"{j}.main."), ch, ch, ch * expand), x).output(0)
        features.append(x)
    return features


def _resize(x, size: int):
    """F.interpolate(bicubic, align_corners=False): cubic A = -0.75 on half-pixel coordinates."""
    if tuple(x.get_partial_shape().to_shape())[-2:] == (size, size):
        return x
    return ops.interpolate(x, const([size, size], np.int64), "cubic", "sizes", axes=const([2, 3], np.int64),
                           coordinate_transformation_mode="half_pixel", cube_coeff=-0.75).output(0)


def _neck(features: list, w: Weights, head_depth: int):
    """Stages 4, 3, 2 -> 1x1 conv + BN, resize to 64x64, sum, residual FusedMBConvs, biased 1x1 conv."""
    inputs = [_resize(_conv(features[s], w.sub(f"input_ops.{n}.op_list.0."), WIDTHS[s], 256, 1), EMBED_SIZE)
              for n, s in enumerate((4, 3, 2))]
    x = ops.add(inputs[0], ops.add(inputs[1], inputs[2])).output(0)  # the reference's order: a + (b + c)
    for j in range(head_depth):
        x = ops.add(_fused_mbconv(x, w.sub(f"middle.op_list.{j}.main."), 256, 256, 256), x).output(0)
    return _conv(x, w.sub("output_ops.0.op_list.0."), 256, 256, 1, bias=True, norm=False)


def build_encoder(weights: Weights, variant: str) -> ov.Model:
    """Image encoder of MedficientSAM `variant` ("l0", "l1", "l2") from a view with prefix `image_encoder.`.

    Raises ConversionError on a missing key, a wrong shape, or keys left over (another variant's file).
    """
    if variant not in DEPTHS:
        raise ConversionError(f"unknown EfficientViT-SAM variant {variant!r}; expected one of {sorted(DEPTHS)}")
    image = named_input([1, 3, IMAGE_SIZE, IMAGE_SIZE], "image")
    features = _backbone(image.output(0), weights.sub("backbone."), DEPTHS[variant])
    x = _neck(features, weights.sub("neck."), HEAD_DEPTH[variant])
    # EfficientViT's LayerNorm2d: centre over channels, divide by sqrt(mean square + eps) = mvn.
    x = layer_norm(x, weights.get("norm.weight", (256,)), weights.get("norm.bias", (256,)), NORM_EPS, axis=1)
    check_all_used(weights)
    return ov.Model([named_output(x, "embedding")], [image], f"efficientvit_sam_{variant}_encoder")

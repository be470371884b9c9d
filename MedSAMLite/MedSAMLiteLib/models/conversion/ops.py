"""Building blocks for OpenVINO graphs made directly from numpy weights (no torch).

Every network builder takes a `Weights` view of the checkpoint and composes these functions.
Tensors are OpenVINO outputs (`ov.Output`); layouts follow PyTorch's (NCHW, Linear weights (out, in)).
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import openvino as ov
import openvino.opset13 as ops  # every supported openvino (>= 2025.0, the requirements' floor) has opset13


class ConversionError(ValueError):
    """Weights that do not fit the network being built (missing key, wrong shape, leftovers)."""


class Weights:
    """Read-only view of a state dict under a key prefix that records which keys were used.

    `w["neck.0.weight"]` returns the float32 array of `<prefix>neck.0.weight`; a missing key or a
    wrong shape raises ConversionError naming the full key. `w.sub("neck.")` is a view one level down
    sharing the same record, so `unused()` at the top lists what no builder consumed (a file of
    another architecture or size leaves keys over, or lacks some).
    """

    def __init__(self, state: Mapping[str, np.ndarray], prefix: str = "", _used: set[str] | None = None) -> None:
        self.state, self.prefix = state, prefix
        self.used = set() if _used is None else _used

    def sub(self, prefix: str) -> "Weights":
        return Weights(self.state, self.prefix + prefix, self.used)

    def has(self, name: str) -> bool:
        return self.prefix + name in self.state

    def __getitem__(self, name: str) -> np.ndarray:
        return self.get(name)

    def get(self, name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
        key = self.prefix + name
        if key not in self.state:
            raise ConversionError(f"missing weight {key}")
        value = np.asarray(self.state[key])
        if shape is not None and tuple(value.shape) != tuple(shape):
            raise ConversionError(f"weight {key} has shape {tuple(value.shape)}, expected {tuple(shape)}")
        self.used.add(key)
        return value.astype(np.float32, copy=False)

    def unused(self, prefix: str = "") -> list[str]:
        return [k for k in self.state if k.startswith(self.prefix + prefix) and k not in self.used]


def check_all_used(weights: Weights, shown: int = 5) -> None:
    """Raise ConversionError if keys under the view were never read (e.g. a larger variant's file)."""
    left = weights.unused()
    if left:
        raise ConversionError(f"{len(left)} unused weights under '{weights.prefix}', e.g. {', '.join(left[:shown])}")


def named_input(shape, name: str):
    """A float32 Parameter whose node and tensor are both called `name` (callers feed inputs by name)."""
    parameter = ops.parameter(list(shape), np.float32, name=name)
    parameter.output(0).get_tensor().set_names({name})
    return parameter


def named_output(x, name: str):
    """A Result whose tensor is called `name` (callers read outputs by name)."""
    result = ops.result(x)
    result.output(0).get_tensor().set_names({name})
    return result


def const(value, dtype=np.float32) -> ov.Output:
    """A constant; scalars stay 0-d (a pad value must be 0-d: a (1,) array silently breaks `pad`)."""
    return ops.constant(np.asarray(value, dtype=dtype)).output(0)


def conv2d(x, weight: np.ndarray, bias: np.ndarray | None = None, stride: int = 1, padding: int = 0, groups: int = 1):
    """torch.nn.Conv2d (weight (out, in/groups, kh, kw)); groups > 1 uses a group convolution."""
    strides, pads, dil = [stride, stride], [padding, padding], [1, 1]
    if groups == 1:
        y = ops.convolution(x, const(weight), strides, pads, pads, dil)
    else:
        out_ch = weight.shape[0]
        w = weight.reshape(groups, out_ch // groups, *weight.shape[1:])
        y = ops.group_convolution(x, const(w), strides, pads, pads, dil)
    if bias is not None:
        y = ops.add(y, const(bias.reshape(1, -1, 1, 1)))
    return y.output(0)


def fold_batchnorm(weight: np.ndarray, bias: np.ndarray | None, bn: "Weights", eps: float) -> tuple[np.ndarray, np.ndarray]:
    """Conv weight/bias followed by BatchNorm (eval) -> one conv's weight and bias, in float64 then f32.

    The BatchNorm vectors are shape-checked against the conv's output channels, so a wrong one
    names its key instead of failing in numpy broadcasting.
    """
    chans = (weight.shape[0],)
    names = ("weight", "bias", "running_mean", "running_var")
    gamma, beta, mean, var = (bn.get(name, chans).astype(np.float64) for name in names)
    bn.has("num_batches_tracked") and bn.used.add(bn.prefix + "num_batches_tracked")
    scale = gamma / np.sqrt(var + eps)
    w = weight.astype(np.float64) * scale.reshape(-1, *([1] * (weight.ndim - 1)))
    b = (np.zeros_like(mean) if bias is None else bias.astype(np.float64)) - mean
    return w.astype(np.float32), (b * scale + beta).astype(np.float32)


def fold_conv_bn(w: Weights, out_ch: int, in_per_group: int, kernel: int, eps: float = 1e-5,
                 conv: str = "c", norm: str = "bn", bias: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Weight and bias of a Conv2d (keys `<conv>.weight` [+ `<conv>.bias`]) with its BatchNorm
    (`<norm>.*`) folded in; `eps` defaults to torch's BatchNorm2d eps."""
    weight = w.get(f"{conv}.weight", (out_ch, in_per_group, kernel, kernel))
    conv_bias = w.get(f"{conv}.bias", (out_ch,)) if bias else None
    return fold_batchnorm(weight, conv_bias, w.sub(f"{norm}."), eps)


def conv_bn(x, w: Weights, in_ch: int, out_ch: int, kernel: int = 1, stride: int = 1, groups: int = 1,
            eps: float = 1e-5, conv: str = "c", norm: str = "bn", bias: bool = False):
    """Conv2d ('same' padding for odd kernels) + BatchNorm as one biased conv (see fold_conv_bn);
    the defaults fit the Conv2d_BN modules of TinyViT and RepViT (keys `c.weight`, `bn.*`)."""
    weight, b = fold_conv_bn(w, out_ch, in_ch // groups, kernel, eps, conv, norm, bias)
    return conv2d(x, weight, b, stride, kernel // 2, groups)


def linear(x, weight: np.ndarray, bias: np.ndarray | None = None):
    """torch.nn.Linear on the last axis (weight (out, in)); MatMul with transpose_b = FullyConnected."""
    y = ops.matmul(x, const(weight), False, True)
    if bias is not None:
        y = ops.add(y, const(bias))
    return y.output(0)


def layer_norm(x, weight: np.ndarray, bias: np.ndarray, eps: float, axis: int = -1):
    """nn.LayerNorm over one axis (biased variance, eps inside the square root)."""
    y = ops.mvn(x, const([axis], np.int64), True, eps, "inside_sqrt")
    if axis != -1:  # channel axis of NCHW (SAM's LayerNorm2d): broadcast (C,) as (C, 1, 1)
        weight, bias = weight.reshape(-1, 1, 1), bias.reshape(-1, 1, 1)
    return ops.add(ops.multiply(y, const(weight)), const(bias)).output(0)


def gelu(x, approximate: str = "erf"):
    """Exact GELU ("erf", torch's default) or the tanh approximation ("tanh")."""
    return ops.gelu(x, approximate).output(0)


def relu(x):
    return ops.relu(x).output(0)


def reshape(x, shape):
    """Reshape with torch semantics for -1 (0 in the shape means 0, not "copy")."""
    return ops.reshape(x, const(list(shape), np.int64), False).output(0)


def transpose(x, order):
    return ops.transpose(x, const(list(order), np.int64)).output(0)


def sam_neck(x, w: Weights, out_ch: int = 256, eps: float = 1e-6):
    """SAM's neck on an NCHW map: Conv1x1, LayerNorm2d, Conv3x3 (pad 1), LayerNorm2d, convs without
    bias. `w` is the view under `neck.`; the input channels come from `x`."""
    in_ch = x.get_partial_shape()[1].get_length()
    y = conv2d(x, w.get("0.weight", (out_ch, in_ch, 1, 1)))
    y = layer_norm(y, w.get("1.weight", (out_ch,)), w.get("1.bias", (out_ch,)), eps, axis=1)
    y = conv2d(y, w.get("2.weight", (out_ch, out_ch, 3, 3)), padding=1)
    return layer_norm(y, w.get("3.weight", (out_ch,)), w.get("3.bias", (out_ch,)), eps, axis=1)


def compile_model(model: ov.Model, threads: int | None = None, precision: str = "f32", cache_dir: str | None = None):
    """Compile for the CPU with an explicit precision hint (the plugin may default to bf16)."""
    core = ov.Core()
    if cache_dir:
        core.set_property({"CACHE_DIR": str(cache_dir)})
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": precision}
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    return core.compile_model(model, "CPU", config)

"""Small building blocks shared by the SAM-style modules."""
from __future__ import annotations

import torch
from torch import nn


class LayerNorm2d(nn.Module):
    """SAM's channel LayerNorm for NCHW maps (biased variance, eps inside the sqrt)."""

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class MLPBlock(nn.Module):
    """Two-layer MLP used inside the two-way transformer and ViT blocks."""

    def __init__(self, embedding_dim: int, mlp_dim: int, act: type[nn.Module] = nn.GELU) -> None:
        super().__init__()
        self.lin1 = nn.Linear(embedding_dim, mlp_dim)
        self.lin2 = nn.Linear(mlp_dim, embedding_dim)
        self.act = act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(self.act(self.lin1(x)))


class SamNeck(nn.Sequential):
    """1x1 conv, LayerNorm2d, 3x3 conv, LayerNorm2d: maps encoder features to 256 channels.

    Shared by the TinyViT, RepViT and ViT-B encoders; assigned as `self.neck` it gives the
    checkpoint keys `neck.0..3`.
    """

    def __init__(self, in_chans: int, out_chans: int = 256) -> None:
        super().__init__(
            nn.Conv2d(in_chans, out_chans, kernel_size=1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )


def fold_bn(weight: torch.Tensor, bias: torch.Tensor | None, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of conv(weight, bias) followed by `bn` in eval mode."""
    scale = bn.weight / (bn.running_var + bn.eps) ** 0.5
    shift = bn.bias - bn.running_mean * scale if bias is None else bn.bias + (bias - bn.running_mean) * scale
    return weight * scale[:, None, None, None], shift


def conv_like(conv: nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor) -> nn.Conv2d:
    """A biased conv with `conv`'s geometry holding the given (fused) weight and bias."""
    fused = nn.Conv2d(
        conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
        conv.dilation, conv.groups, bias=True, device=weight.device, dtype=weight.dtype,
    )  # fmt: skip
    fused.weight.data.copy_(weight)
    fused.bias.data.copy_(bias)
    return fused


class Conv2dBN(nn.Sequential):
    """Conv without bias, then BatchNorm (checkpoint keys `c`, `bn`)."""

    def __init__(
        self, in_chans: int, out_chans: int, kernel: int = 1, stride: int = 1, pad: int = 0,
        groups: int = 1, bn_weight_init: float = 1.0,
    ) -> None:  # fmt: skip
        super().__init__()
        self.add_module("c", nn.Conv2d(in_chans, out_chans, kernel, stride, pad, groups=groups, bias=False))
        self.add_module("bn", nn.BatchNorm2d(out_chans))
        nn.init.constant_(self.bn.weight, bn_weight_init)

    @torch.no_grad()
    def fuse(self) -> nn.Conv2d:
        return conv_like(self.c, *fold_bn(self.c.weight, None, self.bn))

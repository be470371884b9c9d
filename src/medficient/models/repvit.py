"""RepViT-M1.1 image encoder as RepViT-MedSAM (TurboMedSAM) uses it: 1024 input, last stage stride 1.

`fuse()` re-parameterises for deployment: every Conv+BN becomes one conv with bias, and each
RepVGGDW (3x3 dw conv-BN + 1x1 dw conv + identity, then BN) becomes a single 3x3 depthwise conv.
"""
from __future__ import annotations

import torch
from torch import nn

from .common import SamNeck

# (kernel, expansion, channels, squeeze-excite, hard-swish flag (no effect: GELU), stride) per block
M1_1_CFG: list[tuple[int, int, int, bool, bool, int]] = (
    [(3, 2, 64, True, False, 1), (3, 2, 64, False, False, 1), (3, 2, 64, False, False, 1)]
    + [(3, 2, 128, False, False, 2), (3, 2, 128, True, False, 1), (3, 2, 128, False, False, 1), (3, 2, 128, False, False, 1)]
    + [(3, 2, 256, False, True, 2)]
    + [(3, 2, 256, i % 2 == 0, True, 1) for i in range(12)]
    + [(3, 2, 256, False, True, 1)]
    + [(3, 2, 512, False, True, 1), (3, 2, 512, True, True, 1), (3, 2, 512, False, True, 1)]
)


class Conv2dBN(nn.Sequential):
    """Conv without bias + BatchNorm (keys `c`, `bn`)."""

    def __init__(self, a: int, b: int, ks: int = 1, stride: int = 1, pad: int = 0, groups: int = 1) -> None:
        super().__init__()
        self.add_module("c", nn.Conv2d(a, b, ks, stride, pad, groups=groups, bias=False))
        self.add_module("bn", nn.BatchNorm2d(b))

    @torch.no_grad()
    def fuse(self) -> nn.Conv2d:
        c, bn = self.c, self.bn
        scale = bn.weight / (bn.running_var + bn.eps) ** 0.5
        conv = nn.Conv2d(c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding, groups=c.groups)
        conv.weight.copy_(c.weight * scale[:, None, None, None])
        conv.bias.copy_(bn.bias - bn.running_mean * scale)
        return conv


def _fold_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A conv (with bias) followed by BN, as one conv."""
    scale = bn.weight / (bn.running_var + bn.eps) ** 0.5
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, groups=conv.groups)
    fused.weight.data.copy_(conv.weight * scale[:, None, None, None])
    fused.bias.data.copy_(bn.bias + (conv.bias - bn.running_mean) * scale)
    return fused


class RepVGGDW(nn.Module):
    """BN(dw3x3-BN(x) + dw1x1(x) + x): three training-time branches, one conv after `fuse`."""

    def __init__(self, ed: int) -> None:
        super().__init__()
        self.conv = Conv2dBN(ed, ed, 3, 1, 1, groups=ed)
        self.conv1 = nn.Conv2d(ed, ed, 1, 1, 0, groups=ed)
        self.bn = nn.BatchNorm2d(ed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn((self.conv(x) + self.conv1(x)) + x)

    @torch.no_grad()
    def fuse(self) -> nn.Conv2d:
        conv = self.conv.fuse()
        w1 = nn.functional.pad(self.conv1.weight, [1, 1, 1, 1])
        identity = nn.functional.pad(torch.ones_like(self.conv1.weight), [1, 1, 1, 1])
        conv.weight.copy_(conv.weight + w1 + identity)
        conv.bias.copy_(conv.bias + self.conv1.bias)
        return _fold_bn(conv, self.bn)


class SqueezeExcite(nn.Module):
    """timm's SEModule: mean, 1x1 conv, ReLU, 1x1 conv, sigmoid gate."""

    def __init__(self, chans: int, ratio: float = 0.25) -> None:
        super().__init__()
        reduced = max(8, int(chans * ratio + 4) // 8 * 8)  # timm make_divisible(c * ratio, 8)
        self.fc1 = nn.Conv2d(chans, reduced, 1)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(reduced, chans, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.fc2(self.act(self.fc1(x.mean((2, 3), keepdim=True))))
        return x * s.sigmoid()


class Residual(nn.Module):
    def __init__(self, m: nn.Module) -> None:
        super().__init__()
        self.m = m

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.m(x)


class RepViTBlock(nn.Module):
    """Token mixer (RepVGGDW, or a strided/channel-changing dw conv + 1x1) then a residual 1x1 MLP."""

    def __init__(self, inp: int, oup: int, kernel: int, stride: int, use_se: bool) -> None:
        super().__init__()
        se = SqueezeExcite(inp) if use_se else nn.Identity()
        if stride == 1 and inp == oup:
            self.token_mixer = nn.Sequential(RepVGGDW(inp), se)
        else:
            self.token_mixer = nn.Sequential(
                Conv2dBN(inp, inp, kernel, stride, (kernel - 1) // 2, groups=inp), se, Conv2dBN(inp, oup)
            )
        self.channel_mixer = Residual(nn.Sequential(Conv2dBN(oup, 2 * oup), nn.GELU(), Conv2dBN(2 * oup, oup)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.channel_mixer(self.token_mixer(x))


class RepViTEncoder(nn.Module):
    def __init__(self, cfgs=M1_1_CFG, out_chans: int = 256) -> None:
        super().__init__()
        stem = cfgs[0][2]
        layers: list[nn.Module] = [nn.Sequential(Conv2dBN(3, stem // 2, 3, 2, 1), nn.GELU(), Conv2dBN(stem // 2, stem, 3, 2, 1))]
        inp = stem
        for k, _t, c, use_se, _hs, s in cfgs:
            layers.append(RepViTBlock(inp, c, k, s, use_se))
            inp = c
        self.features = nn.ModuleList(layers)
        self.neck = SamNeck(inp, out_chans)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for f in self.features:
            x = f(x)
        return self.neck(x)

    @torch.no_grad()
    def fuse(self) -> "RepViTEncoder":
        """Re-parameterise in place for deployment (same function, fewer ops, no BatchNorm)."""
        _fuse_children(self)
        return self


def _fuse_children(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, (Conv2dBN, RepVGGDW)):
            setattr(module, name, child.fuse())
        else:
            _fuse_children(child)


def repvit_m1_1_sam_encoder() -> RepViTEncoder:
    return RepViTEncoder(M1_1_CFG)

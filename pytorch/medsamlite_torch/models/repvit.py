"""RepViT-M1.1 image encoder as RepViT-MedSAM (TurboMedSAM) uses it: 1024 input, SAM neck.

A 4x conv stem, then 24 RepViT blocks (token mixer + residual channel MLP) at 256, 128, 64 and
64 pixels; TurboMedSAM changed the last stage's stride from 2 to 1 so the map stays 64x64 for
the SAM neck. Module and parameter names follow the TurboMedSAM checkpoint (`features.*`, `neck.*`).

Training-time branches are kept separate so trained checkpoints load; `fuse()` folds them for
deployment: every conv+BN becomes one conv with bias, and each RepVGGDW (dw 3x3 conv-BN,
dw 1x1 conv, identity, then BN) becomes a single depthwise 3x3 conv. No BatchNorm remains.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .common import Conv2dBN, SamNeck, conv_like, fold_bn

# RepViT-M1.1, one row per block: kernel, expansion (channel-MLP hidden = t * c), out channels,
# squeeze-excite, hard-swish flag (ignored: every activation is exact GELU), stride.
M1_1_CFGS: list[tuple[int, int, int, bool, bool, int]] = [
    (3, 2, 64, True, False, 1),
    (3, 2, 64, False, False, 1),
    (3, 2, 64, False, False, 1),
    (3, 2, 128, False, False, 2),
    (3, 2, 128, True, False, 1),
    (3, 2, 128, False, False, 1),
    (3, 2, 128, False, False, 1),
    (3, 2, 256, False, True, 2),
    (3, 2, 256, True, True, 1),
    (3, 2, 256, False, True, 1),
    (3, 2, 256, True, True, 1),
    (3, 2, 256, False, True, 1),
    (3, 2, 256, True, True, 1),
    (3, 2, 256, False, True, 1),
    (3, 2, 256, True, True, 1),
    (3, 2, 256, False, True, 1),
    (3, 2, 256, True, True, 1),
    (3, 2, 256, False, True, 1),
    (3, 2, 256, True, True, 1),
    (3, 2, 256, False, True, 1),
    (3, 2, 256, False, True, 1),
    (3, 2, 512, False, True, 1),  # stride 1 in TurboMedSAM (2 in RepViT): keeps 64x64 for the neck
    (3, 2, 512, True, True, 1),
    (3, 2, 512, False, True, 1),
]


def make_divisible(v: float, divisor: int = 8) -> int:
    """Round to the nearest multiple of `divisor`, never dropping more than 10% (timm's rule)."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


class RepVGGDW(nn.Module):
    """BN(dw3x3-BN(x) + dw1x1(x) + x): extra branches help training and fold away in `fuse`."""

    def __init__(self, chans: int) -> None:
        super().__init__()
        self.conv = Conv2dBN(chans, chans, 3, 1, 1, groups=chans)
        self.conv1 = nn.Conv2d(chans, chans, 1, 1, 0, groups=chans)
        self.bn = nn.BatchNorm2d(chans)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn((self.conv(x) + self.conv1(x)) + x)

    @torch.no_grad()
    def fuse(self) -> nn.Conv2d:
        w3, b3 = fold_bn(self.conv.c.weight, None, self.conv.bn)
        w1 = F.pad(self.conv1.weight, [1, 1, 1, 1])  # 1x1 tap at the centre of a 3x3 kernel
        identity = F.pad(torch.ones_like(self.conv1.weight), [1, 1, 1, 1])  # depthwise: one kernel per channel
        weight, bias = fold_bn(w3 + w1 + identity, b3 + self.conv1.bias, self.bn)
        return conv_like(self.conv.c, weight, bias)


class SqueezeExcite(nn.Module):
    """timm's SEModule: channel gate from the spatial mean (keys `fc1`, `fc2`)."""

    def __init__(self, chans: int, rd_ratio: float = 0.25) -> None:
        super().__init__()
        rd_chans = make_divisible(chans * rd_ratio, 8)
        self.fc1 = nn.Conv2d(chans, rd_chans, 1)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(rd_chans, chans, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.fc2(self.act(self.fc1(x.mean((2, 3), keepdim=True))))
        return x * s.sigmoid()


class Residual(nn.Module):
    """x + m(x); kept as a wrapper (key `m`) so fusing only touches the inner convs."""

    def __init__(self, m: nn.Module) -> None:
        super().__init__()
        self.m = m

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.m(x)


class RepViTBlock(nn.Module):
    """Token mixer (spatial, depthwise) then a residual 1x1 channel MLP, as in MobileNet-style ViTs.

    Blocks that keep shape use RepVGGDW; blocks that stride or change width use a strided
    depthwise Conv2dBN followed by a 1x1 Conv2dBN projection.
    """

    def __init__(self, in_chans: int, out_chans: int, kernel: int, expand: int, use_se: bool, stride: int) -> None:
        super().__init__()
        se: nn.Module = SqueezeExcite(in_chans) if use_se else nn.Identity()
        if stride == 1 and in_chans == out_chans:
            self.token_mixer = nn.Sequential(RepVGGDW(in_chans), se)
        else:
            self.token_mixer = nn.Sequential(
                Conv2dBN(in_chans, in_chans, kernel, stride, (kernel - 1) // 2, groups=in_chans),
                se,
                Conv2dBN(in_chans, out_chans),
            )
        hidden = expand * out_chans
        self.channel_mixer = Residual(
            nn.Sequential(Conv2dBN(out_chans, hidden), nn.GELU(), Conv2dBN(hidden, out_chans, bn_weight_init=0.0))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.channel_mixer(self.token_mixer(x))


class RepViTEncoder(nn.Module):
    """RepViT backbone + SAM neck: (B, 3, 1024, 1024) -> (B, 256, 64, 64)."""

    def __init__(self, cfgs: list[tuple[int, int, int, bool, bool, int]] = M1_1_CFGS, out_chans: int = 256) -> None:
        super().__init__()
        chans = cfgs[0][2]
        stem = nn.Sequential(Conv2dBN(3, chans // 2, 3, 2, 1), nn.GELU(), Conv2dBN(chans // 2, chans, 3, 2, 1))
        layers: list[nn.Module] = [stem]
        for kernel, expand, out, use_se, _use_hs, stride in cfgs:
            layers.append(RepViTBlock(chans, out, kernel, expand, use_se, stride))
            chans = out
        self.features = nn.ModuleList(layers)
        self.neck = SamNeck(chans, out_chans)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.features:
            x = layer(x)
        return self.neck(x)

    @torch.no_grad()
    def fuse(self) -> RepViTEncoder:
        """Re-parameterise in place for deployment (same function, fewer ops, no BatchNorm); eval only."""
        _fuse_children(self)
        return self


def _fuse_children(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, (Conv2dBN, RepVGGDW)):
            fused = child.fuse()
            fused.train(child.training)
            setattr(module, name, fused)
        else:
            _fuse_children(child)


def repvit_m1_1_sam_encoder() -> RepViTEncoder:
    """The RepViT-MedSAM image encoder (TurboMedSAM's RepViT-M1.1, last stage stride 1)."""
    return RepViTEncoder(M1_1_CFGS)

"""EfficientViT-SAM-L0/L1/L2 image encoder, as used by MedficientSAM.

Backbone (EfficientViT "large": res / fused-MBConv / MBConv / linear-attention stages), the SAM
neck that fuses stages 4, 3 and 2 at 64x64, and EfficientViT's LayerNorm2d on top. Module and
attribute names follow the public checkpoints (`backbone.stages.N.op_list.M...`,
`neck.input_ops/middle/output_ops`, `norm`), so their state dicts load strictly.

Numerics follow the reference configuration of MedficientSAM: every activation is tanh-GELU,
every BatchNorm and the final LayerNorm2d use eps 1e-6 (the reference calls `set_norm_eps(1e-6)`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CONFIGS", "EfficientViTSamConfig", "EfficientViTSamEncoder", "efficientvit_sam_encoder"]


@dataclass(frozen=True)
class EfficientViTSamConfig:
    depths: tuple[int, int, int, int, int]  # blocks per stage after the stem / downsampling block
    head_depth: int  # residual FusedMBConv blocks in the neck
    widths: tuple[int, int, int, int, int] = (32, 64, 128, 256, 512)
    blocks: tuple[str, str, str, str, str] = ("res", "fmb", "fmb", "mb", "att")
    expand_ratios: tuple[int, int, int, int, int] = (1, 4, 4, 4, 6)
    fewer_norm: tuple[bool, bool, bool, bool, bool] = (False, False, False, True, True)
    qkv_dim: int = 32
    head_width: int = 256
    out_dim: int = 256
    neck_size: int = 64  # the neck resamples every input to neck_size x neck_size


CONFIGS: dict[str, EfficientViTSamConfig] = {
    "l0": EfficientViTSamConfig(depths=(1, 1, 1, 4, 4), head_depth=4),
    "l1": EfficientViTSamConfig(depths=(1, 1, 1, 6, 6), head_depth=8),
    "l2": EfficientViTSamConfig(depths=(1, 2, 2, 8, 8), head_depth=12),
}

NORM_EPS = 1e-6


def _act() -> nn.Module:
    # EfficientViT registers "gelu" as the tanh approximation.
    return nn.GELU(approximate="tanh")


class ConvNormAct(nn.Module):
    """Conv2d ('same' padding) -> optional BatchNorm -> optional GELU; absent parts leave no keys."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        bias: bool = False,
        norm: bool = True,
        act: bool = True,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride, kernel_size // 2, groups=groups, bias=bias)
        self.norm = nn.BatchNorm2d(out_chs, eps=NORM_EPS) if norm else nn.Identity()
        self.act = _act() if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))


class OpSequential(nn.Module):
    """Plain sequence; a named `op_list` so that keys read `...op_list.N...` as in the checkpoints."""

    def __init__(self, ops: list[nn.Module]) -> None:
        super().__init__()
        self.op_list = nn.ModuleList(ops)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for op in self.op_list:
            x = op(x)
        return x


class Residual(nn.Module):
    """`main(x) + x`, or just `main(x)` for the shape-changing blocks (no shortcut, no keys)."""

    def __init__(self, main: nn.Module, shortcut: bool = True) -> None:
        super().__init__()
        self.main = main
        self.shortcut = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x) + x if self.shortcut else self.main(x)


class ResBlock(nn.Module):
    """Two 3x3 convs; the second has no activation (the stage-0 block)."""

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1, mid_chs: int | None = None) -> None:
        super().__init__()
        mid_chs = mid_chs or in_chs
        self.conv1 = ConvNormAct(in_chs, mid_chs, 3, stride)
        self.conv2 = ConvNormAct(mid_chs, out_chs, 3, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))


class FusedMBConv(nn.Module):
    """Full 3x3 conv to the expanded width, then a linear 1x1 projection."""

    def __init__(self, in_chs: int, out_chs: int, mid_chs: int, stride: int = 1, fewer_norm: bool = False) -> None:
        super().__init__()
        self.spatial_conv = ConvNormAct(in_chs, mid_chs, 3, stride, bias=fewer_norm, norm=not fewer_norm)
        self.point_conv = ConvNormAct(mid_chs, out_chs, 1, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.point_conv(self.spatial_conv(x))


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand, 3x3 depthwise (carries the stride), linear 1x1 projection.

    With `fewer_norm` (stages 3-4 and the attention blocks) the first two convs have a bias and
    no BatchNorm; only the projection is normalised.
    """

    def __init__(self, in_chs: int, out_chs: int, mid_chs: int, stride: int = 1, fewer_norm: bool = False) -> None:
        super().__init__()
        self.inverted_conv = ConvNormAct(in_chs, mid_chs, 1, bias=fewer_norm, norm=not fewer_norm)
        self.depth_conv = ConvNormAct(mid_chs, mid_chs, 3, stride, groups=mid_chs, bias=fewer_norm, norm=not fewer_norm)
        self.point_conv = ConvNormAct(mid_chs, out_chs, 1, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.point_conv(self.depth_conv(self.inverted_conv(x)))


class LiteMLA(nn.Module):
    """Multi-scale ReLU linear attention (EfficientViT).

    q, k, v come from a 1x1 conv plus one aggregated copy (depthwise 5x5 then a 1x1 grouped per
    head), so there are 2 * heads heads of size `dim`. Attention is linear in the number of
    tokens: relu(q) . (relu(k)^T v), normalised by relu(q) . sum(relu(k)), both obtained in one
    matmul by padding v with a row of ones. It is computed in float32 because the normaliser
    (with eps 1e-15) is fragile in half precision.
    """

    def __init__(self, channels: int, dim: int = 32, scales: tuple[int, ...] = (5,), eps: float = 1e-15) -> None:
        super().__init__()
        heads = channels // dim
        total_dim = heads * dim
        self.dim = dim
        self.eps = eps
        self.qkv = ConvNormAct(channels, 3 * total_dim, 1, norm=False, act=False)
        self.aggreg = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(3 * total_dim, 3 * total_dim, s, padding=s // 2, groups=3 * total_dim, bias=False),
                nn.Conv2d(3 * total_dim, 3 * total_dim, 1, groups=3 * heads, bias=False),
            )
            for s in scales
        )
        self.proj = ConvNormAct(total_dim * (1 + len(scales)), channels, 1, act=False)

    def _linear_attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        v = F.pad(v, (0, 0, 0, 1), mode="constant", value=1.0)  # (B, h, d+1, N)
        out = (v @ k.transpose(-1, -2)) @ q  # (B, h, d+1, N)
        return out[:, :, :-1] / (out[:, :, -1:] + self.eps)

    def _quadratic_attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        # Taken by the reference when there are no more tokens than channels per head (tiny inputs).
        att = k.transpose(-1, -2) @ q  # (B, h, N, N)
        att = att / (att.sum(dim=2, keepdim=True) + self.eps)
        return v @ att

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qkv = self.qkv(x)
        qkv = torch.cat([qkv] + [op(qkv) for op in self.aggreg], dim=1)
        b, _, h, w = qkv.shape
        dtype = qkv.dtype
        qkv = qkv.float().reshape(b, -1, 3 * self.dim, h * w)
        q, k, v = qkv.split(self.dim, dim=2)
        q, k = F.relu(q), F.relu(k)
        if h * w > self.dim:
            out = self._linear_attention(q, k, v)
        else:
            out = self._quadratic_attention(q, k, v)
        return self.proj(out.reshape(b, -1, h, w).to(dtype))


class EfficientViTBlock(nn.Module):
    """Global context (LiteMLA) then local mixing (fewer-norm MBConv), each residual."""

    def __init__(self, channels: int, dim: int, expand_ratio: int) -> None:
        super().__init__()
        self.context_module = Residual(LiteMLA(channels, dim))
        self.local_module = Residual(MBConv(channels, channels, channels * expand_ratio, fewer_norm=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.local_module(self.context_module(x))


def _local_block(kind: str, in_chs: int, out_chs: int, stride: int, expand: int, fewer_norm: bool) -> nn.Module:
    mid_chs = round(in_chs * expand)
    if kind == "res":
        assert not fewer_norm, "fewer-norm ResBlock is not used by the L models"
        return ResBlock(in_chs, out_chs, stride, mid_chs)
    if kind == "fmb":
        return FusedMBConv(in_chs, out_chs, mid_chs, stride, fewer_norm)
    if kind == "mb":
        return MBConv(in_chs, out_chs, mid_chs, stride, fewer_norm)
    raise ValueError(f"unknown block type {kind!r}")


class EfficientViTLargeBackbone(nn.Module):
    """Five stages at strides 2, 4, 8, 16, 32; returns every stage's output.

    Stage 0 is a stride-2 3x3 stem plus ResBlocks. Stages 1-4 open with a stride-2 block of 4x the
    stage's expansion and no shortcut ("att" stages downsample with an MBConv), followed by
    residual blocks of the stage's type.
    """

    def __init__(self, cfg: EfficientViTSamConfig, in_chans: int = 3) -> None:
        super().__init__()
        w, d = cfg.widths, cfg.depths
        stem = [ConvNormAct(in_chans, w[0], 3, stride=2)]
        stem += [
            Residual(_local_block(cfg.blocks[0], w[0], w[0], 1, cfg.expand_ratios[0], cfg.fewer_norm[0]))
            for _ in range(d[0])
        ]
        stages = [OpSequential(stem)]
        for i in range(1, len(w)):
            kind, expand, fewer = cfg.blocks[i], cfg.expand_ratios[i], cfg.fewer_norm[i]
            down_kind = kind if kind in ("mb", "fmb") else "mb"
            ops: list[nn.Module] = [Residual(_local_block(down_kind, w[i - 1], w[i], 2, expand * 4, fewer), shortcut=False)]
            for _ in range(d[i]):
                if kind == "att":
                    ops.append(EfficientViTBlock(w[i], cfg.qkv_dim, expand))
                else:
                    ops.append(Residual(_local_block(kind, w[i], w[i], 1, expand, fewer)))
            stages.append(OpSequential(ops))
        self.stages = nn.ModuleList(stages)
        self.widths = tuple(w)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


class Resize(nn.Module):
    """Bicubic (A = -0.75, align_corners=False) resize to a fixed size; identity when already there."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = (size, size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) == self.size:
            return x
        dtype = x.dtype
        return F.interpolate(x.float(), size=self.size, mode="bicubic", align_corners=False).to(dtype)


class SamNeck(nn.Module):
    """Fuses backbone stages 4, 3, 2: per input 1x1 conv + BN and resize to 64x64, sum, residual
    FusedMBConvs, then a biased 1x1 output conv."""

    stage_ids = (4, 3, 2)

    def __init__(self, cfg: EfficientViTSamConfig) -> None:
        super().__init__()
        hw = cfg.head_width
        self.input_ops = nn.ModuleList(
            OpSequential([ConvNormAct(cfg.widths[i], hw, 1, act=False), Resize(cfg.neck_size)]) for i in self.stage_ids
        )
        self.middle = OpSequential([Residual(FusedMBConv(hw, hw, hw)) for _ in range(cfg.head_depth)])
        self.output_ops = nn.ModuleList([OpSequential([ConvNormAct(hw, cfg.out_dim, 1, bias=True, norm=False, act=False)])])

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        feats = [op(features[i]) for i, op in zip(self.stage_ids, self.input_ops)]
        # Same association as the reference's recursive list_sum: a + (b + c).
        x = feats[-1]
        for f in reversed(feats[:-1]):
            x = f + x
        return self.output_ops[0](self.middle(x))


class LayerNorm2d(nn.Module):
    """EfficientViT's channel LayerNorm: centre, then divide by sqrt(mean of squares + eps).

    Written out (not via F.layer_norm) to keep the reference's operation order.
    """

    def __init__(self, channels: int, eps: float = NORM_EPS) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x - x.mean(dim=1, keepdim=True)
        x = x / torch.sqrt(x.square().mean(dim=1, keepdim=True) + self.eps)
        return x * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


class EfficientViTSamEncoder(nn.Module):
    """(B, 3, S, S) image in [0, 1] (S = 512 for MedficientSAM) -> (B, 256, 64, 64) embedding."""

    def __init__(self, cfg: EfficientViTSamConfig) -> None:
        super().__init__()
        self.backbone = EfficientViTLargeBackbone(cfg)
        self.neck = SamNeck(cfg)
        self.norm = LayerNorm2d(cfg.out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.neck(self.backbone(x)))


def efficientvit_sam_encoder(variant: str) -> EfficientViTSamEncoder:
    """MedficientSAM image encoder for variant "l0", "l1" or "l2"."""
    try:
        cfg = CONFIGS[variant.lower()]
    except KeyError:
        raise ValueError(f"unknown EfficientViT-SAM variant {variant!r}; expected one of {sorted(CONFIGS)}") from None
    return EfficientViTSamEncoder(cfg)

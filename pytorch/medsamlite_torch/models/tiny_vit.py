"""TinyViT image encoder as modified for LiteMedSAM (256 input, 1x1 stem, stride-1 last merge).

Tokens stay at full resolution in stage 0 (MBConv), then windowed attention with a learned
relative-offset bias table in stages 1-3; a SAM neck maps the 64x64x320 map to 256 channels.
Module and parameter names follow the released `lite_medsam.pth` checkpoint.
"""
from __future__ import annotations

import itertools

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

from .common import Conv2dBN, SamNeck


class PatchEmbed(nn.Module):
    """LiteMedSAM's stem: two 1x1 stride-1 Conv2dBN with GELU, so stage 0 runs at full resolution."""

    def __init__(self, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.seq = nn.Sequential(Conv2dBN(in_chans, embed_dim // 2), nn.GELU(), Conv2dBN(embed_dim // 2, embed_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand, 3x3 depthwise, 1x1 project; GELU after the residual add."""

    def __init__(self, chans: int, expand_ratio: float) -> None:
        super().__init__()
        hidden = int(chans * expand_ratio)
        self.conv1, self.act1 = Conv2dBN(chans, hidden), nn.GELU()
        self.conv2, self.act2 = Conv2dBN(hidden, hidden, 3, 1, 1, groups=hidden), nn.GELU()
        self.conv3, self.act3 = Conv2dBN(hidden, chans), nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv3(self.act2(self.conv2(self.act1(self.conv1(x)))))
        return self.act3(y + x)


class PatchMerging(nn.Module):
    """1x1, depthwise 3x3 with `stride`, 1x1. Takes NCHW or (B, L, C) tokens, returns tokens."""

    def __init__(self, resolution: int, dim: int, out_dim: int, stride: int) -> None:
        super().__init__()
        self.resolution = resolution
        self.act = nn.GELU()
        self.conv1 = Conv2dBN(dim, out_dim)
        self.conv2 = Conv2dBN(out_dim, out_dim, 3, stride, 1, groups=out_dim)
        self.conv3 = Conv2dBN(out_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 3:
            x = x.view(len(x), self.resolution, self.resolution, -1).permute(0, 3, 1, 2)
        x = self.conv3(self.act(self.conv2(self.act(self.conv1(x)))))
        return x.flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Window self-attention with its own LayerNorm and one learned bias per head and |dy|,|dx| offset.

    The bias is gathered from `attention_biases` on every call instead of being cached at
    `.eval()`, so results do not depend on whether weights are loaded before or after `.eval()`.
    """

    def __init__(self, dim: int, num_heads: int, window: int) -> None:
        super().__init__()
        self.num_heads, self.key_dim = num_heads, dim // num_heads
        self.scale = self.key_dim**-0.5
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        points = list(itertools.product(range(window), range(window)))
        offsets: dict[tuple[int, int], int] = {}  # first-seen order, as in the checkpoint's table
        idxs = [offsets.setdefault((abs(a[0] - b[0]), abs(a[1] - b[1])), len(offsets)) for a in points for b in points]
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, len(offsets)))
        self.register_buffer("attention_bias_idxs", torch.tensor(idxs).view(len(points), len(points)), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        # The fused qkv output is laid out per head: [q_h, k_h, v_h] for each head h.
        q, k, v = self.qkv(self.norm(x)).view(b, n, self.num_heads, -1).split([self.key_dim] * 3, dim=3)
        q, k, v = q.permute(0, 2, 1, 3), k.permute(0, 2, 1, 3), v.permute(0, 2, 1, 3)
        bias = self.attention_biases[:, self.attention_bias_idxs]
        attn = ((q @ k.transpose(-2, -1)) * self.scale + bias).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, -1))


class Mlp(nn.Module):
    """Pre-norm MLP of a TinyViT block (the LayerNorm lives here, as in the checkpoint)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.norm(x))))


class TinyViTBlock(nn.Module):
    """Windowed attention + residual, depthwise 3x3 local conv, MLP + residual.

    Maps that are not a multiple of the window are zero-padded bottom/right before the
    attention's LayerNorm, with no mask: padded tokens take part as keys and values, as in
    the reference.
    """

    def __init__(self, dim: int, resolution: int, num_heads: int, window: int, mlp_ratio: float) -> None:
        super().__init__()
        self.resolution, self.window = resolution, window
        self.attn = Attention(dim, num_heads, window)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.local_conv = Conv2dBN(dim, dim, 3, 1, 1, groups=dim)

    def _window_attention(self, x: torch.Tensor) -> torch.Tensor:
        b, l, c = x.shape
        h = w = self.resolution
        ws = self.window
        pad_b, pad_r = (ws - h % ws) % ws, (ws - w % ws) % ws
        x = F.pad(x.view(b, h, w, c), (0, 0, 0, pad_r, 0, pad_b))
        ph, pw = h + pad_b, w + pad_r
        nh, nw = ph // ws, pw // ws
        x = x.view(b, nh, ws, nw, ws, c).transpose(2, 3).reshape(b * nh * nw, ws * ws, c)
        x = self.attn(x)
        x = x.view(b, nh, nw, ws, ws, c).transpose(2, 3).reshape(b, ph, pw, c)
        return x[:, :h, :w].reshape(b, l, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, l, c = x.shape
        x = x + self._window_attention(x)
        h = self.resolution
        x = self.local_conv(x.transpose(1, 2).reshape(b, c, h, h)).view(b, c, l).transpose(1, 2)
        return x + self.mlp(x)


class _Stage(nn.Module):
    """Blocks then an optional patch merging; optional gradient checkpointing per block."""

    blocks: nn.ModuleList
    downsample: PatchMerging | None
    use_checkpoint: bool = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            if self.use_checkpoint and self.training and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return self.downsample(x) if self.downsample is not None else x


class ConvLayer(_Stage):
    """Stage 0: MBConv blocks on the NCHW map, then a patch merging."""

    def __init__(self, dim: int, resolution: int, depth: int, expand_ratio: float, out_dim: int, stride: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(MBConv(dim, expand_ratio) for _ in range(depth))
        self.downsample = PatchMerging(resolution, dim, out_dim, stride)


class BasicLayer(_Stage):
    """Stages 1-3: TinyViT blocks on (B, L, C) tokens, then an optional patch merging."""

    def __init__(
        self,
        dim: int,
        resolution: int,
        depth: int,
        num_heads: int,
        window: int,
        mlp_ratio: float,
        out_dim: int | None,
        stride: int = 2,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(TinyViTBlock(dim, resolution, num_heads, window, mlp_ratio) for _ in range(depth))
        self.downsample = PatchMerging(resolution, dim, out_dim, stride) if out_dim else None


class TinyViT(nn.Module):
    """TinyViT backbone plus SAM neck; (B, 3, S, S) -> (B, out_chans, S/4, S/4) for LiteMedSAM."""

    def __init__(
        self,
        img_size: int = 256,
        in_chans: int = 3,
        embed_dims: tuple[int, ...] = (64, 128, 160, 320),
        depths: tuple[int, ...] = (2, 2, 6, 2),
        num_heads: tuple[int, ...] = (2, 4, 5, 10),
        window_sizes: tuple[int, ...] = (7, 7, 14, 7),
        mlp_ratio: float = 4.0,
        mbconv_expand_ratio: float = 4.0,
        out_chans: int = 256,
        use_checkpoint: bool = False,
    ) -> None:
        super().__init__()
        self.patch_embed = PatchEmbed(in_chans, embed_dims[0])
        # LiteMedSAM keeps the last merge (into 320 channels) at stride 1: 256 -> 128 -> 64 -> 64.
        strides = [1 if out == 320 else 2 for out in embed_dims[1:]]
        res = [img_size]
        for s in strides:
            res.append(res[-1] // s)
        strides.append(1)  # the last stage has no merge
        self.out_res = res[-1]
        layers: list[_Stage] = [
            ConvLayer(embed_dims[0], res[0], depths[0], mbconv_expand_ratio, embed_dims[1], strides[0])
        ]
        for i in range(1, len(depths)):
            last = i + 1 == len(depths)
            layers.append(
                BasicLayer(
                    embed_dims[i],
                    res[i],
                    depths[i],
                    num_heads[i],
                    window_sizes[i],
                    mlp_ratio,
                    None if last else embed_dims[i + 1],
                    strides[i],
                )
            )
        for layer in layers:
            layer.use_checkpoint = use_checkpoint
        self.layers = nn.ModuleList(layers)
        self.neck = SamNeck(embed_dims[-1], out_chans)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        for layer in self.layers:
            x = layer(x)
        b, _, c = x.shape
        x = x.view(b, self.out_res, self.out_res, c).permute(0, 3, 1, 2)
        return self.neck(x)


def tiny_vit_lite_medsam(use_checkpoint: bool = False) -> TinyViT:
    """The LiteMedSAM configuration (CVPR24_LiteMedSAM_infer.py); input 256, output (B, 256, 64, 64)."""
    return TinyViT(use_checkpoint=use_checkpoint)

"""Losses of the published recipes (PIPELINES.md §5), each a mean over objects.

Logits and targets are (N, 1, 256, 256) at the decoder's resolution; `iou_pred` is (N, 1).
MedficientSAM: 1 dice + 20 focal + 1 iou_mse. RepViT-MedSAM: dice + bce + iou_mse + teacher_bce.
LiteMedSAM: dice + bce. Distillation: mse on the image embeddings.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """1 - 2 sum(p g) / (sum p^2 + sum g^2), sigmoid probabilities, per object (MedficientSAM eq. 3)."""
    p = torch.sigmoid(logits).flatten(1)
    g = target.flatten(1)
    return (1 - (2 * (p * g).sum(1) + eps) / (p.square().sum(1) + g.square().sum(1) + eps)).mean()


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """-(1 - p_t)^gamma log(p_t), mean over pixels (MedficientSAM eq. 2, no alpha)."""
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = torch.exp(-ce)
    return ((1 - p_t) ** gamma * ce).mean()


def bce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, target)


def iou_mse_loss(logits: torch.Tensor, target: torch.Tensor, iou_pred: torch.Tensor) -> torch.Tensor:
    """MSE between the predicted IoU and the IoU of (logits > 0) with the target (no gradient to the mask)."""
    with torch.no_grad():
        pred = (logits > 0).flatten(1).float()
        g = (target > 0.5).flatten(1).float()
        inter = (pred * g).sum(1)
        union = pred.sum(1) + g.sum(1) - inter
        iou = torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))
    return F.mse_loss(iou_pred.flatten().float(), iou)


def teacher_bce_loss(logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Cross-entropy to the teacher's sigmoid probabilities (RepViT-MedSAM's distillation term)."""
    return F.binary_cross_entropy_with_logits(logits, torch.sigmoid(teacher_logits))


def segmentation_loss(
    weights: dict[str, float],
    logits: torch.Tensor,
    target: torch.Tensor,
    iou_pred: torch.Tensor,
    teacher_logits: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted sum of the configured terms; also each unweighted term for the logs."""
    logits = logits.float()
    terms = {
        "dice": lambda: dice_loss(logits, target),
        "focal": lambda: focal_loss(logits, target),
        "bce": lambda: bce_loss(logits, target),
        "iou_mse": lambda: iou_mse_loss(logits, target, iou_pred),
        "teacher_bce": lambda: teacher_bce_loss(logits, teacher_logits.float()),  # type: ignore[union-attr]
    }
    parts = {name: terms[name]() for name in weights}
    total = sum(weights[name] * value for name, value in parts.items())
    return total, {name: float(v.detach()) for name, v in parts.items()}  # type: ignore[return-value]

"""The two training tasks: what one step computes and what validation measures.

Distillation trains the student encoder to reproduce the teacher's image embeddings (MSE); the
saved model is the student encoder with the teacher's prompt encoder and mask decoder, so it
segments right away. Fine-tuning trains the whole box-prompted model on masks.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from MedSAMLiteLib.headless.samples import dice_per_label
from MedSAMLiteLib.core.preprocess import mask_bbox, preprocess
from MedSAMLiteLib.core.profiles import Profile
from MedSAMLiteLib.core.propagate import object_masks
from torch import nn

from ..models.registry import get_spec
from ..models.sam import Sam, build_sam
from .augment import batch_mix
from .config import Config
from .data import TrainingData
from .losses import segmentation_loss
from .modeling import PromptedSam, build_encoder, build_student, build_teacher, copy_prompt_decoder, engine_for, profile_of, prompted_forward

VAL_OBJECTS = 8  # objects per validation image


class Task:
    """What the engine needs from a task."""

    trainable: nn.Module  # wrapped in DistributedDataParallel
    sam: Sam  # the model that is saved (shares parameters with `trainable`)
    profile: Profile
    teacher: Sam | None = None
    objects: int = 0

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor], step: int) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    @torch.no_grad()
    def validate(self, data: TrainingData, indices: list[int], device: torch.device) -> dict[str, float]:
        """Mask DSC against the ground truth on held-out images with tight boxes (and agreement
        with the teacher's masks when there is a teacher), through the inference pipeline."""
        self.sam.eval()
        engine = engine_for(self.sam, self.profile, str(device))
        t_engine = engine_for(self.teacher, self.teacher.spec.profile, str(device)) if self.teacher is not None else None
        dsc, agree = [], []
        for i in indices:
            image, labels = data.raw(i)
            if labels is None or not labels.any():
                continue
            gts, boxes = objects_with_boxes(labels, VAL_OBJECTS)
            masks = object_masks(engine, image, boxes)
            dsc += object_dice(masks, gts)
            if t_engine is not None:
                agree += object_dice(masks, object_masks(t_engine, image, boxes))
        self.sam.train()
        out = {}
        if dsc:
            out["dsc"] = float(np.mean(dsc))
        if agree:
            out["teacher_agreement_dsc"] = float(np.mean(agree))
        return out


def objects_with_boxes(labels: np.ndarray, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The masks (N, H, W) of the first `limit` labels of a 2D label map and their tight xyxy boxes."""
    masks = np.stack([labels == v for v in np.unique(labels) if v > 0][:limit])
    return masks, np.stack([mask_bbox(m) for m in masks])


def object_dice(masks: np.ndarray, reference: np.ndarray) -> list[float]:
    """DSC of each object's mask against its reference mask, objects scored independently
    (nested objects, such as white matter inside the brain, do not hide one another)."""
    return [dice_per_label(m.astype(np.uint8), r.astype(np.uint8), 1)[0] for m, r in zip(masks, reference)]


class DistillTask(Task):
    def __init__(self, cfg: Config) -> None:
        assert cfg.teacher is not None
        self.cfg = cfg
        self.profile = profile_of(cfg.student)
        self.encoder = build_encoder(cfg.student)
        if cfg.student.checkpoint:  # continue from a student (encoder-only or whole model)
            self.encoder = build_student(cfg.student).image_encoder
        self.encoder.train()
        self.trainable = self.encoder
        self.teacher = build_teacher(cfg.teacher)  # also for validation and its decoder
        spec = get_spec(cfg.student.model)
        self.sam = build_sam(self.encoder, self.profile.prompt_space, spec.order, spec.decoder_layer_norm_eps)
        copy_prompt_decoder(self.teacher, self.sam)
        for p in list(self.sam.prompt_encoder.parameters()) + list(self.sam.mask_decoder.parameters()):
            p.requires_grad_(False)

    def loss(self, model, batch, step):
        x = batch["image"]
        if "embedding" in batch:
            target = batch["embedding"]
        else:
            t_in = batch["teacher_image"]
            if self.cfg.augment.batch_mix:
                gen = torch.Generator().manual_seed(int(np.random.SeedSequence([self.cfg.seed, step, _rank()]).generate_state(1)[0]))
                (x, t_in), _ = batch_mix([x, t_in], self.cfg.augment.batch_mix, gen)
            with torch.no_grad():
                target = self.teacher.image_encoder(t_in)
        pred = model(x)
        loss = F.mse_loss(pred.float(), target.float())
        return loss, {"mse": float(loss.detach())}

    @torch.no_grad()
    def validate(self, data, indices, device):
        mse = []
        self.encoder.eval()
        for i in indices:
            image, _ = data.raw(i)
            x, _ = preprocess(image, self.profile)
            xt, _ = preprocess(image, self.teacher.spec.profile)
            s = self.encoder(torch.from_numpy(x).to(device))
            t = self.teacher.image_encoder(torch.from_numpy(xt).to(device))
            mse.append(float(F.mse_loss(s, t)))
        self.encoder.train()
        return {"mse": float(np.mean(mse)) if mse else float("nan"), **super().validate(data, indices, device)}


class FinetuneTask(Task):
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.profile = profile_of(cfg.student)
        self.sam = build_student(cfg.student)
        self.trainable = PromptedSam(self.sam)
        self.objects = cfg.data.objects_per_image
        self.teacher = build_teacher(cfg.teacher) if cfg.teacher is not None else None

    def loss(self, model, batch, step):
        logits, iou = model(batch["image"], batch["boxes"])
        teacher_logits = None
        if "teacher_bce" in self.cfg.losses:
            with torch.no_grad():
                emb = self.teacher.image_encoder(batch["teacher_image"])
                teacher_logits, _ = prompted_forward(self.teacher, emb, batch["teacher_boxes"])
            teacher_logits = teacher_logits.flatten(0, 1)[:, None]
        target = batch["masks"].flatten(0, 1)[:, None]
        return segmentation_loss(self.cfg.losses, logits.flatten(0, 1)[:, None], target, iou.flatten(), teacher_logits)


def _rank() -> int:
    return torch.distributed.get_rank() if torch.distributed.is_available() and torch.distributed.is_initialized() else 0


def make_task(cfg: Config) -> Task:
    return DistillTask(cfg) if cfg.task == "distill" else FinetuneTask(cfg)

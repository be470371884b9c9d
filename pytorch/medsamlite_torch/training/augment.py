"""Augmentations of the published recipes, applied consistently to image and label map.

Per sample (numpy/cv2, before preprocessing, so student and teacher see the same picture):
flips, rot90, shift-scale-rotate (MedficientSAM: 0.0625 / 0.2 / 90 deg), random-resized-crop
(RepViT-MedSAM distillation). Boxes are drawn from the augmented masks afterwards, so they follow.
Per batch (torch, after preprocessing): CutMix and MixPatch, with one set of random numbers
applied to the student's and the teacher's inputs in relative coordinates.
"""
from __future__ import annotations

import math

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from .config import AugmentConfig


def _flip_rot(image: np.ndarray, labels: np.ndarray | None, cfg: AugmentConfig, rng: np.random.Generator):
    if cfg.hflip and rng.random() < cfg.hflip:
        image, labels = image[:, ::-1], None if labels is None else labels[:, ::-1]
    if cfg.vflip and rng.random() < cfg.vflip:
        image, labels = image[::-1], None if labels is None else labels[::-1]
    if cfg.rot90 and rng.random() < cfg.rot90:
        k = int(rng.integers(1, 4))
        image, labels = np.rot90(image, k), None if labels is None else np.rot90(labels, k)
    return image, labels


def shift_scale_rotate(image, labels, rng: np.random.Generator, shift: float, scale: float, rotate: float):
    """Random affine about the centre: shift by up to `shift` of the size, zoom by 1 +/- `scale`,
    rotate by up to +/- `rotate` degrees; linear for the image, nearest for the labels, zero border."""
    h, w = image.shape[:2]
    angle = rng.uniform(-rotate, rotate)
    zoom = rng.uniform(1 - scale, 1 + scale)
    dx, dy = rng.uniform(-shift, shift, size=2)
    m = cv2.getRotationMatrix2D((w / 2 - 0.5, h / 2 - 0.5), angle, zoom)
    m[:, 2] += (dx * w, dy * h)
    warp = dict(dsize=(w, h), borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    image = cv2.warpAffine(np.ascontiguousarray(image), m, flags=cv2.INTER_LINEAR, **warp)
    if labels is not None:
        src = np.ascontiguousarray(labels)
        dtype = src.dtype
        labels = cv2.warpAffine(src.astype(np.float32 if dtype.itemsize > 2 else dtype), m, flags=cv2.INTER_NEAREST, **warp)
        labels = labels.astype(dtype)
    return image, labels


def random_resized_crop(image, labels, rng: np.random.Generator, scale=(0.3, 1.0), ratio=(3 / 4, 4 / 3)):
    """Crop a random area fraction `scale` with aspect `ratio` (log-uniform); the preprocessing then
    resizes the crop's longest side to the network size, as RandomResizedCrop does up to padding."""
    h, w = image.shape[:2]
    for _ in range(10):
        area = h * w * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        cw, ch = int(round(math.sqrt(area * aspect))), int(round(math.sqrt(area / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            return image[y0 : y0 + ch, x0 : x0 + cw], None if labels is None else labels[y0 : y0 + ch, x0 : x0 + cw]
    return image, labels


def augment_sample(image: np.ndarray, labels: np.ndarray | None, cfg: AugmentConfig, rng: np.random.Generator, need_objects: bool = False):
    """Augment one sample; if the augmented labels lost every object, the original is returned."""
    orig = (image, labels)
    image, labels = _flip_rot(image, labels, cfg, rng)
    if cfg.random_resized_crop and rng.random() < cfg.random_resized_crop.get("p", 1.0):
        c = cfg.random_resized_crop
        image, labels = random_resized_crop(image, labels, rng, tuple(c.get("scale", (0.3, 1.0))), tuple(c.get("ratio", (3 / 4, 4 / 3))))
    if cfg.shift_scale_rotate and rng.random() < cfg.shift_scale_rotate.get("p", 0.5):
        c = cfg.shift_scale_rotate
        image, labels = shift_scale_rotate(image, labels, rng, c.get("shift", 0.0625), c.get("scale", 0.2), c.get("rotate", 90))
    if need_objects and labels is not None and not labels.any():
        image, labels = orig
    return np.ascontiguousarray(image), None if labels is None else np.ascontiguousarray(labels)


def batch_mix(inputs: list[torch.Tensor], cfg: dict, generator: torch.Generator) -> tuple[list[torch.Tensor], str]:
    """One of CutMix / MixPatch / nothing (drawn by weight) applied identically to every tensor in
    `inputs` (same batch, possibly different sizes), mixing each sample with a permuted batch."""
    kinds = [k for k in ("cutmix", "mixpatch", "none") if float(cfg.get(k, 1.0)) > 0]
    weights = torch.tensor([float(cfg.get(k, 1.0)) for k in kinds])
    kind = kinds[int(torch.multinomial(weights, 1, generator=generator))]
    b = inputs[0].shape[0]
    if kind == "none" or b < 2:
        return inputs, "none"
    perm = torch.randperm(b, generator=generator)
    if kind == "cutmix":
        lam = float(torch.rand(1, generator=generator))  # Beta(1, 1)
        cut = math.sqrt(1 - lam)
        cx, cy = torch.rand(2, generator=generator).tolist()
        out = []
        for x in inputs:
            s = x.shape[-1]
            x0, x1 = int(max(cx - cut / 2, 0) * s), int(min(cx + cut / 2, 1) * s)
            y0, y1 = int(max(cy - cut / 2, 0) * s), int(min(cy + cut / 2, 1) * s)
            x = x.clone()
            x[..., y0:y1, x0:x1] = x[perm][..., y0:y1, x0:x1]
            out.append(x)
        return out, kind
    grid = int(cfg.get("grid", 4))  # 256-px patches of a 1024 input
    lam = torch.rand(1, 1, grid, grid, generator=generator)  # Beta(1, 1) per patch position
    out = []
    for x in inputs:
        weight = F.interpolate(lam.to(x.device, x.dtype), size=x.shape[-2:], mode="nearest")
        out.append(weight * x + (1 - weight) * x[perm])
    return out, kind

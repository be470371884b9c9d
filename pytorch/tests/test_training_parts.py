"""Pieces of the training pipeline checked against hand computations and plain numpy."""
import math
import pickle
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from medsamlite_torch.training.augment import augment_sample, batch_mix
from medsamlite_torch.training.config import AugmentConfig, ScheduleConfig, load_config
from medsamlite_torch.training.data import BalancedSampler, NpzReader, jittered_box, lowres_mask, modality_of, split_cases
from medsamlite_torch.training.engine import lr_lambda
from medsamlite_torch.training.losses import bce_loss, dice_loss, focal_loss, iou_mse_loss

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_balanced_sampler_draws_modalities_equally_and_shards_exactly():
    groups = ["CT"] * 90 + ["MR"] * 10
    s = BalancedSampler(groups, batch_size=4, samples_per_epoch=2000, seed=1)
    order = s.global_order(0)
    counts = Counter(groups[i] for i, _ in order)
    assert abs(counts["MR"] - 1000) < 100  # 10 % of the items, half of the draws (binomial sd 22)
    assert order != s.global_order(1) and order == BalancedSampler(groups, 4, samples_per_epoch=2000, seed=1).global_order(0)
    ranks = [BalancedSampler(groups, 4, samples_per_epoch=2000, seed=1, rank=r, world_size=2) for r in (0, 1)]
    local = [list(r) for r in ranks]
    for step in range(len(order) // 4):  # each global batch = the two local batches of 2
        assert sorted(order[4 * step : 4 * step + 4]) == sorted(local[0][2 * step : 2 * step + 2] + local[1][2 * step : 2 * step + 2])
    ranks[0].set_epoch(0, start=6)
    assert list(ranks[0]) == local[0][6:] and len(ranks[0]) == 1000 - 6


def test_modality_and_case_split():
    assert modality_of(Path("x/2DBox_Dermoscopy_0001.npz")) == "Dermoscopy"
    assert modality_of(Path("US/case7.npz")) == "US"
    files = [Path(f"3DBox_CT_{i}.npz") for i in range(10)]
    train, val = split_cases(files, 0.2)
    assert len(val) == 2 and not set(train) & set(val) and split_cases(files, 0.2) == (train, val)


def _coded_sample(shape=(60, 80)):
    labels = np.zeros(shape, np.uint16)
    labels[10:30, 20:50] = 1
    labels[35:55, 5:15] = 2
    return (labels * 100).astype(np.uint8), labels


@pytest.mark.parametrize("seed", range(6))
def test_flips_rot90_and_crop_move_image_and_labels_together(seed):
    image, labels = _coded_sample()
    cfg = AugmentConfig(hflip=0.5, vflip=0.5, rot90=0.5, random_resized_crop={"p": 1.0, "scale": [0.3, 1.0]})
    img, lab = augment_sample(image, labels, cfg, np.random.default_rng(seed))
    np.testing.assert_array_equal(img, (lab * 100).astype(np.uint8))


def test_shift_scale_rotate_keeps_the_mask_on_the_image():
    image, labels = _coded_sample((120, 160))
    cfg = AugmentConfig(shift_scale_rotate={"p": 1.0, "shift": 0.0625, "scale": 0.2, "rotate": 90})
    img, lab = augment_sample(image, labels, cfg, np.random.default_rng(4))
    assert not np.array_equal(lab, labels)
    fg = lab > 0
    agree = np.mean((img > 50) == fg)
    assert agree > 0.97 and fg.sum() > 0.5 * (labels > 0).sum()


def test_batch_mix_is_the_same_at_every_input_size():
    b = 4
    values = torch.arange(1, b + 1, dtype=torch.float32).view(b, 1, 1, 1)
    small, large = values.expand(b, 3, 64, 64), values.expand(b, 3, 128, 128)
    for kind in ("cutmix", "mixpatch"):
        (s, l), got = batch_mix([small, large], {kind: 1, "cutmix" if kind == "mixpatch" else "mixpatch": 0, "none": 0}, torch.Generator().manual_seed(5))
        assert got == kind
        up = torch.nn.functional.interpolate(s, size=128, mode="nearest")
        changed = (l != large).float().mean()
        assert changed > 0.01
        assert (up - l).abs().max() < 1e-5 if kind == "mixpatch" else (up != l).float().mean() < 2 / 64


def test_losses_against_hand_computations():
    target = torch.zeros(2, 1, 4, 4)
    target[0, 0, :2] = 1
    logits = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    p, g = torch.sigmoid(logits).numpy().reshape(2, -1), target.numpy().reshape(2, -1)
    dice_np = np.mean([1 - (2 * (pi * gi).sum() + 1e-5) / ((pi**2).sum() + (gi**2).sum() + 1e-5) for pi, gi in zip(p, g)])
    assert float(dice_loss(logits, target)) == pytest.approx(dice_np, rel=1e-5)
    ce = -(g * np.log(p) + (1 - g) * np.log(1 - p))
    pt = np.where(g == 1, p, 1 - p)
    assert float(bce_loss(logits, target)) == pytest.approx(ce.mean(), rel=1e-5)
    assert float(focal_loss(logits, target)) == pytest.approx(((1 - pt) ** 2 * ce).mean(), rel=1e-4)
    # IoU target: object 0 predicted on rows 0-2 (8 of 12 pixels right), object 1 empty vs empty
    pred = torch.full((2, 1, 4, 4), -5.0)
    pred[0, 0, :3] = 5
    iou_pred = torch.tensor([[0.5], [0.25]])
    expected = ((0.5 - 8 / 12) ** 2 + (0.25 - 1.0) ** 2) / 2
    assert float(iou_mse_loss(pred, target, iou_pred)) == pytest.approx(expected, rel=1e-6)
    perfect = torch.where(target > 0, 30.0, -30.0)
    assert float(dice_loss(perfect[:1], target[:1])) < 1e-6


def test_box_jitter_and_lowres_mask():
    mask = np.zeros((100, 200), bool)
    mask[20:40, 50:120] = True
    rng = np.random.default_rng(0)
    for _ in range(50):
        x0, y0, x1, y1 = jittered_box(mask, 5, rng)
        assert 45 <= x0 <= 50 and 15 <= y0 <= 20 and 119 <= x1 <= 124 and 39 <= y1 <= 44
    low = lowres_mask(mask)
    assert low.shape == (256, 256) and low[128:].sum() == 0  # content in the top 128 rows (100 * 256/200)
    assert low.sum() == pytest.approx(mask.sum() * (256 / 200) ** 2, rel=0.1)


def test_uncompressed_npz_is_memory_mapped(tmp_path):
    imgs = np.random.default_rng(0).integers(0, 255, (5, 30, 40), dtype=np.uint8)
    np.savez(tmp_path / "3DBox_MR_a.npz", imgs=imgs, gts=(imgs > 128).astype(np.uint16))
    np.savez_compressed(tmp_path / "3DBox_MR_b.npz", imgs=imgs)
    reader = NpzReader()
    a, b = reader.get(tmp_path / "3DBox_MR_a.npz", "imgs"), reader.get(tmp_path / "3DBox_MR_b.npz", "imgs")
    assert isinstance(a, np.memmap) and not isinstance(b, np.memmap)
    np.testing.assert_array_equal(a, imgs)
    np.testing.assert_array_equal(b, imgs)
    np.testing.assert_array_equal(reader.labels(tmp_path / "3DBox_MR_a.npz", 3), imgs[3] > 128)
    with zipfile.ZipFile(tmp_path / "3DBox_MR_a.npz") as zf:
        assert zf.getinfo("imgs.npy").compress_type == zipfile.ZIP_STORED
    # what a spawned DataLoader worker receives: no array data, and it still reads
    copy = pickle.loads(pickle.dumps(reader))
    assert len(pickle.dumps(reader)) < 1000
    np.testing.assert_array_equal(copy.get(tmp_path / "3DBox_MR_b.npz", "imgs"), imgs)


def test_schedules_by_hand():
    f = lr_lambda(ScheduleConfig(kind="exponential", gamma=0.5), 0.075, steps_per_epoch=10, total_steps=80)
    assert [f(s) for s in (0, 9, 10, 25)] == [1, 1, 0.5, 0.25]
    f = lr_lambda(ScheduleConfig(kind="cosine", min_lr=0.0), 2e-6, 10, 100)
    assert f(0) == 1 and f(50) == pytest.approx(0.5) and f(100) == pytest.approx(0)
    f = lr_lambda(ScheduleConfig(kind="step", gamma=0.1, step_epochs=2, warmup_epochs=1, warmup_lr=1e-4), 1.171875e-4, 10, 90)
    assert f(5) * 1.171875e-4 == pytest.approx(1e-4) and f(10) == 1 and f(20) == pytest.approx(0.1) and f(45) == pytest.approx(0.01)
    f = lr_lambda(ScheduleConfig(kind="constant", warmup_steps=4), 1e-3, 10, 100)
    assert [f(s) for s in (0, 3, 4)] == [0.25, 1, 1]
    assert math.isclose(f(99), 1)


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_are_valid(path):
    cfg = load_config(path)
    assert cfg.task in path.name or (cfg.task == "finetune" and "finetune" in path.name)
    assert cfg.losses and cfg.data.train

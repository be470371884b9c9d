"""The training loop shared by distillation and fine-tuning.

One process per device; under `torchrun` (WORLD_SIZE > 1) the trainable module is wrapped in
DistributedDataParallel (NCCL on GPUs, gloo on CPUs) and each process takes every W-th sample of
the epoch's global order, so the same config gives the same steps on 1 or W processes. AdamW, the
recipes' schedules (per optimiser step), gradient clipping, bf16 autocast on CUDA, checkpoints
with exact resume, validation on held-out cases, CSV + TensorBoard logs and a progress bar.
"""
from __future__ import annotations

import contextlib
import csv
import math
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader

from ..checkpoint import read_checkpoint
from .config import Config, ConfigError, ScheduleConfig
from .data import BalancedSampler, EmbeddingStoreReader, NpzReader, TrainingData, collate, find_npz, index_files, modality_of, split_cases
from .modeling import load_state_dict_checked, weights_file
from .tasks import Task, make_task


@dataclass
class Dist:
    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: str) -> Dist:
    """Read torchrun's environment; start the process group when there is more than one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_cuda and not torch.cuda.is_available():
        raise ConfigError("train.device: cuda asked for, but this torch has no CUDA device")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    rank = dist.get_rank() if world > 1 else 0
    dev = torch.device(f"cuda:{local}") if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    return Dist(rank, world, local, dev)


def lr_lambda(s: ScheduleConfig, base_lr: float, steps_per_epoch: int, total_steps: int) -> Callable[[int], float]:
    """Learning-rate factor of optimiser step `step` (0-based)."""

    def factor(step: int) -> float:
        epoch = step // steps_per_epoch
        if s.warmup_epochs and epoch < s.warmup_epochs:
            return (s.warmup_lr if s.warmup_lr is not None else base_lr) / base_lr
        if s.warmup_steps and step < s.warmup_steps:
            return (step + 1) / s.warmup_steps
        if s.kind == "exponential":
            return s.gamma**epoch
        if s.kind == "step":
            return s.gamma ** (epoch // max(1, s.step_epochs))
        if s.kind == "cosine":
            t = min(step / max(1, total_steps), 1.0)
            floor = s.min_lr / base_lr
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))
        return 1.0

    return factor


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), *rest))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def atomic_torch_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _set_bn_eval(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


class MetricsLog:
    """`metrics.csv` (step, epoch, split, name, value) and, if installed, TensorBoard scalars."""

    def __init__(self, folder: Path, tensorboard: bool, resume_step: int | None) -> None:
        self.path = folder / "metrics.csv"
        if resume_step is not None and self.path.exists():  # drop rows the interrupted run wrote after the checkpoint
            with self.path.open() as f:
                rows = [r for r in csv.reader(f)]
            keep = [rows[0]] + [r for r in rows[1:] if int(r[0]) <= resume_step]
            with self.path.open("w", newline="") as f:
                csv.writer(f).writerows(keep)
        new = not self.path.exists()
        self.file = self.path.open("a", newline="")
        self.csv = csv.writer(self.file)
        if new:
            self.csv.writerow(["step", "epoch", "split", "name", "value"])
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(folder / "tensorboard"))
            except ImportError:
                print("medsamlite-torch train: TensorBoard is not installed (pip install tensorboard); CSV only", file=sys.stderr)

    def write(self, step: int, epoch: int, split: str, values: dict[str, float]) -> None:
        for name, value in values.items():
            self.csv.writerow([step, epoch, split, name, f"{value:.8g}"])
            if self.tb is not None:
                self.tb.add_scalar(f"{split}/{name}", value, step)
        self.file.flush()

    def close(self) -> None:
        self.file.close()
        if self.tb is not None:
            self.tb.close()


def build_data(cfg: Config, task: Task, main: bool) -> tuple[TrainingData, TrainingData | None, list[int]]:
    """Training and held-out datasets; bad files are reported on one line each and skipped."""
    train_files = find_npz(cfg.data.train)
    val_files = find_npz(cfg.data.val) if cfg.data.val else []
    if not val_files:
        train_files, val_files = split_cases(train_files, cfg.data.val_fraction)
    if cfg.data.include_modalities:
        wanted = set(cfg.data.include_modalities)
        train_files = [f for f in train_files if modality_of(f) in wanted]
        val_files = [f for f in val_files if modality_of(f) in wanted]
    reader = NpzReader(cfg.data.cache_volumes)
    items, problems = index_files(train_files, cfg.data.slices, reader)
    val_items, val_problems = index_files(val_files, "foreground" if cfg.task == "finetune" else "any", reader)
    if main:
        for line in problems + val_problems:
            print(f"medsamlite-torch train: skipped {line}", file=sys.stderr)
    if not items:
        raise ConfigError(f"data.train: no usable training images in {len(train_files)} file(s)")
    needs_teacher_input = cfg.teacher is not None and (
        (cfg.task == "distill" and not cfg.teacher.embeddings) or "teacher_bce" in cfg.losses
    )
    teacher_profile = task.teacher.spec.profile if needs_teacher_input and task.teacher is not None else None
    store = EmbeddingStoreReader(cfg.teacher.embeddings, train_files, items) if cfg.teacher and cfg.teacher.embeddings else None
    common = dict(teacher_profile=teacher_profile, objects=task.objects, box_jitter=cfg.data.box_jitter, cache_volumes=cfg.data.cache_volumes)
    train = TrainingData(train_files, items, task.profile, augment=cfg.augment, embeddings=store, **common)
    if not val_items:
        return train, None, []
    val = TrainingData(val_files, val_items, task.profile, **common)
    labelled = [i for i, it in enumerate(val_items) if it.labels] or list(range(len(val_items)))
    n = min(cfg.data.val_max_items, len(labelled))
    pick = [labelled[int(j)] for j in np.linspace(0, len(labelled) - 1, n).round()] if n else []
    return train, val, sorted(set(pick))


def train(cfg: Config, resume: str | None = None) -> dict[str, Any]:
    """Run a configured training to the end (or `train.max_steps`); returns a summary."""
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    d = setup_distributed(cfg.train.device)
    out = Path(cfg.output_dir)
    if d.main:
        out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)  # the same initial weights in every process
    task = make_task(cfg)
    train_data, val_data, val_idx = build_data(cfg, task, d.main)
    model = task.trainable.to(d.device)
    task.sam.to(d.device)
    if task.teacher is not None:
        task.teacher.to(d.device)
    if cfg.train.sync_bn and d.world > 1 and d.device.type == "cuda" and not cfg.train.freeze_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if cfg.train.freeze_bn:
        _set_bn_eval(model)
    ddp: nn.Module = model
    if d.world > 1:
        ddp = nn.parallel.DistributedDataParallel(
            model, device_ids=[d.local_rank] if d.device.type == "cuda" else None, find_unused_parameters=cfg.task == "finetune"
        )
    params = [p for p in model.parameters() if p.requires_grad]
    o = cfg.optim
    optimizer = torch.optim.AdamW(params, lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)

    sampler = BalancedSampler(
        train_data.modalities,
        cfg.train.batch_size,
        samples_per_epoch=cfg.data.samples_per_epoch,
        balanced=cfg.data.modality_balanced,
        seed=cfg.seed,
        rank=d.rank,
        world_size=d.world,
    )
    local_batch = cfg.train.batch_size // d.world
    steps_per_epoch = sampler.total // cfg.train.batch_size
    total = cfg.train.epochs * steps_per_epoch
    total = min(total, cfg.train.max_steps) if cfg.train.max_steps else total
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg.schedule, o.lr, steps_per_epoch, total))

    step, epoch, in_epoch, best = 0, 0, 0, None
    if resume:
        state = read_checkpoint(resume)
        if not isinstance(state, dict) or "progress" not in state:
            raise ConfigError(f"{resume}: not a training checkpoint (no optimiser/progress state); resume from last.pt or checkpoint-*.pt")
        load_state_dict_checked(task.sam, state["model"], source=resume)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, epoch, in_epoch = (state["progress"][k] for k in ("step", "epoch", "in_epoch"))
        best = state.get("best")
        _set_rng_state(state["rng"])
        if cfg.train.freeze_bn:
            _set_bn_eval(model)
    log = MetricsLog(out, cfg.train.tensorboard, step if resume else None) if d.main else None
    if d.main:
        print(
            f"medsamlite-torch train {cfg.task}: {len(train_data)} training images ({len(set(train_data.modalities))} modalities), "
            f"{len(val_idx)} held-out for validation; {d.world} process(es) on {d.device.type}; "
            f"{steps_per_epoch} steps/epoch, {total} steps, global batch {cfg.train.batch_size}",
            file=sys.stderr,
        )
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16) if d.device.type == "cuda" and cfg.train.precision == "bf16" else contextlib.nullcontext()
    )
    from tqdm import tqdm

    bar = tqdm(total=total, initial=step, disable=not (d.main and cfg.train.progress), desc=cfg.task, unit="step")
    summary: dict[str, Any] = {"output_dir": str(out)}
    t0 = time.perf_counter()
    while step < total:
        if in_epoch >= steps_per_epoch:
            epoch, in_epoch = epoch + 1, 0
        sampler.set_epoch(epoch, in_epoch * local_batch)
        loader = DataLoader(
            train_data, batch_size=local_batch, sampler=sampler, num_workers=cfg.data.num_workers,
            collate_fn=collate, drop_last=True, pin_memory=d.device.type == "cuda",
        )
        for batch in loader:
            batch = {k: v.to(d.device, non_blocking=True) for k, v in batch.items()}
            with autocast:
                loss, parts = task.loss(ddp, batch, step)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(params, o.grad_clip if o.grad_clip else float("inf"))
            optimizer.step()
            lr = scheduler.get_last_lr()[0]
            scheduler.step()
            step, in_epoch = step + 1, in_epoch + 1
            values = _mean_over_ranks({"loss": float(loss.detach()), **parts}, d)
            summary["loss"] = values["loss"]
            if d.main and (step % cfg.train.log_every == 0 or step == 1 or step == total):
                log.write(step, epoch, "train", {**values, "lr": lr, "grad_norm": float(grad_norm)})
                bar.set_postfix(loss=f"{values['loss']:.4g}")
            bar.update(1)
            end_of_epoch = in_epoch == steps_per_epoch
            done = step >= total
            if (cfg.train.val_every and step % cfg.train.val_every == 0) or (not cfg.train.val_every and end_of_epoch) or done:
                metrics = task.validate(val_data, val_idx, d.device) if (d.main and val_data is not None and val_idx) else {}
                if cfg.train.freeze_bn:
                    _set_bn_eval(model)
                if metrics:
                    log.write(step, epoch, "val", metrics)
                    summary["val"] = metrics
                    score = metrics.get("dsc", -metrics.get("mse", 0.0))
                    if best is None or score > best:
                        best = score
                        atomic_torch_save(weights_file(task.sam, cfg.student), out / "best.pth")
                _barrier(d)
            keep = cfg.train.keep_every and step % cfg.train.keep_every == 0
            if keep or (cfg.train.ckpt_every and step % cfg.train.ckpt_every == 0) or (not cfg.train.ckpt_every and end_of_epoch) or done:
                if d.main:
                    state = {
                        **weights_file(task.sam, cfg.student),
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "progress": {"step": step, "epoch": epoch, "in_epoch": in_epoch},
                        "rng": _rng_state(),
                        "best": best,
                        "config": cfg.to_dict(),
                    }
                    atomic_torch_save(state, out / "last.pt")
                    if keep:
                        atomic_torch_save(state, out / f"checkpoint-{step:07d}.pt")
                _barrier(d)
            if done:
                break
    bar.close()
    if d.main:
        atomic_torch_save(weights_file(task.sam, cfg.student), out / "model.pth")
        log.close()
        summary.update(step=step, seconds=time.perf_counter() - t0, model=str(out / "model.pth"))
        print(f"medsamlite-torch train {cfg.task}: {step} steps, last loss {summary.get('loss', float('nan')):.4g}, "
              f"validation {summary.get('val', {})}; wrote {out / 'model.pth'}", file=sys.stderr)
    return summary


def _mean_over_ranks(values: dict[str, float], d: Dist) -> dict[str, float]:
    if d.world == 1:
        return values
    t = torch.tensor(list(values.values()), dtype=torch.float64, device=d.device)
    dist.all_reduce(t)
    return dict(zip(values, (t / d.world).tolist()))


def _barrier(d: Dist) -> None:
    if d.world > 1:
        dist.barrier()

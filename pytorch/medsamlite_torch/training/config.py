"""Training configuration: YAML files mapped onto typed sections, unknown keys refused.

One file describes one run; `--set section.key=value` overrides single values from the
command line (the value is parsed as YAML, so `--set train.epochs=2` gives an int).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A configuration that cannot run; the message names the key."""


@dataclass
class DataConfig:
    train: list[str] = field(default_factory=list)  # folders (searched recursively) or .npz files
    val: list[str] = field(default_factory=list)  # held-out folders/files; else val_fraction of train cases
    val_fraction: float = 0.0  # fraction of training *cases* held out (deterministic by name)
    include_modalities: list[str] = field(default_factory=list)  # DAFT-style subset; empty = all
    slices: str = "auto"  # "any" (distillation), "foreground" (fine-tuning), "auto" = by task
    modality_balanced: bool = True  # draw each modality equally often
    samples_per_epoch: int | None = None  # default: number of training items
    objects_per_image: int = 1  # fine-tuning: objects (box + mask) per image, repeated when fewer
    box_jitter: int = 5  # boxes grow by a random 0..box_jitter px per side
    val_max_items: int = 64  # validation items (slices/images) per evaluation
    num_workers: int = 0
    cache_volumes: int = 2  # decompressed volumes kept per worker (compressed .npz only)


@dataclass
class ModelConfig:
    model: str = "medficient_l0"  # registry name
    checkpoint: str | None = None  # weights to start from (teacher: its weights)
    trust_checkpoint: bool = False  # allow pickled objects (Lightning .ckpt) in `checkpoint`
    image_size: int | None = None  # default: the registry profile's input size
    encoder: dict[str, Any] = field(default_factory=dict)  # architecture overrides (tiny test models)
    decoder_from: str | None = "lite_medsam"  # prompt encoder + mask decoder init when `checkpoint` has none
    embeddings: str | None = None  # teacher only: precomputed embedding store (`medsamlite-torch train embed`)


@dataclass
class AugmentConfig:
    hflip: float = 0.0
    vflip: float = 0.0
    rot90: float = 0.0
    shift_scale_rotate: dict[str, float] | None = None  # {p, shift, scale, rotate}
    random_resized_crop: dict[str, Any] | None = None  # {p, scale: [lo, hi], ratio: [lo, hi]}
    batch_mix: dict[str, float] | None = None  # {cutmix, mixpatch, none: weights, grid: patches per side}


@dataclass
class OptimConfig:
    lr: float = 1e-4
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float | None = None  # max global grad norm


@dataclass
class ScheduleConfig:
    kind: str = "constant"  # constant | exponential | cosine | step
    gamma: float = 0.5  # exponential: per epoch; step: per `step_epochs`
    step_epochs: int = 1
    min_lr: float = 0.0  # cosine floor
    warmup_steps: int = 0  # linear warm-up from 0
    warmup_epochs: int = 0  # constant `warmup_lr` for whole epochs (RepViT-MedSAM)
    warmup_lr: float | None = None


@dataclass
class TrainConfig:
    epochs: int = 1
    max_steps: int | None = None  # stop early after this many optimiser steps
    batch_size: int = 8  # global batch (split over processes)
    precision: str = "bf16"  # bf16 autocast on CUDA; CPU always runs fp32
    device: str = "auto"  # auto | cpu | cuda
    freeze_bn: bool = False  # BatchNorm in eval mode (running statistics); needed for CPU multi-process equality
    sync_bn: bool = True  # SyncBatchNorm across GPUs (CUDA only)
    log_every: int = 10
    val_every: int | None = None  # steps; default: end of each epoch
    ckpt_every: int | None = None  # steps; default: end of each epoch
    keep_every: int | None = None  # also keep checkpoint-<step>.pt every this many steps
    tensorboard: bool = True
    progress: bool = True
    threads: int | None = None  # CPU threads per process


@dataclass
class Config:
    task: str = "finetune"  # distill | finetune
    seed: int = 0
    output_dir: str = "runs/train"
    data: DataConfig = field(default_factory=DataConfig)
    student: ModelConfig = field(default_factory=ModelConfig)
    teacher: ModelConfig | None = None
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    losses: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_SECTIONS = {
    "data": DataConfig,
    "student": ModelConfig,
    "teacher": ModelConfig,
    "augment": AugmentConfig,
    "optim": OptimConfig,
    "schedule": ScheduleConfig,
    "train": TrainConfig,
}
DISTILL_LOSSES = {"mse"}
FINETUNE_LOSSES = {"dice", "bce", "focal", "iou_mse", "teacher_bce"}


def _section(cls: type, values: Any, where: str) -> Any:
    if values is None:
        return None if where == "teacher" else cls()
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a mapping, found {type(values).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(names))})")
    obj = cls(**values)
    if isinstance(obj, OptimConfig):
        obj.betas = tuple(obj.betas)  # type: ignore[assignment]
    return obj


def config_from_dict(raw: dict[str, Any]) -> Config:
    if not isinstance(raw, dict):
        raise ConfigError("the config must be a mapping of sections")
    names = {f.name for f in dataclasses.fields(Config)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ConfigError(f"unknown section(s) {', '.join(unknown)} (known: {', '.join(sorted(names))})")
    kwargs = {k: (_section(_SECTIONS[k], v, k) if k in _SECTIONS else v) for k, v in raw.items()}
    cfg = Config(**kwargs)
    validate(cfg)
    return cfg


def validate(cfg: Config) -> None:
    if cfg.task not in ("distill", "finetune"):
        raise ConfigError(f"task: {cfg.task!r}, expected distill or finetune")
    allowed = DISTILL_LOSSES if cfg.task == "distill" else FINETUNE_LOSSES
    losses = cfg.losses or ({"mse": 1.0} if cfg.task == "distill" else {"dice": 1.0, "bce": 1.0})
    bad = sorted(set(losses) - allowed)
    if bad:
        raise ConfigError(f"losses: {', '.join(bad)} not available for {cfg.task} (choose from {', '.join(sorted(allowed))})")
    cfg.losses = {k: float(v) for k, v in losses.items()}
    if cfg.task == "distill" and cfg.teacher is None:
        cfg.teacher = ModelConfig(model="lite_medsam")
    if "teacher_bce" in cfg.losses and cfg.teacher is None:
        raise ConfigError("losses.teacher_bce needs a teacher section (the model whose logits are the targets)")
    if not cfg.data.train:
        raise ConfigError("data.train: no training folders or files given")
    if cfg.data.slices == "auto":
        cfg.data.slices = "any" if cfg.task == "distill" else "foreground"
    if cfg.data.slices not in ("any", "foreground"):
        raise ConfigError(f"data.slices: {cfg.data.slices!r}, expected any, foreground or auto")
    if cfg.schedule.kind not in ("constant", "exponential", "cosine", "step"):
        raise ConfigError(f"schedule.kind: {cfg.schedule.kind!r}, expected constant, exponential, cosine or step")
    if cfg.train.precision not in ("bf16", "fp32"):
        raise ConfigError(f"train.precision: {cfg.train.precision!r}, expected bf16 or fp32")
    if cfg.train.batch_size < 1 or cfg.data.objects_per_image < 1:
        raise ConfigError("train.batch_size and data.objects_per_image must be at least 1")
    uses_store = cfg.teacher is not None and cfg.teacher.embeddings
    if uses_store:
        spatial = [k for k in ("hflip", "vflip", "rot90") if getattr(cfg.augment, k)]
        spatial += [k for k in ("shift_scale_rotate", "random_resized_crop", "batch_mix") if getattr(cfg.augment, k)]
        if spatial or cfg.task != "distill":
            raise ConfigError(
                "teacher.embeddings: a stored embedding belongs to the unaugmented image, so it works only for "
                f"distillation without augmentation (found: {', '.join(spatial) or 'task ' + cfg.task})"
            )


def set_value(raw: dict[str, Any], assignment: str) -> None:
    """Apply one `section.key=value` override (value parsed as YAML) to a raw config dict."""
    import yaml

    if "=" not in assignment:
        raise ConfigError(f"--set {assignment!r}: expected key=value")
    key, value = assignment.split("=", 1)
    node = raw
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {key}: {part} is not a section")
    node[parts[-1]] = yaml.safe_load(value)


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read a YAML config (relative data paths resolve against the current directory)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from e
    for assignment in overrides or []:
        set_value(raw, assignment)
    try:
        return config_from_dict(raw)
    except TypeError as e:
        raise ConfigError(f"{path}: {e}") from e

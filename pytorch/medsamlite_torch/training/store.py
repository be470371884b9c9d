"""Precomputed teacher embeddings: one float16 (256, 64, 64) array per training image or slice.

Computing a heavy teacher (MedSAM ViT-B) once instead of every epoch trades disk for time:
2 MiB per image, so the size is printed (and the free space checked) before anything is written.
Only unaugmented images have stored embeddings, so the store serves augmentation-free distillation.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from MedSAMLiteLib.core.preprocess import preprocess
from tqdm import tqdm

from .config import Config, ConfigError
from .data import NpzReader, find_npz, index_files
from .modeling import build_teacher

EMBEDDING_SHAPE = (256, 64, 64)
BYTES_PER_ITEM = int(np.prod(EMBEDDING_SHAPE)) * 2  # float16


def write_store(cfg: Config, out_dir: str | Path, batch_size: int = 8, dry_run: bool = False, device: str = "cpu") -> Path:
    """Embed every image/slice of `data.train` (all slices: distillation uses any slice) with the teacher."""
    if cfg.teacher is None:
        raise ConfigError("the config has no teacher section")
    out = Path(out_dir)
    files = find_npz(cfg.data.train)
    reader = NpzReader(cfg.data.cache_volumes)
    items, problems = index_files(files, "any", reader)
    for line in problems:
        print(f"medsamlite-torch train embed: skipped {line}", file=sys.stderr)
    size = len(items) * BYTES_PER_ITEM
    print(f"medsamlite-torch train embed: {len(items)} images/slices from {len(files)} files -> {size / 2**30:.2f} GiB in {out}", file=sys.stderr)
    if dry_run:
        return out
    out.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(out).free
    if size > free:
        raise ConfigError(f"{out}: the store needs {size / 2**30:.2f} GiB but only {free / 2**30:.2f} GiB are free")
    teacher = build_teacher(cfg.teacher).to(device)
    partial = out / "embeddings.partial.npy"
    array = np.lib.format.open_memmap(partial, mode="w+", dtype=np.float16, shape=(len(items), *EMBEDDING_SHAPE))
    with torch.no_grad():
        for start in tqdm(range(0, len(items), batch_size), desc="embed", unit="batch"):
            chunk = items[start : start + batch_size]
            x = np.concatenate([preprocess(reader.image(files[it.file], it.z), teacher.spec.profile)[0] for it in chunk])
            emb = teacher.image_encoder(torch.from_numpy(x).to(device))
            array[start : start + len(chunk)] = emb.float().cpu().numpy().astype(np.float16)
    array.flush()
    del array
    index = {
        "teacher": cfg.teacher.model,
        "checkpoint": cfg.teacher.checkpoint,
        "dtype": "float16",
        "shape": [len(items), *EMBEDDING_SHAPE],
        "items": [[files[it.file].name, it.z] for it in items],
    }
    tmp = out / ".index.json.tmp"
    tmp.write_text(json.dumps(index))
    os.replace(partial, out / "embeddings.npy")
    os.replace(tmp, out / "index.json")
    return out

"""Training data over folders of challenge `.npz` files (PIPELINES.md §1, §5).

A training *item* is one 2D image or one slice of a 3D volume, with the labels present in it.
Arrays are read lazily: members stored uncompressed (`np.savez`) are memory-mapped, compressed
ones (`np.savez_compressed`) are decompressed on first use and a few kept per worker.
Every sample arrives with its own seed from the sampler, so augmentation does not depend on the
worker, the number of processes or an interrupted run (exact resume, DDP = single process).
"""
from __future__ import annotations

import struct
import zipfile
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from MedSAMLiteLib.headless.cases import case_kind
from MedSAMLiteLib.core.preprocess import Geometry, map_boxes, mask_bbox, preprocess
from MedSAMLiteLib.core.profiles import Profile
from torch.utils.data import Dataset, Sampler

from .augment import augment_sample
from .config import AugmentConfig

LOWRES = 256  # the mask decoder's output grid


class DataError(ValueError):
    """A training file that cannot be used; the message names it."""


@dataclass(frozen=True)
class Item:
    file: int  # index into TrainingData.files
    z: int  # slice index, -1 for 2D images
    labels: tuple[int, ...]  # labels present in this image/slice


def modality_of(path: Path) -> str:
    """`2DBox_<Modality>_<id>.npz` -> Modality; otherwise the parent folder's name."""
    parts = path.name.split("_")
    if path.name.startswith(("2D", "3D")) and len(parts) >= 3:
        return parts[1]
    return path.parent.name or "unknown"


def find_npz(paths: list[str]) -> list[Path]:
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files.extend(sorted(p.rglob("*.npz")))
        elif p.is_file():
            files.append(p)
        else:
            raise DataError(f"{p}: no such file or folder")
    return files


def split_cases(files: list[Path], fraction: float) -> tuple[list[Path], list[Path]]:
    """Hold out round(fraction * n) whole cases (at least one), chosen by a hash of the name."""
    if fraction <= 0:
        return files, []
    n_val = max(1, round(fraction * len(files)))
    if n_val >= len(files):
        raise DataError(f"data.val_fraction {fraction} leaves no training case out of {len(files)}")
    order = sorted(files, key=lambda f: (zlib.crc32(f.name.encode()), f.name))
    held = set(order[:n_val])
    return [f for f in files if f not in held], [f for f in files if f in held]


def _memmap_member(path: Path, key: str) -> np.ndarray | None:
    """Memory-map `key` of an uncompressed .npz; None when the member is compressed."""
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(f"{key}.npy")
    if info.compress_type != zipfile.ZIP_STORED:
        return None
    with path.open("rb") as f:
        f.seek(info.header_offset)
        header = f.read(30)
        name_len, extra_len = struct.unpack("<HH", header[26:30])
        f.seek(info.header_offset + 30 + name_len + extra_len)
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(f)
        offset = f.tell()
    if dtype.hasobject:
        raise DataError(f"{path}: {key} holds Python objects")
    return np.memmap(path, dtype=dtype, mode="r", shape=shape, order="F" if fortran else "C", offset=offset)


class NpzReader:
    """Per-process access to `imgs` / `gts` of many files (memory maps, or a small LRU of arrays)."""

    def __init__(self, cache_size: int = 2) -> None:
        self.cache_size = max(1, cache_size)
        self._arrays: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()

    def __getstate__(self) -> dict:
        """Pickled for DataLoader workers (spawn/forkserver): without the open arrays, which
        would otherwise be copied whole into every worker."""
        return {"cache_size": self.cache_size, "_arrays": OrderedDict()}

    def get(self, path: Path, key: str) -> np.ndarray:
        k = (str(path), key)
        if k in self._arrays:
            self._arrays.move_to_end(k)
            return self._arrays[k]
        try:
            arr = _memmap_member(path, key)
            if arr is None:
                with np.load(path, allow_pickle=False) as data:
                    arr = data[key]
        except KeyError:
            raise DataError(f"{path}: no `{key}` array") from None
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
            raise DataError(f"{path}: unreadable .npz ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from e
        self._arrays[k] = arr
        while len(self._arrays) > self.cache_size:
            self._arrays.popitem(last=False)
        return arr

    def image(self, path: Path, z: int) -> np.ndarray:
        imgs = self.get(path, "imgs")
        return np.asarray(imgs[z] if z >= 0 else imgs)

    def labels(self, path: Path, z: int) -> np.ndarray:
        gts = self.get(path, "gts")
        return np.asarray(gts[z] if z >= 0 else gts)


def index_files(files: list[Path], slices: str, reader: NpzReader) -> tuple[list[Item], list[str]]:
    """Items of every file (foreground-only when `slices == "foreground"`), and one line per bad file."""
    items: list[Item] = []
    problems: list[str] = []
    for i, path in enumerate(files):
        try:
            kind = case_kind(path.name[:-4] if path.name.endswith(".npz") else path.stem)
            imgs = reader.get(path, "imgs")
            if imgs.dtype != np.uint8:
                raise DataError(f"{path}: imgs dtype {imgs.dtype}, expected uint8")
            gts = reader.get(path, "gts") if slices == "foreground" or _has(path, "gts") else None
            if kind == "3D":
                if imgs.ndim != 3:
                    raise DataError(f"{path}: 3D imgs shape {imgs.shape}, expected (D,H,W)")
                if gts is not None and gts.shape != imgs.shape:
                    raise DataError(f"{path}: gts shape {gts.shape} differs from imgs {imgs.shape}")
                for z in range(imgs.shape[0]):
                    labels = _present(gts[z]) if gts is not None else ()
                    if labels or slices == "any":
                        items.append(Item(i, z, labels))
            else:
                if not (imgs.ndim == 2 or (imgs.ndim == 3 and imgs.shape[2] in (1, 3))):
                    raise DataError(f"{path}: 2D imgs shape {imgs.shape}, expected (H,W,3) or (H,W)")
                if gts is not None and gts.shape != imgs.shape[:2]:
                    raise DataError(f"{path}: gts shape {gts.shape} differs from the image {imgs.shape[:2]}")
                labels = _present(gts) if gts is not None else ()
                if labels or slices == "any":
                    items.append(Item(i, -1, labels))
        except (DataError, ValueError) as e:
            problems.append(str(e) if str(path) in str(e) else f"{path}: {e}")
    return items, problems


def _has(path: Path, key: str) -> bool:
    try:
        with zipfile.ZipFile(path) as zf:
            return f"{key}.npy" in zf.namelist()
    except (zipfile.BadZipFile, OSError) as e:
        raise DataError(f"{path}: unreadable .npz ({e})") from e


def _present(labels: np.ndarray) -> tuple[int, ...]:
    values = np.unique(labels)
    return tuple(int(v) for v in values if v > 0)


def lowres_mask(mask: np.ndarray, size: int = LOWRES) -> np.ndarray:
    """Boolean (H, W) mask -> the decoder's (size, size) grid: longest side to `size`, zero-padded."""
    geom = Geometry.of(mask.shape[0], mask.shape[1], size)
    small = cv2.resize(mask.astype(np.uint8), (geom.new_width, geom.new_height), interpolation=cv2.INTER_NEAREST)
    out = np.zeros((size, size), dtype=np.float32)
    out[: geom.new_height, : geom.new_width] = small
    return out


def jittered_box(mask: np.ndarray, jitter: int, rng: np.random.Generator) -> np.ndarray:
    """Tight xyxy box of `mask` grown by a random 0..jitter px per side, clipped to the image."""
    box = mask_bbox(mask)
    assert box is not None
    grow = rng.integers(0, jitter + 1, size=4) if jitter > 0 else np.zeros(4)
    h, w = mask.shape
    x0, y0, x1, y1 = box + grow * np.array([-1, -1, 1, 1])
    return np.array([max(0, x0), max(0, y0), min(w, x1), min(h, y1)], dtype=np.float64)


class TrainingData(Dataset):
    """Map-style dataset indexed by `(item, seed)` pairs from `BalancedSampler`.

    Returns `image` (3,S,S) preprocessed by the student's profile and, as the task needs,
    `teacher_image`, `boxes`/`teacher_boxes` (K,4) in each prompt space, `masks` (K,256,256).
    """

    def __init__(
        self,
        files: list[Path],
        items: list[Item],
        profile: Profile,
        *,
        teacher_profile: Profile | None = None,
        objects: int = 0,  # 0: no prompts (distillation); else K objects per image
        box_jitter: int = 5,
        augment: AugmentConfig | None = None,
        embeddings: "EmbeddingStoreReader | None" = None,
        cache_volumes: int = 2,
    ) -> None:
        self.files, self.items = files, items
        self.profile, self.teacher_profile = profile, teacher_profile
        self.objects, self.box_jitter = objects, box_jitter
        self.augment = augment or AugmentConfig()
        self.embeddings = embeddings
        self.reader = NpzReader(cache_volumes)
        self.modalities = [modality_of(files[it.file]) for it in items]

    def __len__(self) -> int:
        return len(self.items)

    def raw(self, index: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Image (H,W[,3]) uint8 and label map (or None) of one item, unaugmented."""
        item = self.items[index]
        path = self.files[item.file]
        labels = self.reader.labels(path, item.z) if item.labels or self.objects else None
        return self.reader.image(path, item.z), labels

    def __getitem__(self, key: tuple[int, int] | int) -> dict[str, np.ndarray]:
        index, seed = key if isinstance(key, tuple) else (key, 0)
        rng = np.random.default_rng(seed)
        image, labels = self.raw(index)
        image, labels = augment_sample(image, labels, self.augment, rng, need_objects=bool(self.objects))
        out: dict[str, np.ndarray] = {"index": np.int64(index)}
        x, geom = preprocess(image, self.profile)
        out["image"] = x[0]
        if self.teacher_profile is not None:
            xt, geom_t = preprocess(image, self.teacher_profile)
            out["teacher_image"] = xt[0]
        if self.embeddings is not None:
            out["embedding"] = self.embeddings.get(index).astype(np.float32)
        if self.objects:
            present = _present(labels)
            chosen = rng.choice(present, size=self.objects, replace=len(present) < self.objects)
            masks = [labels == v for v in chosen]
            boxes = np.stack([jittered_box(m, self.box_jitter, rng) for m in masks])
            out["boxes"] = map_boxes(boxes, geom)
            if self.teacher_profile is not None:
                out["teacher_boxes"] = map_boxes(boxes, geom_t)
            out["masks"] = np.stack([lowres_mask(m) for m in masks])
        return out


class BalancedSampler(Sampler):
    """Epoch-seeded order of `(item, sample_seed)` pairs, optionally modality-balanced, sharded by rank.

    The global order of an epoch depends only on (seed, epoch): rank r takes positions r, r+W, ...,
    so W processes with batch B/W see, per step, exactly the samples of one process with batch B.
    `start` skips samples this rank already consumed (resume mid-epoch).
    """

    def __init__(
        self,
        groups: list[str],
        batch_size: int,
        *,
        samples_per_epoch: int | None = None,
        balanced: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if batch_size % world_size:
            raise ValueError(f"global batch {batch_size} is not divisible by {world_size} processes")
        if not groups:
            raise ValueError("no training items")
        names = sorted(set(groups))
        self.members = [np.flatnonzero(np.array(groups) == n) for n in names]
        n = samples_per_epoch or len(groups)
        self.total = max(batch_size, (n // batch_size) * batch_size)  # whole global batches only
        self.balanced, self.seed, self.rank, self.world = balanced, seed, rank, world_size
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def global_order(self, epoch: int) -> list[tuple[int, int]]:
        rng = np.random.default_rng([self.seed, epoch])
        if self.balanced:
            which = rng.integers(len(self.members), size=self.total)
            sizes = np.array([len(m) for m in self.members])
            pick = (rng.random(self.total) * sizes[which]).astype(np.int64)
            items = np.array([self.members[w][p] for w, p in zip(which, pick)], dtype=np.int64)
        else:
            n = sum(len(m) for m in self.members)
            reps = -(-self.total // n)
            items = np.concatenate([rng.permutation(n) for _ in range(reps)])[: self.total]
        seeds = rng.integers(0, 2**31 - 1, size=self.total)
        return list(zip(items.tolist(), seeds.tolist()))

    def __iter__(self):
        local = self.global_order(self.epoch)[self.rank :: self.world]
        return iter(local[self.start :])

    def __len__(self) -> int:
        return self.total // self.world - self.start


class EmbeddingStoreReader:
    """Read side of the precomputed teacher embeddings (see `store.py`), memory-mapped."""

    def __init__(self, folder: str | Path, files: list[Path], items: list[Item]) -> None:
        import json

        folder = Path(folder)
        meta_path = folder / "index.json"
        if not meta_path.is_file():
            raise DataError(f"{folder}: not an embedding store (no index.json; write one with `medsamlite-torch train embed`)")
        meta = json.loads(meta_path.read_text())
        keys = {(k[0], k[1]): i for i, k in enumerate(meta["items"])}
        self.rows = []
        for it in items:
            key = (files[it.file].name, it.z)
            if key not in keys:
                raise DataError(f"{folder}: no stored embedding for {key[0]} slice {key[1]}; rebuild the store for this data")
            self.rows.append(keys[key])
        self.path = folder / "embeddings.npy"
        self.array: np.ndarray | None = None  # memory-mapped on first use, in each worker

    def __getstate__(self) -> dict:
        return {**self.__dict__, "array": None}

    def get(self, index: int) -> np.ndarray:
        if self.array is None:
            self.array = np.load(self.path, mmap_mode="r")
        return np.asarray(self.array[self.rows[index]])


def collate(samples: list[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.stack([s[k] for s in samples])) for k in samples[0]}

"""Access to ../shared/reference: the deterministic weight rule, golden outputs, tolerances."""
from __future__ import annotations

import math
import os
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

REFERENCE = Path(os.environ.get("MEDFICIENT_REFERENCE", Path(__file__).resolve().parents[2] / "shared" / "reference"))
NAMES = ["lite_medsam", "medficient_l0", "medficient_l1", "medficient_l2", "repvit_medsam_m11", "medsam_vit_b"]
BOX_256 = np.array([60, 70, 180, 200], dtype=np.float32)

# Missing reference data fails the tests (CI must check against it); opt out explicitly to skip.
requires_reference = pytest.mark.skipif(
    not REFERENCE.is_dir() and os.environ.get("MEDFICIENT_SKIP_REFERENCE") == "1",
    reason=f"reference data not found at {REFERENCE} (MEDFICIENT_SKIP_REFERENCE=1)",
)


def read_keys(name: str) -> list[tuple[str, tuple[int, ...], str]]:
    rows = []
    for line in (REFERENCE / f"{name}.keys.tsv").read_text().splitlines():
        key, shape, dtype = line.split("\t")
        rows.append((key, tuple(int(s) for s in shape.split(",")) if shape else (), dtype))
    return rows


def rule_value(key: str, shape: tuple[int, ...]) -> np.ndarray:
    """The README's deterministic weight rule, literally."""
    rng = np.random.default_rng(zlib.crc32(key.encode("utf-8")))
    if key.endswith("num_batches_tracked"):
        return np.zeros(shape, dtype=np.int64)
    if key.endswith("running_var"):
        value = 1.0 + 0.1 * rng.random(shape)
    elif key.endswith("running_mean"):
        value = 0.1 * rng.standard_normal(shape)
    elif len(shape) >= 2:
        value = rng.standard_normal(shape) / math.sqrt(math.prod(shape[1:]))
    elif key.endswith("weight"):
        value = 1.0 + 0.1 * rng.standard_normal(shape)
    else:
        value = 0.1 * rng.standard_normal(shape)
    return np.asarray(value).astype(np.float32)


def rule_state_dict(name: str, prefix: str = "") -> dict[str, torch.Tensor]:
    """Rule weights for every key of NAME (optionally only those under `prefix`, with it stripped)."""
    return {
        key[len(prefix) :]: torch.from_numpy(rule_value(key, shape))
        for key, shape, _ in read_keys(name)
        if key.startswith(prefix)
    }


def write_rule_checkpoints(folder: Path) -> dict[str, Path]:
    """Rule weights of every model as plain .pth files (loaded back through the public loader)."""
    paths = {}
    for name in NAMES:
        paths[name] = Path(folder) / f"{name}.pth"
        torch.save(rule_state_dict(name), paths[name])
    return paths


def golden(name: str) -> dict[str, np.ndarray]:
    with np.load(REFERENCE / f"{name}.golden.npz") as z:
        return {k: z[k] for k in z.files}


def reference_input(size: int) -> torch.Tensor:
    image = np.load(REFERENCE / f"image_{size}.npy")
    return torch.from_numpy(image.astype(np.float32) / 255.0).permute(2, 0, 1)[None].contiguous()


def assert_close_big(actual: torch.Tensor | np.ndarray, expected: np.ndarray, what: str) -> None:
    """README tolerance for embeddings and logits: max <= 1e-4*s, mean <= 1e-5*s, s = max(1, max|g|)."""
    a = actual.detach().cpu().numpy() if isinstance(actual, torch.Tensor) else np.asarray(actual)
    assert a.shape == expected.shape, f"{what}: shape {a.shape} != {expected.shape}"
    scale = max(1.0, float(np.abs(expected).max()))
    diff = np.abs(a.astype(np.float64) - expected.astype(np.float64))
    assert diff.max() <= 1e-4 * scale, f"{what}: max abs diff {diff.max():.3g} > {1e-4 * scale:.3g}"
    assert diff.mean() <= 1e-5 * scale, f"{what}: mean abs diff {diff.mean():.3g} > {1e-5 * scale:.3g}"


def assert_close_small(actual: torch.Tensor | np.ndarray, expected: np.ndarray, what: str, tol: float = 1e-5) -> None:
    a = actual.detach().cpu().numpy() if isinstance(actual, torch.Tensor) else np.asarray(actual)
    assert a.shape == expected.shape, f"{what}: shape {a.shape} != {expected.shape}"
    diff = float(np.abs(a.astype(np.float64) - expected.astype(np.float64)).max())
    assert diff <= tol, f"{what}: max abs diff {diff:.3g} > {tol}"


def warm_up() -> None:
    """The README warns the first torch.sqrt of a process may be inaccurate with 2 threads."""
    torch.sqrt(torch.rand(1000)).sum()

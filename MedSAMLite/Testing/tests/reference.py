"""Access to the shared reference data (numpy only): rule weights, golden outputs, tolerances.

The folder is `$MEDSAMLITE_REFERENCE`, else `<repo>/../shared/reference`. Missing reference data
fails the tests (CI must check against it) unless MEDSAMLITE_SKIP_REFERENCE=1.
"""
from __future__ import annotations

import math
import os
import zlib
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[3]
REFERENCE = Path(os.environ.get("MEDSAMLITE_REFERENCE", REPO.parent / "shared" / "reference"))
NAMES = ["lite_medsam", "medficient_l0", "medficient_l1", "medficient_l2", "repvit_medsam_m11", "medsam_vit_b"]
BOX_256 = np.array([60, 70, 180, 200], dtype=np.float32)

requires_reference = pytest.mark.skipif(
    not REFERENCE.is_dir() and os.environ.get("MEDSAMLITE_SKIP_REFERENCE") == "1",
    reason=f"reference data not found at {REFERENCE} (MEDSAMLITE_SKIP_REFERENCE=1)",
)


def genuine_lite_medsam() -> Path:
    """The released lite_medsam.pth, verified, from the model store (fetched once if missing:
    the tests check the real file, they do not skip without it)."""
    from MedSAMLiteLib.model_store import fetch_weights

    return fetch_weights("litemedsam")


def read_keys(name: str) -> list[tuple[str, tuple[int, ...], str]]:
    rows = []
    for line in (REFERENCE / f"{name}.keys.tsv").read_text().splitlines():
        key, shape, dtype = line.split("\t")
        rows.append((key, tuple(int(s) for s in shape.split(",")) if shape else (), dtype))
    return rows


def rule_value(key: str, shape: tuple[int, ...]) -> np.ndarray:
    """The reference README's deterministic weight rule, literally."""
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


def rule_weights(name: str) -> dict[str, np.ndarray]:
    """Rule weights for every key of NAME, in its state_dict order (key -> numpy array)."""
    return {key: rule_value(key, shape) for key, shape, _ in read_keys(name)}


def golden(name: str) -> dict[str, np.ndarray]:
    with np.load(REFERENCE / f"{name}.golden.npz") as z:
        return {k: z[k] for k in z.files}


def reference_input(size: int) -> np.ndarray:
    """The README's network input: image_S.npy / 255 as (1, 3, S, S) float32."""
    image = np.load(REFERENCE / f"image_{size}.npy")
    return np.ascontiguousarray((image.astype(np.float32) / 255.0).transpose(2, 0, 1)[None])


def assert_close_big(actual: np.ndarray, expected: np.ndarray, what: str) -> None:
    """README tolerance for embeddings and logits: max <= 1e-4*s, mean <= 1e-5*s, s = max(1, max|g|)."""
    a = np.asarray(actual)
    assert a.shape == expected.shape, f"{what}: shape {a.shape} != {expected.shape}"
    scale = max(1.0, float(np.abs(expected).max()))
    diff = np.abs(a.astype(np.float64) - expected.astype(np.float64))
    assert diff.max() <= 1e-4 * scale, f"{what}: max abs diff {diff.max():.3g} > {1e-4 * scale:.3g}"
    assert diff.mean() <= 1e-5 * scale, f"{what}: mean abs diff {diff.mean():.3g} > {1e-5 * scale:.3g}"


def assert_close_small(actual: np.ndarray, expected: np.ndarray, what: str, tol: float = 1e-5) -> None:
    a = np.asarray(actual)
    assert a.shape == expected.shape, f"{what}: shape {a.shape} != {expected.shape}"
    diff = float(np.abs(a.astype(np.float64) - expected.astype(np.float64)).max())
    assert diff <= tol, f"{what}: max abs diff {diff:.3g} > {tol}"
